"""Building an index folder: plan what each document reuses, embed the rest, write a new generation.

A document whose content hash and chunking are unchanged keeps its chunks, vectors, sentence
vectors and BM25 tokens (its :class:`DocumentPlan` says where they are in the previous index); only
new and changed documents are chunked, embedded and tokenized. An index built with another
embedding model is refused, not mixed. generations.py makes the write atomic.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import generations
from . import manifest as manifest_file
from .chunking import chunk_document, spans
from .embedding import Embedder
from .errors import IndexStoreError
from .index_load import LoadedIndex, UnitVectors, joined_vectors, load_index
from .lexical import SCORING, TOKENIZER, LexicalIndex
from .manifest import (MANIFEST, Chunking, DocumentRecord, Embedding, Manifest, Segment, check_compatible,
                       chunker_id, document_title, part_file)
from .types import Chunk, Document
from .vector_store import PersistentStore, store_manifest, write_rows

log = logging.getLogger(__name__)

# (done, total) of the embedding. A progress object that also has ``stage(name, done, total, unit)`` (the CLI's)
# hears of the other slow steps too: "chunking" (documents) and "indexing words" (chunks, at its start and end);
# ``Assistant.build`` adds "reading" (files, from before the first one is read).
Progress = Callable[[int, int], None]
# Before embedding, a warning with the time it will take when that is longer than this; the rate is the built-in
# model's on 2 CPU cores (BENCHMARKS.md, speed: 6.6 chunks/s in a cold build of 1,640 chunks).
SLOW_BUILD_SECONDS = 180
CHUNKS_PER_SECOND = 6.5
UnitRows = tuple[np.ndarray, np.ndarray]  # one chunk's unit spans (n x 2, int32) and unit vectors (n x dim, float16)
# An add-only update appends a segment while the index has fewer than this many; the next build compacts.
MAX_SEGMENTS = 8
FileStat = tuple[int, int]  # a corpus file's (size, mtime_ns) when it was read; mtime_ns 0: not to be trusted


class StaleScan(Exception):
    """Documents were passed unread (their files unchanged since the previous index, by size and mtime), but
    this build cannot take them from the previous index: the caller reads every file and builds again."""


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


@dataclass(frozen=True)
class DocumentPlan:
    """How one document enters the new generation: its chunks, and whether they are the previous index's."""

    document: Document
    first_chunk: int  # where its chunks start in the new index
    chunks: tuple[Chunk, ...]
    reused_from: int | None = None  # where the same chunks start in the previous index; None: embed them

    @property
    def ids(self) -> range:
        """Its chunks' positions in the new index."""
        return range(self.first_chunk, self.first_chunk + len(self.chunks))

    @property
    def previous_ids(self) -> range:
        """Its chunks' positions in the previous index (none unless reused)."""
        if self.reused_from is None:
            return range(0)
        return range(self.reused_from, self.reused_from + len(self.chunks))

    def record(self, added_at: str = "", size: int = 0, mtime_ns: int = 0) -> DocumentRecord:
        d = self.document
        return DocumentRecord(d.source, d.sha256, self.first_chunk, len(self.chunks), tuple(map(tuple, d.pages)),
                              len(d.text), d.encoding, document_title(d.text, d.source), size, added_at, mtime_ns)


def plan_documents(documents: list[Document], previous: LoadedIndex | None, chunk_size: int,
                   chunk_overlap: int, progress: Progress | None = None) -> list[DocumentPlan]:
    """Each document's plan: the previous index's chunks when its content is unchanged, new chunks otherwise.

    ``progress(done, total)``: documents chunked, before each one and at the end."""
    old = {d.source: d for d in previous.info.documents} if previous else {}
    priors = [p if (p := old.get(d.source)) and p.sha256 == d.sha256 else None for d in documents]
    plans, first, to_chunk, chunked = [], 0, priors.count(None), 0
    for document, prior in zip(documents, priors):
        if prior:
            chunks = previous.chunks[prior.first_chunk:prior.first_chunk + prior.chunks]
            plan = DocumentPlan(document, first, tuple(chunks), prior.first_chunk)
        else:
            if progress:
                progress(chunked, to_chunk)
            plan = DocumentPlan(document, first, tuple(chunk_document(document, chunk_size, chunk_overlap)))
            chunked += 1
        plans.append(plan)
        first += len(plan.chunks)
    if progress and to_chunk:
        progress(to_chunk, to_chunk)
    return plans


