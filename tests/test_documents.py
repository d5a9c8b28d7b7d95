"""Document management: the document list (status), add / replace / already indexed, remove, reading progress.

"Deleting really deletes": a document holding unique strings is indexed, then removed, and no file of
the index folder (nor of a Milvus Lite collection) holds its strings, its vectors or its name; no answer
cites it. The fake embedder stands in for the model, except in the one e2e test.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

import assistant.index_build as index_build
import assistant.ingest as ingest
import assistant.pipeline as pipeline
from assistant.cli import main
from assistant.config import Settings
from assistant.errors import AssistantError, IndexStoreError
from assistant.index_store import read_manifest
from assistant.lexical import tokenize
from assistant.pipeline import DIFFERENT_VERSION, AddReport, Assistant, RemoveReport
from assistant.testing import FakeEmbedder
from assistant.ui import ChatHandlers

ROOT = Path(__file__).resolve().parent.parent
LATIN, CHINESE = "ZEBRAQUOKKA7731", "犰狳蜂鸟秘方"
SECRET = f"secret-{LATIN}.md"  # its name is unique too: the Milvus rows hold it
SECRET_TEXT = (f"# 秘密配方\n\n代号 {LATIN} 的{CHINESE}只在这份文件里出现：把犰狳蜂鸟秘方溶在温水里，"
               "每天早晚各服一次。\n")
QUESTION = f"{LATIN} {CHINESE}是什么？"
TEXTS = {
    "garden.md": "# 园艺指南\n\n番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。\n\n## 施肥\n\n每两周施一次有机肥。",
    "cooking.txt": "Boil the pasta in salted water for nine minutes.\nDrain it and add olive oil.\n",
    "notes/router.md": "Router notes\n\n路由器重启后需要等待两分钟。The Wi-Fi password is printed on the router label.",
}


def make_corpus(folder: Path, secret: bool = True) -> Path:
    for source, text in {**TEXTS, **({SECRET: SECRET_TEXT} if secret else {})}.items():
        (folder / source).parent.mkdir(parents=True, exist_ok=True)
        (folder / source).write_text(text, "utf-8")
    return folder


def make_assistant(tmp_path: Path, store: str = "", **kw) -> Assistant:
    corpus = make_corpus(tmp_path / "corpus")
    settings = Settings(corpus=corpus, index=tmp_path / "index", chunk_size=60, min_evidence=0.01,
                        reader="extractive", vector_store=store, **kw)
    assistant = Assistant(settings, embedder=FakeEmbedder())
    assistant.build()
    return assistant


@pytest.fixture
def assistant(tmp_path) -> Assistant:
    return make_assistant(tmp_path)


def cited(answer) -> set[str]:
    return {c.source for c in (*answer.citations, *answer.related)}


def traces(assistant: Assistant, source: str) -> tuple[list[bytes], list[bytes]]:
    """What of ``source`` an index could keep: its name and its chunks' vectors (float32), which a Milvus
    collection holds too; then its strings (as written, and lower-cased as BM25 tokens are) and its sentence
    vectors (float16)."""
    index = assistant._current().index
    ids = [i for i, c in enumerate(index.chunks) if c.source == source]
    units = [index.units.vectors[index.units.offsets[i]:index.units.offsets[i + 1]] for i in ids]
    return ([source.encode(), *(v.astype(np.float32).tobytes() for v in index.dense_vectors(np.asarray(ids)))],
            [LATIN.encode(), LATIN.lower().encode(), CHINESE.encode(),
             *(u.astype(np.float16).tobytes() for rows in units for u in rows)])


def everything_in(folder: Path, needles: list[bytes]) -> bool:
    """Each of ``needles`` is in some file under ``folder`` (so their absence later means something)."""
    return sorted({i for hits in holding(folder, needles).values() for i in hits}) == list(range(len(needles)))


def holding(folder: Path, needles: list[bytes]) -> dict[str, list[int]]:
    """Every file under ``folder`` (read as bytes) that holds one of ``needles``: which ones, by position."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if hits := [i for i, needle in enumerate(needles) if needle in data]:
            found[str(path.relative_to(folder))] = hits
    return found


