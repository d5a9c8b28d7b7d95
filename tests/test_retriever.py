"""Tests for assistant.retriever: dense + lexical fusion over a small index built with the fake embedder."""
from __future__ import annotations

import hashlib

import faiss
import numpy as np
import pytest

from assistant.index_store import LoadedIndex, build_index, load_index
from assistant.retriever import RRF_K, HybridRetriever
from assistant.types import Document

TEXTS = {
    "garden.md": "# 园艺\n\n番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。",
    "cooking.md": "# Cooking\n\nBoil the pasta in salted water for nine minutes. Drain and add olive oil.",
    "network.md": "# 网络\n\n路由器重启后需要等待两分钟。Wi-Fi password is printed on the router label.",
    "history.txt": "The printing press was invented around 1440. It changed how knowledge spread in Europe.",
    "space.txt": "月球绕地球一周大约需要二十七天。火星上有太阳系最高的火山。",
}


@pytest.fixture
def index(tmp_path, fake_embedder) -> LoadedIndex:
    docs = [Document(s, t, hashlib.sha256(t.encode()).hexdigest()) for s, t in TEXTS.items()]
    build_index(tmp_path / "index", docs, fake_embedder, chunk_size=200, chunk_overlap=0)
    return load_index(tmp_path / "index")


def all_cosines(index: LoadedIndex, vector: np.ndarray) -> np.ndarray:
    return index.vectors.reconstruct_n(0, index.vectors.ntotal) @ vector


@pytest.mark.parametrize("query, source", [
    ("番茄 浇水 阳光", "garden.md"),
    ("how long to boil pasta in salted water", "cooking.md"),
    ("路由器 重启", "network.md"),
    ("printing press invented", "history.txt"),
    ("火星 火山", "space.txt"),
])
def test_query_with_words_of_a_document_ranks_it_first(index, fake_embedder, query, source):
    found = HybridRetriever(index, fake_embedder).search(query, k=3)
    assert found.hits[0].chunk.source == source
    assert found.hits[0].lexical_rank == 0
    scores = [h.score for h in found.hits]
    assert scores == sorted(scores, reverse=True)


def test_fused_score_is_the_sum_of_reciprocal_ranks(index, fake_embedder):
    found = HybridRetriever(index, fake_embedder, fusion="rrf", dense_weight=1.0, lexical_weight=2.0).search(
        "番茄 浇水", k=5)
    for hit in found.hits:
        expected = (1.0 / (RRF_K + hit.dense_rank + 1) if hit.dense_rank is not None else 0.0) + (
            2.0 / (RRF_K + hit.lexical_rank + 1) if hit.lexical_rank is not None else 0.0)
        assert hit.score == pytest.approx(expected)


def test_score_fusion_adds_scaled_bm25_to_the_cosine(index, fake_embedder):
    query = "番茄 浇水"
    bm25 = index.lexical.scores(query)
    found = HybridRetriever(index, fake_embedder, lexical_weight=0.5).search(query, k=5)
    assert found.hits
    for hit in found.hits:
        assert hit.score == pytest.approx(hit.dense_score + 0.5 * float(bm25[hit.chunk_id]) / float(bm25.max()), abs=1e-5)
    assert [h.score for h in found.hits] == sorted((h.score for h in found.hits), reverse=True)


def test_unknown_fusion_is_refused(index, fake_embedder):
    with pytest.raises(ValueError, match="fusion"):
        HybridRetriever(index, fake_embedder, fusion="max")


def test_best_dense_is_the_highest_cosine(index, fake_embedder):
    query = "Wi-Fi password router label"
    vector = fake_embedder.embed_queries([query])[0]
    found = HybridRetriever(index, fake_embedder).search(query, k=2)
    assert found.best_dense == pytest.approx(float(all_cosines(index, vector).max()), abs=1e-5)
    for hit in found.hits:
        assert hit.dense_score == pytest.approx(float(all_cosines(index, vector)[hit.chunk_id]), abs=1e-5)


def test_lexical_only_hit_still_gets_its_dense_score(index, fake_embedder):
    target = next(i for i, c in enumerate(index.chunks) if "printing press" in c.text)
    garden = next(c for c in index.chunks if c.source == "garden.md")
    # The words match one chunk, the vector another: with a dense depth of 1 the word match is lexical-only.
    vector = fake_embedder.embed_queries([garden.text])[0]
    found = HybridRetriever(index, fake_embedder, depth=1).search("printing press", k=3, query_vector=vector)
    assert found.hits[0].chunk == garden or found.hits[1].chunk == garden
    hit = next(h for h in found.hits if h.chunk_id == target)
    assert hit.dense_rank is None and hit.lexical_rank == 0
    assert hit.dense_score == pytest.approx(float(all_cosines(index, vector)[target]), abs=1e-5)
    assert 0.0 < hit.dense_score < 0.99


@pytest.mark.parametrize("k", [1, 2, 4])
def test_k_is_respected(index, fake_embedder, k):
    found = HybridRetriever(index, fake_embedder).search("水 water", k=k)
    assert len(found.hits) == k
    assert len({h.chunk_id for h in found.hits}) == k


def test_k_larger_than_the_index_returns_every_chunk(index, fake_embedder):
    found = HybridRetriever(index, fake_embedder).search("anything at all", k=100)
    assert sorted(h.chunk_id for h in found.hits) == list(range(len(index.chunks)))


def test_query_vector_is_used_when_given(index, fake_embedder):
    space = next(c for c in index.chunks if c.source == "space.txt")
    vector = fake_embedder.embed_queries([space.text])[0]
    found = HybridRetriever(index, fake_embedder).search("zzz-no-lexical-match", k=1, query_vector=vector)
    assert found.hits[0].chunk == space and found.hits[0].dense_rank == 0
    assert found.hits[0].lexical_rank is None
    assert found.best_dense == pytest.approx(1.0, abs=1e-5)


def test_empty_index_returns_no_hits(index, fake_embedder):
    empty = LoadedIndex(index.folder, index.manifest, [], [], faiss.IndexFlatIP(fake_embedder.dimension),
                        index.lexical)
    found = HybridRetriever(empty, fake_embedder).search("番茄", k=5)
    assert found.hits == [] and found.best_dense == 0.0


def test_depth_must_be_positive(index, fake_embedder):
    with pytest.raises(ValueError, match="depth"):
        HybridRetriever(index, fake_embedder, depth=0)
