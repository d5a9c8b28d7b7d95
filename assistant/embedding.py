"""Embedder protocol and the sentence-transformers implementation (loaded lazily, once)."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from .config import EMBED_RUNTIMES, quiet_openmp
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


class PassageEmbedder(Embedder, Protocol):
    """An embedder that also returns a vector for each given span of each text, from the same pass."""

    def embed_passages(self, texts: list[str], titles: list[str], units: list[list[tuple[int, int]]]
                       ) -> tuple[np.ndarray, list[np.ndarray]]: ...


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
                 show_progress: bool = False, embed_runtime: str = "torch", home: Path | None = None) -> None:
        if dtype not in ("bf16", "fp32"):
            raise ValueError(f"dtype must be bf16 or fp32, not {dtype!r}")
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if embed_runtime not in EMBED_RUNTIMES:
            raise ValueError(f"embed_runtime must be one of {', '.join(EMBED_RUNTIMES)}, not {embed_runtime!r}")
        if embed_runtime != "torch" and home is None:
            raise ValueError("the ONNX embedding model needs the model cache folder (home)")
        self.embed_runtime, self.home = embed_runtime, home
        self._onnx = None  # OnnxEncoder, False (torch), or None (not decided yet)
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

    def onnx_encoder(self):
        """The ONNX Runtime encoder (``onnx_encoder.OnnxEncoder``) where ``embed_runtime`` allows it and its export
        exists, else None. Where there is one, questions, texts and passages are all encoded by it.

        It loads without torch (tokenizer, memory-mapped embedding table, one session): a process that only
        asks never loads the sentence-transformers model."""
        if self._onnx is None:
            with self._lock:
                if self._onnx is None:
                    self._onnx = self._open_onnx_encoder() or False
        return self._onnx or None

    def _open_onnx_encoder(self):
        # "auto" only where torch would compute in float32 too: ONNX Runtime float32 gives the same top-5 as torch
        # float32, but not as torch bf16 (93% in bench/encoders.py).
        if self.embed_runtime == "torch" or (self.embed_runtime == "auto" and self.dtype != "fp32"):
            return None
        from . import onnx_encoder, onnx_files

        folder = onnx_encoder.export_folder(self.home, self.weights_sha256) if self.weights_sha256 else None
        if folder is not None and onnx_files.available() and onnx_encoder.ready(folder) and os.path.isdir(self.location):
            encoder = onnx_encoder.OnnxEncoder(Path(self.location), folder, self.threads)
            log.info("embedding model: ONNX Runtime float32 (%s)", folder.name)
            return encoder
        if self.embed_runtime == "onnx":
            raise ModelError("ASSISTANT_EMBED_RUNTIME=onnx, but the embedding model has no ONNX export "
                             + ("(onnxruntime is not installed)" if not onnx_files.available()
                                else "yet: run `assistant models fetch`"))
        log.info("no ONNX export of the embedding model (`assistant models fetch` makes it): it runs in torch")
        return None

    def transformer(self):
        """The loaded transformer (a Hugging Face model), for the reader model to share its bottom layers."""
        return self._load()[0].auto_model

    @property
    def dimension(self) -> int:
        if self._model is None and self.onnx_encoder() is not None:
            return self.onnx_encoder().dimension
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def _prompts(self) -> dict[str, str]:
        encoder = self.onnx_encoder()
        if encoder is not None:
            return encoder.prompts
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

    def embed_passages(self, texts: list[str], titles: list[str], units: list[list[tuple[int, int]]]
                       ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Chunk vectors, plus a vector for each unit span (sentence, list item) of each chunk.

        "Late chunking": the chunk goes through the transformer once; a unit's vector is the mean of
        the chunk's token vectors that fall in the unit's span, passed through the model's layers
        after pooling (EmbeddingGemma: two dense layers, then normalisation). The unit vector thus
        also sees its context, and costs nothing extra at question time. Models without plain mean
        pooling get standalone unit embeddings instead.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), []
        encoder = self.onnx_encoder()
        prompt = self._prompts().get("document", "")
        if prompt.startswith("title: none | text: "):
            prefixes = [f"title: {t or 'none'} | text: " for t in titles]
        else:
            prefixes = [prompt] * len(texts)
        if encoder is not None:  # the same computation in ONNX Runtime float32 (onnx_encoder.encode_passages)
            chunk_vectors, unit_vectors = encoder.encode_passages([p + t for p, t in zip(prefixes, texts, strict=True)],
                                                                  [len(p) for p in prefixes], units, self.batch_size)
        else:
            model = self._load()
            modules = list(model)
            pooling = modules[1] if len(modules) > 1 else None
            if getattr(pooling, "pooling_mode", None) != "mean" or not getattr(model.tokenizer, "is_fast", False):
                return self._standalone_units(texts, titles, units)
            order = sorted(range(len(texts)), key=lambda i: len(prefixes[i]) + len(texts[i]), reverse=True)
            chunk_vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
            unit_vectors = [None] * len(texts)
            for k in range(0, len(order), self.batch_size):
                ids = order[k:k + self.batch_size]
                vectors, per_chunk = self._late_batch(model, modules[2:], [prefixes[i] + texts[i] for i in ids],
                                                      [len(prefixes[i]) for i in ids], [units[i] for i in ids])
                chunk_vectors[ids] = vectors
                for i, v in zip(ids, per_chunk, strict=True):
                    unit_vectors[i] = v
        missing = [(i, j) for i, v in enumerate(unit_vectors) for j in range(len(units[i])) if not np.isfinite(v[j]).all()]
        if missing:  # spans cut off by the model's length limit: embed them on their own
            extra = self.embed_documents([texts[i][slice(*units[i][j])] for i, j in missing],
                                         [titles[i] for i, _ in missing])
            for (i, j), v in zip(missing, extra, strict=True):
                unit_vectors[i][j] = v
        return normalize(chunk_vectors), unit_vectors

    def _late_batch(self, model, after_pooling, inputs: list[str], offsets: list[int],
                    units: list[list[tuple[int, int]]]) -> tuple[np.ndarray, list[np.ndarray]]:
        import torch

        tok = model.tokenizer(inputs, padding=True, truncation=True, max_length=model.max_seq_length,
                              return_offsets_mapping=True, return_tensors="pt")
        spans = tok.pop("offset_mapping")
        features = dict(tok)
        with torch.inference_mode():
            out = model.forward(features)
            tokens = out["token_embeddings"]
            pooled, owners = [], []
            for b, (shift, chunk_units) in enumerate(zip(offsets, units, strict=True)):
                starts, ends = spans[b, :, 0], spans[b, :, 1]
                real = (ends > starts) & (tok["attention_mask"][b] > 0)
                for j, (s, e) in enumerate(chunk_units):
                    mask = real & (starts < shift + e) & (ends > shift + s)
                    if mask.any():
                        pooled.append(tokens[b][mask].float().mean(0))
                        owners.append((b, j))
            per_chunk = [np.full((len(u), self.dimension), np.nan, dtype=np.float32) for u in units]
            if pooled:
                feats = {"sentence_embedding": torch.stack(pooled).to(tokens.dtype)}
                for module in after_pooling:
                    feats = module(feats)
                unit_out = feats["sentence_embedding"].float().numpy()
                for (b, j), v in zip(owners, unit_out, strict=True):
                    per_chunk[b][j] = v
            vectors = out["sentence_embedding"].float().numpy()
        return vectors, [normalize(v) if len(v) else v for v in per_chunk]

    def _standalone_units(self, texts, titles, units) -> tuple[np.ndarray, list[np.ndarray]]:
        flat = [(i, s, e) for i, u in enumerate(units) for s, e in u]
        vectors = self.embed_documents(texts, titles)
        unit_flat = self.embed_documents([texts[i][s:e] for i, s, e in flat], [titles[i] for i, _, _ in flat])
        out, k = [], 0
        for u in units:
            out.append(unit_flat[k:k + len(u)])
            k += len(u)
        return vectors, out

    def _encode(self, inputs: list[str]) -> np.ndarray:
        encoder = self.onnx_encoder()
        if encoder is not None:
            return normalize(encoder.encode(inputs, self.batch_size)) if inputs else \
                np.zeros((0, encoder.dimension), dtype=np.float32)
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
