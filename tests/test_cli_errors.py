"""One line, not a traceback (issue 20, item 3): a file as the index path, a full disk, a port that is
taken or out of range, Ctrl-C during a build, a 'billion laughs' .docx."""
from __future__ import annotations

import errno
import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from assistant.cli import main
from assistant.config import Settings
from assistant.errors import AssistantError, ConfigError, IngestError
from assistant.ingest import read_document
from test_cli import isolated  # noqa: F401  (autouse: no ASSISTANT_* settings, the fake embedder)

TEXT = "# 园艺\n\n番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。\n"


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "garden.md").write_text(TEXT, "utf-8")
    return folder


def one_error_line(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [["index", "build"], ["ask", "番茄需要什么？"], ["index", "status"]])
def test_an_index_path_that_is_a_file_is_one_line(tmp_path, corpus, capsys, command):
    path = tmp_path / "index"
    path.write_text("not a folder")
    assert main([*command, "--corpus", str(corpus), "--index", str(path)] if command[0] == "index" and
                command[1] == "build" else [*command, "--index", str(path)]) == 2
    one_error_line(capsys.readouterr().err, "is a file, not a folder", str(path))
    assert path.read_text() == "not a folder"


def test_a_full_disk_is_one_line_and_the_previous_index_serves(tmp_path, corpus, capsys, monkeypatch):
    index = tmp_path / "index"
    assert main(["index", "build", "--corpus", str(corpus), "--index", str(index)]) == 0
    before = sorted(p.relative_to(index) for p in index.rglob("*"))
    capsys.readouterr()
    (corpus / "more.md").write_text("# 养花\n\n月季需要充足的阳光，每周施肥一次。\n", "utf-8")
    from assistant.lexical import LexicalIndex

    def full(self, path):  # the disk fills up after the vectors and chunks of the new generation are written
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(LexicalIndex, "save", full)
    assert main(["index", "build", "--corpus", str(corpus), "--index", str(index)]) == 2
    err = capsys.readouterr().err  # the progress lines of the steps, then the one error line
    line = one_error_line(err.strip().splitlines()[-1], "no space left", "previous index is unchanged")
    assert "Traceback" not in err
    assert "MB" in line
    assert sorted(p.relative_to(index) for p in index.rglob("*")) == before  # nothing left behind
    assert main(["ask", "--index", str(index), "番茄需要什么？"]) == 0  # the previous index still answers
    assert "garden.md" in capsys.readouterr().out


def test_ports_out_of_range_and_taken_are_one_line(capsys):
    with pytest.raises(ConfigError, match="between 1 and 65535"):
        Settings(port=70000).validate()
    assert main(["serve", "--port", "70000"]) == 2
    one_error_line(capsys.readouterr().err, "between 1 and 65535")
    from assistant.ui import check_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(AssistantError, match=f"port {port} on 127.0.0.1 is already in use.*--port"):
            check_port("127.0.0.1", port)
    check_port("127.0.0.1", port)  # free again


def test_a_billion_laughs_docx_says_its_xml_expands_too_far(tmp_path):
    import docx

    doc = docx.Document()
    doc.add_paragraph("hello")
    plain = io.BytesIO()
    doc.save(plain)
    entities = "".join(f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10 if i > 1 else "lol" * 10}">' for i in range(1, 10))
    bomb = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain.getvalue())) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "word/document.xml":
                text = data.decode()
                text = text[text.index("?>") + 2:]
                data = (f'<?xml version="1.0"?><!DOCTYPE w:document [{entities}]>' + text.replace("hello", "&lol9;")
                        ).encode()
            zout.writestr(item, data)
    path = tmp_path / "laughs.docx"
    path.write_bytes(bomb.getvalue())
    with pytest.raises(IngestError, match="XML expands too far") as info:
        read_document(path, tmp_path)
    assert ".doc files" not in str(info.value)


SLOW_BUILD = ("import sys, time; import assistant.pipeline as p; from assistant.testing import FakeEmbedder\n"
              "class Slow(FakeEmbedder):\n"
              "    def embed_passages(self, texts, titles, units):\n"
              "        sys.stderr.write(f'faiss loaded: {\"faiss\" in sys.modules}\\n'); sys.stderr.flush()\n"
              "        time.sleep(5); return super().embed_passages(texts, titles, units)\n"
              "p.make_embedder = lambda settings, show_progress=False: Slow()\n"
              "from assistant.cli import main; raise SystemExit(main(sys.argv[1:]))")


def _default_sigint() -> None:
    """In the child, Ctrl-C as in a terminal: an earlier test's server may have left SIGINT ignored in this
    process, and an ignored signal stays ignored across exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_build_ends_with_one_line_and_code_130(tmp_path, corpus):
    for n in range(40):
        (corpus / f"doc{n}.md").write_text(f"# 第{n}篇\n\n" + "番茄需要充足的阳光。" * 40, "utf-8")
    env = {**os.environ, "ASSISTANT_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, "index", "build", "--corpus", str(corpus),
                              "--index", str(tmp_path / "index")], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=env, preexec_fn=_default_sigint)
    seen = b""
    deadline = time.monotonic() + 120
    while b"faiss loaded" not in seen and time.monotonic() < deadline:  # the first batch is being embedded
        seen += child.stderr.readline()
    assert b"faiss loaded" in seen, seen
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    err = (seen + err).decode(errors="replace")
    assert child.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err and "ModuleNotFoundError" not in err
    # faiss is imported before the long part, so an interrupt cannot land in its import (which reported
    # the interrupt as "ModuleNotFoundError: No module named 'faiss.swigfaiss_avx512'")
    assert "faiss loaded: True" in err
    assert not (tmp_path / "index" / "manifest.json").exists()  # nothing half-written is served
