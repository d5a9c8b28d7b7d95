"""Generations of an index folder: one build at a time, an atomic swap, and cleanup of the rest.

A build writes its files into ``.tmp-<generation>/``, moves them beside the files of the serving
generation, fsyncs them, and then replaces ``manifest.json`` in one ``os.replace``: a reader sees
the old index or the new one, never a mix, and a build that fails or is killed leaves the old
manifest serving. Files of other generations are removed after the swap (and stale ones by the next
build), except the segments the new manifest still references (an add-only update writes one new
segment and keeps the others). Only names made by :func:`~assistant.manifest.part_file`, the staging folder and the lock are
ever removed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import IndexStoreError
from .manifest import LOCK, MANIFEST, PARTS, STAGING, Manifest, dumps

_GENERATION = r"\d{8}T\d{6}-[0-9a-f]{8}"  # what new_generation() makes
_PREFIXES = tuple(f"{part}-" for part in PARTS) + (STAGING,)
_OUR_FILE = re.compile(re.escape(LOCK) + "|(?:" + "|".join(map(re.escape, _PREFIXES)) + ")" + _GENERATION
                       + "(?:" + "|".join(re.escape(end) for end in sorted(set(PARTS.values())) if end) + ")?")


def new_generation() -> str:
    """A new generation's name: build time (UTC) and a random suffix, e.g. ``20261123T101500-1a2b3c4d``."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


@contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """One build at a time per index folder (an advisory lock; released if the process dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexStoreError(f"another build is writing {folder}; wait for it to finish") from None
            raise
        yield


@contextmanager
def staging(folder: Path, generation: str) -> Iterator[Path]:
    """The folder a generation's files are written in before :func:`commit`; removed whatever happens."""
    path = folder / f"{STAGING}{generation}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def commit(folder: Path, stage: Path, manifest: Manifest) -> None:
    """Move the files of ``manifest``'s newest segment from ``stage`` into ``folder``, make them durable, and
    swap it in. The other segments' files (an add-only update keeps them) are already in the folder, durable
    since the build that wrote them; they are not touched."""
    names = list(manifest.parts[-1].files.values())
    for name in names:
        os.rename(stage / name, folder / name)
    _fsync_tree(folder, names)
    tmp = stage / MANIFEST
    tmp.write_text(dumps(manifest.to_json()), "utf-8")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)  # the swap: from here on readers see the new generation
    _fsync_dir(folder)


def remove_other_generations(folder: Path, keep: Manifest) -> None:
    """Delete files of older or abandoned generations (never anything we did not name): every file of ours
    that ``keep``, the manifest being served, does not reference (it references the segments of earlier
    generations an add-only update still serves) and that is not of its generation."""
    kept = keep.referenced
    for path in folder.iterdir():
        if path.name.startswith(_PREFIXES) and keep.generation not in path.name and path.name not in kept:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def only_our_files(folder: Path) -> bool:
    """Whether a folder without a manifest holds only what a build that never finished leaves behind."""
    return all(_OUR_FILE.fullmatch(p.name) for p in folder.iterdir())


def _fsync_tree(folder: Path, names) -> None:
    for name in names:
        path = folder / name
        for p in [path] if path.is_file() else [q for q in path.rglob("*") if q.is_file()]:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
