"""The embedding model's tokenizer and token embedding table without torch or transformers.

What the first answer needs to start fast (issue 17): the ``tokenizers`` library reads
``tokenizer.json`` in about a second, where ``transformers`` takes three (it parses the file in
Python first), and the embedding table is read straight from ``model.safetensors`` as a
memory map, so looking up a question's 20 tokens reads 20 rows, not the 800 MB table. Both give
what the transformers tokenizer and the torch model give (tests/test_onnx_encoder.py checks them
on the whole corpus).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .errors import ModelError


class FastTokenizer:
    """The subset of a transformers tokenizer's call that span_model and the ONNX encoder use.

    ``tokenizer(text, add_special_tokens=..., return_offsets_mapping=...)`` -> {"input_ids", "offset_mapping"}."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            config = json.loads((folder / "tokenizer_config.json").read_text("utf-8"))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception for a bad file
            raise ModelError(f"cannot read the tokenizer of {folder}: {str(exc).splitlines()[0]}") from exc
        self._tok.no_truncation()
        self._tok.no_padding()

        def token_id(name: str) -> int | None:
            value = config.get(name)
            text = value.get("content") if isinstance(value, dict) else value
            return self._tok.token_to_id(text) if isinstance(text, str) else None

        self.bos_token_id = token_id("bos_token")
        self.eos_token_id = token_id("eos_token")
        self.pad_token_id = token_id("pad_token")
        self.model_max_length = int(config.get("model_max_length") or 2048)

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        enc = self._tok.encode(text, add_special_tokens=add_special_tokens)
        out: dict = {"input_ids": enc.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = enc.offsets
        return out

    def encode_batch_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """(ids, character offsets) with the special tokens, whose offsets are (0, 0)."""
        return [(e.ids, e.offsets) for e in self._tok.encode_batch(texts, add_special_tokens=True)]


_DTYPES = {"F32": np.float32, "F16": np.float16}


class EmbeddingTable:
    """One tensor of a safetensors file, memory-mapped read-only; rows looked up on demand.

    ``lookup(ids)`` gives float32 rows times ``scale`` (Gemma 3 multiplies its token embeddings by
    sqrt(hidden size) before the first layer)."""

    def __init__(self, path: Path, name: str, scale: float) -> None:
        try:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > 100 << 20:
                    raise ValueError("header too large")
                header = json.loads(f.read(length))
            entry = header[name]
            dtype = _DTYPES[entry["dtype"]]
            begin, end = entry["data_offsets"]
            shape = tuple(entry["shape"])
            if len(shape) != 2 or (end - begin) != shape[0] * shape[1] * np.dtype(dtype).itemsize:
                raise ValueError(f"{name} has shape {shape} and {end - begin} bytes")
            self._rows = np.memmap(path, dtype=dtype, mode="r", offset=8 + length + begin, shape=shape)
        except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
            raise ModelError(f"cannot read the token embeddings {name!r} of {path}: {exc}") from exc
        self.scale = np.float32(scale)
        self.shape = shape

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.shape[0]):
            raise ValueError("token id outside the embedding table")
        return np.asarray(self._rows[ids], dtype=np.float32) * self.scale


def pad_ids(batch: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) as int64 arrays, right-padded to the longest row."""
    width = max(len(ids) for ids in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for i, row in enumerate(batch):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return ids, mask