def build_index(folder: Path, documents: list[Document], embedder: Embedder, *, chunk_size: int, chunk_overlap: int,
                skipped: list[tuple[str, str]] = (), corpus: Path | None = None, rebuild: bool = False,
                progress: Progress | None = None, embed_batch: int = 64,
                loaded: LoadedIndex | None = None, store: PersistentStore | None = None,
                stats: Mapping[str, FileStat] | None = None, unread: frozenset[str] = frozenset()) -> BuildReport:
    """Build (or update) the index in ``folder`` from ``documents``.

    An update that only adds documents to an index whose vectors are in the folder writes one new segment
    with just their chunks (docs/index-format.md, "Segments"); every other build writes one segment of
    everything (compacts), so nothing of a removed or changed document stays in any file.

    ``stats``: each document's file (size, mtime_ns) as it was read, recorded for the next ``unread``.
    ``unread``: sources of documents whose text was not read because their files are unchanged since the
    previous index (their ``text`` is empty): taken from the previous index, or StaleScan when it cannot.

    ``store``: a persistent vector store (Milvus) to hold the dense vectors instead of the folder's
    vectors file; it is updated in place (rows of removed and changed documents deleted, new ones
    added) when it holds the previous generation, and rewritten otherwise.

    ``loaded``: the index as a server already holds it in memory; used instead of reading the folder
    again when it is still the generation that the folder's manifest names.

    Documents whose content hash and chunking are unchanged keep their vectors; only new and changed
    documents are embedded. ``rebuild=True`` re-embeds everything.
    """
    # faiss first: its import tries optional CPU builds and reports whatever stopped them, so a Ctrl-C
    # landing in an import at the end of a long build would print as a ModuleNotFoundError.
    import faiss  # noqa: F401

    t0 = time.monotonic()
    if not documents:  # an index of nothing cannot answer anything (and BM25 cannot index an empty corpus)
        raise _nothing_to_index(skipped)
    if folder.exists() and any(folder.iterdir()) and not (folder / MANIFEST).exists() \
            and not generations.only_our_files(folder):
        raise IndexStoreError(f"{folder} is not empty and is not an assistant index: refusing to write into it; "
                              "pick another --index")
    with generations.build_lock(folder):
        previous = _reusable(folder, embedder, chunk_size, chunk_overlap, loaded, store) if not rebuild else None
        in_store = _store_holds(store, previous, embedder, rebuild)
        if previous is not None and previous.keys is not None and not in_store:
            log.warning("%s does not hold the index's vectors; re-embedding every document", store.name)
            previous = None
        if unread and not _supplies(previous, documents, unread):
            raise StaleScan(f"{len(unread)} documents were not read and the previous index cannot supply them")
        if store is None and not rebuild and _appendable(documents, previous, embedder):
            return _append_segment(folder, documents, previous, embedder, chunk_size, chunk_overlap, skipped, corpus,
                                   progress, embed_batch, stats or {}, t0)
        plans = plan_documents(documents, previous, chunk_size, chunk_overlap,
                               stage_progress(progress, "chunking", "document"))
        chunks = [c for p in plans for c in p.chunks]
        if not chunks:
            raise _nothing_to_index(skipped)
        to_embed = [i for p in plans if p.reused_from is None for i in p.ids]
        reused = sum(p.reused_from is not None for p in plans)
        old = {d.source for d in previous.info.documents} if previous else set()
        removed = len(old - {d.source for d in documents})
        same_store = in_store or (store is None and previous is not None and previous.keys is None)
        # Rows of removed and changed documents are deleted; a store that keeps deleted rows is rewritten instead.
        rewrite = in_store and reused < len(previous.info.documents) and _keeps_deleted_rows(store)
        if previous and not to_embed and not removed and len(documents) == len(old) and same_store:
            # Nothing to write, but files left by a build that was killed are still removed.
            generations.remove_other_generations(folder, previous.info)
            return BuildReport(len(documents), len(chunks), 0, reused, 0, tuple(skipped), time.monotonic() - t0, True)
        _warn_if_slow(plans, len(to_embed))
        embedded, new_units = _embed(embedder, chunks, to_embed, progress, embed_batch)
        vectors = _vectors(plans, embedded, previous, in_store and not rewrite)
        units = _unit_table(plans, new_units, embedder.dimension, previous.units if previous else None)
        tokens = _token_sources(plans, previous)
        lines = _chunk_lines(plans, previous)
        now, added = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), _added_at(folder, previous)
        priors = {d.source: d for d in previous.info.documents} if unread else {}
        records = tuple(_record(p, priors.get(p.document.source) if p.document.source in unread else None,
                                added.get((p.document.source, p.document.sha256), now),
                                _stat(stats, corpus, p.document.source)) for p in plans)
        dtype = getattr(embedder, "dtype", "")
        if reused and not previous.info.dtypes <= {dtype}:
            dtype = "mixed"  # reused vectors of unchanged documents were made in another dtype
        manifest = Manifest(
            embedding=Embedding(embedder.model_id, embedder.dimension, embedder.weights_sha256, dtype),
            chunking=Chunking(chunker_id(), chunk_size, chunk_overlap), documents=records,
            chunk_count=len(chunks), lexical={"tokenizer": TOKENIZER, "scoring": SCORING},
            vector_store=None if store is None else {"engine": "milvus",
                                                     "collection": getattr(store, "collection", "")},
            corpus=str(corpus.resolve()) if corpus else "", skipped=tuple((s, r) for s, r in skipped),
            built_at=now)
        written = None
        if store is None:
            matrix = np.vstack(vectors).astype(np.float32)
            final, index, lexical = _write_generation(folder, manifest, chunks, lines, matrix, units, tokens, t0,
                                                      stage_progress(progress, "indexing words", "chunk"))
            pages = {d.source: [tuple(p) for p in d.pages] for d in documents if d.pages}
            written = LoadedIndex(folder, final.to_json(), chunks, lines, index, lexical, pages, units, info=final)
        else:
            write_rows(store, manifest.to_json(), [c.source for c in chunks], vectors, to_embed,
                       previous.keys if in_store and not rewrite else None)
            final, _, _ = _write_generation(folder, manifest, chunks, lines, None, units, tokens, t0,
                                            stage_progress(progress, "indexing words", "chunk"))
            emb = final.embedding
            store.write_manifest(store_manifest(emb.model_id, emb.weights_sha256, emb.dimension, final.generation))
        return BuildReport(len(documents), len(chunks), len(to_embed), reused, removed, tuple(skipped),
                           time.monotonic() - t0, index=written)


