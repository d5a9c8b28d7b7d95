"""Embedder protocol and the sentence-transformers implementation (loaded lazily, once)."""
from __future__ import annotations

import logging
import os
import threading
from typing import Protocol

import numpy as np

from .config import quiet_openmp
from .errors import ModelError
from .models import ResolvedModel

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """Turns text into unit-length float32 vectors; documents and queries may be encoded differently."""

    model_id: str
    weights_sha256: str

    @property
    def dimension(self) -> int: ...

    def embed_documents(self, texts: list[str], titles: list[str] | None = None) -> np.ndarray: ...

    def embed_queries(self, texts: list[str]) -> np.ndarray: ...


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder (or a hub id), loaded on first use.

    EmbeddingGemma's document prompt has a title slot (``title: … | text: …``); we fill it with the
    chunk's section heading, which the model was trained to use.
    """

    def __init__(self, model: ResolvedModel, dtype: str = "bf16", batch_size: int = 16, threads: int = 0,
                 show_progress: bool = False) -> None:
        if dtype not in ("bf16", "fp32"):
            raise ValueError(f"dtype must be bf16 or fp32, not {dtype!r}")
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self.model_id = model.model_id
        self.weights_sha256 = model.weights_sha256
        self.location = model.location
        self.dtype = dtype
        self.batch_size = batch_size
        self.threads = threads
        self.show_progress = show_progress
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is not None:
                return self._model
            os.environ.setdefault("HF_HUB_OFFLINE", "1") if os.path.isdir(self.location) else None
            quiet_openmp()
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:  # pragma: no cover - broken install
                raise ModelError(f"sentence-transformers is not installed ({exc}): run `make install`") from exc
            if self.threads > 0:
                torch.set_num_threads(self.threads)
            kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if self.dtype == "bf16" else {}
            try:
                model = SentenceTransformer(self.location, device="cpu", **kwargs)
            except (OSError, ValueError, RuntimeError) as exc:
                raise ModelError(f"could not load embedding model {self.location!r}: {str(exc).splitlines()[0]} "
                                 "(set ASSISTANT_EMBED_MODEL to a local model folder, or unset it and run "
                                 "`assistant models fetch`)") from exc
            self._model = model
            log.info("loaded embedding model %s (%s)", self.model_id, self.dtype)
            return model

    @property
    def dimension(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def _prompts(self) -> dict[str, str]:
        return dict(getattr(self._load(), "prompts", None) or {})

    def embed_documents(self, texts: list[str], titles: list[str] | None = None) -> np.ndarray:
        prompt = self._prompts().get("document", "")
        if prompt.startswith("title: none | text: "):
            titles = titles or [""] * len(texts)
            inputs = [f"title: {t or 'none'} | text: {x}" for t, x in zip(titles, texts, strict=True)]
        else:
            inputs = [prompt + x for x in texts]
        return self._encode(inputs)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        prompt = self._prompts().get("query", "")
        return self._encode([prompt + x for x in texts])

    def _encode(self, inputs: list[str]) -> np.ndarray:
        model = self._load()
        if not inputs:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Sort by length so each batch pads little; restore the order afterwards.
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]), reverse=True)
        vectors = model.encode([inputs[i] for i in order], batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=self.show_progress)
        out = np.empty_like(vectors, dtype=np.float32)
        out[order] = vectors
        return normalize(out)
