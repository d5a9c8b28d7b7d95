"""Test doubles and the vector store conformance tests, for this package's tests and for new stores.

``FakeEmbedder`` stands in for the embedding model: deterministic, fast, no model files.

``VectorStoreConformance`` holds the tests every :class:`~assistant.vector_store.VectorStore` passes
(count, exact top-k search, stored vectors); ``PersistentStoreConformance`` adds those of a store that
is written in place (create, add, delete, delete_document, its manifest). A store's test class
subclasses one of them and gives the store (as Haystack's ``haystack.testing.document_store`` does)::

    class TestFaissStore(VectorStoreConformance):
        def make_store(self, tmp_path, ids, vectors, sources):
            ...  # a store holding these rows

    class TestMilvusStore(PersistentStoreConformance):
        def blank_store(self, tmp_path):
            ...  # a store that holds nothing yet

Only numpy is imported here; pytest finds the ``test_*`` methods in the subclasses.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from .embedding import normalize
from .vector_store import PersistentStore, VectorStore, store_manifest


class FakeEmbedder:
    """Hashes character unigrams and bigrams into a small vector: similar texts get similar vectors.

    Counts how many texts it embedded, so tests can prove what was (not) re-embedded.
    """

    model_id = "fake/char-ngrams"
    weights_sha256 = "0" * 64
    dtype = "fp32"

    def __init__(self, dimension: int = 64) -> None:
        self._dimension = dimension
        self.embedded: list[str] = []

    @property
    def dimension(self) -> int:
        return self._dimension

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self._dimension, dtype=np.float32)
        text = re.sub(r"\s+", " ", text.lower())
        grams = list(text) + [text[i:i + 2] for i in range(len(text) - 1)]
        for g in grams:
            h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little")
            v[h % self._dimension] += 1.0
        return v if v.any() else np.ones(self._dimension, dtype=np.float32)

    def embed_documents(self, texts, titles=None):
        self.embedded.extend(texts)
        return normalize(np.stack([self._vector(t) for t in texts])) if texts else np.zeros((0, self._dimension))

    def embed_queries(self, texts):
        return normalize(np.stack([self._vector(t) for t in texts]))

    def embed_passages(self, texts, titles, units):
        """Chunk vectors plus a vector per unit span (the unit's own text here; the real model pools tokens)."""
        chunks = self.embed_documents(texts, titles)
        return chunks, [normalize(np.stack([self._vector(t[s:e]) for s, e in u])) if u else
                        np.zeros((0, self._dimension), np.float32) for t, u in zip(texts, units)]


class PlainEmbedder(FakeEmbedder):
    """A fake embedder without ``embed_passages``: indexes get no unit vectors (like a user's own model)."""

    embed_passages = None


# -- the conformance tests ------------------------------------------------------------------------
ROWS = {  # source -> its chunks: the rows every conformance test starts from
    "fruit.md": ["苹果应放在阴凉处保存。", "香蕉不宜放进冰箱。", "葡萄要冷藏。"],
    "python.md": ["Python is a programming language.", "Lists and dicts are built in."],
    "travel.txt": ["出发前检查护照和签证。", "机场安检需要提前两小时到达。", "行李不要超过二十公斤。"],
}
QUERIES = ["苹果怎么保存", "What is Python?", "去机场要提前多久", "签证 护照"]


class VectorStoreConformance:
    """The tests every vector store passes. A subclass gives :meth:`make_store`; :meth:`row_ids` says
    which ids the store's rows have (chunk positions unless a subclass says otherwise)."""

    dimension = 32  # of the rows' vectors (FakeEmbedder's)

    def make_store(self, tmp_path: Path, ids: np.ndarray, vectors: np.ndarray, sources: list[str]) -> VectorStore:
        """A store holding exactly these rows (``ids`` from :meth:`row_ids`); called once per test."""
        raise NotImplementedError

    def row_ids(self, count: int) -> np.ndarray:
        return np.arange(count, dtype=np.int64)

    def rows(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        sources = [s for s, texts in ROWS.items() for _ in texts]
        vectors = FakeEmbedder(self.dimension).embed_documents([t for texts in ROWS.values() for t in texts])
        return self.row_ids(len(sources)), vectors.astype(np.float32), sources

    def filled(self, tmp_path: Path) -> tuple[VectorStore, np.ndarray, np.ndarray, list[str]]:
        ids, vectors, sources = self.rows()
        return self.make_store(tmp_path, ids, vectors, sources), ids, vectors, sources

    def test_describes_itself(self, tmp_path):
        store, *_ = self.filled(tmp_path)
        assert isinstance(store.name, str) and store.name
        assert isinstance(store.persistent, bool)

    def test_counts_its_rows(self, tmp_path):
        store, ids, _, _ = self.filled(tmp_path)
        assert store.count() == len(ids)

    def test_search_is_exact_inner_product_best_first(self, tmp_path):
        store, ids, vectors, _ = self.filled(tmp_path)
        for query in FakeEmbedder(self.dimension).embed_queries(QUERIES):
            found, scores = store.search(query, 4)
            assert found.dtype == np.int64 and len(found) == len(scores) == 4
            products = vectors @ query
            best = np.argsort(-products, kind="stable")[:4]
            assert found.tolist() == ids[best].tolist()
            np.testing.assert_allclose(scores, products[best], rtol=1e-5, atol=1e-6)
            assert np.all(np.diff(scores) <= 1e-6)

    def test_a_stored_vector_finds_its_own_row_first(self, tmp_path):
        store, ids, vectors, _ = self.filled(tmp_path)
        for i, v in zip(ids, vectors, strict=True):
            found, scores = store.search(v, 1)
            assert found.tolist() == [i] and abs(float(scores[0]) - 1.0) < 1e-5

    def test_k_beyond_the_count_returns_every_row_once(self, tmp_path):
        store, ids, vectors, _ = self.filled(tmp_path)
        found, scores = store.search(vectors[0], len(ids) + 5)
        assert sorted(found.tolist()) == sorted(ids.tolist()) and len(scores) == len(ids)

    def test_vectors_come_back_in_the_order_asked(self, tmp_path):
        store, ids, vectors, _ = self.filled(tmp_path)
        order = np.array([3, 0, len(ids) - 1, 1])
        got = store.vectors(ids[order])
        assert got.dtype == np.float32 and got.shape == (len(order), vectors.shape[1])
        np.testing.assert_array_equal(got, vectors[order])

    def test_an_empty_store_finds_nothing(self, tmp_path):
        store = self.make_store(tmp_path, self.row_ids(0), np.zeros((0, self.dimension), np.float32), [])
        assert store.count() == 0
        found, scores = store.search(FakeEmbedder(self.dimension).embed_queries(QUERIES[:1])[0], 3)
        assert found.dtype == np.int64 and len(found) == len(scores) == 0


class PersistentStoreConformance(VectorStoreConformance):
    """The tests of a store written in place. A subclass gives :meth:`blank_store`; the rows are written
    through the store's own ``create`` and ``add``, under the large, sparse ids that chunk keys are."""

    def blank_store(self, tmp_path: Path) -> PersistentStore:
        """A store that holds nothing yet (no collection); called at most once per test."""
        raise NotImplementedError

    def manifest(self, generation: str = "conformance", dimension: int | None = None) -> dict:
        return store_manifest(FakeEmbedder.model_id, FakeEmbedder.weights_sha256, dimension or self.dimension,
                              generation)

    def row_ids(self, count: int) -> np.ndarray:
        digests = (hashlib.blake2b(f"row {i}".encode(), digest_size=8).digest() for i in range(count))
        return np.fromiter((int.from_bytes(d, "little") & 0x7FFF_FFFF_FFFF_FFFF for d in digests),
                           dtype=np.int64, count=count)

    def make_store(self, tmp_path, ids, vectors, sources):
        store = self.blank_store(tmp_path)
        store.create(self.manifest())
        if len(ids):
            store.add(ids, vectors, sources)
        return store

    def test_holds_no_manifest_before_it_is_created(self, tmp_path):
        assert self.blank_store(tmp_path).read_manifest() is None

    def test_create_writes_the_manifest_and_drops_the_old_rows(self, tmp_path):
        store, *_ = self.filled(tmp_path)
        assert store.persistent is True and store.read_manifest() == self.manifest()
        store.create(self.manifest("next", dimension=8))
        assert store.count() == 0 and store.read_manifest() == self.manifest("next", dimension=8)

    def test_write_manifest_replaces_it(self, tmp_path):
        store, ids, _, _ = self.filled(tmp_path)
        store.write_manifest(self.manifest(""))
        assert store.read_manifest() == self.manifest("") and store.count() == len(ids)

    def test_add_replaces_a_row_of_the_same_id(self, tmp_path):
        store, ids, vectors, _ = self.filled(tmp_path)
        store.add(ids[:1], vectors[1:2], ["moved.md"])
        assert store.count() == len(ids)
        np.testing.assert_array_equal(store.vectors(ids[:2]), vectors[[1, 1]])

    def test_delete_removes_only_those_rows(self, tmp_path):
        store, ids, vectors, _ = self.filled(tmp_path)
        store.delete(ids[:2])
        assert store.count() == len(ids) - 2
        found, _ = store.search(vectors[0], len(ids))
        assert sorted(found.tolist()) == sorted(ids[2:].tolist())
        np.testing.assert_array_equal(store.vectors(ids[2:]), vectors[2:])

    def test_delete_document_removes_its_rows(self, tmp_path):
        store, ids, vectors, sources = self.filled(tmp_path)
        store.delete_document("fruit.md")
        kept = [i for i, s in zip(ids.tolist(), sources, strict=True) if s != "fruit.md"]
        assert store.count() == len(kept)
        found, _ = store.search(vectors[0], len(ids))
        assert sorted(found.tolist()) == sorted(kept)
