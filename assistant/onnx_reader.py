"""The reader model run by ONNX Runtime: the same scores as torch (max |difference| about 1e-5), faster.

Chosen by measurement (BENCHMARKS.md, "Runtimes"): on this 2-core CPU the reader's 12 layers run
faster in ONNX Runtime float32 than in torch eager float32, and give the same spans, so it is the
default where ``onnxruntime`` is installed and the export exists (``ASSISTANT_READER_RUNTIME``).

The graph is exported here, on the user's machine, from the verified weights (``models fetch``
builds it; nothing is downloaded): ``SpanReaderModel.graph()`` (all the layers, the norm and the
head) goes through ``torch.onnx.export``. The token embedding table stays outside the graph: it is
the embedder's own, shared, so the export holds only the reader's layers (about 200 MB, float32).
Before an export is kept, it must reproduce torch's scores on probe windows; its files' sha256 are
then recorded in a stamp, and a later load compares their size and mtime with it (as for the
carried models) before ONNX Runtime reads them.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from . import onnx_files
from .errors import ModelError
from .onnx_files import available  # noqa: F401 - part of this module's interface

log = logging.getLogger(__name__)

FORMAT = "assistant-reader-onnx/2"  # /1 could be made from a bf16 embedder's rounded bottom layers
GRAPH = "reader.onnx"
MAX_PROBE_DIFF = 1e-3  # the largest |score difference| to torch accepted on the probe windows
PROBE = ("GAN 的损失函数是什么？", "生成对抗网络由生成器和判别器组成，判别器的损失函数是二元交叉熵 binary_crossentropy，"
         "生成器则试图让判别器把生成的样本判为真。训练时两者交替更新。")


def export_folder(home: Path, weights_sha256: str, base_sha256: str) -> Path:
    """Where the export of these reader weights over this base model lives (one folder per key)."""
    return onnx_files.folder_for(home, "reader", FORMAT, weights_sha256, base_sha256)


def export(model, tokenizer, folder: Path) -> Path:
    """Export ``model`` (a loaded float32 ``SpanReaderModel``) into ``folder``, check it, stamp it."""
    import shutil
    import warnings

    import torch

    t0 = time.monotonic()
    staging = onnx_files.staging_for(folder)
    try:
        ids, mask = _probe(tokenizer)
        graph = model.graph()
        with torch.inference_mode():
            expected = model.logits(ids, mask).float().numpy()
        hidden = model.embed(ids)
        batch, tokens = torch.export.Dim("batch", min=1, max=256), torch.export.Dim("tokens", min=2, max=4096)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (hidden, mask), str(staging / GRAPH), dynamo=True, external_data=True,
                              input_names=["hidden", "mask"], output_names=["logits"], verbose=False,
                              dynamic_shapes=({0: batch, 1: tokens}, {0: batch, 1: tokens}))
        got = onnx_files.session(staging / GRAPH).run(None, {"hidden": hidden.numpy(), "mask": mask.numpy()})[0]
        real = mask.numpy().astype(bool)
        diff = float(np.abs(got - expected)[real].max())
        if not diff <= MAX_PROBE_DIFF:
            raise ModelError(f"the ONNX export of the reader model gives other scores than torch (max difference "
                             f"{diff:.2g}); set ASSISTANT_READER_RUNTIME=torch")
        onnx_files.publish(staging, folder, FORMAT, probe_max_diff=diff, seconds=round(time.monotonic() - t0, 1))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported the reader model to ONNX in %.0f s (probe max difference %.1g)", time.monotonic() - t0, diff)
    return folder


def _probe(tokenizer):
    """Two windows of different lengths (so padding is in the probe too)."""
    from .span_model import pad_batch, windows

    question, passage = PROBE
    long = windows(tokenizer, question, passage * 3)[0].ids
    short = windows(tokenizer, question, passage)[0].ids
    return pad_batch([long, short], tokenizer.pad_token_id or 0)


def ready(folder: Path) -> bool:
    """Whether ``folder`` holds a complete export, unchanged since it was checked and stamped."""
    return onnx_files.ready(folder, FORMAT, GRAPH)


class TorchTable:
    """``lookup(ids)`` from a loaded torch Gemma3TextModel's table (where the embedder runs in torch)."""

    def __init__(self, base) -> None:
        self.base = base

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        import torch

        from .span_model import scaled_embedding

        return scaled_embedding(self.base, torch.from_numpy(np.asarray(ids, dtype=np.int64))).numpy()


class OnnxSpanModel:
    """What ``span_model.score_windows`` needs of a reader model, run by ONNX Runtime, in numpy (no torch).

    ``table.lookup(ids)`` gives the scaled token embeddings: the embedder's own table, shared
    (``tokens.EmbeddingTable``, memory-mapped; or ``TorchTable`` of a loaded torch model), so the
    reader's layers are all it holds. ``run(hidden, mask) -> logits`` (numpy): another engine for the
    exported graph (bench/runtimes.py compiles it with OpenVINO, or quantized); default: an ONNX
    Runtime session of ``folder``'s export."""

    numpy = True  # score_windows passes numpy ids and masks, and gets numpy scores

    def __init__(self, table, folder: Path, threads: int = 0, run=None) -> None:
        if run is None:
            if not ready(folder):
                raise ModelError(f"the ONNX reader in {folder} is missing or changed since it was checked: "
                                 "run `assistant models fetch`")
            session = onnx_files.session(folder / GRAPH, threads)
            run = lambda hidden, mask: session.run(None, {"hidden": hidden, "mask": mask})[0]  # noqa: E731
        self.table, self.run, self.folder = table, run, folder

    def logits(self, input_ids, attention_mask) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask, dtype=np.int64)
        return np.asarray(self.run(self.table.lookup(ids), mask), dtype=np.float32)
