"""Loading an index folder into the query-time :class:`LoadedIndex`; every file is checked against the manifest.

A folder that is missing, foreign, damaged or out of step with its manifest is refused with one
line that says what to run (docs/index-format.md lists the files). No pickle: arrays are loaded
with ``allow_pickle=False``, the vectors with ``faiss.read_index``.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import manifest as manifest_file
from .errors import IndexStoreError
from .lexical import SCORING, TOKENIZER, LexicalIndex
from .manifest import MANIFEST, REBUILD, Manifest, Segment
from .types import Chunk
from .vector_store import FaissStore, PersistentStore, VectorStore, check_held, chunk_keys


class UnitVectors:
    """Per-chunk unit (sentence, list item, code block) vectors, computed with the chunk at build time.

    ``get(chunk_id)`` maps each unit's ``(start, end)`` in the chunk text to its unit vector.
    """

    def __init__(self, vectors: np.ndarray | list[np.ndarray], offsets: np.ndarray, spans: np.ndarray) -> None:
        # ``vectors``: the rows, or blocks of them one after another (an index of several segments keeps each
        # segment's block as it was loaded: appending a segment copies no vectors).
        blocks = list(vectors) if isinstance(vectors, list) else [vectors]
        rows = sum(len(block) for block in blocks)
        if offsets.ndim != 1 or spans.ndim != 2 or spans.shape[1] != 2 or len(spans) != rows \
                or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != rows or np.any(np.diff(offsets) < 0) \
                or any(block.ndim != 2 or block.shape[1] != blocks[0].shape[1] for block in blocks):
            raise ValueError("unit vector tables are out of step")
        self._blocks, self.offsets, self.spans = blocks, offsets, spans
        self._starts = np.cumsum([0] + [len(block) for block in blocks])

    @property
    def dimension(self) -> int:
        return int(self._blocks[0].shape[1])

    @property
    def vectors(self) -> np.ndarray:
        """Every unit's vector, one row each (joined into one array when there are several blocks)."""
        return self._blocks[0] if len(self._blocks) == 1 else np.concatenate(self._blocks)

    def rows(self, a: int, b: int) -> np.ndarray:
        """The vectors of units ``a .. b - 1`` (float16)."""
        if len(self._blocks) == 1:
            return self._blocks[0][a:b]
        first = int(np.searchsorted(self._starts, a, side="right")) - 1
        out, at = [], a
        for i in range(first, len(self._blocks)):
            if at >= b:
                break
            lo = self._starts[i]
            out.append(self._blocks[i][at - lo:min(b, self._starts[i + 1]) - lo])
            at = min(b, self._starts[i + 1])
        return out[0] if len(out) == 1 else np.concatenate(out) if out else self._blocks[0][:0]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, chunk_id: int) -> dict[tuple[int, int], np.ndarray]:
        a, b = int(self.offsets[chunk_id]), int(self.offsets[chunk_id + 1])
        rows = self.rows(a, b).astype(np.float32)
        return {(int(s), int(e)): v for (s, e), v in zip(self.spans[a:b], rows)}

    @classmethod
    def load(cls, folder: Path) -> UnitVectors:
        """The vectors are memory-mapped where the system lets a mapped file be replaced or removed (POSIX): a
        question reads only its passages' rows, so a start does not read the whole table (190 MB, 0.3 s at
        20,000 chunks). Index files are never written in place, so the mapping stays valid."""
        mmap = "r" if os.name == "posix" else None
        return cls(np.load(folder / "vectors.npy", allow_pickle=False, mmap_mode=mmap),
                   *(np.load(folder / f"{name}.npy", allow_pickle=False) for name in ("offsets", "spans")))

    def save(self, folder: Path) -> None:
        folder.mkdir()
        for name in ("vectors", "offsets", "spans"):
            np.save(folder / f"{name}.npy", getattr(self, name), allow_pickle=False)

    def extended(self, other: UnitVectors) -> UnitVectors:
        """These chunks' units followed by ``other``'s (the next segment's). Neither table changes; the vector
        blocks are shared, not copied (only the small offsets and spans tables are joined)."""
        return UnitVectors(self._blocks + other._blocks,
                           np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]),
                           np.concatenate([self.spans, other.spans]))


def joined_vectors(indexes: list) -> object:
    """The rows of ``indexes`` one after another, searched as one index (``JoinedVectors``; the index itself
    when there is one). Nothing is copied and none of them changes, so an index still being served stays as
    it is."""
    if len(indexes) == 1:
        return indexes[0]
    return JoinedVectors([part for index in indexes for part in getattr(index, "parts", [index])])