def stage_progress(progress: Progress | None, name: str, unit: str) -> Progress | None:
    """A (done, total) callback for the build step ``name``, where ``progress`` reports steps (see Progress)."""
    stage = getattr(progress, "stage", None)
    return None if stage is None else lambda done, total: stage(name, done, total, unit)


def _supplies(previous: LoadedIndex | None, documents: list[Document], unread: frozenset[str]) -> bool:
    """Whether the previous index holds every unread document, with the content hash it was passed with
    (so its chunks, title and length can be taken from there)."""
    if previous is None:
        return False
    held = {d.source: d.sha256 for d in previous.info.documents}
    return all(held.get(d.source) == d.sha256 for d in documents if d.source in unread)


def _appendable(documents: list[Document], previous: LoadedIndex | None, embedder: Embedder) -> bool:
    """Whether this build only adds documents to an index that can take one more segment: its vectors in the
    folder's own file, every indexed document still there unchanged, unit vectors as the embedder gives them,
    and fewer than MAX_SEGMENTS segments."""
    if previous is None or previous.keys is not None or len(previous.info.parts) >= MAX_SEGMENTS \
            or previous.info.vector_store or previous.vectors is None:
        return False
    if (previous.units is None) != (getattr(embedder, "embed_passages", None) is None):
        return False
    held = {d.source: d.sha256 for d in previous.info.documents}
    current = {d.source: d.sha256 for d in documents}
    return len(current) > len(held) and all(current.get(source) == sha for source, sha in held.items())


