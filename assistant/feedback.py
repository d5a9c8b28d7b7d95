"""Thumbs up/down on answers, kept on this machine as JSON lines next to the index folder.

One line per rating: when, the rating (+1 / -1), an optional comment, the question, the answer text,
its citations (source, start, end, quote) and the reader that answered. Nothing leaves the machine;
``assistant feedback export`` writes the lines out (as JSON lines or one JSON array).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

from .errors import AssistantError

MAX_COMMENT_CHARS = 2000
_lock = threading.Lock()  # one writer at a time within the process (the UI serves several tabs)


def feedback_path(index: Path) -> Path:
    """Where the ratings of ``index`` are kept: beside the folder (a rebuild never touches them)."""
    index = Path(index)
    return index.with_name(f"{index.name}.feedback.jsonl")


def record(answer: dict, rating: int, comment: str = "", reader: str = "") -> dict:
    """One feedback line for ``answer`` (``Answer.to_dict()``)."""
    if rating not in (1, -1):
        raise ValueError("rating must be +1 or -1")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise AssistantError(f"the comment is {len(comment):,} characters long; the limit is {MAX_COMMENT_CHARS:,}")
    cite = ("n", "source", "start", "end", "quote")
    return {"time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "rating": rating, "comment": comment,
            "question": answer.get("question", ""), "answer": answer.get("answer", ""),
            "abstained": bool(answer.get("abstained")),
            "citations": [{k: c.get(k) for k in cite} for c in answer.get("citations", ())],
            "answer_span": answer.get("answer_span"), "reader": reader}


def append(path: Path, line: dict) -> None:
    """Add one line to the file (created on first use); OSError is reported in one line."""
    data = json.dumps(line, ensure_ascii=False) + "\n"
    try:
        with _lock, open(path, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise AssistantError(f"cannot save the feedback to {path.name}: {exc.strerror or exc}") from None


def read(path: Path) -> list[dict]:
    """Every rating in the file, oldest first; lines that are not a JSON object are skipped (a torn last line)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text("utf-8", errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out
