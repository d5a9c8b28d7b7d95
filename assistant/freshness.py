"""Whether the documents an answer cites still hold what the index quotes.

A document edited (or removed) after the index was built makes its quotes stale: the character
ranges point into the old text. Each cited file is checked against the sha256 the index recorded;
the hash is computed again only when the file's size or modification time changed since the last
check, so an answer costs one ``stat`` per cited document.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path


class SourceCheck:
    """Finds the cited documents whose file changed since indexing (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hashes: dict[Path, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, sha256)

    def changed(self, corpus: str, recorded: dict[str, str], sources: Iterable[str]) -> tuple[str, ...]:
        """The sources (in the order given, once each) whose file is gone or differs from ``recorded``
        (source -> sha256 at indexing). Without a corpus folder there is nothing to check."""
        if not corpus:
            return ()
        out = []
        for source in dict.fromkeys(sources):
            expected = recorded.get(source)
            if expected is not None and self._sha256(Path(corpus) / source) != expected:
                out.append(source)
        return tuple(out)

    def _sha256(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError:
            return ""  # gone, or unreadable: it no longer holds what was indexed
        with self._lock:
            known = self._hashes.get(path)
        if known and known[:2] == (st.st_mtime_ns, st.st_size):
            return known[2]
        digest = hashlib.sha256()
        try:
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return ""
        with self._lock:
            self._hashes[path] = (st.st_mtime_ns, st.st_size, digest.hexdigest())
        return digest.hexdigest()
