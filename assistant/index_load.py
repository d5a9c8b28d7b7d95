"""Loading an index folder into the query-time :class:`LoadedIndex`; every file is checked against the manifest.

A folder that is missing, foreign, damaged or out of step with its manifest is refused with one
line that says what to run (docs/index-format.md lists the files). No pickle: arrays are loaded
with ``allow_pickle=False``, the vectors with ``faiss.read_index``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import manifest as manifest_file
from .errors import IndexStoreError
from .lexical import SCORING, TOKENIZER, LexicalIndex
from .manifest import MANIFEST, REBUILD, Manifest
from .types import Chunk
from .vector_store import FaissStore, PersistentStore, VectorStore, check_held, chunk_keys


class UnitVectors:
    """Per-chunk unit (sentence, list item, code block) vectors, computed with the chunk at build time.

    ``get(chunk_id)`` maps each unit's ``(start, end)`` in the chunk text to its unit vector.
    """

    def __init__(self, vectors: np.ndarray, offsets: np.ndarray, spans: np.ndarray) -> None:
        if offsets.ndim != 1 or spans.ndim != 2 or spans.shape[1] != 2 or len(spans) != len(vectors) \
                or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(vectors) or np.any(np.diff(offsets) < 0):
            raise ValueError("unit vector tables are out of step")
        self.vectors, self.offsets, self.spans = vectors, offsets, spans

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, chunk_id: int) -> dict[tuple[int, int], np.ndarray]:
        a, b = int(self.offsets[chunk_id]), int(self.offsets[chunk_id + 1])
        rows = self.vectors[a:b].astype(np.float32)
        return {(int(s), int(e)): v for (s, e), v in zip(self.spans[a:b], rows)}

    @classmethod
    def load(cls, folder: Path) -> UnitVectors:
        return cls(*(np.load(folder / f"{name}.npy", allow_pickle=False) for name in ("vectors", "offsets", "spans")))

    def save(self, folder: Path) -> None:
        folder.mkdir()
        for name in ("vectors", "offsets", "spans"):
            np.save(folder / f"{name}.npy", getattr(self, name), allow_pickle=False)


@dataclass
class LoadedIndex:
    folder: Path
    manifest: dict  # the manifest as stored (its JSON object), for callers that read its keys; `info` is it typed
    chunks: list[Chunk]
    lines: list[int]  # 1-based line of each chunk's start in its document
    vectors: object  # faiss.Index of the folder's vectors file; None when they live in another store
    lexical: LexicalIndex
    pages: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    units: UnitVectors | None = None  # absent in indexes built by embedders without embed_passages
    store: VectorStore | None = None  # where the dense vectors are searched; default: the vectors file
    keys: np.ndarray | None = None  # the store's row id of each chunk; None: row ids are chunk positions
    info: Manifest | None = field(default=None, repr=False, compare=False)  # None: read from ``manifest``

    def __post_init__(self) -> None:
        if self.info is None:
            self.info = Manifest.from_json(self.manifest, self.folder / MANIFEST)
        if self.store is None:
            self.store = FaissStore(self.vectors, f"the vectors file of {self.folder}")
        if self.keys is not None:
            self._order = np.argsort(self.keys, kind="stable")
            self._sorted = self.keys[self._order]
        self.sha256 = {d.source: d.sha256 for d in self.info.documents}  # each document's, as indexed

    @property
    def model_id(self) -> str:
        return self.info.embedding.model_id

    def dense_search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ids and inner products of the ``k`` chunks nearest to ``query``, best first."""
        ids, scores = self.store.search(query, k)
        if self.keys is None:
            return ids, scores
        j = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        known = self._sorted[j] == ids  # rows of another generation (a build in progress) are not ours
        return self._order[j[known]], scores[known]

    def dense_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of chunk ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        return self.store.vectors(ids if self.keys is None else self.keys[ids])


