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
    """A chunk found by retrieval, with the fused score and per-retriever scores and ranks.

    ``dense_rank`` and ``lexical_rank`` are 0-based, None outside that side's candidates; ``rank`` (fused) is
    1-based."""

    chunk_id: int
    chunk: Chunk
    score: float
    dense_score: float = 0.0  # cosine similarity to the query
    dense_rank: int | None = None
    lexical_rank: int | None = None
    lexical_score: float = 0.0  # BM25
    matched_terms: tuple[str, ...] = ()  # the query's tokens (lexical.tokenize) that occur in the chunk
    rank: int = 0

    def why(self, answerability: float | None = None) -> Why:
        """Why this hit was chosen, for a citation of it (``answerability``: the reader model's margin)."""
        return Why(self.dense_score, None if self.dense_rank is None else self.dense_rank + 1, self.lexical_score,
                   None if self.lexical_rank is None else self.lexical_rank + 1, self.matched_terms, self.rank,
                   answerability)


@dataclass(frozen=True)
class Why:
    """Why a cited passage was chosen: its retrieval scores and 1-based ranks (None: outside that side's
    candidates), and the reader model's answerability margin when the model read it (see explain.py)."""

    dense: float  # cosine similarity to the query
    dense_rank: int | None
    lexical: float  # BM25 score
    lexical_rank: int | None
    matched_terms: tuple[str, ...]
    fused_rank: int
    answerability: float | None = None  # best span score minus the "no answer" score

    def to_dict(self) -> dict:
        out = {"dense": round(self.dense, 4), "dense_rank": self.dense_rank, "lexical": round(self.lexical, 4),
               "lexical_rank": self.lexical_rank, "matched_terms": list(self.matched_terms),
               "fused_rank": self.fused_rank}
        if self.answerability is not None:
            out["answerability"] = round(self.answerability, 4)
        return out


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
    why: Why | None = None  # why its passage was chosen (retrieval scores, the reader model's margin)


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
                    "quote": c.quote, "score": round(c.score, 4), "line": c.line, "page": c.page,
                    "why": None if c.why is None else c.why.to_dict()}

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
    title: str = ""  # its first heading, else its first line ("" if it has none)
    kind: str = ""  # its file type: "txt", "md", "pdf" or "docx"
    bytes: int = 0  # the file's size
    added_at: str = ""  # ISO 8601 UTC, when this version of it was indexed ("" if not recorded)
    preview: str = ""  # the start of its text, whitespace collapsed (about 200 characters)

    def to_dict(self) -> dict:
        return {"source": self.source, "title": self.title, "kind": self.kind, "bytes": self.bytes,
                "added_at": self.added_at, "chars": self.chars, "chunks": self.chunks, "preview": self.preview}


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
                "document_list": [d.to_dict() for d in self.documents]}