def _append_segment(folder: Path, documents: list[Document], previous: LoadedIndex, embedder: Embedder,
                    chunk_size: int, chunk_overlap: int, skipped, corpus: Path | None, progress: Progress | None,
                    embed_batch: int, stats: Mapping[str, FileStat], t0: float) -> BuildReport:
    """Add the new documents as one segment after the previous index's: only their chunks are chunked,
    embedded, tokenized and written; the previous segments' files stay as they are, and the index served
    next is the previous one in memory with the new segment appended."""
    base = len(previous.chunks)
    held = {d.source: d for d in previous.info.documents}
    fresh = [d for d in documents if d.source not in held]
    plans = plan_documents(fresh, None, chunk_size, chunk_overlap, stage_progress(progress, "chunking", "document"))
    chunks = [c for p in plans for c in p.chunks]  # segment-local ids: plan.first_chunk counts from the segment
    if not chunks:  # documents without chunks: nothing to append (a segment holds at least one chunk)
        raise _nothing_to_index(skipped)
    _warn_if_slow(plans, len(chunks))
    embedded, new_units = _embed(embedder, chunks, list(range(len(chunks))), progress, embed_batch)
    matrix = np.vstack([embedded[i] for i in range(len(chunks))]).astype(np.float32)
    units = _unit_table(plans, new_units, embedder.dimension, None)
    lines = _chunk_lines(plans, None)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    new = {p.document.source: replace(p.record(now, *_stat(stats, corpus, p.document.source)),
                                      first_chunk=base + p.first_chunk) for p in plans}
    records = tuple(new[d.source] if d.source in new else _restated(held[d.source], stats.get(d.source))
                    for d in documents)
    info = previous.info
    # Each segment records the dtype of its vectors; the index's is theirs when they agree, else "mixed"
    # (a bf16 index with a float32 segment serves: the same model, vectors at cosine >= 0.999).
    dtype = getattr(embedder, "dtype", "")
    manifest = replace(info, embedding=Embedding(embedder.model_id, embedder.dimension, embedder.weights_sha256,
                                                 dtype if info.dtypes <= {dtype} else "mixed"),
                       documents=records, chunk_count=base + len(chunks),
                       corpus=str(corpus.resolve()) if corpus else "", skipped=tuple((s, r) for s, r in skipped),
                       built_at=now, files={}, segments=info.parts)
    final, index, lexical = _write_generation(folder, manifest, chunks, lines, matrix, units, None, t0,
                                              stage_progress(progress, "indexing words", "chunk"), append=True,
                                              dtype=dtype)
    pages = dict(previous.pages, **{d.source: [tuple(p) for p in d.pages] for d in fresh if d.pages})
    written = LoadedIndex(folder, final.to_json(), previous.chunks + chunks, previous.lines + lines,
                          joined_vectors([previous.vectors, index]), previous.lexical.extended(lexical), pages,
                          None if units is None else previous.units.extended(units), info=final)
    return BuildReport(len(documents), len(written.chunks), len(chunks), len(held), 0, tuple(skipped),
                       time.monotonic() - t0, index=written)


