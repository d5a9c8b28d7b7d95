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

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import ModelError
from .models import sha256_file

log = logging.getLogger(__name__)

FORMAT = "assistant-reader-onnx/1"
STAMP = "stamp.json"
GRAPH = "reader.onnx"
MAX_PROBE_DIFF = 1e-3  # the largest |score difference| to torch accepted on the probe windows
PROBE = ("GAN 的损失函数是什么？", "生成对抗网络由生成器和判别器组成，判别器的损失函数是二元交叉熵 binary_crossentropy，"
         "生成器则试图让判别器把生成的样本判为真。训练时两者交替更新。")


def available() -> bool:
    try:
        metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        return False
    return True


def export_folder(home: Path, weights_sha256: str, base_sha256: str) -> Path:
    """Where the export of these reader weights over this base model lives (one folder per key)."""
    versions = "|".join(_version(p) for p in ("torch", "transformers"))
    key = hashlib.sha256(f"{FORMAT}|{weights_sha256}|{base_sha256}|{versions}".encode()).hexdigest()[:16]
    return home / "onnx" / f"reader-{key}"


def _version(package: str) -> str:
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{package} -"


def export(model, tokenizer, folder: Path) -> Path:
    """Export ``model`` (a loaded float32 ``SpanReaderModel``) into ``folder``, check it, stamp it."""
    import torch

    t0 = time.monotonic()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        ids, mask = _probe(tokenizer)
        graph = model.graph()
        with torch.inference_mode():
            expected = model.logits(ids, mask).float().numpy()
        hidden = model.embed(ids)
        batch, tokens = torch.export.Dim("batch", min=1, max=256), torch.export.Dim("tokens", min=2, max=4096)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (hidden, mask), str(staging / GRAPH), dynamo=True, external_data=True,
                              input_names=["hidden", "mask"], output_names=["logits"], verbose=False,
                              dynamic_shapes=({0: batch, 1: tokens}, {0: batch, 1: tokens}))
        got = _session(staging).run(None, {"hidden": hidden.numpy(), "mask": mask.numpy()})[0]
        real = mask.numpy().astype(bool)
        diff = float(np.abs(got - expected)[real].max())
        if not diff <= MAX_PROBE_DIFF:
            raise ModelError(f"the ONNX export of the reader model gives other scores than torch (max difference "
                             f"{diff:.2g}); set ASSISTANT_READER_RUNTIME=torch")
        files = {}
        for path in sorted(p for p in staging.iterdir() if p.is_file()):
            st = path.stat()
            files[path.name] = {"size": st.st_size, "sha256": sha256_file(path)}
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
        for name, entry in files.items():  # mtimes after the move: what a later load compares
            entry["mtime_ns"] = (folder / name).stat().st_mtime_ns
        stamp = {"format": FORMAT, "files": files, "probe_max_diff": diff, "seconds": round(time.monotonic() - t0, 1),
                 "versions": [_version(p) for p in ("torch", "transformers", "onnx", "onnxruntime")]}
        (folder / STAMP).write_text(json.dumps(stamp, indent=1) + "\n", "utf-8")
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
    try:
        stamp = json.loads((folder / STAMP).read_text("utf-8"))
        files = stamp["files"]
        if stamp.get("format") != FORMAT or GRAPH not in files:
            return False
        for name, entry in files.items():
            st = (folder / name).stat()
            if st.st_size != entry["size"] or st.st_mtime_ns != entry["mtime_ns"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _session(folder: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(folder / GRAPH), options, providers=["CPUExecutionProvider"])


class OnnxSpanModel:
    """What ``span_model.score_windows`` needs of a reader model (``logits``), run by ONNX Runtime.

    Only the shared embedding table stays in torch; the reader's own layers are not held twice.
    ``run(hidden, mask) -> logits`` (numpy): another engine for the exported graph (bench/runtimes.py
    compiles it with OpenVINO, or quantized); default: an ONNX Runtime session of ``folder``'s export."""

    def __init__(self, base, folder: Path, threads: int = 0, run=None) -> None:
        if run is None:
            if not ready(folder):
                raise ModelError(f"the ONNX reader in {folder} is missing or changed since it was checked: "
                                 "run `assistant models fetch`")
            session = _session(folder, threads)
            run = lambda hidden, mask: session.run(None, {"hidden": hidden, "mask": mask})[0]  # noqa: E731
        self.base, self.run, self.folder = base, run, folder

    def logits(self, input_ids, attention_mask):
        import torch

        from .span_model import scaled_embedding

        hidden = scaled_embedding(self.base, input_ids)
        return torch.from_numpy(np.asarray(self.run(hidden.numpy(), attention_mask.numpy()), dtype=np.float32))
