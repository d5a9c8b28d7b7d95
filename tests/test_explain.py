"""Tests for "why this passage": the retrieval scores on each Hit, Citation.why, explain.py, ``ask --explain/--json``."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import assistant.pipeline as pipeline
from assistant.cli import main
from assistant.explain import why_html, why_text
from assistant.index_store import LoadedIndex, build_index, load_index
from assistant.lexical import tokenize
from assistant.reader import ExtractiveReader, Passages
from assistant.retriever import HybridRetriever
from assistant.span_model import SpanScore
from assistant.span_reader import SpanReader
from assistant.testing import FakeEmbedder
from assistant.types import Answer, Chunk, Citation, Document, Hit, Why
from test_retriever import TEXTS  # the retriever tests' corpus (tests/ is on the path)

QUERIES = ["番茄 浇水 阳光", "how long to boil pasta in salted water", "路由器 重启 password", "火星 火山", "印刷 press"]


@pytest.fixture
def index(tmp_path, fake_embedder) -> LoadedIndex:
    docs = [Document(s, t, hashlib.sha256(t.encode()).hexdigest()) for s, t in TEXTS.items()]
    build_index(tmp_path / "index", docs, fake_embedder, chunk_size=200, chunk_overlap=0)
    return load_index(tmp_path / "index")


# -- retrieval -------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", QUERIES)
def test_hits_carry_their_scores_ranks_and_matched_terms(index, fake_embedder, query):
    vector = fake_embedder.embed_queries([query])[0]
    found = HybridRetriever(index, fake_embedder).search(query, k=len(index.chunks))
    bm25 = index.lexical.scores(query)
    query_tokens = list(dict.fromkeys(tokenize(query)))
    assert [h.rank for h in found.hits] == list(range(1, len(found.hits) + 1))
    assert [h.score for h in found.hits] == sorted((h.score for h in found.hits), reverse=True)
    for hit in found.hits:
        chunk_vector = index.dense_vectors(np.array([hit.chunk_id], dtype=np.int64))[0]
        assert hit.dense_score == pytest.approx(float(chunk_vector @ vector), abs=1e-5)
        assert hit.lexical_score == pytest.approx(float(bm25[hit.chunk_id]), abs=1e-5)
        chunk_tokens = set(tokenize(hit.chunk.text))
        assert hit.matched_terms == tuple(t for t in query_tokens if t in chunk_tokens)  # query order, once each
        assert (hit.lexical_score > 0) == bool(hit.matched_terms)
    ranked = [h for h in found.hits if h.lexical_rank is not None]
    assert ranked and sorted(ranked, key=lambda h: h.lexical_rank) == sorted(ranked, key=lambda h: -h.lexical_score)
    assert next(h for h in found.hits if h.dense_rank == 0).dense_score == pytest.approx(found.best_dense)


def test_a_chunk_without_query_terms_scores_zero_bm25(index, fake_embedder):
    found = HybridRetriever(index, fake_embedder).search("番茄 浇水", k=len(index.chunks))
    unrelated = [h for h in found.hits if not set(tokenize("番茄 浇水")) & set(tokenize(h.chunk.text))]
    assert unrelated
    for hit in unrelated:
        assert hit.lexical_score == 0.0 and hit.matched_terms == () and hit.lexical_rank is None
    top = found.hits[0]
    assert top.chunk.source == "garden.md" and top.lexical_score > 0 and {"番茄", "浇水"} <= set(top.matched_terms)


def test_hit_why_gives_one_based_ranks():
    chunk = Chunk("a.md", 0, 3, "abc")
    assert Hit(0, chunk, 0.9, 0.8, 0, 2, 3.5, ("abc",), 1).why(1.5) == Why(0.8, 1, 3.5, 3, ("abc",), 1, 1.5)
    assert Hit(0, chunk, 0.9, 0.8, None, None, 0.0, (), 4).why() == Why(0.8, None, 0.0, None, (), 4, None)


# -- readers ---------------------------------------------------------------------------------------

def _passages(index, embedder, query, k=5) -> Passages:
    vector = embedder.embed_queries([query])[0]
    found = HybridRetriever(index, embedder).search(query, k, query_vector=vector)
    return Passages(query, vector, found.hits, found.best_dense, index.lines, index.pages, index.units)


def _hit_of(citation: Citation, hits: list[Hit]) -> Hit:
    (hit,) = [h for h in hits if h.chunk.source == citation.source
              and h.chunk.start <= citation.start and citation.end <= h.chunk.end]
    return hit


def test_extractive_citations_explain_the_hit_they_quote(index, fake_embedder):
    passages = _passages(index, fake_embedder, "路由器 重启 password")
    reading = ExtractiveReader(fake_embedder, min_evidence=0.01).read(passages)
    assert reading.citations
    for c in reading.citations:
        assert c.why == _hit_of(c, passages.hits).why() and c.why.answerability is None
    related = ExtractiveReader(fake_embedder, min_evidence=0.99).read(passages).related
    assert related and all(c.why == _hit_of(c, passages.hits).why() for c in related)


TEXT = "公司成立于1987年。总部位于深圳市龙岗区，员工约二十万人。"
SPAN = TEXT.index("深圳市龙岗区")


class FixedReader(SpanReader):
    """The span reader with the model's scores fixed (no model)."""

    def __init__(self, scores, threshold=0.0):
        super().__init__(FakeEmbedder(), Path("unused"), threshold=threshold)
        self.gate._loaded = (None, None, threshold)
        self.gate.score = lambda passages, count, first=0: scores[first:min(count, len(passages.hits))]


