"""Uploads through the UI: hostile names, odd unicode, oversize files, unsupported types, over real HTTP.

Already proven in test_ui.py: unsafe names refused by ``safe_name`` (test_unsafe_file_names_are_refused),
``stage_uploads`` never writes outside its folder, and bad uploads (binary, .exe, over the limit, "..")
are refused per file by ``ChatHandlers.add_files`` with nothing written elsewhere.
"""
from __future__ import annotations

import re
import shutil
import unicodedata
import uuid
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.pipeline import Assistant
from assistant.ui import build_app, launch_options, stage_uploads
from assistant.testing import FakeEmbedder
from test_ui import OFFSITE, _free_port, _tree, outbound  # noqa: F401  (outbound is a fixture)

ODD_NAMES = [
    "résumé.md",
    unicodedata.normalize("NFD", "résumé-nfd.md"),
    "报告 2024（最终版）.md",
    "emoji 📄🚀.txt",
    "ｆｕｌｌｗｉｄｔｈ／ｓｌａｓｈ.txt",  # a full-width solidus is not a path separator
    "division∕slash.txt",
    "%2e%2e%2fescaped.txt",
    "CON.txt",
    "dots...in the middle.txt",
    "name with spaces .md",
    "עברית.txt",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_unicode_names_are_stored_as_one_file_inside_the_staging_folder(tmp_path, name):
    upload = tmp_path / "upload.bin"
    upload.write_text("正文。", "utf-8")
    staging = tmp_path / "staging"
    staging.mkdir()
    staged, refused = stage_uploads([(upload, name)], staging, 1 << 20)
    assert refused == [] and len(staged) == 1
    assert staged[0].parent == staging and staged[0].name == name.strip()
    assert staged[0].resolve().parent == staging.resolve()
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["upload.bin", "staging", name.strip()])


@pytest.fixture
def app_url(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "fruit.md").write_text("# 水果\n\n苹果应放在阴凉处保存。香蕉不宜放进冰箱。", "utf-8")
    assistant = Assistant(Settings(corpus=corpus, index=tmp_path / "index", max_file_mb=1, min_evidence=0.01),
                          embedder=FakeEmbedder())
    assistant.build()
    settings = assistant.settings.with_(port=_free_port())
    app = build_app(assistant, settings, stream_delay=0)
    app.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        app.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")
def test_hostile_uploads_over_http_write_nothing_outside_the_corpus(app_url, tmp_path, outbound):
    import httpx
    from gradio_client import Client

    canary = f"canary-{uuid.uuid4().hex[:12]}.txt"
    escape_to = Path("/tmp") / canary
    before = _tree(tmp_path, skip=("corpus", "index"))
    corpus_before = sorted(p.name for p in (tmp_path / "corpus").iterdir())

    def upload(name: str, data: bytes) -> httpx.Response:
        return httpx.post(f"{app_url}/gradio_api/upload", files=[("files", (name, data, "text/plain"))], timeout=60)

    traversal = upload(f"../../../../../../../tmp/{canary}", OFFSITE.encode())
    rtl = upload("\u202etxt.exe", b"MZ\x90\x00")
    exe = upload("tool.exe", b"MZ\x90\x00" * 100)
    binary = upload("blob.md", bytes(range(256)) * 8)
    oversize = upload("huge.md", b"x" * (2 << 20))  # the limit is 1 MB
    dots = upload("..", b"x")
    assert [r.status_code for r in (traversal, rtl, exe, binary)] == [200] * 4
    assert oversize.status_code == 413 and dots.status_code == 400  # Gradio refuses these itself
    server_paths = [r.json()[0] for r in (traversal, rtl, exe, binary)]
    assert Path(server_paths[0]).name == canary  # Gradio kept only the last part of the name

    client = Client(f"{app_url}/", verbose=False)
    files = [{"path": p, "meta": {"_type": "gradio.FileData"}} for p in server_paths]
    report, status, _ = client.predict(files, api_name="/add_documents")

    assert "Added 1 document" in report and f"✓ {canary}" in report
    refused = dict(re.findall(r"✗ \*\*(.+?)\*\*: (.+)", report))
    assert "control characters" in refused["?txt.exe"]
    assert "unsupported type .exe" in refused["tool.exe"] and "binary" in refused["blob.md"]
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == sorted([*corpus_before, canary])
    assert (tmp_path / "corpus" / canary).read_text("utf-8") == OFFSITE
    assert not escape_to.exists()
    assert _tree(tmp_path, skip=("corpus", "index")) == before
    assert "2 documents" in status
    history, _ = client.predict("年度团建地点定在哪里？", [], api_name="/ask")
    assert canary in str(history[-1]["content"])
    assert outbound == []


def test_upload_name_taken_by_a_different_corpus_file_is_refused_not_overwritten(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "notes.md").write_text("原来的内容。", "utf-8")
    assistant = Assistant(Settings(corpus=corpus, index=tmp_path / "index"), embedder=FakeEmbedder())
    assistant.build()
    other = tmp_path / "up" / "notes.md"
    other.parent.mkdir()
    other.write_text("别人的同名文件。", "utf-8")
    refused = assistant.add([other]).refused
    assert refused and "a different version of this document is already indexed" in refused[0][1]
    assert (corpus / "notes.md").read_text("utf-8") == "原来的内容。"
    shutil.rmtree(other.parent)