class JoinedVectors:
    """Several exact faiss indexes (one per segment) searched as one: row ids run on from one to the next.

    ``search`` asks each for its best ``k`` and keeps the best ``k`` of all, so the result is the one a single
    index of all the rows gives (equal scores across segments: the lower row id first, where a single flat
    index may order them either way)."""

    def __init__(self, parts: list) -> None:
        self.parts = parts
        self.d = parts[0].d
        self._starts = np.cumsum([0] + [int(p.ntotal) for p in parts])
        self.ntotal = int(self._starts[-1])

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = [], []
        for part, start in zip(self.parts, self._starts):
            if not part.ntotal:
                continue
            s, i = part.search(x, min(k, int(part.ntotal)))
            scores.append(np.where(i >= 0, s, -np.inf))
            ids.append(np.where(i >= 0, i + start, -1))
        s, i = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        s, i = np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
        if s.shape[1] < k:  # fewer rows than k: padded as faiss pads
            pad = k - s.shape[1]
            s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        return s.astype(np.float32), i.astype(np.int64)

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        return self.reconstruct_batch(np.arange(start, start + n, dtype=np.int64))

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.d), dtype=np.float32)
        part_of = np.searchsorted(self._starts, ids, side="right") - 1
        for p in np.unique(part_of):
            mask = part_of == p
            out[mask] = self.parts[p].reconstruct_batch(ids[mask] - self._starts[p])
        return out


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
    ``store`` (a build passes False, to reuse them from wherever they are).

    An index of several segments (format version 2) is read segment by segment, each checked against its
    own counts, and joined in order: chunk ids run on across segments, and the BM25 vocabularies are merged."""
    stored, info = manifest_file.read(folder)
    if info.lexical != {"tokenizer": TOKENIZER, "scoring": SCORING}:
        raise IndexStoreError(f"{folder} was built by another version of assistant (its lexical index differs): "
                              f"{REBUILD}")
    if info.vector_store:
        check_held(folder, stored, store)
    elif strict and store is not None:
        raise IndexStoreError(f"the vectors of {folder} are in its own vectors file, but ASSISTANT_VECTOR_STORE "
                              f"names {store.name}: run `assistant index build` to copy them there (no "
                              "re-embedding), or unset ASSISTANT_VECTOR_STORE")
    parts = [_read_segment(folder, info, segment) for segment in info.parts]
    chunks = parts[0].chunks if len(parts) == 1 else [c for p in parts for c in p.chunks]
    lines = parts[0].lines if len(parts) == 1 else [line for p in parts for line in p.lines]
    vectors = None if info.vector_store else joined_vectors([p.vectors for p in parts])
    lexical = functools.reduce(LexicalIndex.extended, (p.lexical for p in parts))
    units = None if parts[0].units is None else functools.reduce(UnitVectors.extended, (p.units for p in parts))
    for d in info.documents:  # each document's chunk range holds that document's chunks
        if any(c.source != d.source for c in chunks[d.first_chunk:d.first_chunk + d.chunks]):
            raise IndexStoreError(f"{folder} is inconsistent (the chunks of {d.source!r} are not where the "
                                  f"manifest says): {REBUILD}")
    pages = {d.source: list(d.pages) for d in info.documents if d.pages}
    keys = chunk_keys(stored["documents"], stored["chunking"]) if info.vector_store else None
    return LoadedIndex(folder, stored, chunks, lines, vectors, lexical, pages, units,
                       store if info.vector_store else None, keys, info)


@dataclass
class _SegmentFiles:
    """What one segment's files hold, each checked against the segment's chunk count."""

    chunks: list[Chunk]
    lines: list[int]
    vectors: object  # faiss index; None when the vectors are in a store
    lexical: LexicalIndex
    units: UnitVectors | None


def _read_segment(folder: Path, info: Manifest, segment: Segment) -> _SegmentFiles:
    import faiss

    vectors = None
    if not info.vector_store:
        try:
            vectors = faiss.read_index(str(_member(folder, segment, "vectors")))
        except RuntimeError as exc:
            raise IndexStoreError(f"the vector file of {folder} is damaged or truncated: {REBUILD}") from exc
    chunks, lines = _read_chunks(_member(folder, segment, "chunks"))
    try:
        lexical = LexicalIndex.load(_member(folder, segment, "lexical"))
    except (OSError, ValueError, KeyError) as exc:
        raise IndexStoreError(f"the lexical index of {folder} is damaged ({exc.__class__.__name__}): "
                              f"{REBUILD}") from exc
    n, dim = segment.chunk_count, info.embedding.dimension
    if vectors is not None and (not (len(chunks) == vectors.ntotal == n) or vectors.d != dim):
        raise IndexStoreError(f"{folder} is inconsistent ({len(chunks)} chunks, {vectors.ntotal} vectors, manifest "
                              f"says {n}): {REBUILD}")
    if vectors is None and len(chunks) != n:
        raise IndexStoreError(f"{folder} is inconsistent ({len(chunks)} chunks, manifest says {n}): {REBUILD}")
    if len(lexical) != n:
        raise IndexStoreError(f"{folder} is inconsistent (BM25 tokens for {len(lexical)} chunks, manifest says "
                              f"{n}): {REBUILD}")
    units = _read_units(folder, info, segment) if "units" in segment.files else None
    return _SegmentFiles(chunks, lines, vectors, lexical, units)


def _member(folder: Path, segment: Segment, part: str) -> Path:
    if part not in segment.files:
        raise IndexStoreError(f"{folder / MANIFEST} names no valid {part} file: {REBUILD}")
    path = folder / segment.files[part]  # Manifest.from_json has refused names that leave the folder
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


def _read_units(folder: Path, info: Manifest, segment: Segment) -> UnitVectors:
    try:
        units = UnitVectors.load(_member(folder, segment, "units"))
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise IndexStoreError(f"the sentence vectors of {folder} are damaged ({reason}): {REBUILD}") from exc
    if len(units) != segment.chunk_count or units.dimension != info.embedding.dimension:
        raise IndexStoreError(f"{folder} is inconsistent (sentence vectors for {len(units)} chunks, manifest "
                              f"says {segment.chunk_count}): {REBUILD}")
    return units