def _restated(record: DocumentRecord, stat: FileStat | None) -> DocumentRecord:
    """A kept document's record, with its file's size and mtime as this scan saw them (when it saw them)."""
    return record if stat is None else replace(record, bytes=stat[0], mtime_ns=stat[1])


def _record(plan: DocumentPlan, unread_prior: DocumentRecord | None, added_at: str, stat: FileStat) -> DocumentRecord:
    """A document's record in a compacted index; one whose text was not read (``unread_prior``: its previous
    record) keeps the fields that come from its text."""
    record = plan.record(added_at, *stat)
    if unread_prior is not None:
        record = replace(record, chars=unread_prior.chars, title=unread_prior.title, encoding=unread_prior.encoding)
    return record


def _stat(stats: Mapping[str, FileStat] | None, corpus: Path | None, source: str) -> FileStat:
    """The (size, mtime_ns) recorded for ``source``: as the scan saw it, else its size now (mtime unknown: 0)."""
    if stats and source in stats:
        return stats[source]
    return _file_size(corpus, source), 0


def _added_at(folder: Path, previous: LoadedIndex | None) -> dict[tuple[str, str], str]:
    """When each (source, sha256) of the index in ``folder`` was added (also when nothing of it is reused)."""
    try:
        info = previous.info if previous is not None else manifest_file.read(folder)[1]
    except IndexStoreError:
        return {}
    return {(d.source, d.sha256): d.added_at or info.built_at for d in info.documents}


def _file_size(corpus: Path | None, source: str) -> int:
    try:
        return (corpus / source).stat().st_size if corpus else 0
    except OSError:
        return 0


def _keeps_deleted_rows(store: PersistentStore) -> bool:
    """Milvus Lite keeps deleted rows in its files until it merges segments (its manual compaction does nothing),
    so a removed document's source and vectors would stay on disk: a build that deletes rows rewrites it."""
    return str(getattr(store, "address", "")).endswith(".db")


def _warn_if_slow(plans: list[DocumentPlan], to_embed: int) -> None:
    """Before embedding: how long it will take, when that is more than a few minutes, and the largest document."""
    seconds = to_embed / CHUNKS_PER_SECOND
    if seconds <= SLOW_BUILD_SECONDS:
        return
    largest = max((p for p in plans if p.reused_from is None), key=lambda p: len(p.chunks))
    took = f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
    log.warning("embedding %s chunks will take about %s (at %.1f chunks/s, the built-in model on 2 CPU cores); "
                "the largest document is %s with %s chunks", f"{to_embed:,}", took, CHUNKS_PER_SECOND,
                largest.document.source, f"{len(largest.chunks):,}")


def _nothing_to_index(skipped) -> IndexStoreError:
    reasons = "; ".join(f"{source}: {reason}" for source, reason in list(skipped)[:3])
    return IndexStoreError(f"no text to index ({len(skipped)} files skipped{': ' if reasons else ''}{reasons}): "
                           "add .txt, .md, .pdf or .docx files with text to the corpus folder")


def _store_holds(store: PersistentStore | None, previous: LoadedIndex | None, embedder: Embedder,
                 rebuild: bool) -> bool:
    """Whether ``store`` holds the previous generation's vectors (so only the difference is written).
    A store built with another model is refused, as an index folder is, unless rebuilding."""
    if store is None:
        return False
    held = store.read_manifest()
    if held is not None and not rebuild:
        check_compatible(held, embedder, what=store.name)
    return previous is not None and previous.store is store and held is not None \
        and bool(previous.info.generation) and held.get("generation") == previous.info.generation