def load_index(folder: Path, store: PersistentStore | None = None, *, strict: bool = True) -> LoadedIndex:
    """The index in ``folder``; its dense vectors from its vectors file, or from ``store`` when the
    manifest says they were written there. ``strict``: refuse a folder whose vectors are not in
    ``store`` (a build passes False, to reuse them from wherever they are)."""
    import faiss

    stored, info = manifest_file.read(folder)
    if info.lexical != {"tokenizer": TOKENIZER, "scoring": SCORING}:
        raise IndexStoreError(f"{folder} was built by another version of assistant (its lexical index differs): "
                              f"{REBUILD}")
    if info.vector_store:
        vectors = None
        check_held(folder, stored, store)
    else:
        if strict and store is not None:
            raise IndexStoreError(f"the vectors of {folder} are in its own vectors file, but ASSISTANT_VECTOR_STORE "
                                  f"names {store.name}: run `assistant index build` to copy them there (no "
                                  "re-embedding), or unset ASSISTANT_VECTOR_STORE")
        try:
            vectors = faiss.read_index(str(_member(folder, info, "vectors")))
        except RuntimeError as exc:
            raise IndexStoreError(f"the vector file of {folder} is damaged or truncated: {REBUILD}") from exc
    chunks, lines = _read_chunks(_member(folder, info, "chunks"))
    try:
        lexical = LexicalIndex.load(_member(folder, info, "lexical"))
    except (OSError, ValueError, KeyError) as exc:
        raise IndexStoreError(f"the lexical index of {folder} is damaged ({exc.__class__.__name__}): "
                              f"{REBUILD}") from exc
    n, dim = info.chunk_count, info.embedding.dimension
    if vectors is not None and (not (len(chunks) == vectors.ntotal == n) or vectors.d != dim):
        raise IndexStoreError(f"{folder} is inconsistent ({len(chunks)} chunks, {vectors.ntotal} vectors, manifest "
                              f"says {n}): {REBUILD}")
    if vectors is None and len(chunks) != n:
        raise IndexStoreError(f"{folder} is inconsistent ({len(chunks)} chunks, manifest says {n}): {REBUILD}")
    for d in info.documents:  # each document's chunk range holds that document's chunks
        if any(c.source != d.source for c in chunks[d.first_chunk:d.first_chunk + d.chunks]):
            raise IndexStoreError(f"{folder} is inconsistent (the chunks of {d.source!r} are not where the "
                                  f"manifest says): {REBUILD}")
    pages = {d.source: list(d.pages) for d in info.documents if d.pages}
    units = _read_units(folder, info) if "units" in info.files else None
    keys = chunk_keys(stored["documents"], stored["chunking"]) if info.vector_store else None
    return LoadedIndex(folder, stored, chunks, lines, vectors, lexical, pages, units,
                       store if info.vector_store else None, keys, info)


def _member(folder: Path, info: Manifest, part: str) -> Path:
    if part not in info.files:
        raise IndexStoreError(f"{folder / MANIFEST} names no valid {part} file: {REBUILD}")
    path = folder / info.files[part]  # Manifest.from_json has refused names that leave the folder
    if not path.exists():
        raise IndexStoreError(f"{path} is missing: {REBUILD}")
    return path


def _read_chunks(path: Path) -> tuple[list[Chunk], list[int]]:
    chunks, lines = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                row = json.loads(line)
                chunk = Chunk(str(row["source"]), int(row["start"]), int(row["end"]), str(row["text"]),
                              str(row.get("heading", "")))
                if chunk.end - chunk.start != len(chunk.text):
                    raise ValueError(f"line {number}: offsets do not match the text length")
                chunks.append(chunk)
                lines.append(int(row.get("line", 0)))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise IndexStoreError(f"{path} is damaged ({exc}): {REBUILD}") from exc
    return chunks, lines


def _read_units(folder: Path, info: Manifest) -> UnitVectors:
    try:
        units = UnitVectors.load(_member(folder, info, "units"))
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise IndexStoreError(f"the sentence vectors of {folder} are damaged ({reason}): {REBUILD}") from exc
    if len(units) != info.chunk_count or units.vectors.shape[1] != info.embedding.dimension:
        raise IndexStoreError(f"{folder} is inconsistent (sentence vectors for {len(units)} chunks, manifest "
                              f"says {info.chunk_count}): {REBUILD}")
    return units
