"""The index folder on disk: build atomically, load, check the manifest. No pickle anywhere.

Layout of ``index/``::

    manifest.json                 what was built, how, and which files hold it (the only pointer)
    vectors-<generation>.faiss    FAISS inner-product index over unit vectors (faiss.write_index), unless the
                                  vectors live in a Milvus collection (manifest "vector_store"; vector_store.py)
    chunks-<generation>.jsonl     one chunk per line: source, start, end, line, heading, text
    lexical-<generation>/         each chunk's token ids (.npy, loaded with allow_pickle=False) + vocab json
    units-<generation>/           a vector per sentence / list item of each chunk (float16 .npy), for the reader

A build writes a new generation beside the old one, then replaces ``manifest.json`` in one
``os.replace``: a reader sees the old index or the new one, never a mix, and a build that fails or
is killed leaves the old manifest serving. Files of other generations are removed after the swap
(and stale ones by the next build).
"""
from __future__ import annotations

import errno
import hashlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chunking import chunk_document, spans
from .embedding import Embedder
from .errors import IndexStoreError
from .lexical import SCORING, TOKENIZER, LexicalIndex
from .types import Chunk, Document
from .vector_store import FaissStore, VectorStore, check_held, chunk_keys, store_manifest, write_rows

log = logging.getLogger(__name__)

FORMAT = "assistant-index"
FORMAT_VERSION = 1

def chunker_id() -> str:
    """Names the chunking code: a hash of chunking.py, so any change to it re-chunks on the next build."""
    from . import chunking

    return "sections-sentences-" + hashlib.sha256(Path(chunking.__file__).read_bytes()).hexdigest()[:12]

MANIFEST = "manifest.json"
_REBUILD = "rebuild it with `assistant index build --rebuild`"

Progress = Callable[[int, int], None]


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
    manifest: dict
    chunks: list[Chunk]
    lines: list[int]  # 1-based line of each chunk's start in its document
    vectors: object  # faiss.Index of the folder's vectors file; None when they live in another store
    lexical: LexicalIndex
    pages: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    units: UnitVectors | None = None  # absent in indexes built by embedders without embed_passages
    store: VectorStore | None = None  # where the dense vectors are searched; default: the vectors file
    keys: np.ndarray | None = None  # the store's row id of each chunk; None: row ids are chunk positions

    def __post_init__(self) -> None:
        if self.store is None:
            self.store = FaissStore(self.vectors, f"the vectors file of {self.folder}")
        if self.keys is not None:
            self._order = np.argsort(self.keys, kind="stable")
            self._sorted = self.keys[self._order]

    @property
    def model_id(self) -> str:
        return self.manifest["embedding"]["model_id"]

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


