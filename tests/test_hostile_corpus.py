"""The hostile-corpus probe of issue 20 as tests: zip bombs and text caps, long lines, a removed document's words,
progress on the CLI. Hostile files are made in tmp_path; the fake embedder stands in for the model."""
from __future__ import annotations

import io
import logging
import os
import random
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import docx
import pytest

import assistant.ingest as ingest
import assistant.pipeline as pipeline
from assistant import index_build
from assistant.chunking import chunk_document, spans
from assistant.cli import main
from assistant.config import Settings
from assistant.errors import ConfigError, IngestError
from assistant.ingest import read_document, scan_folder
from assistant.pipeline import Assistant
from assistant.testing import FakeEmbedder
from assistant.types import Document
from test_chunking import assert_well_formed
from test_ingest import make_pdf

SIZE = 360  # the default chunk size
ONE_LINE = ("简介。 ## 数据 初创公司缺少训练数据时，可以通过数据增强和合作共享来解决。 "
            "## 算力 训练大模型需要大量算力，可以租用云服务器或申请科研算力资助。 "
            "## 人才 招聘有经验的工程师很难，可以和高校合作培养。")
PROSE = "大模型创业公司需要关注数据、算力和人才三个方面。The quick brown fox jumps over the lazy dog. "


@pytest.fixture(autouse=True)
def no_settings_from_outside(monkeypatch):
    for name in list(os.environ):
        if name.startswith("ASSISTANT_") and name != "ASSISTANT_HOME":  # the model cache, for the e2e test
            monkeypatch.delenv(name)


def write_docx(path: Path, *pieces: bytes, extra: dict[str, bytes] | None = None) -> Path:
    """A .docx (python-docx's own, one paragraph) with ``pieces`` streamed into word/document.xml before its
    section properties, and ``extra`` members added: a bomb is written in 1 MB pieces, never held whole."""
    base = io.BytesIO()
    made = docx.Document()
    made.add_paragraph("简介")
    made.save(base)
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            data = source.read(member)
            with target.open(member.filename, "w") as out:
                if member.filename == "word/document.xml":
                    cut = data.rindex(b"<w:sectPr")
                    out.write(data[:cut])
                    for piece in pieces:
                        out.write(piece)
                    out.write(data[cut:])
                else:
                    out.write(data)
        for name, data in (extra or {}).items():
            target.writestr(name, data)
    return path


def paragraph(text: str) -> bytes:
    return f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>".encode("utf-8")


@pytest.fixture
def docx_never_parsed(monkeypatch):
    """python-docx must not be reached: the zip checks refuse the file first."""
    def parse(*args, **kwargs):
        raise AssertionError("python-docx was asked to inflate a zip bomb")
    monkeypatch.setattr(ingest, "docx", SimpleNamespace(Document=parse))


# -- 0. zip bombs and the text cap ------------------------------------------------------------------

def test_a_docx_member_that_expands_a_thousand_times_is_refused_before_python_docx_reads_it(tmp_path,
                                                                                            docx_never_parsed):
    spaces = b" " * (1 << 20)
    path = write_docx(tmp_path / "bomb.docx", b"<!--", *[spaces] * 24, b"-->")
    assert path.stat().st_size < 100_000
    with pytest.raises(IngestError) as refused:
        read_document(path, tmp_path)
    message = str(refused.value)
    assert message.startswith("bomb.docx: the .docx is a zip bomb: word/document.xml expands")
    assert "the limit is 100 times" in message and "\n" not in message


def test_a_docx_that_unpacks_past_its_limit_is_refused_before_python_docx_reads_it(tmp_path, monkeypatch,
                                                                                   docx_never_parsed):
    """Each member under the ratio limit (about 7 times), but the whole unpacks past what the settings allow."""
    monkeypatch.setenv("ASSISTANT_MAX_DOCUMENT_CHARS", "1000")
    noise = bytes(random.Random(0).choices(b"ab", k=1 << 20))
    path = write_docx(tmp_path / "big.docx", extra={"word/media/noise.bin": noise})
    assert path.stat().st_size < 300_000
    with pytest.raises(IngestError) as refused:
        read_document(path, tmp_path, max_bytes=300_000)
    assert "the .docx unpacks to 1.8 MB; the limit is 312.5 KB" in str(refused.value)
    assert "ASSISTANT_MAX_DOCUMENT_CHARS" in str(refused.value)


