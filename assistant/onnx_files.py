"""What the ONNX exports (onnx_reader.py, onnx_encoder.py) share: their cache folders, stamps and sessions.

An export is made on the user's machine from verified weights, into a staging folder; once it has
reproduced torch's outputs on probes, it is moved into place and its files' size, sha256 and mtime
are written into ``stamp.json``. A later load only compares sizes and mtimes with the stamp (as for
the carried models), so a changed or half-written export is never read.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from importlib import metadata
from pathlib import Path

from .models import sha256_file

STAMP = "stamp.json"
EXPORTERS = ("torch", "transformers")  # their versions are part of an export's key


def available() -> bool:
    """Whether onnxruntime is installed (without importing it)."""
    try:
        metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        return False
    return True


def version(package: str) -> str:
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{package} -"


def folder_for(home: Path, kind: str, fmt: str, *parts: str) -> Path:
    """``home/onnx/<kind>-<key>``: one folder per format, inputs and exporter versions."""
    versions = "|".join(version(p) for p in EXPORTERS)
    key = hashlib.sha256("|".join([fmt, *parts, versions]).encode()).hexdigest()[:16]
    return home / "onnx" / f"{kind}-{key}"


def staging_for(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    return staging


def publish(staging: Path, folder: Path, fmt: str, **extra) -> None:
    """Move a checked export from ``staging`` to ``folder`` and stamp its files."""
    files = {}
    for path in sorted(p for p in staging.iterdir() if p.is_file()):
        files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    for name, entry in files.items():  # mtimes after the move: what a later load compares
        entry["mtime_ns"] = (folder / name).stat().st_mtime_ns
    stamp = {"format": fmt, "files": files, **extra,
             "versions": [version(p) for p in (*EXPORTERS, "onnx", "onnxruntime")]}
    (folder / STAMP).write_text(json.dumps(stamp, indent=1) + "\n", "utf-8")


def ready(folder: Path, fmt: str, graph: str) -> bool:
    """Whether ``folder`` holds a complete export of format ``fmt``, unchanged since it was stamped."""
    try:
        stamp = json.loads((folder / STAMP).read_text("utf-8"))
        files = stamp["files"]
        if stamp.get("format") != fmt or graph not in files:
            return False
        for name, entry in files.items():
            st = (folder / name).stat()
            if st.st_size != entry["size"] or st.st_mtime_ns != entry["mtime_ns"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = threads
    # ONNX Runtime's pool threads spin after each run by default, and on 2 cores they then hold the CPU that
    # FAISS, numpy and the next session need: FAISS's 20k search took 17 ms right after the query encoder
    # instead of 4.5, and the span answer 282-288 ms p50 instead of 223-227 (BENCHMARKS.md). Passage
    # encoding is as fast without it (4.5-4.8 chunks/s either way).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def stale(home: Path, keep: set[Path], grace_s: float = 3600.0) -> list[Path]:
    """The folders under ``home/onnx`` that no current setting reads: exports other than ``keep`` (of an
    older format, other exporter versions, other reader weights) and staging folders left by an export
    that stopped, once older than ``grace_s`` (a younger one may be an export still being written)."""
    import time

    root = home / "onnx"
    if not root.is_dir():
        return []
    now, out = time.time(), []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.is_symlink() or path in keep:
            continue
        if path.name.startswith("."):
            if ".tmp-" in path.name and now - path.stat().st_mtime > grace_s:
                out.append(path)
        elif path.name.split("-")[0] in ("encoder", "reader"):
            out.append(path)
    return out


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