def snapshot(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


# -- deleting really deletes ------------------------------------------------------------------------

def test_a_removed_document_leaves_no_trace_in_the_index_folder_and_is_never_cited(assistant):
    corpus, index = assistant.settings.corpus, assistant.settings.index
    assert SECRET in cited(assistant.ask(QUESTION))
    shared, own = traces(assistant, SECRET)
    needles = shared + own
    assert everything_in(index, needles)

    report = assistant.remove([SECRET])
    assert isinstance(report, RemoveReport) and report.removed == (SECRET,)
    assert (report.documents, report.chunks) == (3, assistant.status().chunks) and report.seconds >= 0
    assert not (corpus / SECRET).exists() and sorted(p.name for p in corpus.iterdir()) == \
        ["cooking.txt", "garden.md", "notes"]  # no hidden folder is left either
    assert holding(index, needles) == {}
    vocab = (index / read_manifest(index)["files"]["lexical"] / "vocab.txt").read_text("utf-8").splitlines()
    remaining = {t for c in assistant._current().index.chunks for t in tokenize(c.text)}
    assert set(vocab) == remaining and set(tokenize(SECRET_TEXT)) - remaining  # none of its own words is left
    for answering in (assistant, Assistant(assistant.settings, embedder=FakeEmbedder())):  # served, and reloaded
        assert SECRET not in cited(answering.ask(QUESTION))
        assert SECRET not in {d.source for d in answering.status().documents}
    assert not assistant.ask("番茄需要什么？").abstained  # the others still answer


def test_a_removed_document_leaves_no_trace_in_a_milvus_lite_collection(tmp_path):
    pytest.importorskip("pymilvus", reason="the Milvus extra is not installed: pip install .[milvus]")
    db = tmp_path / "assistant.db"
    assistant = make_assistant(tmp_path, f"milvus-lite://{db}")
    assert SECRET in cited(assistant.ask(QUESTION))
    shared, own = traces(assistant, SECRET)  # the collection's rows hold its name and its chunk vectors
    assert everything_in(db, shared) and everything_in(assistant.settings.index, own)

    assistant.remove([SECRET])
    assert holding(db, shared + own) == {} and holding(assistant.settings.index, shared + own) == {}
    assert assistant.store.count() == assistant.status().chunks
    assert SECRET not in cited(assistant.ask(QUESTION)) and not assistant.ask("番茄需要什么？").abstained


# -- remove: names, paths, refusals, failures -------------------------------------------------------

def test_remove_takes_sources_and_paths_of_corpus_files(assistant, tmp_path, monkeypatch):
    corpus = assistant.settings.corpus
    monkeypatch.chdir(tmp_path)
    report = assistant.remove([Path("corpus") / "notes" / "router.md", str(corpus.resolve() / "cooking.txt")])
    assert report.removed == ("notes/router.md", "cooking.txt")
    assert {d.source for d in assistant.status().documents} == {"garden.md", SECRET}
    assert not (corpus / "cooking.txt").exists() and not (corpus / "notes" / "router.md").exists()


def test_removing_an_unknown_name_is_one_line_naming_it_and_changes_nothing(assistant, tmp_path):
    before = snapshot(assistant.settings.corpus, assistant.settings.index)
    outside = tmp_path / "elsewhere.md"
    outside.write_text("不在语料库里。", "utf-8")
    with pytest.raises(AssistantError) as raised:
        assistant.remove(["garden.md", "ghost.md", str(outside)])
    message = str(raised.value)
    assert "ghost.md" in message and "elsewhere.md" in message and "garden.md" not in message
    assert "\n" not in message and "not in the index" in message
    assert snapshot(assistant.settings.corpus, assistant.settings.index) == before


def test_the_last_document_cannot_be_removed(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "only.md").write_text("# 唯一\n\n只有这一份文件。", "utf-8")
    assistant = Assistant(Settings(corpus=corpus, index=tmp_path / "index"), embedder=FakeEmbedder())
    assistant.build()
    with pytest.raises(AssistantError, match="at least one document"):
        assistant.remove(["only.md"])
    assert (corpus / "only.md").is_file()


def test_a_build_failing_during_remove_puts_the_file_back_and_the_previous_index_answers(assistant, monkeypatch):
    corpus, index = assistant.settings.corpus, assistant.settings.index
    before = snapshot(corpus, index)

    def full(*args, **kwargs):
        raise IndexStoreError("the disk is full")
    monkeypatch.setattr(index_build, "_write_generation", full)
    with pytest.raises(IndexStoreError, match="the disk is full"):
        assistant.remove([SECRET])
    assert snapshot(corpus, index) == before  # the file is back, nothing hidden is left, the index is as it was
    for answering in (assistant, Assistant(assistant.settings, embedder=FakeEmbedder())):
        assert SECRET in cited(answering.ask(QUESTION))
    monkeypatch.undo()
    assert assistant.remove([SECRET]).removed == (SECRET,)


# -- add: already indexed, refused, replaced ----------------------------------------------------------

def test_adding_an_identical_file_reports_it_as_already_indexed(assistant, tmp_path):
    upload = tmp_path / "up" / "garden.md"
    upload.parent.mkdir()
    upload.write_text(TEXTS["garden.md"], "utf-8")
    report = assistant.add([upload])
    assert isinstance(report, AddReport) and report.already_indexed == ("garden.md",)
    assert report.added == report.replaced == report.refused == () and report.build.unchanged

    text, _ = ChatHandlers(assistant, stream_delay=0).add_files([str(upload)])
    assert text.startswith("**Already indexed**") and "garden.md (already indexed)" in text
    assert "Added" not in text and "new passage" not in text


def test_a_different_file_of_the_same_name_is_refused_unless_replacing(assistant, tmp_path):
    corpus = assistant.settings.corpus
    upload = tmp_path / "up" / SECRET
    upload.parent.mkdir()
    upload.write_text("# 新配方\n\n新版本：每天只服一次，用冷水送服。", "utf-8")
    original = (corpus / SECRET).read_bytes()
    first = assistant.status().documents[-1]

    report = assistant.add([upload])
    assert report.refused == ((SECRET, DIFFERENT_VERSION),) and report.added == report.replaced == ()
    assert "different version" in DIFFERENT_VERSION and "--replace" in DIFFERENT_VERSION
    assert (corpus / SECRET).read_bytes() == original
    text, _ = ChatHandlers(assistant, stream_delay=0).add_files([str(upload)])
    assert "Nothing added" in text and "different version" in text

    report = assistant.add([upload], replace=True)
    assert report.replaced == (SECRET,) and report.added == report.refused == ()
    assert report.build.embedded_chunks > 0 and (corpus / SECRET).read_bytes() == upload.read_bytes()
    assert sorted(p.name for p in corpus.iterdir()) == sorted(["cooking.txt", "garden.md", "notes", SECRET])
    answer = assistant.ask("新版本的配方怎么服用？")
    assert SECRET in cited(answer) and "冷水" in answer.text
    assert holding(assistant.settings.index, [CHINESE.encode(), "温水".encode()]) == {}  # the old text is gone
    now = assistant.status().documents[-1]
    assert (now.title, now.added_at) == ("新配方", read_manifest(assistant.settings.index)["built_at"])
    assert first.title == "秘密配方"


def test_a_build_failing_during_replace_puts_the_old_file_back(assistant, tmp_path, monkeypatch):
    corpus = assistant.settings.corpus
    upload = tmp_path / "up" / "garden.md"
    upload.parent.mkdir()
    upload.write_text("# 新园艺\n\n全新的内容。", "utf-8")
    new = tmp_path / "up" / "new.md"
    new.write_text("# 新文件\n\n一份新文件。", "utf-8")
    before = snapshot(corpus, assistant.settings.index)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(index_build, "_write_generation", interrupted)
    with pytest.raises(KeyboardInterrupt):
        assistant.add([upload, new], replace=True)
    assert snapshot(corpus, assistant.settings.index) == before  # old garden.md back, new.md not left behind


def test_the_upload_report_names_added_and_replaced_documents(assistant, tmp_path):
    up = tmp_path / "up"
    up.mkdir()
    (up / "garden.md").write_text("# 园艺\n\n改过的园艺内容：番茄要少浇水。", "utf-8")
    (up / "space.md").write_text("# 太空\n\n火星上有太阳系最高的火山。", "utf-8")
    text, _ = ChatHandlers(assistant, stream_delay=0).add_files([str(up / "garden.md"), str(up / "space.md")],
                                                                replace=True)
    assert text.startswith("**Added 1 document, replaced 1 document** — ") and "new passage" in text
    assert "✓ space.md" in text and "✓ garden.md (replaced)" in text
    assert {d.source for d in assistant.status().documents} == {*TEXTS, SECRET, "space.md"}


# -- the document list ---------------------------------------------------------------------------------

def test_status_lists_title_kind_size_date_and_preview(assistant):
    corpus = assistant.settings.corpus
    documents = {d.source: d for d in assistant.status().documents}
    garden, cooking, router = documents["garden.md"], documents["cooking.txt"], documents["notes/router.md"]
    assert (garden.title, garden.kind) == ("园艺指南", "md")  # its first heading
    assert (cooking.title, cooking.kind) == ("Boil the pasta in salted water for nine minutes.", "txt")  # first line
    assert router.title == "Router notes"
    for d in documents.values():
        assert d.bytes == (corpus / d.source).stat().st_size and d.chunks > 0
        assert d.added_at == read_manifest(assistant.settings.index)["built_at"]
    assert garden.preview.startswith("# 园艺指南 番茄需要充足的阳光") and "\n" not in garden.preview
    long = assistant.settings.corpus / "long.md"
    long.write_text("# 长文\n\n" + "这是一段很长的文字。" * 100, "utf-8")
    assistant.build()
    preview = next(d.preview for d in assistant.status().documents if d.source == "long.md")
    assert len(preview) == 200 and preview.endswith("…")


def test_added_at_is_kept_for_unchanged_documents(assistant, monkeypatch):
    first = {d.source: d.added_at for d in assistant.status().documents}
    later = time.struct_time((2031, 5, 6, 7, 8, 9, 1, 126, 0))
    monkeypatch.setattr(index_build.time, "gmtime", lambda *args: later)
    (assistant.settings.corpus / "new.md").write_text("# 新\n\n新加的一份文件。", "utf-8")
    (assistant.settings.corpus / "garden.md").write_text(TEXTS["garden.md"] + "\n\n改过了。", "utf-8")
    assistant.build()
    assistant.build(rebuild=True)  # re-embeds everything; still the same documents
    now = {d.source: d.added_at for d in assistant.status().documents}
    assert now == {**first, "new.md": "2031-05-06T07:08:09Z", "garden.md": "2031-05-06T07:08:09Z"}


def test_an_older_index_without_the_new_keys_still_loads(assistant):
    path = assistant.settings.index / "manifest.json"
    data = json.loads(path.read_text("utf-8"))
    for d in data["documents"]:
        del d["title"], d["bytes"], d["added_at"]
    path.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    old = Assistant(assistant.settings, embedder=FakeEmbedder())
    assert {(d.title, d.bytes, d.added_at) for d in old.status().documents} == {("", 0, "")}
    old.build(rebuild=True)  # an unchanged document is dated by the old index's build
    assert {d.added_at for d in old.status().documents} == {data["built_at"]}


def test_reading_the_documents_is_a_progress_step_from_the_first_file(assistant, monkeypatch):
    events = []

    class Progress:
        def __call__(self, done, total):
            events.append(("embedding", done, total))

        def stage(self, name, done, total, unit):
            events.append((name, done, total, unit))

    read = ingest._read
    monkeypatch.setattr(ingest, "_read", lambda *args: events.append("read") or read(*args))
    (assistant.settings.corpus / "new.md").write_text("# 新\n\n新加的一份文件。", "utf-8")
    assistant.build(progress=Progress())
    assert events[0] == ("reading", 0, 5, "file") and events[1] == "read"
    reading = [e for e in events if e[0] == "reading"]
    assert reading == [("reading", n, 5, "file") for n in range(6)]
    assert events.index(("reading", 5, 5, "file")) < events.index(("chunking", 0, 1, "document"))


# -- the CLI -------------------------------------------------------------------------------------------

@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    for name in list(os.environ):
        if name.startswith("ASSISTANT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(pipeline, "make_embedder", lambda settings, show_progress=False: FakeEmbedder())
    corpus = make_corpus(tmp_path / "corpus")
    folders = ["--corpus", str(corpus), "--index", str(tmp_path / "index")]
    assert main(["index", "build", *folders]) == 0
    capsys.readouterr()

    def run(*argv: str, corpus_flag: bool = True) -> tuple[int, str, str]:
        code = main([*argv, *(folders if corpus_flag else folders[2:])])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_index_list_prints_a_table_and_json(cli):
    code, out, _ = cli("index", "list", corpus_flag=False)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["TITLE", "TYPE", "SIZE", "ADDED", "(UTC)", "PASSAGES", "DOCUMENT"]
    row = next(line for line in lines if line.endswith("garden.md"))
    assert row.startswith("园艺指南") and " md " in row and " B " in row and " 20" in row
    assert len(lines) == 6 and lines[-1].startswith("4 documents, ")
    widths = {sum(1 + (unicodedata.east_asian_width(ch) in "WF") for ch in line.rsplit("  ", 1)[0])
              for line in lines[:-1]}
    assert len(widths) == 1  # the columns line up on a terminal, where a Chinese character takes two

    code, out, _ = cli("index", "list", "--json", corpus_flag=False)
    documents = json.loads(out)
    assert code == 0 and [d["source"] for d in documents] == ["cooking.txt", "garden.md", "notes/router.md", SECRET]
    assert documents[1]["title"] == "园艺指南" and documents[1]["kind"] == "md" and documents[1]["preview"]
    assert set(documents[0]) == {"source", "title", "kind", "bytes", "added_at", "chars", "chunks", "preview"}


def test_index_remove_prints_each_removed_document_and_the_totals(cli, tmp_path):
    code, out, _ = cli("index", "remove", SECRET, str(tmp_path / "corpus" / "cooking.txt"))
    lines = out.splitlines()
    assert code == 0 and lines[:2] == [f"removed {SECRET}", "removed cooking.txt"]
    assert lines[2].startswith("2 documents, ") and " chunks left (" in lines[2]
    assert not (tmp_path / "corpus" / SECRET).exists()
    code, out, _ = cli("index", "list", "--json", corpus_flag=False)
    assert [d["source"] for d in json.loads(out)] == ["garden.md", "notes/router.md"]

    code, out, err = cli("index", "remove", "ghost.md")
    assert code == 2 and out == "" and err.splitlines()[-1].startswith("error: not in the index: ghost.md")


def test_index_add_reports_already_indexed_refused_and_replaced(cli, tmp_path):
    up = tmp_path / "up"
    up.mkdir()
    (up / "garden.md").write_text(TEXTS["garden.md"], "utf-8")
    code, out, _ = cli("index", "add", str(up / "garden.md"))
    assert code == 0 and "already indexed garden.md" in out.splitlines()
    (up / "garden.md").write_text("# 园艺\n\n新的园艺内容。", "utf-8")
    code, out, _ = cli("index", "add", str(up / "garden.md"))
    assert code == 1 and f"skipped garden.md: {DIFFERENT_VERSION}" in out.splitlines()
    code, out, _ = cli("index", "add", "--replace", str(up / "garden.md"))
    assert code == 0 and "replaced garden.md" in out.splitlines()
    assert (tmp_path / "corpus" / "garden.md").read_text("utf-8") == "# 园艺\n\n新的园艺内容。"


# -- the real model ------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_removing_a_document_with_the_real_model_leaves_no_trace(real_settings, real_index, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "corpus", corpus)
    settings = real_settings.with_(corpus=corpus, index=tmp_path / "index", reader="extractive")
    shutil.copytree(real_index, settings.index)  # start from the built default index
    upload = tmp_path / SECRET
    upload.write_text(SECRET_TEXT, "utf-8")
    assistant = Assistant(settings)
    assert assistant.add([upload]).added == (SECRET,)
    assert SECRET in cited(assistant.ask(QUESTION))
    shared, own = traces(assistant, SECRET)
    needles = shared + own
    assert everything_in(settings.index, needles)

    report = assistant.remove([SECRET])
    assert report.removed == (SECRET,) and report.documents == 5
    assert holding(settings.index, needles) == {} and not (corpus / SECRET).exists()
    assert SECRET not in cited(assistant.ask(QUESTION))
    answer = assistant.ask("初创公司缺少训练数据怎么办？")
    assert not answer.abstained and SECRET not in cited(answer)


def test_index_changes_from_two_threads_queue_instead_of_failing(tmp_path):
    """The page and the HTTP API share one Assistant: a second change waits for the first."""
    import threading

    from assistant.config import Settings
    from assistant.pipeline import Assistant
    from assistant.testing import FakeEmbedder

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\n\n番茄需要充足的阳光。\n", "utf-8")
    assistant = Assistant(Settings(corpus=corpus, index=tmp_path / "index", reader="extractive"),
                          embedder=FakeEmbedder())
    assistant.build()
    files = []
    for n in range(4):
        path = tmp_path / f"new{n}.md"
        path.write_text(f"# 第{n}篇\n\n黄瓜{n}需要水。\n", "utf-8")
        files.append(path)
    errors = []

    def add(path):
        try:
            assistant.add([path])
        except Exception as exc:  # noqa: BLE001 - collected and checked below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(p,)) for p in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(d.source for d in assistant.status().documents) == ["a.md", *(f"new{n}.md" for n in range(4))]