def test_a_small_docx_that_expands_to_more_text_than_the_limit_is_refused_in_one_line(tmp_path, monkeypatch):
    """The 172 KB .docx that became 8.4 million characters, scaled down: the cap, not the ratio, refuses it."""
    monkeypatch.setenv("ASSISTANT_MAX_DOCUMENT_CHARS", "100000")
    path = write_docx(tmp_path / "many.docx", *[paragraph("初创公司缺少训练数据。" * 1000)] * 12)
    with pytest.raises(IngestError) as refused:
        read_document(path, tmp_path)
    assert str(refused.value) == ("many.docx: the text is 132,026 characters; the limit is 100,000 characters a "
                                  "document (ASSISTANT_MAX_DOCUMENT_CHARS)")


def test_the_text_cap_applies_to_every_type_and_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSISTANT_MAX_DOCUMENT_CHARS", "1000")
    (tmp_path / "fits.txt").write_text("a" * 1000, "utf-8")
    (tmp_path / "long.md").write_text("数" * 1001, "utf-8")
    (tmp_path / "long.pdf").write_bytes(make_pdf(["Hello world " * 30] * 5))
    documents, skipped = scan_folder(tmp_path)
    assert [d.source for d in documents] == ["fits.txt"]
    reasons = dict(skipped)
    assert reasons["long.md"] == ("the text is 1,001 characters; the limit is 1,000 characters a document "
                                  "(ASSISTANT_MAX_DOCUMENT_CHARS)")
    assert reasons["long.pdf"].startswith("the text is more than 1,000 characters")
    assert read_document(tmp_path / "long.md", tmp_path, max_chars=2000).text == "数" * 1001  # a caller's own limit


def test_the_document_text_cap_is_a_setting_of_five_million_characters(monkeypatch):
    assert Settings().max_document_chars == 5_000_000 == ingest.max_document_chars()
    monkeypatch.setenv("ASSISTANT_MAX_DOCUMENT_CHARS", "20_000_000")
    assert Settings.from_env().max_document_chars == 20_000_000 == ingest.max_document_chars()
    with pytest.raises(ConfigError, match="ASSISTANT_MAX_DOCUMENT_CHARS must be a positive number"):
        Settings.from_env({"ASSISTANT_MAX_DOCUMENT_CHARS": "0"})


def test_a_pdf_flate_bomb_is_refused(tmp_path):
    """A content stream inflating to 80 MB from about 80 KB: pypdf's own limit (75 MB) refuses it."""
    squeeze = zlib.compressobj(9)
    stream = b"".join(squeeze.compress(b" " * (1 << 20)) for _ in range(80)) + squeeze.flush()
    pdf = bytearray(make_pdf(["placeholder"]))
    start = pdf.index(b"<< /Length")
    end = pdf.index(b"endstream", start) + len(b"endstream")
    pdf[start:end] = b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream)
    path = tmp_path / "bomb.pdf"
    path.write_bytes(bytes(pdf))  # the xref offsets are stale now: pypdf finds the objects by scanning
    with pytest.raises(IngestError) as refused:
        read_document(path, tmp_path)
    assert str(refused.value).startswith("bomb.pdf: corrupt PDF (")
    assert "limit" in str(refused.value).lower()


def test_the_upload_path_refuses_a_docx_bomb_with_its_reason_and_keeps_it_out_of_the_corpus(tmp_path):
    from assistant.ui import ChatHandlers

    corpus, uploads = tmp_path / "corpus", tmp_path / "uploads"
    corpus.mkdir()
    uploads.mkdir()
    (corpus / "good.md").write_text("# 园艺\n\n番茄需要充足的阳光。", "utf-8")
    write_docx(uploads / "bomb.docx", b"<!--", *[b" " * (1 << 20)] * 24, b"-->")
    handlers = ChatHandlers(Assistant(Settings(corpus=corpus, index=tmp_path / "index"), embedder=FakeEmbedder()),
                            stream_delay=0)
    report, _ = handlers.add_files([str(uploads / "bomb.docx")])
    assert "Nothing added" in report and "bomb.docx" in report and "zip bomb" in report
    assert sorted(p.name for p in corpus.iterdir()) == ["good.md"]


