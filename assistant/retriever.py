"""Dense (inner product on unit vectors, in the index's vector store) + lexical (BM25) search, fused."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .embedding import Embedder
from .index_store import LoadedIndex
from .types import Hit

RRF_K = 60


@dataclass(frozen=True)
class Retrieval:
    hits: list[Hit]
    best_dense: float  # cosine similarity of the nearest chunk: the evidence that the corpus covers the query


class HybridRetriever:
    """Search one loaded index: dense and BM25 candidates (top ``depth`` of each), fused.

    ``fusion="score"`` (default): cosine + ``lexical_weight`` * BM25 / max BM25 of the query. On our
    paraphrased eval set the dense side alone finds the right chunk first for 92% of questions and
    BM25 alone for 56%, so BM25 only breaks near-ties (see BENCHMARKS.md). ``fusion="rrf"``:
    reciprocal rank fusion, ``dense_weight / (60 + rank)`` + ``lexical_weight / (60 + rank)``.
    """

    def __init__(self, index: LoadedIndex, embedder: Embedder, depth: int = 50, fusion: str = "score",
                 dense_weight: float = 1.0, lexical_weight: float = 0.05) -> None:
        if depth <= 0:
            raise ValueError("depth must be positive")
        fusions = {"score": self._fuse_scores, "rrf": self._fuse_ranks}
        if fusion not in fusions:
            raise ValueError(f"fusion must be 'score' or 'rrf', not {fusion!r}")
        self.index = index
        self.embedder = embedder
        self.depth = depth
        self.fusion = fusion
        self.dense_weight = dense_weight
        self.lexical_weight = lexical_weight
        self._fuse = fusions[fusion]

    def search(self, query: str, k: int = 5, query_vector: np.ndarray | None = None,
               exclude: frozenset[str] = frozenset()) -> Retrieval:
        """Top ``k`` fused hits. ``exclude`` names documents to leave out, as if they were not indexed
        (benchmarks use it to ask a question without its own context)."""
        n = len(self.index.chunks)
        if n == 0:
            return Retrieval([], 0.0)
        if query_vector is None:
            query_vector = self.embedder.embed_queries([query])[0]
        chunks = self.index.chunks
        depth = min(self.depth, n)
        dense_ids, dense_scores = self.index.dense_search(np.asarray(query_vector, dtype=np.float32),
                                                          min(n, depth + (4 * depth if exclude else 0)))
        pairs = [(int(i), float(s)) for i, s in zip(dense_ids, dense_scores)
                 if chunks[i].source not in exclude][:depth]
        if not pairs:
            return Retrieval([], 0.0)
        dense = {i: (rank, s) for rank, (i, s) in enumerate(pairs)}
        bm25 = self.index.lexical.scores(query)
        if exclude:
            bm25 = bm25.copy()
            bm25[[i for i, c in enumerate(chunks) if c.source in exclude]] = 0.0
        lexical: dict[int, int] = {}
        if bm25.any():
            top = np.argpartition(-bm25, depth - 1)[:depth] if depth < n else np.arange(n)
            top = top[np.argsort(-bm25[top], kind="stable")]
            lexical = {int(i): rank for rank, i in enumerate(top) if bm25[i] > 0}
        missing = [i for i in lexical if i not in dense]
        if missing:  # a lexical-only candidate: its cosine is still needed (for fusion and as evidence)
            extra = self.index.dense_vectors(np.asarray(missing, dtype=np.int64)) @ query_vector
            dense.update({i: (None, float(s)) for i, s in zip(missing, extra)})
        fused = self._fuse(dense, lexical, bm25)
        best = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        terms = self.index.lexical.matched_terms(query, best)  # for the returned hits only: cheap
        hits = [Hit(i, chunks[i], fused[i], dense[i][1], dense[i][0], lexical.get(i), float(bm25[i]), terms[r], r + 1)
                for r, i in enumerate(best)]
        return Retrieval(hits, pairs[0][1])

    # The fusions: each dense candidate's fused score, from {chunk id: (dense rank or None, cosine)},
    # {chunk id: lexical rank} and the BM25 score of every chunk.
    def _fuse_scores(self, dense: dict[int, tuple[int | None, float]], lexical: dict[int, int],
                     bm25: np.ndarray) -> dict[int, float]:
        top_bm25 = float(bm25.max()) or 1.0
        return {i: self.dense_weight * cosine + self.lexical_weight * float(bm25[i]) / top_bm25
                for i, (_, cosine) in dense.items()}

    def _fuse_ranks(self, dense: dict[int, tuple[int | None, float]], lexical: dict[int, int],
                    bm25: np.ndarray) -> dict[int, float]:
        return {i: (self.dense_weight / (RRF_K + rank + 1) if rank is not None else 0.0) + (
                    self.lexical_weight / (RRF_K + lexical[i] + 1) if i in lexical else 0.0)
                for i, (rank, _) in dense.items()}