@dataclass(frozen=True)
class BuildReport:
    documents: int
    chunks: int
    embedded_chunks: int  # chunks whose vectors were computed (the rest were reused)
    reused_documents: int
    removed_documents: int
    skipped: tuple[tuple[str, str], ...]
    seconds: float
    unchanged: bool = False
    index: LoadedIndex | None = field(default=None, repr=False, compare=False)  # the new index, as written


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not folder.exists():
        raise IndexStoreError(f"no index at {folder}: build one with `assistant index build`")
    if not path.is_file():
        raise IndexStoreError(f"{folder} is not an assistant index (no {MANIFEST}): {_REBUILD} or pick another --index")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IndexStoreError(f"{path} is damaged ({exc.__class__.__name__}): {_REBUILD}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexStoreError(f"{path} is not an assistant index manifest: {_REBUILD} or pick another --index")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexStoreError(f"index format version {version!r} in {folder} is not supported (this program reads "
                              f"version {FORMAT_VERSION}): {_REBUILD}")
    for key in ("files", "embedding", "chunking", "documents", "chunk_count"):
        if key not in manifest:
            raise IndexStoreError(f"{path} lacks {key!r}: {_REBUILD}")
    problem = _manifest_problem(manifest)
    if problem:
        raise IndexStoreError(f"{path} is damaged ({problem}): {_REBUILD}")
    return manifest


def _manifest_problem(m: dict) -> str:
    """What is wrong with the shape of a manifest's values ('' if nothing), so a tampered one is refused clearly."""
    emb, count = m["embedding"], m["chunk_count"]
    if not isinstance(m["files"], dict) or not isinstance(m["chunking"], dict):
        return "'files' and 'chunking' must be objects"
    if not (isinstance(emb, dict) and isinstance(emb.get("model_id"), str) and isinstance(emb.get("dimension"), int)):
        return "'embedding' needs a model_id and an integer dimension"
    if not isinstance(count, int) or not isinstance(m["documents"], list):
        return "'chunk_count' must be an integer and 'documents' a list"
    first = 0
    for number, d in enumerate(m["documents"], 1):
        if not (isinstance(d, dict) and isinstance(d.get("source"), str) and isinstance(d.get("sha256"), str)
                and d.get("first_chunk") == first and isinstance(d.get("chunks"), int) and d["chunks"] >= 0):
            return f"document record {number} is malformed or its chunk range does not follow the previous one"
        pages = d.get("pages", [])
        if not (isinstance(pages, list) and all(isinstance(p, list) and len(p) == 2
                                                and all(isinstance(x, int) for x in p) for p in pages)):
            return f"the pages of {d['source']!r} are not (offset, page) pairs"
        first += d["chunks"]
    if first != count:
        return f"the documents hold {first} chunks, 'chunk_count' says {count}"
    return ""


def check_compatible(manifest: dict, embedder: Embedder, what: str = "the index") -> None:
    """Refuse an index (or a vector store: ``what`` names it) whose vectors came from another embedding model."""
    emb = manifest["embedding"]
    same = emb.get("model_id") == embedder.model_id and (
        not emb.get("weights_sha256") or not embedder.weights_sha256
        or emb.get("weights_sha256") == embedder.weights_sha256)
    if not same:
        raise IndexStoreError(f"{what} was built with embedding model {emb.get('model_id')!r}, but "
                              f"{embedder.model_id!r} is configured: {_REBUILD} (or set ASSISTANT_EMBED_MODEL "
                              "back to the index's model)")


def load_index(folder: Path, store: VectorStore | None = None, *, strict: bool = True) -> LoadedIndex:
    """The index in ``folder``; its dense vectors from its vectors file, or from ``store`` when the
    manifest says they were written there. ``strict``: refuse a folder whose vectors are not in
    ``store`` (a build passes False, to reuse them from wherever they are)."""
    import faiss

    manifest = read_manifest(folder)
    files = manifest["files"]
    if manifest.get("lexical") != {"tokenizer": TOKENIZER, "scoring": SCORING}:
        raise IndexStoreError(f"{folder} was built by another version of assistant (its lexical index differs): "
                              f"{_REBUILD}")
    held = manifest.get("vector_store")
    if held:
        vectors = None
        check_held(folder, manifest, store)
    else:
        if strict and store is not None:
            raise IndexStoreError(f"the vectors of {folder} are in its own vectors file, but ASSISTANT_VECTOR_STORE "
                                  f"names {store.name}: run `assistant index build` to copy them there (no "
                                  "re-embedding), or unset ASSISTANT_VECTOR_STORE")
        try:
            vectors = faiss.read_index(str(_member(folder, files, "vectors")))
        except RuntimeError as exc:
            raise IndexStoreError(f"the vector file of {folder} is damaged or truncated: {_REBUILD}") from exc
    chunks, lines = _read_chunks(_member(folder, files, "chunks"))
    try:
        lexical = LexicalIndex.load(_member(folder, files, "lexical"))
    except (OSError, ValueError, KeyError) as exc:
        raise IndexStoreError(f"the lexical index of {folder} is damaged ({exc.__class__.__name__}): {_REBUILD}") from exc
    n = manifest["chunk_count"]
    dim = manifest["embedding"].get("dimension")
    if vectors is not None and (not (len(chunks) == vectors.ntotal == n) or vectors.d != dim):
        raise IndexStoreError(f"{folder} is inconsistent ({len(chunks)} chunks, {vectors.ntotal} vectors, manifest "
                              f"says {n}): {_REBUILD}")
    if vectors is None and len(chunks) != n:
        raise IndexStoreError(f"{folder} is inconsistent ({len(chunks)} chunks, manifest says {n}): {_REBUILD}")
    for d in manifest["documents"]:  # each document's chunk range holds that document's chunks
        if any(c.source != d["source"] for c in chunks[d["first_chunk"]:d["first_chunk"] + d["chunks"]]):
            raise IndexStoreError(f"{folder} is inconsistent (the chunks of {d['source']!r} are not where the "
                                  f"manifest says): {_REBUILD}")
    pages = {d["source"]: [tuple(p) for p in d.get("pages", [])] for d in manifest["documents"] if d.get("pages")}
    units = None
    if "units" in files:
        try:
            units = UnitVectors.load(_member(folder, files, "units"))
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise IndexStoreError(f"the sentence vectors of {folder} are damaged ({reason}): {_REBUILD}") from exc
        if len(units) != n or units.vectors.shape[1] != dim:
            raise IndexStoreError(f"{folder} is inconsistent (sentence vectors for {len(units)} chunks, manifest "
                                  f"says {n}): {_REBUILD}")
    keys = chunk_keys(manifest["documents"], manifest["chunking"]) if held else None
    return LoadedIndex(folder, manifest, chunks, lines, vectors, lexical, pages, units,
                       store if held else None, keys)


def _member(folder: Path, files: dict, key: str) -> Path:
    name = files.get(key) if isinstance(files, dict) else None
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        raise IndexStoreError(f"{folder / MANIFEST} names no valid {key} file: {_REBUILD}")
    path = folder / name
    if not path.exists():
        raise IndexStoreError(f"{path} is missing: {_REBUILD}")
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
        raise IndexStoreError(f"{path} is damaged ({exc}): {_REBUILD}") from exc
    return chunks, lines


@contextmanager
def build_lock(folder: Path):
    """One build at a time per index folder (an advisory lock; released if the process dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexStoreError(f"another build is writing {folder}; wait for it to finish") from None
            raise
        yield


def build_index(folder: Path, documents: list[Document], embedder: Embedder, *, chunk_size: int, chunk_overlap: int,
                skipped: list[tuple[str, str]] = (), corpus: Path | None = None, rebuild: bool = False,
                progress: Progress | None = None, embed_batch: int = 64,
                loaded: LoadedIndex | None = None, store: VectorStore | None = None) -> BuildReport:
    """Build (or update) the index in ``folder`` from ``documents``.

    ``store``: a persistent vector store (Milvus) to hold the dense vectors instead of the folder's
    vectors file; it is updated in place (rows of removed and changed documents deleted, new ones
    added) when it holds the previous generation, and rewritten otherwise.

    ``loaded``: the index as a server already holds it in memory; used instead of reading the folder
    again when it is still the generation that the folder's manifest names.

    Documents whose content hash and chunking are unchanged keep their vectors; only new and changed
    documents are embedded. ``rebuild=True`` re-embeds everything.
    """
    t0 = time.monotonic()
    if not documents:  # an index of nothing cannot answer anything (and BM25 cannot index an empty corpus)
        raise _nothing_to_index(skipped)
    if folder.exists() and any(folder.iterdir()) and not (folder / MANIFEST).exists() \
            and not _only_our_files(folder):
        raise IndexStoreError(f"{folder} is not empty and is not an assistant index: refusing to write into it; "
                              "pick another --index")
    with build_lock(folder):
        previous = _reusable(folder, embedder, chunk_size, chunk_overlap, loaded, store) if not rebuild else None
        in_store = _store_holds(store, previous, embedder, rebuild)
        if previous is not None and previous.keys is not None and not in_store:
            log.warning("%s does not hold the index's vectors; re-embedding every document", store.name)
            previous = None
        old = {d["source"]: d for d in previous.manifest["documents"]} if previous else {}
        chunks: list[Chunk] = []
        vectors: list[np.ndarray | None] = []
        units: list[tuple[np.ndarray, np.ndarray] | int | None] = []  # per chunk: (spans, vectors) or old chunk id
        tokens: list[tuple[LexicalIndex, int] | None] = []  # per chunk: where its lexical tokens can be reused
        to_embed: list[int] = []
        records = []
        reused = 0
        for document in documents:
            prior = old.get(document.source)
            if prior and prior["sha256"] == document.sha256:
                first, count = prior["first_chunk"], prior["chunks"]
                doc_chunks = previous.chunks[first:first + count]
                doc_vectors = [None] * count if in_store or not count else \
                    list(previous.dense_vectors(np.arange(first, first + count)))
                doc_units = list(range(first, first + count)) if previous.units else [None] * count
                tokens.extend((previous.lexical, i) for i in range(first, first + count))
                reused += 1
            else:
                doc_chunks = chunk_document(document, chunk_size, chunk_overlap)
                doc_vectors = [None] * len(doc_chunks)
                doc_units = [None] * len(doc_chunks)
                tokens.extend([None] * len(doc_chunks))
                to_embed.extend(range(len(chunks), len(chunks) + len(doc_chunks)))
            records.append({"source": document.source, "sha256": document.sha256, "chars": len(document.text),
                            "encoding": document.encoding, "first_chunk": len(chunks), "chunks": len(doc_chunks),
                            "pages": [list(p) for p in document.pages]})
            chunks.extend(doc_chunks)
            vectors.extend(doc_vectors)
            units.extend(doc_units)
        if not chunks:
            raise _nothing_to_index(skipped)
        removed = len(set(old) - {d.source for d in documents})
        same_store = in_store or (store is None and previous is not None and previous.keys is None)
        if previous and not to_embed and not removed and len(documents) == len(old) and same_store:
            # Nothing to write, but files left by a build that was killed are still removed.
            _remove_other_generations(folder, previous.manifest.get("generation") or "")
            return BuildReport(len(documents), len(chunks), 0, reused, 0, tuple(skipped), time.monotonic() - t0, True)
        _embed(embedder, chunks, vectors, units, to_embed, progress, embed_batch)
        lines = _chunk_lines(documents, chunks)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "embedding": {"model_id": embedder.model_id, "weights_sha256": embedder.weights_sha256,
                          "dimension": embedder.dimension, "dtype": getattr(embedder, "dtype", "")},
            "chunking": {"chunker": chunker_id(), "size": chunk_size, "overlap": chunk_overlap},
            "lexical": {"tokenizer": TOKENIZER, "scoring": SCORING},
            "corpus": str(corpus.resolve()) if corpus else "",
            "documents": records, "skipped": [{"source": s, "reason": r} for s, r in skipped],
            "chunk_count": len(chunks),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        table = _unit_table(units, manifest["embedding"]["dimension"], previous.units if previous else None)
        written = None
        if store is None:
            matrix = np.vstack(vectors).astype(np.float32)
            final, index, lexical = _write_generation(folder, manifest, chunks, lines, matrix, table, tokens, t0)
            pages = {d.source: [tuple(p) for p in d.pages] for d in documents if d.pages}
            written = LoadedIndex(folder, final, chunks, lines, index, lexical, pages, table)
        else:
            manifest["vector_store"] = {"engine": "milvus", "collection": getattr(store, "collection", "")}
            write_rows(store, manifest, [c.source for c in chunks], vectors, to_embed,
                       previous.keys if in_store else None)
            final, _, _ = _write_generation(folder, manifest, chunks, lines, None, table, tokens, t0)
            emb = manifest["embedding"]
            store.write_manifest(store_manifest(emb["model_id"], emb["weights_sha256"], emb["dimension"],
                                                final["generation"]))
        return BuildReport(len(documents), len(chunks), len(to_embed), reused, removed, tuple(skipped),
                           time.monotonic() - t0, index=written)


def _nothing_to_index(skipped) -> IndexStoreError:
    reasons = "; ".join(f"{source}: {reason}" for source, reason in list(skipped)[:3])
    return IndexStoreError(f"no text to index ({len(skipped)} files skipped{': ' if reasons else ''}{reasons}): "
                           "add .txt, .md, .pdf or .docx files with text to the corpus folder")


_OUR_FILE = re.compile(r"\.lock|(?:\.tmp-|vectors-|chunks-|lexical-|units-)\d{8}T\d{6}-[0-9a-f]{8}(?:\.faiss|\.jsonl)?")


def _only_our_files(folder: Path) -> bool:
    """Whether a folder without a manifest holds only what a build that never finished leaves behind."""
    return all(_OUR_FILE.fullmatch(p.name) for p in folder.iterdir())


def _store_holds(store: VectorStore | None, previous: LoadedIndex | None, embedder: Embedder, rebuild: bool) -> bool:
    """Whether ``store`` holds the previous generation's vectors (so only the difference is written).
    A store built with another model is refused, as an index folder is, unless rebuilding."""
    if store is None:
        return False
    held = store.read_manifest()
    if held is not None and not rebuild:
        check_compatible(held, embedder, what=store.name)
    return previous is not None and previous.store is store and held is not None \
        and held.get("generation") == previous.manifest.get("generation")


def _reusable(folder: Path, embedder: Embedder, size: int, overlap: int,
              loaded: LoadedIndex | None = None, store: VectorStore | None = None) -> LoadedIndex | None:
    """The previous index if its vectors can be reused; a foreign model is refused, not mixed."""
    if not (folder / MANIFEST).exists():
        return None
    try:
        current = loaded is not None and loaded.folder.resolve() == folder.resolve() and \
            read_manifest(folder).get("generation") == loaded.manifest.get("generation")
        previous = loaded if current else load_index(folder, store, strict=False)
    except IndexStoreError as exc:
        log.warning("previous index not reusable, rebuilding from scratch: %s", exc)
        return None
    check_compatible(previous.manifest, embedder)
    chunking = previous.manifest["chunking"]
    if chunking != {"chunker": chunker_id(), "size": size, "overlap": overlap}:
        log.info("chunking changed (%s); re-embedding every document", chunking)
        return None
    if previous.units is None and getattr(embedder, "embed_passages", None) is not None:
        log.info("the index has no sentence vectors (built by an older version); re-embedding every document")
        return None
    return previous


def _embed(embedder: Embedder, chunks: list[Chunk], vectors: list, units: list, to_embed: list[int],
           progress: Progress | None, batch: int) -> None:
    """Fill ``vectors`` (and ``units``, when the embedder can give unit vectors) for the chunks ``to_embed``."""
    # Longest first, so batches pad little; the embedder sorts within a call, we sort across calls.
    order = sorted(to_embed, key=lambda i: len(chunks[i].text), reverse=True)
    late = getattr(embedder, "embed_passages", None)
    done = 0
    for k in range(0, len(order), batch):
        ids = order[k:k + batch]
        texts, titles = [chunks[i].text for i in ids], [chunks[i].heading for i in ids]
        if late is not None:
            spans_ = [[(s.start, s.end) for s in spans(t)] for t in texts]
            out, unit_out = late(texts, titles, spans_)
            for i, sp, uv in zip(ids, spans_, unit_out, strict=True):
                units[i] = (np.asarray(sp, dtype=np.int32).reshape(-1, 2), np.asarray(uv, dtype=np.float16))
        else:
            out = embedder.embed_documents(texts, titles)
        for i, v in zip(ids, out, strict=True):
            vectors[i] = v
        done += len(ids)
        if progress:
            progress(done, len(order))


def _unit_table(units: list, dimension: int, previous: UnitVectors | None) -> UnitVectors | None:
    """One table of all chunks' unit vectors, or None unless every chunk has them.

    ``units[i]`` is the new chunk i's ``(spans, vectors)``, or the id of the same chunk in ``previous``,
    whose rows are copied over in one gather (an incremental build of 20k chunks changes a few).
    """
    if not units or any(u is None for u in units):
        return None
    old = np.asarray([isinstance(u, int) for u in units])
    counts = np.asarray([len(u[0]) if not isinstance(u, int) else 0 for u in units], dtype=np.int64)
    if old.any():
        ids = np.asarray([u for u in units if isinstance(u, int)], dtype=np.int64)
        counts[old] = previous.offsets[ids + 1] - previous.offsets[ids]
    offsets = np.zeros(len(units) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    vectors = np.empty((int(offsets[-1]), dimension), dtype=np.float16)
    spans_ = np.empty((int(offsets[-1]), 2), dtype=np.int32)
    i = 0
    while i < len(units):  # copy runs of consecutive old chunks as one block each
        if not isinstance(units[i], int):
            i += 1
            continue
        j = i
        while j + 1 < len(units) and isinstance(units[j + 1], int) and units[j + 1] == units[j] + 1:
            j += 1
        a, b = previous.offsets[units[i]], previous.offsets[units[j] + 1]
        vectors[offsets[i]:offsets[j + 1]] = previous.vectors[a:b]
        spans_[offsets[i]:offsets[j + 1]] = previous.spans[a:b]
        i = j + 1
    for i in np.flatnonzero(~old):
        a, b = offsets[i], offsets[i + 1]
        spans_[a:b], vectors[a:b] = np.asarray(units[i][0]).reshape(-1, 2), np.asarray(units[i][1]).reshape(-1, dimension)
    return UnitVectors(vectors, offsets, spans_)


def _chunk_lines(documents: list[Document], chunks: list[Chunk]) -> list[int]:
    """1-based line of each chunk's start, counting newlines only since the previous chunk of the
    same document (a document's chunks are in order), so a long document is scanned once."""
    texts = {d.source: d.text for d in documents}
    lines, source, pos, line = [], None, 0, 1
    for c in chunks:
        if c.source != source or c.start < pos:
            source, pos, line = c.source, 0, 1
        line += texts[source].count("\n", pos, c.start)
        pos = c.start
        lines.append(line)
    return lines


def _write_generation(folder: Path, manifest: dict, chunks: list[Chunk], lines: list[int], matrix: np.ndarray | None,
                      units: UnitVectors | None, tokens: list, t0: float) -> tuple[dict, object, LexicalIndex]:
    """Write a generation (``matrix`` None: no vectors file, they are in a store) and swap it in.

    Returns what was written, for serving it without reading it back: the manifest, the FAISS index
    (None with a store) and the lexical index."""
    import faiss

    generation = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    staging = folder / f".tmp-{generation}"
    staging.mkdir()
    try:
        files = {"chunks": f"chunks-{generation}.jsonl", "lexical": f"lexical-{generation}"}
        index = None
        if matrix is not None:
            files["vectors"] = f"vectors-{generation}.faiss"
            index = faiss.IndexFlatIP(matrix.shape[1])
            if len(matrix):
                index.add(matrix)
            faiss.write_index(index, str(staging / files["vectors"]))
        with open(staging / files["chunks"], "w", encoding="utf-8") as f:
            for c, line in zip(chunks, lines, strict=True):
                f.write(json.dumps({"source": c.source, "start": c.start, "end": c.end, "line": line,
                                    "heading": c.heading, "text": c.text}, ensure_ascii=False) + "\n")
        lexical = LexicalIndex.build([c.text for c in chunks], tokens)
        lexical.save(staging / files["lexical"])
        if units is not None:
            files["units"] = f"units-{generation}"
            units.save(staging / files["units"])
        manifest = dict(manifest, files=files, generation=generation,
                        build_seconds=round(time.monotonic() - t0, 2))
        for name in files.values():
            os.rename(staging / name, folder / name)
        _fsync_tree(folder, files.values())
        tmp = staging / MANIFEST
        tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), "utf-8")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / MANIFEST)  # the swap: from here on readers see the new generation
        _fsync_dir(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_other_generations(folder, generation)
    return manifest, index, lexical


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


def _remove_other_generations(folder: Path, keep: str) -> None:
    """Delete files of older or abandoned generations (never anything we did not name)."""
    for path in folder.iterdir():
        name = path.name
        ours = name.startswith(("vectors-", "chunks-", "lexical-", "units-", ".tmp-"))
        if ours and keep not in name:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