class _Stop(Exception):
    pass


class _StopAtFirstEmbedding(FakeEmbedder):
    def embed_passages(self, texts, titles, units):
        raise _Stop


def test_a_build_that_will_take_more_than_a_few_minutes_is_announced_with_an_estimate_before_embedding(
        tmp_path, caplog):
    text = PROSE * 7000  # 560,000 characters on one line: 1,400 chunks, 3.6 min at 6.5 chunks/s
    document = Document("long.txt", text, "0" * 64)
    with caplog.at_level(logging.WARNING, "assistant.index_build"), pytest.raises(_Stop):
        index_build.build_index(tmp_path / "index", [document], _StopAtFirstEmbedding(), chunk_size=SIZE,
                                chunk_overlap=0)
    chunks = len(chunk_document(document, SIZE))
    minutes = round(chunks / index_build.CHUNKS_PER_SECOND / 60)
    assert [r.getMessage() for r in caplog.records] == [
        f"embedding {chunks:,} chunks will take about {minutes} min (at 6.5 chunks/s, the built-in model on 2 CPU "
        f"cores); the largest document is long.txt with {chunks:,} chunks"]


# -- 1. long lines ----------------------------------------------------------------------------------

def test_a_one_line_page_with_mid_line_headings_keeps_each_sentence_as_text():
    document = Document("page.md", ONE_LINE, "0" * 64)
    chunks = chunk_document(document, SIZE)
    assert_well_formed(document, chunks)
    data = next(c for c in chunks if c.text.startswith("## 数据"))
    assert [(u.kind, data.text[u.start:u.end]) for u in spans(data.text)] == [
        ("heading", "## 数据"), ("text", "初创公司缺少训练数据时，可以通过数据增强和合作共享来解决。")]


@pytest.mark.parametrize("size", [SIZE, 100])
def test_chunks_respect_the_size_whatever_the_line_structure(size):
    """Seeded random texts of headings (line-start, mid-line, long), bold items, sentences, long runs,
    blank lines and fences, on one line or many: every chunk within the size, offsets exact."""
    rng = random.Random(20)
    word = "数据增强可以解决问题" * 8 + "and a long English clause without an end "
    parts = ["## 数据 ", "# ", "\n# Title ", "\n**1. 什么是过拟合？**\n", "**2. " + word * 3 + "**", "。", ". ", "，",
             "\n", "\n\n", " ", word, word * 5, "简介。 ## 算力 ", "x" * 500, "\n```\ncode line\n```\n"]
    for _ in range(150):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(1, 40)))
        document = Document("random.md", text, "0" * 64)
        chunks = chunk_document(document, size)
        assert_well_formed(document, chunks)
        prose = [c for c in chunks if "```" not in c.text]  # a code block's limit is 3 x the size
        assert all(len(c.text) <= max(size, 200) for c in prose), (text, [len(c.text) for c in prose])


def test_a_long_line_that_starts_like_a_heading_is_cut_to_size():
    for text in ("# " + PROSE * 100, "**1. " + PROSE * 100 + "**", "# 标题\n\n" + "很" * 358 + "。"):
        document = Document("long.md", text, "0" * 64)
        chunks = chunk_document(document, SIZE)
        assert_well_formed(document, chunks)
        assert max(len(c.text) for c in chunks) <= SIZE


def test_a_one_line_2_mb_txt_is_cut_to_size_with_exact_offsets(tmp_path):
    """The probe's one-line 2 MB file: a flattened page (mid-line headings) and prose, no newline at all."""
    path = tmp_path / "one-line.txt"
    path.write_text(((ONE_LINE + " ") * 5 + PROSE * 20) * 540, "utf-8")
    assert path.stat().st_size > 2_000_000 and b"\n" not in path.read_bytes()
    document = read_document(path, tmp_path)
    chunks = chunk_document(document, SIZE)
    assert_well_formed(document, chunks)
    print(f"\none-line {path.stat().st_size:,} bytes: {len(chunks):,} chunks, largest "
          f"{max(len(c.text) for c in chunks)} characters")
    assert max(len(c.text) for c in chunks) <= SIZE


