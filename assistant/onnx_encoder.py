"""The embedding model run by ONNX Runtime float32: questions and passages, without torch.

Chosen by measurement (BENCHMARKS.md, "The embedding model's runtime"): on this 2-core CPU it
encodes a question 3x faster than torch float32 with the same top-5 passages (794 of 794 questions),
and passages as fast as torch bf16 (2.2x torch float32), and a process that only asks never imports
torch, transformers or sentence-transformers: the first answer comes seconds sooner. It stands in
for torch where the embedder is float32 (``ASSISTANT_EMBED_RUNTIME``; the default dtype is float32
where this export exists): its vectors are not bf16's.

The graph (the 24 layers, mean pooling, the two dense layers and the normalisation, as the
sentence-transformers model runs them; it also returns the last layer's token states, from which
``encode_passages`` pools the late-chunking unit vectors) is exported here from the verified weights
by ``assistant models fetch``; the token embedding table stays outside it, read from
``model.safetensors`` as a memory map (``tokens.EmbeddingTable``) and shared with the reader model.
Before an export is kept it must give the sentence-transformers model's float32 vectors on probe
texts (one longer than the 512-token sliding window, so that mask is in the check too).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from . import onnx_files
from .errors import ModelError

log = logging.getLogger(__name__)

FORMAT = "assistant-encoder-onnx/2"  # /1 had no token states
GRAPH = "encoder.onnx"
MIN_PROBE_COSINE = 0.99999  # each probe vector against sentence-transformers' float32 one
PROBES = ("task: search result | query: GAN 的损失函数是什么？",
          "title: none | text: What are the interview questions about Transformers and attention?",
          "title: none | text: " + "生成对抗网络由生成器和判别器组成，判别器的损失函数是二元交叉熵。" * 40)


def export_folder(home: Path, base_sha256: str) -> Path:
    return onnx_files.folder_for(home, "encoder", FORMAT, base_sha256)


def ready(folder: Path) -> bool:
    return onnx_files.ready(folder, FORMAT, GRAPH)


def export(model, folder: Path) -> Path:
    """Export ``model`` (a float32 ``SentenceTransformer`` of a Gemma 3 encoder) into ``folder``; check; stamp."""
    import shutil
    import warnings

    import torch

    modules = list(model)
    base = modules[0].auto_model
    if not hasattr(base, "embed_tokens") or getattr(modules[1], "pooling_mode", None) != "mean":
        raise ModelError("only a Gemma 3 encoder with mean pooling can be exported to ONNX here")
    t0 = time.monotonic()
    staging = onnx_files.staging_for(folder)

    class EncoderGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base, self.after = base, torch.nn.ModuleList(modules[1:])

        def forward(self, hidden, mask):
            tokens = self.base(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
            features = {"token_embeddings": tokens, "attention_mask": mask}
            for module in self.after:
                features = module(features)
            return features["sentence_embedding"], tokens

    try:
        tok = model.tokenizer(list(PROBES), padding=True, return_tensors="pt")
        ids, mask = tok["input_ids"], tok["attention_mask"]
        with torch.inference_mode():
            expected = model.encode(list(PROBES), convert_to_numpy=True, normalize_embeddings=True)
            hidden = base.embed_tokens(ids).float()
        batch, tokens = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("tokens", min=2, max=8192)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(EncoderGraph().eval(), (hidden, mask), str(staging / GRAPH), dynamo=True,
                              external_data=True, input_names=["hidden", "mask"], output_names=["sentence_vector", "token_states"],
                              verbose=False, dynamic_shapes=({0: batch, 1: tokens}, {0: batch, 1: tokens}))
        got = onnx_files.session(staging / GRAPH).run(["sentence_vector"], {"hidden": hidden.numpy(),
                                                                           "mask": mask.numpy()})[0]
        cosine = float(np.min(np.sum(got * expected, axis=1)))
        if not cosine >= MIN_PROBE_COSINE:
            raise ModelError(f"the ONNX export of the embedding model gives other vectors than torch (lowest cosine "
                             f"{cosine:.6f}); set ASSISTANT_EMBED_RUNTIME=torch")
        onnx_files.publish(staging, folder, FORMAT, probe_min_cosine=cosine, probe_tokens=int(ids.shape[1]),
                           seconds=round(time.monotonic() - t0, 1))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported the embedding model to ONNX in %.0f s (probe cosine %.7f)", time.monotonic() - t0, cosine)
    return folder


def prepare(model_folder: Path, folder: Path) -> Path:
    """Load the embedding model in float32 (sentence-transformers) and export it into ``folder``."""
    from sentence_transformers import SentenceTransformer

    from .config import quiet_openmp

    quiet_openmp()
    return export(SentenceTransformer(str(model_folder), device="cpu"), folder)


class OnnxEncoder:
    """Vectors from the exported graph (tokenizer, memory-mapped embedding table, ONNX Runtime): of questions
    and texts (``encode``), and of passages with their units' late-chunking vectors (``encode_passages``)."""

    def __init__(self, model_folder: Path, folder: Path, threads: int = 0) -> None:
        from .tokens import EmbeddingTable, FastTokenizer

        if not ready(folder):
            raise ModelError(f"the ONNX embedding model in {folder} is missing or changed since it was checked: "
                             "run `assistant models fetch`")
        try:
            config = json.loads((model_folder / "config.json").read_text("utf-8"))
            st_config = json.loads((model_folder / "config_sentence_transformers.json").read_text("utf-8"))
            max_len = json.loads((model_folder / "sentence_bert_config.json").read_text("utf-8"))["max_seq_length"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot read the embedding model's configuration in {model_folder}: {exc}") from exc
        self.tokenizer = FastTokenizer(model_folder)
        self.table = EmbeddingTable(model_folder / "model.safetensors", "embed_tokens.weight",
                                    config["hidden_size"] ** 0.5)
        self.prompts = dict(st_config.get("prompts") or {})
        self.max_len = int(max_len)
        self.dense = _dense_layers(model_folder)
        self.folder = folder
        self._session = onnx_files.session(folder / GRAPH, threads)
        self.dimension = int(self._session.get_outputs()[0].shape[-1])

    def _tokens(self, texts: list[str]) -> list[tuple[list[int], np.ndarray]]:
        """(ids with <bos> and <eos>, their character offsets as an (n, 2) array) of each text, cut as
        transformers cuts a text over the model's length: its first tokens, then <eos>."""
        eos = self.tokenizer.eos_token_id
        rows = []
        for ids, offsets in self.tokenizer.encode_batch_offsets(texts):
            if len(ids) > self.max_len:
                ids, offsets = [*ids[:self.max_len - 1], eos], [*offsets[:self.max_len - 1], (0, 0)]
            rows.append((ids, np.asarray(offsets, dtype=np.int64).reshape(-1, 2)))
        return rows

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """What the model reads of each text."""
        return [ids for ids, _ in self._tokens(texts)]

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        """Normalised vectors of ``texts`` (prompts already applied), in their order."""
        return self.encode_passages(texts, [0] * len(texts), [[] for _ in texts], batch_size)[0]

    def encode_passages(self, inputs: list[str], shifts: list[int], units: list[list[tuple[int, int]]],
                        batch_size: int = 16) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each input's vector, and a vector per unit span (characters of the input minus its ``shift``, the
        prompt's length): the mean of the input's token states inside the span through the dense layers,
        normalised, as ``SentenceTransformerEmbedder.embed_passages`` computes it in torch. A unit no token
        reaches (cut off by the length limit) gets NaNs."""
        from .tokens import pad_ids

        rows = self._tokens(inputs)
        vectors = np.empty((len(rows), self.dimension), dtype=np.float32)
        per_input = [np.full((len(u), self.dimension), np.nan, dtype=np.float32) for u in units]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        for b in range(0, len(order), batch_size):
            group = order[b:b + batch_size]
            ids, mask = pad_ids([rows[i][0] for i in group], self.tokenizer.pad_token_id or 0)
            wanted = ["sentence_vector", "token_states"] if any(units[i] for i in group) else ["sentence_vector"]
            out = self._session.run(wanted, {"hidden": self.table.lookup(ids), "mask": mask})
            vectors[group] = out[0]
            tokens = out[1] if len(out) > 1 else None
            pooled, owners = [], []
            for row, i in enumerate(group):
                starts, ends = rows[i][1][:, 0], rows[i][1][:, 1]
                real = ends > starts
                for j, (s, e) in enumerate(units[i]):
                    inside = real & (starts < shifts[i] + e) & (ends > shifts[i] + s)
                    if inside.any():
                        pooled.append(tokens[row, :len(starts)][inside].mean(0))
                        owners.append((i, j))
            if pooled:
                out = np.stack(pooled)
                for weight in self.dense:
                    out = out @ weight.T
                out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
                for (i, j), v in zip(owners, out, strict=True):
                    per_input[i][j] = v
        return vectors, per_input


def _dense_layers(model_folder: Path) -> list[np.ndarray]:
    """The weights of the dense layers after pooling (sentence-transformers ``Dense``, no bias, identity)."""
    from safetensors.numpy import load_file

    try:
        modules = json.loads((model_folder / "modules.json").read_text("utf-8"))
        out = []
        for module in modules:
            if not module["type"].endswith(".Dense"):
                continue
            path = model_folder / module["path"]
            config = json.loads((path / "config.json").read_text("utf-8"))
            if config.get("bias") or not config.get("activation_function", "").endswith("Identity"):
                raise ValueError(f"{module['path']} has a bias or an activation")
            out.append(np.asarray(load_file(str(path / "model.safetensors"))["linear.weight"], dtype=np.float32))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the dense layers of {model_folder}: {exc}") from exc
    return out
