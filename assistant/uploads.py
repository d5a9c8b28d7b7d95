"""Uploads from the chat page: the name each file is stored under, and copying the acceptable ones to a staging folder.

Checked here: the name (no path, no control characters, not hidden, not too long), the type and the size.
What the file holds is checked when ``Assistant.add`` reads it.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .errors import IngestError
from .ingest import check_supported

_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def safe_name(name: str) -> str:
    """The name an uploaded file is stored under in the corpus, or IngestError saying why it cannot be."""
    name = (name or "").strip()
    if not name:
        raise IngestError("the file has no name")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise IngestError("the file name contains a path (/, \\ or ..); upload the file itself")
    if _NAME_CONTROL.search(name):
        raise IngestError("the file name contains control characters; rename the file")
    if name.startswith("."):
        raise IngestError("hidden file names (starting with '.') are not accepted; rename the file")
    if len(name.encode("utf-8")) > 200:
        raise IngestError("the file name is longer than 200 bytes; rename the file")
    return name


def stage_uploads(uploads: list[tuple[Path, str]], staging: Path,
                  max_bytes: int) -> tuple[list[Path], list[tuple[str, str]]]:
    """Copy each (uploaded file, original name) into ``staging`` under its safe name; refuse the rest.

    Returns the staged paths and (name, reason) for each refused upload. Nothing is written outside
    ``staging``; the readable files then go to ``Assistant.add``, which copies them into the corpus.
    """
    staged: list[Path] = []
    refused: list[tuple[str, str]] = []
    for path, name in uploads:
        shown = _NAME_CONTROL.sub("?", name or "?")[:120]
        try:
            name = safe_name(name)
            check_supported(name)
            size = Path(path).stat().st_size
            if size > max_bytes:
                raise IngestError(f"the file is {size / (1 << 20):.1f} MB; the limit is {max_bytes >> 20} MB "
                                  "(ASSISTANT_MAX_FILE_MB)")
            target = staging / name
            if target.exists():
                raise IngestError("a file of the same name is already in this upload")
            shutil.copyfile(path, target)
        except IngestError as exc:
            refused.append((shown, str(exc)))
            continue
        except OSError as exc:
            refused.append((shown, f"could not read the upload ({exc.strerror or exc})"))
            continue
        staged.append(target)
    return staged, refused


def named_uploads(files) -> list[tuple[Path, str]]:
    """(path, name) for each file Gradio hands over: a list of paths, one path, or nothing."""
    paths = [str(f) for f in (files if isinstance(files, (list, tuple)) else [files] if files else [])]
    return [(Path(p), os.path.basename(p)) for p in paths]
