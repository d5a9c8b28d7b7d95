"""Assistant: wires the index, the retriever and the reader; ``ask(question)`` returns a cited Answer."""
from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .config import Settings, resolve_dtype
from .embedding import Embedder, SentenceTransformerEmbedder
from .errors import AssistantError, IndexStoreError, IngestError, QuestionError
from .freshness import SourceCheck
from .manifest import not_a_folder, read as read_manifest_info
from .index_build import Progress, StaleScan, stage_progress
from .index_store import BuildReport, build_index, check_compatible, load_index, LoadedIndex
from .ingest import Known, read_document, scan_corpus
from .models import resolve_embedding_model
from .language import acronyms, named_terms, printable
from .reader import DEFAULT_MIN_EVIDENCE, ExtractiveReader, Passages, Reader, Response
from .retriever import HybridRetriever
from .types import Answer, Chunk, IndexedDocument, IndexStatus
from .vector_store import open_store

log = logging.getLogger(__name__)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
PREVIEW_CHARS = 200
DIFFERENT_VERSION = ("a different version of this document is already indexed; to replace it, add it again "
                     "choosing replace (`assistant index add --replace`)")


def make_embedder(settings: Settings, show_progress: bool = False) -> SentenceTransformerEmbedder:
    """The configured embedding model (not loaded until first use)."""
    resolved = resolve_embedding_model(settings.embed_model, settings.home)
    return SentenceTransformerEmbedder(resolved, embed_dtype(settings, resolved.weights_sha256), settings.embed_batch,
                                       settings.threads, show_progress, embed_runtime=settings.embed_runtime,
                                       home=settings.home)


def embed_dtype(settings: Settings, weights_sha256: str) -> str:
    """``ASSISTANT_EMBED_DTYPE``; "auto": float32 where the model's ONNX export exists (ONNX Runtime float32 embeds
    passages as fast as torch bf16 and twice as fast as torch float32 here, and asking then loads no torch:
    BENCHMARKS.md), else bf16 where the CPU computes it natively, else float32."""
    if settings.embed_dtype == "auto" and settings.embed_runtime != "torch" and weights_sha256:
        from . import onnx_encoder, onnx_files

        if onnx_files.available() and onnx_encoder.ready(onnx_encoder.export_folder(settings.home, weights_sha256)):
            return "fp32"
    return resolve_dtype(settings.embed_dtype)


@dataclass(frozen=True)
class AddReport:
    """What ``Assistant.add`` did with each file (by name), and the build that followed."""

    added: tuple[str, ...]
    replaced: tuple[str, ...]  # a different version was in the corpus; replaced on request
    already_indexed: tuple[str, ...]  # an identical file is already in the corpus
    refused: tuple[tuple[str, str], ...]  # (name, reason): unreadable, or a different version is indexed
    build: BuildReport


@dataclass(frozen=True)
class RemoveReport:
    """What ``Assistant.remove`` deleted, and what the index holds now."""

    removed: tuple[str, ...]  # their sources
    documents: int
    chunks: int
    seconds: float


@dataclass(frozen=True)
class _Serving:
    """One loaded index and its retriever; replaced as a whole when a rebuild completes."""

    index: LoadedIndex
    retriever: HybridRetriever

    @cached_property
    def documents(self) -> tuple[IndexedDocument, ...]:
        """Its documents as ``Assistant.status()`` lists them (made once per index)."""
        chunks = self.index.chunks
        return tuple(IndexedDocument(d.source, d.chars, d.chunks, d.title, Path(d.source).suffix.lower().lstrip("."),
                                     d.bytes, d.added_at, _preview(iter(chunks[d.first_chunk:d.first_chunk + d.chunks])))
                     for d in self.index.info.documents)


def _one_change_at_a_time(method):
    """Index changes of one Assistant run one after another (a second one waits), whoever asks for them."""
    @functools.wraps(method)
    def serialized(self, *args, **kwargs):
        with self._changes:
            return method(self, *args, **kwargs)

    return serialized


