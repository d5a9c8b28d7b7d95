"""Shared fixtures: a deterministic fake embedder for fast unit tests; the real model for e2e tests."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from assistant.embedding import normalize


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


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()