def _model_passages(evidence: float) -> Passages:
    other = Chunk("b.txt", 0, 11, "无关的内容，没有答案。")
    chunk = Chunk("a.txt", 100, 100 + len(TEXT), TEXT)
    hits = [Hit(0, other, 1.0, 0.6, 0, None, 0.0, (), 1), Hit(1, chunk, 0.9, 0.5, 1, 0, 2.5, ("总部",), 2)]
    return Passages("介绍一下总部。", np.ones(64, np.float32) / 8, hits, evidence, [3, 7], {})


def test_strong_evidence_the_model_read_only_the_top_passage():
    reader = FixedReader([SpanScore(0, 2, -9.0, 3.0, 0.01), SpanScore(SPAN, SPAN + 6, 9.0, 1.0, 0.9)], threshold=1.0)
    reading = reader.read(_model_passages(0.6))
    assert reading.citations[0].source == "b.txt"
    for c in reading.citations:
        assert c.why.answerability == (-12.0 if c.why.fused_rank == 1 else None)


def test_weak_evidence_the_model_read_the_top_passages():
    passages = _model_passages(0.4)
    reading = FixedReader([SpanScore(0, 2, 1.0, 3.0, 0.1), SpanScore(SPAN, SPAN + 6, 9.0, 1.0, 0.9)]).read(passages)
    assert not reading.abstained and reading.span is not None
    (c,) = reading.citations
    assert c.source == "a.txt" and c.why == passages.hits[1].why(8.0)
    # The model found no answer: the related passages say what it gave each.
    abstained = FixedReader([SpanScore(0, 2, 1.0, 3.0, 0.1), SpanScore(0, 2, 1.0, 4.0, 0.1)], threshold=1.0).read(
        passages)
    assert abstained.abstained
    assert {c.source: c.why.answerability for c in abstained.related} == {"b.txt": -2.0, "a.txt": -3.0}


# -- Answer.to_dict, explain.py --------------------------------------------------------------------

WHY = Why(0.6123, 1, 7.3109, 2, ("训练", "数据"), 1, 2.37)


def test_answer_json_has_why_per_citation():
    cited = Citation(1, "a.md", 0, 3, "abc", 0.5, 1, None, WHY)
    plain = Citation(2, "b.md", 0, 3, "xyz", 0.4, 1, None, replace(WHY, answerability=None, lexical_rank=None))
    row = Answer("q", "abc [1]", False, (cited, plain)).to_dict()
    first, second = row["citations"]
    assert set(first) == {"n", "source", "start", "end", "quote", "score", "line", "page", "why"}
    assert first["why"] == {"dense": 0.6123, "dense_rank": 1, "lexical": 7.3109, "lexical_rank": 2,
                            "matched_terms": ["训练", "数据"], "fused_rank": 1, "answerability": 2.37}
    assert "answerability" not in second["why"] and second["why"]["lexical_rank"] is None
    assert Answer("q", "", True, related=(replace(cited, why=None),)).to_dict()["related"][0]["why"] is None


