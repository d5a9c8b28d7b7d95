"""Shared fixtures: the fake embedder (assistant.testing) for fast unit tests; the real model for e2e tests."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch / faiss load (see assistant/config.py)

import pytest

from assistant.testing import FakeEmbedder, PlainEmbedder  # noqa: F401 (PlainEmbedder: re-exported)


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
