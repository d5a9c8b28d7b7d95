"""Assistant: wires the index, the retriever and the reader; ``ask(question)`` returns a cited Answer."""
from __future__ import annotations

import errno
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

from .config import Settings, resolve_dtype
from .embedding import Embedder, SentenceTransformerEmbedder
from .errors import AssistantError, IndexStoreError, IngestError, QuestionError
from .freshness import SourceCheck
from .manifest import not_a_folder
from .index_store import BuildReport, build_index, check_compatible, load_index, LoadedIndex
from .ingest import read_document, scan_folder
from .models import resolve_embedding_model
from .language import named_terms
from .reader import DEFAULT_MIN_EVIDENCE, ExtractiveReader, Passages, Reader, Response
from .retriever import HybridRetriever
from .types import Answer, IndexedDocument, IndexStatus
from .vector_store import open_store

log = logging.getLogger(__name__)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def make_embedder(settings: Settings, show_progress: bool = False) -> SentenceTransformerEmbedder:
    """The configured embedding model (not loaded until first use)."""
    resolved = resolve_embedding_model(settings.embed_model, settings.home)
    return SentenceTransformerEmbedder(resolved, resolve_dtype(settings.embed_dtype), settings.embed_batch, settings.threads,
                                       show_progress)


@dataclass(frozen=True)
class _Serving:
    """One loaded index and its retriever; replaced as a whole when a rebuild completes."""

    index: LoadedIndex
    retriever: HybridRetriever


class Assistant:
    """Answers questions from one index folder. Thread-safe: a rebuild swaps the serving index at the end."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, reader: Reader | None = None) -> None:
        self.settings = settings
        self.embedder = embedder if embedder is not None else make_embedder(settings)
        self._readers: dict[str, Reader] = {}
        self.store = open_store(settings.vector_store, settings.vector_collection)  # None: the folder's own file
        self._lock = threading.Lock()
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
                                                min_evidence=self.settings.min_evidence or DEFAULT_MIN_EVIDENCE)
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

    def build(self, corpus: Path | None = None, rebuild: bool = False,
              progress: Callable[[int, int], None] | None = None) -> BuildReport:
        """Index the corpus folder (incrementally); the previous index serves until the new one is complete."""
        corpus = corpus or self.settings.corpus
        if not corpus.is_dir():
            raise AssistantError(f"corpus folder {corpus} does not exist")
        index = self.settings.index
        if index.exists() and not index.is_dir():
            raise IndexStoreError(not_a_folder(index))
        documents, skipped = scan_folder(corpus, self.settings.max_file_mb << 20, self.settings.max_document_chars)
        try:
            report = build_index(index, documents, self.embedder, chunk_size=self.settings.chunk_size,
                                 chunk_overlap=self.settings.chunk_overlap, skipped=skipped, corpus=corpus,
                                 rebuild=rebuild, progress=progress,
                                 loaded=self._serving.index if self._serving is not None else None, store=self.store)
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

    def add(self, paths: list[Path], corpus: Path | None = None,
            progress: Callable[[int, int], None] | None = None) -> tuple[BuildReport, list[tuple[str, str]]]:
        """Copy readable documents into the corpus folder, then update the index.

        Each file is read first (which checks its type, ``ingest.check_supported``); one that cannot be
        read is reported and not copied, so a bad file never reaches the corpus. Returns the build report
        and the (file, reason) pairs refused.
        """
        corpus = corpus or self.settings.corpus
        corpus.mkdir(parents=True, exist_ok=True)
        refused: list[tuple[str, str]] = []
        for path in paths:
            try:
                read_document(path, path.parent, self.settings.max_file_mb << 20, self.settings.max_document_chars)
            except IngestError as exc:
                refused.append((path.name, str(exc).removeprefix(f"{path.name}: ")))
                continue
            target = corpus / path.name
            if target.exists() and target.read_bytes() != path.read_bytes():
                refused.append((path.name, f"a different file of that name is already in {corpus}"))
                continue
            if not target.exists():
                shutil.copyfile(path, target)
        return self.build(corpus, progress=progress), refused

    def status(self) -> IndexStatus:
        """What the serving index holds (loading it first); NoIndexError when there is none yet, another
        IndexStoreError when it cannot be used."""
        index = self._current().index
        m = index.info
        return IndexStatus(index=index.folder, vector_store=index.store.name, corpus=m.corpus,
                           embedding_model=m.embedding.model_id, built_at=m.built_at, chunks=m.chunk_count,
                           documents=tuple(IndexedDocument(d.source, d.chars, d.chunks) for d in m.documents),
                           skipped=m.skipped)

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
        passages = Passages(question=question, query_vector=vector, hits=found.hits, evidence=found.best_dense,
                            lines=serving.index.lines, pages=serving.index.pages, units=serving.index.units,
                            missing_terms=missing)
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


__all__ = ["Assistant", "make_embedder", "IndexStoreError"]
