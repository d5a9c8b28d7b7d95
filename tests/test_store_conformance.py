"""The vector store conformance tests (assistant.testing) against each store: the FAISS file and Milvus Lite."""
from __future__ import annotations

import pytest

from assistant.testing import PersistentStoreConformance, VectorStoreConformance
from assistant.vector_store import FaissStore, MilvusStore


class TestFaissStore(VectorStoreConformance):
    """The vectors file of an index folder, filled as a folder build fills it."""

    def make_store(self, tmp_path, ids, vectors, sources):
        import faiss

        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return FaissStore(index, "the conformance FAISS index")


class TestMilvusLiteStore(PersistentStoreConformance):
    """A Milvus Lite file in tmp_path (skipped without the milvus extra, as tests/test_vector_store.py is)."""

    def setup_method(self) -> None:
        pytest.importorskip("pymilvus", reason="the Milvus extra is not installed: pip install .[milvus]")
        self.opened: list[MilvusStore] = []

    def teardown_method(self) -> None:
        for store in getattr(self, "opened", []):
            store.close()

    def blank_store(self, tmp_path):
        store = MilvusStore(str(tmp_path / "conformance.db"), "conformance")
        self.opened.append(store)
        return store
