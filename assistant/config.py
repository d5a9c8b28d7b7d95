"""Settings: one frozen dataclass; ``Settings.from_env()`` reads the ``ASSISTANT_*`` variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import ConfigError

# Where the reader model runs (ASSISTANT_READER_RUNTIME): "auto" = ONNX Runtime float32 where its export exists
# (`assistant models fetch` makes it), else torch; "onnx" (made on first use if missing); "torch".
READER_RUNTIMES = ("auto", "onnx", "torch")
# Where the embedding model runs (ASSISTANT_EMBED_RUNTIME), for questions and passages: "auto" = ONNX Runtime float32
# where the embedder runs in float32 (ASSISTANT_EMBED_DTYPE; its "auto" is float32 where the export exists) and the
# export exists (`assistant models fetch` makes it; then asking loads no torch), else torch; "onnx"; "torch".
EMBED_RUNTIMES = ("auto", "onnx", "torch")


def quiet_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning (unless the user chose otherwise).

    On a shared 2-core machine spinning threads of torch and faiss starve each other and any other
    process: measured, 9 sentences took 23 s to embed with the default policy and 0.8 s with
    ``OMP_WAIT_POLICY=PASSIVE``. Must run before torch or faiss is imported to take effect.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX). Without it torch emulates bf16:
    measured on an AVX2-only AMD EPYC, 8 layers of EmbeddingGemma ran at 230 tokens/s in bf16 and
    860 in fp32, while on a CPU with AMX bf16 was 2.3x faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def resolve_dtype(dtype: str) -> str:
    return ("bf16" if native_bf16() else "fp32") if dtype == "auto" else dtype


READERS = ("span", "extractive", "llm")


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "assistant"


@dataclass(frozen=True)
class Settings:
    home: Path = _default_home()  # model cache, outside the repository
    corpus: Path = Path("corpus")
    index: Path = Path("index")
    embed_model: str = ""  # "" = built-in EmbeddingGemma-300M; or a local folder or hub id
    embed_dtype: str = "auto"  # "auto" (fp32 where the ONNX export runs it, else bf16 where the CPU computes it
    # natively, else fp32: pipeline.embed_dtype), "bf16" or "fp32"
    embed_batch: int = 16
    threads: int = 0  # torch threads; 0 = library default
    chunk_size: int = 360  # characters; a chunk is cut at a sentence end below this when possible
    chunk_overlap: int = 0  # characters repeated between neighbouring chunks of one long section
    top_k: int = 5  # passages handed to the reader
    min_evidence: float = 0.0  # calibrated abstention threshold; 0 = reader default
    host: str = "127.0.0.1"
    port: int = 7860
    max_question_chars: int = 2000
    max_file_mb: int = 50
    max_document_chars: int = 5_000_000  # a document with more text is refused (a .docx zip bomb, hours of embedding)
    reader: str = "span"  # "span" (reader model: exact span + passage quote), "extractive" (passage quote) or "llm"
    reader_model: str = ""  # "" = the committed reader weights; or a local .safetensors file
    reader_runtime: str = "auto"  # READER_RUNTIMES: "auto" (ONNX Runtime where exported, else torch), "onnx", "torch"
    embed_runtime: str = "auto"  # EMBED_RUNTIMES: the same choice for the embedding model
    llm_model: str = ""  # "" = built-in Qwen2.5-Coder-1.5B-Instruct GGUF; or a local .gguf file
    llm_threads: int = 0  # llama.cpp threads; 0 = number of cores
    llm_max_tokens: int = 160
    vector_store: str = ""  # "" = the index folder's FAISS file; milvus-lite:///path/to.db or http://host:19530
    vector_collection: str = "assistant"  # the Milvus collection holding the chunk vectors
    # `assistant serve`: with a key, every /api and /v1 call needs "Authorization: Bearer <key>" and the page a login;
    # without one the server only listens on a loopback address (api.check_exposure).
    api_key: str = field(default="", repr=False)
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser; "" = CORS off
    max_request_kb: int = 1024  # a JSON request body to /api or /v1 larger than this is refused (413)
    max_upload_mb: int = 200  # one upload request (all its files) to POST /api/documents; each file: max_file_mb

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if env is None else env
        values: dict = {}
        for f in fields(cls):
            raw = env.get(f"ASSISTANT_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, type(getattr(cls(), f.name)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def with_(self, **changes) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> None:
        if self.embed_dtype not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"ASSISTANT_EMBED_DTYPE must be auto, bf16 or fp32, not {self.embed_dtype!r}")
        for name in ("embed_batch", "chunk_size", "top_k", "port", "max_question_chars", "max_file_mb",
                     "max_document_chars", "max_request_kb", "max_upload_mb"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ASSISTANT_{name.upper()} must be a positive number")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"ASSISTANT_PORT (--port) must be between 1 and 65535, not {self.port}")
        if self.reader not in READERS:
            raise ConfigError(f"ASSISTANT_READER must be {' or '.join(READERS)}, not {self.reader!r}")
        if self.reader_runtime not in READER_RUNTIMES:
            raise ConfigError(f"ASSISTANT_READER_RUNTIME must be {', '.join(READER_RUNTIMES)}, not "
                              f"{self.reader_runtime!r}")
        if self.embed_runtime not in EMBED_RUNTIMES:
            raise ConfigError(f"ASSISTANT_EMBED_RUNTIME must be {', '.join(EMBED_RUNTIMES)}, not "
                              f"{self.embed_runtime!r}")
        if self.llm_threads < 0 or self.llm_max_tokens <= 0:
            raise ConfigError("ASSISTANT_LLM_THREADS must be >= 0 and ASSISTANT_LLM_MAX_TOKENS positive")
        if not 0 <= self.chunk_overlap < self.chunk_size // 2:
            raise ConfigError("ASSISTANT_CHUNK_OVERLAP must be >= 0 and less than half the chunk size")
        if self.vector_store:
            from .vector_store import parse_store  # not at import: it brings numpy

            parse_store(self.vector_store)


def _parse(name: str, raw: str, kind: type):
    try:
        if issubclass(kind, Path):  # the default's type is PosixPath or WindowsPath
            return Path(raw).expanduser()
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(f"ASSISTANT_{name.upper()}={raw!r} is not a valid {kind.__name__}") from None
