"""Assistant, the one way in: status(), add(), ask() and ask_stream() with the fake embedder; the streaming Response."""
from __future__ import annotations

import re
import shutil
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from assistant import IndexedDocument, IndexStatus
from assistant.config import Settings
from assistant.errors import IndexStoreError, IngestError, NoIndexError
from assistant.ingest import check_supported, read_document
from assistant.pipeline import Assistant
from assistant.reader import ExtractiveReader, Passages, Response
from assistant.testing import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def assistant(tmp_path_factory) -> Assistant:
    """The repository's corpus and an empty file, indexed once with the fake embedder (the tests only read it)."""
    folder = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(ROOT / "corpus", folder / "corpus")
    (folder / "corpus" / "empty.txt").write_text("", "utf-8")
    assistant = Assistant(Settings(corpus=folder / "corpus", index=folder / "index", min_evidence=0.1),
                          embedder=FakeEmbedder())
    assistant.build()
    return assistant


def text_of(assistant: Assistant, source: str) -> str:
    return read_document(assistant.settings.corpus / source, assistant.settings.corpus).text


def test_status_is_typed_and_lists_the_documents(assistant):
    status = assistant.status()
    corpus = assistant.settings.corpus
    assert isinstance(status, IndexStatus) and status.index == assistant.settings.index
    assert {d.source for d in status.documents} == {p.name for p in corpus.iterdir()} - {"empty.txt"}
    assert [(d.source, d.chars, d.kind, d.bytes) for d in status.documents] == [
        (d.source, len(text_of(assistant, d.source)), "txt", (corpus / d.source).stat().st_size)
        for d in status.documents]  # chars: the length of each text
    assert all(isinstance(d, IndexedDocument) and d.title and d.preview and d.added_at.endswith("Z")
               for d in status.documents)
    assert sum(d.chunks for d in status.documents) == status.chunks > 0
    assert status.embedding_model == "fake/char-ngrams" and status.corpus == str(corpus.resolve())
    assert status.skipped == (("empty.txt", "file is empty (0 bytes)"),)
    with pytest.raises(FrozenInstanceError):
        status.chunks = 0
    as_json = status.to_dict()
    assert as_json["documents"] == len(status.documents) and [d["source"] for d in as_json["document_list"]] == \
        [d.source for d in status.documents]
    assert set(as_json["document_list"][0]) == {"source", "title", "kind", "bytes", "added_at", "chars", "chunks",
                                                "preview"}


def test_status_tells_a_missing_index_from_a_damaged_one(tmp_path):
    none = Assistant(Settings(corpus=tmp_path, index=tmp_path / "none"), embedder=FakeEmbedder())
    with pytest.raises(NoIndexError, match="assistant index build"):
        none.status()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "manifest.json").write_text("{", "utf-8")
    damaged = Assistant(Settings(corpus=tmp_path, index=tmp_path / "damaged"), embedder=FakeEmbedder())
    with pytest.raises(IndexStoreError, match="damaged") as raised:
        damaged.status()
    assert not isinstance(raised.value, NoIndexError)


def test_check_supported_is_the_one_type_check(assistant, tmp_path):
    check_supported("notes.MD")  # the suffix, in any case
    with pytest.raises(IngestError, match=r"unsupported type \.exe \(supported: \.txt, \.md, \.pdf, \.docx\)"):
        check_supported(tmp_path / "tool.exe")
    with pytest.raises(IngestError, match=r"unsupported type \(no suffix\)"):
        check_supported("README")
    (tmp_path / "tool.exe").write_bytes(b"MZ")
    report = assistant.add([tmp_path / "tool.exe"])
    assert report.refused == (("tool.exe", "unsupported type .exe (supported: .txt, .md, .pdf, .docx)"),)
    assert report.added == report.replaced == report.already_indexed == () and report.build.unchanged


def test_response_gives_the_text_as_written_then_the_whole_once():
    ran = []

    def run():
        ran.append("started")
        yield "Boil "
        yield "it."
        return "the whole"

    response = Response(run())
    assert ran == []  # nothing runs until it is read
    assert list(response) == ["Boil ", "it."] and response.answer() == "the whole"
    assert list(response) == ["Boil ", "it."] and ran == ["started"]  # read again, not run again
    assert Response(run()).answer() == "the whole"  # answer() reads the text first
    quiet = Response.whole(lambda: 42)
    assert list(quiet) == [] and quiet.answer() == 42


def test_ask_stream_is_a_response_and_ask_its_answer(assistant):
    question = "初创公司缺少训练数据怎么办？"
    response = assistant.ask_stream(question)
    assert list(response) == []  # the extractive reader quotes: no text before the whole
    streamed, asked = response.answer(), assistant.ask(question)
    assert not streamed.abstained and streamed.citations
    assert (streamed.text, streamed.citations) == (asked.text, asked.citations)
    assert "first_text" not in streamed.timings_ms


def test_related_is_the_reading_shown_on_abstaining(assistant):
    serving = assistant._current()
    question = "火星上有火山吗？"
    vector = assistant.embedder.embed_queries([question])[0]
    found = serving.retriever.search(question, 3, query_vector=vector)
    passages = Passages(question=question, query_vector=vector, hits=found.hits, evidence=found.best_dense,
                        lines=serving.index.lines, pages=serving.index.pages)
    reader = ExtractiveReader(assistant.embedder)
    related = reader.related(passages)
    assert [c.source for c in related] == [h.chunk.source for h in found.hits[:3]]
    assert all(text_of(assistant, c.source)[c.start:c.end] == c.quote for c in related)
    abstained = reader.abstain(passages)
    assert abstained.abstained and abstained.citations == () and abstained.related == related
    assert abstained.text.startswith("文档中没有涉及") and abstained.evidence == passages.evidence


def test_the_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    section = (ROOT / "README.md").read_text("utf-8").split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.count("Assistant(Settings.from_env())") == 1
    code = code.replace("Assistant(Settings.from_env())", "Assistant(Settings.from_env({}), embedder=FakeEmbedder())")
    shutil.copytree(ROOT / "corpus", tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"FakeEmbedder": FakeEmbedder})
    out = capsys.readouterr().out
    assert "5 documents" in out and "[1] " in out and (tmp_path / "index" / "manifest.json").is_file()