class Assistant:
    """Answers questions from one index folder. Thread-safe: a rebuild swaps the serving index at the end."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, reader: Reader | None = None) -> None:
        self.settings = settings
        self.embedder = embedder if embedder is not None else make_embedder(settings)
        self._readers: dict[str, Reader] = {}
        self.store = open_store(settings.vector_store, settings.vector_collection)  # None: the folder's own file
        self._lock = threading.Lock()
        self._changes = threading.RLock()  # builds, adds and removes queue here (the page and the API share us)
        self.reader = reader if reader is not None else self.reader_named(settings.reader)
        self._serving: _Serving | None = None
        self._sources = SourceCheck()  # are the cited documents still as indexed?

    def reader_named(self, name: str) -> Reader:
        """The reader called ``name`` ("span", "extractive" or "llm"), made once; ModelError if it cannot be used."""
        with self._lock:
            if name not in self._readers:
                if name == "llm":
                    from .generative import make_generative_reader

                    # The same "not in the documents" decision as the span reader, where the reader model fits.
                    gate = self._span_reader().gate if self._reader_model_fits(quiet=True) else None
                    self._readers[name] = make_generative_reader(self.settings, self.embedder, gate)
                elif name == "span" and self._reader_model_fits():
                    self._readers[name] = self._span_reader()
                else:
                    self._readers[name] = ExtractiveReader(self.embedder,
                                                           self.settings.min_evidence or DEFAULT_MIN_EVIDENCE)
            return self._readers[name]

    def _reader_model_fits(self, quiet: bool = False) -> bool:
        """The reader model runs on EmbeddingGemma's own layers: with another embedding model (or a
        test's fake one) the "span" reader is the passage reader alone."""
        from .models import EMBEDDING_GEMMA

        fits = self.embedder.weights_sha256 == EMBEDDING_GEMMA.files[EMBEDDING_GEMMA.weights_file][1] and \
            hasattr(self.embedder, "transformer")
        if not fits and not quiet:
            log.info("the reader model needs the built-in EmbeddingGemma; with %s the span reader quotes passages only",
                     self.embedder.model_id)
        return fits

    def _span_reader(self):
        """The span reader with the trained reader model."""
        if "_span" not in self._readers:
            from .models import resolve_reader_weights
            from .span_reader import SpanReader

            self._readers["_span"] = SpanReader(self.embedder, resolve_reader_weights(self.settings.reader_model),
                                                min_evidence=self.settings.min_evidence or DEFAULT_MIN_EVIDENCE,
                                                runtime=self.settings.reader_runtime, home=self.settings.home)
        return self._readers["_span"]

    # -- the index ---------------------------------------------------------------------------------
    def _current(self) -> _Serving:
        serving = self._serving
        if serving is None:
            with self._lock:
                if self._serving is None:
                    self._serving = self._load()
                serving = self._serving
        return serving

    def _load(self) -> _Serving:
        index = load_index(self.settings.index, self.store)
        check_compatible(index.manifest, self.embedder)
        return _Serving(index, HybridRetriever(index, self.embedder))

    def reload(self) -> None:
        self._serving = self._load()

    @_one_change_at_a_time
    def build(self, corpus: Path | None = None, rebuild: bool = False, progress: Progress | None = None, *,
              trust_unchanged: bool = False) -> BuildReport:
        """Index the corpus folder (incrementally); the previous index serves until the new one is complete.

        ``progress``: (done, total) of the embedding; its ``stage(name, done, total, unit)``, when it has one,
        hears "reading" (files, from before the first) and the build's other steps (``index_build.Progress``).
        ``trust_unchanged`` (``add`` and ``remove``): a file whose size and mtime are as the index recorded is
        not read and hashed again; a plain build reads every file."""
        corpus = corpus or self.settings.corpus
        if not corpus.is_dir():
            raise AssistantError(f"corpus folder {corpus} does not exist")
        index = self.settings.index
        if index.exists() and not index.is_dir():
            raise IndexStoreError(not_a_folder(index))
        known = self._known_files(index) if trust_unchanged and not rebuild else None
        try:
            try:
                report = self._build_scanned(corpus, rebuild, progress, known)
            except StaleScan:  # the previous index could not supply the files not read: read them all
                report = self._build_scanned(corpus, rebuild, progress, None)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            held = sum(p.stat().st_size for p in index.rglob("*") if p.is_file()) if index.is_dir() else 0
            raise IndexStoreError(
                f"no space left on the disk of {index} while writing the new index: the previous index is "
                "unchanged and still serves, and nothing of the new one was left behind; free "
                + (f"at least {-(-held // (1 << 20))} MB (what the current index takes) " if held else "some space ")
                + "and build again") from None
        if report.index is not None:  # serve what was just written, without reading it back
            self._serving = _Serving(report.index, HybridRetriever(report.index, self.embedder))
        elif not report.unchanged or self._serving is None:
            self.reload()
        return report

    def _build_scanned(self, corpus: Path, rebuild: bool, progress: Progress | None,
                       known: dict[str, Known] | None) -> BuildReport:
        """Scan the corpus (files in ``known`` unchanged by size and mtime are not read) and build the index."""
        scan = scan_corpus(corpus, self.settings.max_file_mb << 20, self.settings.max_document_chars,
                           stage_progress(progress, "reading", "file"), known=known)
        return build_index(self.settings.index, scan.documents, self.embedder, chunk_size=self.settings.chunk_size,
                           chunk_overlap=self.settings.chunk_overlap, skipped=scan.skipped, corpus=corpus,
                           rebuild=rebuild, progress=progress,
                           loaded=self._serving.index if self._serving is not None else None, store=self.store,
                           stats=scan.stats, unread=scan.unread)

    def _known_files(self, index: Path) -> dict[str, Known] | None:
        """What the index holds of each corpus file (size, mtime, hash), for a scan that skips unchanged files:
        from the serving index when it is the folder's, else from the folder's manifest; None without one."""
        serving = self._serving
        try:
            if serving is not None and serving.index.folder.resolve() == index.resolve():
                info = serving.index.info
            else:
                info = read_manifest_info(index)[1]
        except (AssistantError, OSError):
            return None
        return {d.source: Known(d.bytes, d.mtime_ns, d.sha256, d.encoding, d.pages, d.chars)
                for d in info.documents}

    @_one_change_at_a_time
    def add(self, paths: list[Path], corpus: Path | None = None, progress: Progress | None = None,
            replace: bool = False) -> AddReport:
        """Copy readable documents into the corpus folder, then update the index.

        Each file is read first (which checks its type, ``ingest.check_supported``); one that cannot be
        read is refused and not copied, so a bad file never reaches the corpus. A file identical to the
        corpus file of its name is already indexed; a different one of that name is refused unless
        ``replace``, when the old file is kept aside until the new index is written (and put back if
        the build fails)."""
        corpus = corpus or self.settings.corpus
        corpus.mkdir(parents=True, exist_ok=True)
        new: list[Path] = []
        replaced: list[Path] = []
        same: list[str] = []
        refused: list[tuple[str, str]] = []
        for path in paths:
            try:
                read_document(path, path.parent, self.settings.max_file_mb << 20, self.settings.max_document_chars)
            except IngestError as exc:
                refused.append((path.name, str(exc).removeprefix(f"{path.name}: ")))
                continue
            target = corpus / path.name
            if any(p.name == path.name for p in (*new, *replaced)):
                refused.append((path.name, "another file of this name is being added"))
            elif not target.exists():
                new.append(path)
            elif target.read_bytes() == path.read_bytes():
                same.append(path.name)
            elif replace:
                replaced.append(path)
            else:
                refused.append((path.name, DIFFERENT_VERSION))
        with _corpus_change(corpus, remove=[p.name for p in replaced], add=[*new, *replaced]):
            report = self.build(corpus, progress=progress, trust_unchanged=True)
        return AddReport(tuple(p.name for p in new), tuple(p.name for p in replaced), tuple(same), tuple(refused),
                         report)

    @_one_change_at_a_time
    def remove(self, sources: list[str | Path], corpus: Path | None = None,
               progress: Progress | None = None) -> RemoveReport:
        """Delete documents from the corpus folder and the index; the other documents' vectors are reused.

        ``sources``: document names as the index knows them (``IndexedDocument.source``), or paths of files
        in the corpus folder. An unknown one is an AssistantError naming it, and nothing changes. The files
        are kept aside until the new index is written, and put back if the build fails (the previous index
        still serves)."""
        t0 = time.monotonic()
        corpus = corpus or self.settings.corpus
        indexed = {d.source for d in self.status().documents}
        named = {str(s): _source_in(s, corpus, indexed) for s in sources}
        unknown = [given for given, source in named.items() if source is None]
        if unknown:
            raise AssistantError(f"not in the index: {', '.join(map(printable, unknown))} (`assistant index list` "
                                 "shows its documents)")
        removed = tuple(dict.fromkeys(named.values()))
        if len(removed) == len(indexed):
            raise AssistantError("an index needs at least one document: add another before removing the last")
        with _corpus_change(corpus, remove=removed):
            report = self.build(corpus, progress=progress, trust_unchanged=True)
        return RemoveReport(removed, report.documents, report.chunks, time.monotonic() - t0)

    def status(self) -> IndexStatus:
        """What the serving index holds (loading it first); NoIndexError when there is none yet, another
        IndexStoreError when it cannot be used."""
        serving = self._current()
        m = serving.index.info
        return IndexStatus(index=serving.index.folder, vector_store=serving.index.store.name, corpus=m.corpus,
                           embedding_model=m.embedding.model_id, built_at=m.built_at, chunks=m.chunk_count,
                           documents=serving.documents, skipped=m.skipped)

    # -- questions ---------------------------------------------------------------------------------
    def clean_question(self, question: str) -> str:
        # Lone surrogates (undecodable bytes from a terminal, broken JSON escapes) cannot be encoded for a tokenizer.
        question = (question or "").encode("utf-8", "replace").decode("utf-8")
        question = _CONTROL.sub(" ", question).strip()
        if not question:
            raise QuestionError("the question is empty: type a question")
        if len(question) > self.settings.max_question_chars:
            raise QuestionError(f"the question is {len(question):,} characters long; the limit is "
                                f"{self.settings.max_question_chars:,} (ASSISTANT_MAX_QUESTION_CHARS)")
        return question

    def ask(self, question: str, k: int | None = None, query: str | None = None,
            exclude: frozenset[str] = frozenset(), reader: Reader | None = None) -> Answer:
        """Answer ``question``; ``query`` (e.g. the question with conversation context) is what is searched for.

        ``exclude`` leaves documents out as if they were not indexed (used by benchmarks); ``reader``
        overrides the default reader for this question."""
        return self.ask_stream(question, k, query, exclude, reader).answer()

    def ask_stream(self, question: str, k: int | None = None, query: str | None = None,
                   exclude: frozenset[str] = frozenset(), reader: Reader | None = None) -> Response[Answer]:
        """Like ``ask``, as a Response: iterate it for the reader's text as it is written (none from a reader
        that quotes), then ``answer()`` for the Answer. Nothing runs until it is read."""
        return Response(self._answer(question, k, query, exclude, reader or self.reader))

    def _answer(self, question: str, k: int | None, query: str | None, exclude: frozenset[str],
                reader: Reader) -> Generator[str, None, Answer]:
        t0 = time.perf_counter()
        question = self.clean_question(question)
        query = self.clean_question(query) if query else question
        # The model first: loading it briefly needs about twice its size (the fp32 file is read, then
        # cast), and that peak should not stack on a large index already in memory.
        vector = self.embedder.embed_queries([query])[0]
        serving = self._current()
        found = serving.retriever.search(query, k or self.settings.top_k, query_vector=vector, exclude=exclude)
        t1 = time.perf_counter()
        lexical = serving.index.lexical
        missing = tuple(t for t in named_terms(question) if not lexical.contains(t))
        unknown = tuple(t for t in acronyms(question) if not lexical.contains(t))
        passages = Passages(question=question, query_vector=vector, hits=found.hits, evidence=found.best_dense,
                            lines=serving.index.lines, pages=serving.index.pages, units=serving.index.units,
                            missing_terms=missing, unknown_terms=unknown)
        response = reader.stream(passages)
        first = None
        for delta in response:
            first = first or time.perf_counter()
            yield delta
        reading = response.answer()
        t2 = time.perf_counter()
        timings = {"retrieve": (t1 - t0) * 1000, "read": (t2 - t1) * 1000, "total": (t2 - t0) * 1000}
        if first is not None:
            timings["first_text"] = (first - t0) * 1000
        changed = self._sources.changed(serving.index.info.corpus, serving.index.sha256,
                                        [c.source for c in (*reading.citations, *reading.related)])
        return Answer(question, reading.text, reading.abstained, reading.citations, reading.related,
                      query if query != question else "", timings, reading.span, changed)


