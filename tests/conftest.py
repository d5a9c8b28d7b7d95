"""Shared fixtures: a deterministic fake embedder for fast unit tests; the real model for e2e tests."""
from __future__ import annotations

import hashlib
import os
import re
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch / faiss load (see assistant/config.py)

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

    def embed_passages(self, texts, titles, units):
        """Chunk vectors plus a vector per unit span (the unit's own text here; the real model pools tokens)."""
        chunks = self.embed_documents(texts, titles)
        return chunks, [normalize(np.stack([self._vector(t[s:e]) for s, e in u])) if u else
                        np.zeros((0, self._dimension), np.float32) for t, u in zip(texts, units)]


class PlainEmbedder(FakeEmbedder):
    """A fake embedder without ``embed_passages``: indexes get no unit vectors (like a user's own model)."""

    embed_passages = None


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


# -- end-to-end fixtures: the real model on the real corpus ----------------------------------------
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


sys.path.insert(0, str(ROOT / "tests" / "offline"))
import offline_guard  # noqa: E402  (tests/offline: also loaded by child processes, see offline_env)


@pytest.fixture(scope="session", autouse=True)
def offline():
    """The whole suite runs offline: outbound connections and name lookups raise; loopback and Unix sockets
    work. Child processes get the same guard through ``offline_guard.offline_env()``."""
    originals = offline_guard.install()
    yield
    offline_guard.uninstall(originals)


@pytest.fixture
def no_network(offline):
    """Kept for tests that name it: the suite-wide guard is already on."""


@pytest.fixture(scope="session")
def real_settings(tmp_path_factory):
    from assistant.config import Settings
    from assistant.errors import ModelError
    from assistant.models import EMBEDDING_GEMMA, check_ready

    settings = Settings.from_env(corpus=ROOT / "corpus", index=tmp_path_factory.mktemp("e2e") / "index")
    if not settings.embed_model:
        try:
            check_ready(EMBEDDING_GEMMA, settings.home)
        except ModelError as exc:  # `make test` fetches the model first; plain pytest may not have it
            pytest.fail(f"{exc}")
    return settings


@pytest.fixture(scope="session")
def real_index(real_settings):
    """The default corpus indexed once per session with the real model (built offline)."""
    from assistant.pipeline import Assistant

    Assistant(real_settings).build()
    return real_settings.index


@pytest.fixture(scope="session")
def real_assistant(real_settings, real_index):
    from assistant.pipeline import Assistant

    return Assistant(real_settings)