@pytest.mark.e2e
def test_a_one_line_page_answers_from_the_sentence_under_its_mid_line_heading(real_settings, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "startup.md").write_text(ONE_LINE, "utf-8")
    assistant = Assistant(real_settings.with_(corpus=corpus, index=tmp_path / "index"))
    assistant.build()
    answer = assistant.ask("初创公司缺少训练数据怎么办？")
    assert not answer.abstained, answer.text
    assert "数据增强和合作共享" in answer.text and answer.text.strip() != "简介。"
    assert "数据增强和合作共享" in answer.citations[0].quote


# -- 2. a removed document leaves nothing behind ----------------------------------------------------

def test_an_incremental_build_leaves_nothing_of_a_removed_document_in_any_index_file(tmp_path):
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    (corpus / "garden.md").write_text("# 园艺\n\n番茄需要充足的阳光和每天浇水。", "utf-8")
    (corpus / "secret.md").write_text("# 保险柜\n\n保险柜密码是 7302915846，旁边放着紫罗兰墨水瓶。", "utf-8")
    assistant = Assistant(Settings(corpus=corpus, index=index), embedder=FakeEmbedder())
    assistant.build()
    (corpus / "secret.md").unlink()
    report = assistant.build()
    assert (report.reused_documents, report.removed_documents, report.embedded_chunks) == (1, 1, 0)
    for secret in ("7302915846", "紫罗兰", "保险柜"):
        forms = [secret.encode("utf-8"), secret.encode("unicode_escape")]
        holding = [p.name for p in index.rglob("*") if p.is_file() and any(f in p.read_bytes() for f in forms)]
        assert holding == [], f"{secret!r} is still in {holding}"
    lexical = report.index.lexical
    assert lexical.contains("番茄") and not lexical.contains("7302915846")
    assert lexical.scores("番茄 阳光").max() > 0


# -- 4. progress on the CLI --------------------------------------------------------------------------

def test_index_build_on_the_cli_shows_chunking_embedding_and_indexing_as_they_start(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "make_embedder", lambda settings, show_progress=False: FakeEmbedder())
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "long.txt").write_text(PROSE * 300, "utf-8")
    assert main(["index", "build", "--corpus", str(corpus), "--index", str(tmp_path / "index")]) == 0
    out, err = capsys.readouterr()
    chunks = len(chunk_document(read_document(corpus / "long.txt", corpus), SIZE))
    assert f"1 documents, {chunks} chunks" in out
    assert err.splitlines() == ["reading: 0/1 files", "reading: 1/1 files", "chunking: 0/1 documents",
                                "chunking: 1/1 documents",
                                f"embedding: {chunks}/{chunks} chunks", f"indexing words: 0/{chunks} chunks",
                                f"indexing words: {chunks}/{chunks} chunks"]


@pytest.mark.slow
def test_a_30_mb_txt_is_refused_at_the_text_cap_with_progress_and_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "make_embedder", lambda settings, show_progress=False: FakeEmbedder())
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "small.md").write_text("# 园艺\n\n番茄需要充足的阳光。", "utf-8")
    with open(corpus / "big.txt", "w", encoding="utf-8") as f:
        for _ in range(30 * 1024 * 1024 // len(PROSE.encode("utf-8"))):
            f.write(PROSE)
    assert main(["index", "build", "--corpus", str(corpus), "--index", str(tmp_path / "index")]) == 0
    out, err = capsys.readouterr()
    assert "skipped big.txt: the text is " in out and "the limit is 5,000,000 characters" in out
    assert err.startswith("reading: 0/2 files\n") and "reading: 2/2 files\n" in err
    assert [line for line in err.splitlines() if not line.startswith("reading: ")][:2] == [
        "chunking: 0/1 documents", "chunking: 1/1 documents"]