def warm_up(assistant, level: int = logging.WARNING) -> list[threading.Thread]:
    """Start loading what the first answer needs, side by side, and return the (started) threads: the index
    and jieba's dictionary, the query encoder, the reader's model. ONNX Runtime builds a session without
    holding the GIL, so on 2 cores the two models' sessions (about 0.9 s each) overlap the index's Python
    work. A part that fails is logged at ``level`` and left for the question that needs it to report."""
    from .lexical import tokenize

    def index() -> None:
        assistant.status()
        tokenize("预热")

    def quietly(job) -> None:
        try:
            job()
        except AssistantError as exc:
            log.log(level, "not ready yet: %s", exc)

    jobs = {"index": index, "encoder": lambda: assistant.embedder.embed_queries(["warm-up"]),
            "reader": assistant.reader.load}
    threads = [threading.Thread(target=quietly, args=(job,), name=f"warm-up-{name}", daemon=True)
               for name, job in jobs.items()]
    for thread in threads:
        thread.start()
    return threads


def _preview(chunks: Iterator[Chunk], limit: int = PREVIEW_CHARS) -> str:
    """The start of a document's text, from its first chunks (in order), whitespace collapsed."""
    text, end = "", 0
    for c in chunks:
        text = " ".join(f"{text} {c.text[max(0, end - c.start):]}".split())  # overlapping chunks: the rest only
        end = c.end
        if len(text) > limit:
            return text[:limit - 1].rstrip() + "…"
    return text


