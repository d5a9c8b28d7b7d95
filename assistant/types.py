"""Plain frozen records passed between the pipeline stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Document:
    """One source file, decoded. ``source`` is its path relative to the corpus root."""

    source: str
    text: str
    sha256: str  # of the raw file bytes
    encoding: str = "utf-8"
    # (start offset, page number) pairs for PDFs, so a character offset maps to a page.
    pages: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A passage of a document. Invariant: ``document.text[start:end] == text``."""

    source: str
    start: int
    end: int
    text: str
    heading: str = ""  # the nearest section heading above the chunk, for context


@dataclass(frozen=True)
class Hit:
    """A chunk found by retrieval, with the fused score and per-retriever ranks."""

    chunk_id: int
    chunk: Chunk
    score: float
    dense_score: float = 0.0
    dense_rank: int | None = None
    lexical_rank: int | None = None


@dataclass(frozen=True)
class Citation:
    """A verified span: ``quote == document.text[start:end]`` for the document at ``source``."""

    n: int
    source: str
    start: int
    end: int
    quote: str
    score: float
    line: int = 0  # 1-based line of ``start`` in the document
    page: int | None = None


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    abstained: bool
    citations: tuple[Citation, ...] = ()
    related: tuple[Citation, ...] = ()  # closest passages shown when the assistant abstains
    query: str = ""  # what was searched for, when it differs from the question
    timings_ms: dict[str, float] = field(default_factory=dict)
    span: Citation | None = None  # the exact answer inside one cited passage, when one was found
    changed: tuple[str, ...] = ()  # cited documents whose file changed since indexing: their quotes may not match

    def to_dict(self) -> dict:
        def cite(c: Citation) -> dict:
            return {"n": c.n, "source": c.source, "start": c.start, "end": c.end,
                    "quote": c.quote, "score": round(c.score, 4), "line": c.line, "page": c.page}

        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "citations": [cite(c) for c in self.citations],
            "related": [cite(c) for c in self.related],
            "answer_span": None if self.span is None else {
                "source": self.span.source, "start": self.span.start, "end": self.span.end,
                "text": self.span.quote, "score": round(self.span.score, 4)},
            "query": self.query or self.question,
            "changed_sources": list(self.changed),
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }


@dataclass(frozen=True)
class IndexedDocument:
    """One document of the index, as its manifest records it."""

    source: str
    chars: int  # length of its text, in characters
    chunks: int


@dataclass(frozen=True)
class IndexStatus:
    """What the serving index holds and how it was built (``Assistant.status()``)."""

    index: Path  # the index folder
    vector_store: str  # where the dense vectors are searched
    corpus: str  # the documents folder it was built from ("" if not recorded)
    embedding_model: str
    built_at: str  # ISO 8601 UTC, e.g. "2025-01-31T12:00:00Z"
    chunks: int
    documents: tuple[IndexedDocument, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (source, reason) of each file that was not indexed

    def to_dict(self) -> dict:
        """The JSON object of ``assistant index status --json``: ``documents`` is their number, ``document_list``
        the documents themselves."""
        return {"index": str(self.index), "vector_store": self.vector_store, "documents": len(self.documents),
                "chunks": self.chunks, "embedding_model": self.embedding_model, "built_at": self.built_at,
                "corpus": self.corpus, "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
                "document_list": [{"source": d.source, "chars": d.chars, "chunks": d.chunks} for d in self.documents]}
