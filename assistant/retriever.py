"""Dense (FAISS inner product on unit vectors) + lexical (BM25) search, fused by reciprocal rank."""
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
    """Search one loaded index. Both sides return their top ``depth``; ranks are fused with RRF.

    ``dense_weight`` and ``lexical_weight`` scale each side's 1/(k + rank) term.
    """

    def __init__(self, index: LoadedIndex, embedder: Embedder, depth: int = 50, dense_weight: float = 1.0,
                 lexical_weight: float = 1.0) -> None:
        if depth <= 0:
            raise ValueError("depth must be positive")
        self.index = index
        self.embedder = embedder
        self.depth = depth
        self.dense_weight = dense_weight
        self.lexical_weight = lexical_weight

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
        dense_scores, dense_ids = self.index.vectors.search(np.asarray([query_vector], dtype=np.float32),
                                                            min(n, depth + (4 * depth if exclude else 0)))
        pairs = [(int(i), float(s)) for i, s in zip(dense_ids[0], dense_scores[0])
                 if i >= 0 and chunks[i].source not in exclude][:depth]
        if not pairs:
            return Retrieval([], 0.0)
        dense = {i: (rank, s) for rank, (i, s) in enumerate(pairs)}
        lexical_scores = self.index.lexical.scores(query)
        if exclude:
            lexical_scores = lexical_scores.copy()
            lexical_scores[[i for i, c in enumerate(chunks) if c.source in exclude]] = 0.0
        lexical: dict[int, int] = {}
        if lexical_scores.any():
            top = np.argpartition(-lexical_scores, depth - 1)[:depth] if depth < n else np.arange(n)
            top = top[np.argsort(-lexical_scores[top], kind="stable")]
            lexical = {int(i): rank for rank, i in enumerate(top) if lexical_scores[i] > 0}
        fused: dict[int, float] = {}
        for i, (rank, _) in dense.items():
            fused[i] = self.dense_weight / (RRF_K + rank + 1)
        for i, rank in lexical.items():
            fused[i] = fused.get(i, 0.0) + self.lexical_weight / (RRF_K + rank + 1)
        best = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        missing = [i for i in best if i not in dense]
        if missing:  # a lexical-only hit: its dense score is still useful evidence
            extra = self.index.vectors.reconstruct_batch(np.asarray(missing, dtype=np.int64)) @ query_vector
            dense.update({i: (None, float(s)) for i, s in zip(missing, extra)})
        hits = [Hit(i, self.index.chunks[i], fused[i], dense[i][1], dense[i][0], lexical.get(i)) for i in best]
        return Retrieval(hits, pairs[0][1])