def _reusable(folder: Path, embedder: Embedder, size: int, overlap: int,
              loaded: LoadedIndex | None = None, store: PersistentStore | None = None) -> LoadedIndex | None:
    """The previous index if its vectors can be reused; a foreign model is refused, not mixed."""
    if not (folder / MANIFEST).exists():
        return None
    try:
        current = loaded is not None and loaded.folder.resolve() == folder.resolve() and \
            manifest_file.read(folder)[1].generation == loaded.info.generation
        previous = loaded if current else load_index(folder, store, strict=False)
    except IndexStoreError as exc:
        log.warning("previous index not reusable, rebuilding from scratch: %s", exc)
        return None
    check_compatible(previous.info, embedder)
    if previous.info.chunking != Chunking(chunker_id(), size, overlap):
        log.info("chunking changed (%s); re-embedding every document", previous.manifest["chunking"])
        return None
    if previous.units is None and getattr(embedder, "embed_passages", None) is not None:
        log.info("the index has no sentence vectors (built by an older version); re-embedding every document")
        return None
    return previous


def _embed(embedder: Embedder, chunks: list[Chunk], to_embed: list[int], progress: Progress | None,
           batch: int) -> tuple[dict[int, np.ndarray], dict[int, UnitRows]]:
    """The vectors of the chunks ``to_embed`` by chunk id, and their unit rows when the embedder gives unit vectors."""
    # Longest first, so batches pad little; the embedder sorts within a call, we sort across calls.
    order = sorted(to_embed, key=lambda i: len(chunks[i].text), reverse=True)
    late = getattr(embedder, "embed_passages", None)
    vectors: dict[int, np.ndarray] = {}
    units: dict[int, UnitRows] = {}
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
        vectors.update(zip(ids, out, strict=True))
        if progress:
            progress(len(vectors), len(order))
    return vectors, units


def _vectors(plans: list[DocumentPlan], embedded: dict[int, np.ndarray], previous: LoadedIndex | None,
             in_store: bool) -> list[np.ndarray | None]:
    """Each chunk's vector: embedded now, or read from the previous index; None where the store keeps it."""
    vectors: list[np.ndarray | None] = []
    for p in plans:
        if p.reused_from is None:
            vectors.extend(embedded[i] for i in p.ids)
        elif in_store or not p.chunks:
            vectors.extend([None] * len(p.chunks))
        else:
            vectors.extend(previous.dense_vectors(np.asarray(p.previous_ids)))
    return vectors


def _unit_table(plans: list[DocumentPlan], new: dict[int, UnitRows], dimension: int,
                previous: UnitVectors | None) -> UnitVectors | None:
    """One table of all chunks' unit vectors, or None unless every chunk has them: a new chunk's rows are
    in ``new``, a reused document's are copied from ``previous`` in one block (an incremental build of
    20k chunks changes a few)."""
    reused = [p for p in plans if p.reused_from is not None and p.chunks]
    fresh = [i for p in plans if p.reused_from is None for i in p.ids]
    if (reused and previous is None) or any(i not in new for i in fresh):
        return None
    counts = np.zeros(sum(len(p.chunks) for p in plans), dtype=np.int64)
    for p in reused:
        counts[p.ids.start:p.ids.stop] = np.diff(previous.offsets[p.reused_from:p.previous_ids.stop + 1])
    for i in fresh:
        counts[i] = len(new[i][0])
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    vectors = np.empty((int(offsets[-1]), dimension), dtype=np.float16)
    spans_ = np.empty((int(offsets[-1]), 2), dtype=np.int32)
    for p in reused:
        a, b = previous.offsets[p.reused_from], previous.offsets[p.previous_ids.stop]
        lo, hi = offsets[p.ids.start], offsets[p.ids.stop]
        vectors[lo:hi], spans_[lo:hi] = previous.rows(a, b), previous.spans[a:b]
    for i in fresh:
        a, b = offsets[i], offsets[i + 1]
        spans_[a:b], vectors[a:b] = new[i][0].reshape(-1, 2), new[i][1].reshape(-1, dimension)
    return UnitVectors(vectors, offsets, spans_)


def _token_sources(plans: list[DocumentPlan], previous: LoadedIndex | None) -> list[tuple[LexicalIndex, int] | None]:
    """Per chunk, where its BM25 tokens are taken from: (the previous lexical index, chunk id), or None to tokenize."""
    sources: list[tuple[LexicalIndex, int] | None] = []
    for p in plans:
        sources.extend([(previous.lexical, i) for i in p.previous_ids] if p.reused_from is not None
                       else [None] * len(p.chunks))
    return sources