def test_why_text():
    assert why_text(WHY) == "cosine 0.612 (dense #1) · BM25 7.31 (#2; matched: 训练, 数据) · fused #1 · answerability +2.4"
    assert why_text(Why(0.3, None, 0.0, None, (), 3, -10.25)) == "cosine 0.300 · BM25 0.00 · fused #3 · answerability -10.2"
    assert why_text(Why(0.3, 4, 1.5, None, ("x",), 2)) == "cosine 0.300 (dense #4) · BM25 1.50 (matched: x) · fused #2"


def test_why_html_is_a_details_block_with_every_value_escaped():
    html = why_html(replace(WHY, matched_terms=("<script>", "a&b")))
    assert html.startswith('<details class="why"><summary>why this passage</summary>') and html.endswith("</details>")
    assert "&lt;script&gt;" in html and "a&amp;b" in html and "<script>" not in html
    for part in ("cosine 0.612 (dense #1)", "fused #1", "answerability +2.4"):
        assert f"<li>{part}</li>" in html
    assert "answerability" not in why_html(replace(WHY, answerability=None))


# -- the command line ------------------------------------------------------------------------------

@pytest.fixture
def cli_index(monkeypatch, tmp_path, capsys) -> Path:
    for name in list(os.environ):
        if name.startswith("ASSISTANT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.01")
    monkeypatch.setattr(pipeline, "make_embedder", lambda settings, show_progress=False: FakeEmbedder())
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for source, text in TEXTS.items():
        (corpus / source).write_text(text, "utf-8")
    assert main(["index", "build", "--corpus", str(corpus), "--index", str(tmp_path / "index")]) == 0
    capsys.readouterr()
    return tmp_path / "index"


def test_ask_json_explains_every_citation(cli_index, capsys):
    assert main(["ask", "--json", "--index", str(cli_index), "番茄 浇水"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["citations"]
    top = row["citations"][0]
    assert top["source"] == "garden.md"
    assert top["why"]["fused_rank"] == 1 and top["why"]["lexical"] > 0
    assert {"番茄", "浇水"} <= set(top["why"]["matched_terms"])
    for c in row["citations"]:
        assert set(c["why"]) == {"dense", "dense_rank", "lexical", "lexical_rank", "matched_terms", "fused_rank"}


def test_ask_explain_prints_why_under_each_source(cli_index, capsys):
    assert main(["ask", "--explain", "--index", str(cli_index), "番茄 浇水"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sources = [k for k, line in enumerate(lines) if re.match(r"\[\d+\] ", line)]
    assert sources
    for k in sources:
        assert re.fullmatch(r"    why: cosine -?\d\.\d{3}( \(dense #\d+\))? · BM25 \d+\.\d\d( \(.*\))? · fused #\d+",
                            lines[k + 1]), lines[k + 1]
    assert "BM25" in lines[sources[0] + 1] and "matched: 番茄, 浇水" in lines[sources[0] + 1]
    assert main(["ask", "--index", str(cli_index), "番茄 浇水"]) == 0
    assert "why:" not in capsys.readouterr().out


# -- the real model on the real corpus -------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("question", [
    "What can be done to speed up feeding data into a large model during training?",  # strong evidence
    "训练时某些类别样本特别多、其他很少，会带来什么影响？",  # below the cosine threshold: the model decides
])
def test_span_reader_citations_carry_the_models_margin(real_assistant, real_index, question):
    reader = real_assistant.reader
    assert isinstance(reader, SpanReader)
    answer = real_assistant.ask(question)
    assert not answer.abstained and answer.citations[0].why.answerability is not None
    vector = real_assistant.embedder.embed_queries([question])[0]
    found = HybridRetriever(load_index(real_index), real_assistant.embedder).search(
        question, real_assistant.settings.top_k, query_vector=vector)
    read = 1 if found.best_dense >= reader.gate.min_evidence else reader.gate.candidates  # as documented
    margins = [s.margin for s in reader.gate.score(Passages(question, vector, found.hits, found.best_dense, [], {}), read)]
    for c in answer.citations:
        hit = found.hits[c.why.fused_rank - 1]
        assert c.why == hit.why(c.why.answerability) and hit.chunk.start <= c.start and c.end <= hit.chunk.end
        if c.why.fused_rank <= read:
            assert c.why.answerability == pytest.approx(margins[c.why.fused_rank - 1], abs=1e-3)
        else:
            assert c.why.answerability is None
