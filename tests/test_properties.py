"""Property tests (hypothesis) on random unicode documents: from the file on disk to the citation shown,
``document_text[start:end] == quote`` always, and the line number is the line of ``start``.

test_chunking.py already holds the chunker's own properties (offsets, order, no overlap, size).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.chunking import chunk_document
from assistant.citations import cite, is_verbatim
from assistant.config import Settings
from assistant.ingest import read_document
from assistant.pipeline import Assistant
from assistant.testing import FakeEmbedder

_PIECES = st.sampled_from(["\n", "\n\n", "\r\n", "。", "！", "？", "；", ". ", "? ", "，", " ", "\t", "\u3000", "# ", "## 标题\n",
                           "- ", "1. ", "**问：", "答：", "```\n", "：\n", "<|bot|>", "\u200b", "e\u0301", "👩‍👩‍👧",
                           "🇨🇳", "\U00020000", "\ufe0f", "\u202e", "ا", "ש"])
_WORDS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)
_CJK = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=30)
_TEXT = st.lists(st.one_of(_PIECES, _WORDS, _CJK), min_size=1, max_size=60).map("".join).filter(
    lambda t: t.strip() and not t.startswith("\ufeff"))
_ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16"])


@settings(max_examples=150, deadline=None)
@given(text=_TEXT, encoding=_ENCODINGS, size=st.integers(20, 200), data=st.data())
def test_chunk_offsets_and_citation_quotes_of_files_on_disk(text, encoding, size, data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "doc.md"
        path.write_bytes(text.encode(encoding))
        document = read_document(path, Path(folder))
    assert document.text == text  # decoded exactly: offsets are into the text the user wrote
    for chunk in chunk_document(document, size, 0):
        assert document.text[chunk.start:chunk.end] == chunk.text
        start = data.draw(st.integers(0, len(chunk.text) - 1))
        end = data.draw(st.integers(start + 1, len(chunk.text)))
        line = document.text.count("\n", 0, chunk.start) + 1
        citation = cite(1, chunk, line, start, end, 0.5)
        assert document.text[citation.start:citation.end] == citation.quote and is_verbatim(citation, document.text)
        assert citation.line == document.text.count("\n", 0, citation.start) + 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_TEXT, min_size=1, max_size=3), data=st.data())
def test_every_answer_quotes_its_documents_exactly(texts, data):
    texts = [t + f"\n\n第{i}号文档。" for i, t in enumerate(texts)]  # distinct contents: duplicates are skipped
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "corpus"
        corpus.mkdir()
        for i, text in enumerate(texts):
            (corpus / f"doc{i}.md").write_text(text, "utf-8", newline="")
        assistant = Assistant(Settings(corpus=corpus, index=Path(folder) / "index", chunk_size=60,
                                       min_evidence=0.01), embedder=FakeEmbedder())
        assistant.build()
        documents = {f"doc{i}.md": text for i, text in enumerate(texts)}
        source = data.draw(st.sampled_from(sorted(documents)))
        text = documents[source]
        start = data.draw(st.integers(0, len(text) - 1))
        question = text[start:start + data.draw(st.integers(1, 40))]
        if not question.strip():
            question = data.draw(_TEXT)
        answer = assistant.ask(question[:2000])
    for c in (*answer.citations, *answer.related):
        assert documents[c.source][c.start:c.end] == c.quote
        assert c.line == documents[c.source].count("\n", 0, c.start) + 1
    for c in answer.citations:
        assert f"[{c.n}]" in answer.text