def _chunk_lines(plans: list[DocumentPlan], previous: LoadedIndex | None) -> list[int]:
    """1-based line of each chunk's start: a reused document's from the previous index (same text, same
    chunks), a new one's counting newlines only since its previous chunk (a document's chunks are in
    order), so a long document is scanned once."""
    lines: list[int] = []
    for p in plans:
        if p.reused_from is not None:
            lines.extend(previous.lines[p.previous_ids.start:p.previous_ids.stop])
            continue
        text, pos, line = p.document.text, 0, 1
        for c in p.chunks:
            if c.start < pos:
                pos, line = 0, 1
            line += text.count("\n", pos, c.start)
            pos = c.start
            lines.append(line)
    return lines


def _files(generation: str, vectors: bool, units: bool) -> dict[str, str]:
    """Part -> file name of a new segment of ``generation``."""
    parts = ["chunks", "lexical"] + ["vectors"] * vectors + ["units"] * units
    return {part: part_file(part, generation) for part in parts}


def _write_files(stage: Path, files: dict[str, str], chunks: list[Chunk], lines: list[int],
                 matrix: np.ndarray | None, units: UnitVectors | None,
                 tokens: list[tuple[LexicalIndex, int] | None] | None,
                 progress: Progress | None = None) -> tuple[object, LexicalIndex]:
    """Write one segment's files into ``stage``: its vectors (unless ``matrix`` is None), chunks, BM25 tokens
    (``tokens``: where each chunk's are taken from, see LexicalIndex.build) and units."""
    import faiss

    index = None
    if matrix is not None:
        index = faiss.IndexFlatIP(matrix.shape[1])
        if len(matrix):
            index.add(matrix)
        faiss.write_index(index, str(stage / files["vectors"]))
    with open(stage / files["chunks"], "w", encoding="utf-8") as f:
        for c, line in zip(chunks, lines, strict=True):
            f.write(json.dumps({"source": c.source, "start": c.start, "end": c.end, "line": line,
                                "heading": c.heading, "text": c.text}, ensure_ascii=False) + "\n")
    if progress:
        progress(0, len(chunks))
    lexical = LexicalIndex.build([c.text for c in chunks], tokens)
    if progress:
        progress(len(chunks), len(chunks))
    lexical.save(stage / files["lexical"])
    if units is not None:
        units.save(stage / files["units"])
    return index, lexical


def _write_generation(folder: Path, manifest: Manifest, chunks: list[Chunk], lines: list[int],
                      matrix: np.ndarray | None, units: UnitVectors | None,
                      tokens: list[tuple[LexicalIndex, int] | None] | None, t0: float,
                      progress: Progress | None = None, append: bool = False, dtype: str = ""
                      ) -> tuple[Manifest, object, LexicalIndex]:
    """Write a generation (``matrix`` None: no vectors file, they are in a store) and swap it in: the whole
    index as its one segment, or with ``append`` one new segment after ``manifest.segments`` (the chunks
    of the new documents only, with a vocabulary of their own, its vectors made in ``dtype``).

    Returns what was written, for serving it without reading it back: the manifest, the FAISS index
    (None with a store) and the lexical index."""
    generation = generations.new_generation()
    files = _files(generation, matrix is not None, units is not None)
    with generations.staging(folder, generation) as stage:
        index, lexical = _write_files(stage, files, chunks, lines, matrix, units, tokens, progress)
        where = ({"segments": (*manifest.segments, Segment(generation, len(chunks), files, dtype))} if append
                 else {"files": files})
        manifest = replace(manifest, **where, generation=generation, build_seconds=round(time.monotonic() - t0, 2))
        generations.commit(folder, stage, manifest)
    generations.remove_other_generations(folder, manifest)
    return manifest, index, lexical