def _source_in(name: str | Path, corpus: Path, indexed: set[str]) -> str | None:
    """The indexed source that ``name`` means: a source itself, or the path of its file (inside ``corpus``)."""
    if str(name) in indexed:
        return str(name)
    path = Path(name)
    try:  # the folders resolved (a symlinked corpus, ".."), not the file: it may be a link
        source = (path.parent.resolve() / path.name).relative_to(corpus.resolve()).as_posix()
    except ValueError:
        return None
    return source if source in indexed else None


@contextmanager
def _corpus_change(corpus: Path, remove: Sequence[str] = (), add: Sequence[Path] = ()) -> Iterator[None]:
    """The corpus folder without the files of ``remove`` (sources) and with copies of ``add`` while the body
    (a build) runs. The removed files wait in a hidden folder of the corpus (the same filesystem; the scan
    skips hidden names) and are deleted when the body succeeds; when it fails, the copies are deleted and the
    files put back, so the folder is as it was and nothing is lost."""
    aside = corpus / f".assistant-removing-{uuid.uuid4().hex[:8]}"
    moved: list[str] = []
    copied: list[Path] = []
    try:
        for source in remove:
            if (corpus / source).exists() or (corpus / source).is_symlink():
                (aside / source).parent.mkdir(parents=True, exist_ok=True)
                os.rename(corpus / source, aside / source)
                moved.append(source)
        for path in add:
            copied.append(corpus / path.name)
            shutil.copyfile(path, corpus / path.name)
        yield
    except BaseException:
        for path in copied:
            path.unlink(missing_ok=True)
        for source in moved:
            os.rename(aside / source, corpus / source)
        shutil.rmtree(aside, ignore_errors=True)  # empty now (a failed rename above leaves it, and its files)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    if aside.exists():
        log.warning("could not delete %s (the files removed from the corpus)", aside)


__all__ = ["AddReport", "Assistant", "RemoveReport", "make_embedder", "IndexStoreError"]
