"""A LangChain retriever over the assistant's index: ``AssistantRetriever(assistant=Assistant(settings))``.

It searches as ``Assistant.ask`` does (the same hybrid retrieval, the same ``k``), so its documents are the
passages an answer to the same question is read from, in the same order. Each ``Document`` is one passage:
``page_content`` is exactly ``document.text[start:end]`` of the file named by ``metadata["source"]``, and the
metadata holds ``start``, ``end`` (character offsets), ``line``, ``page`` (PDFs, else None),
``score`` (the fused rank score), ``scores`` (cosine similarity, BM25, their ranks and the matched terms: the
``why`` of ``assistant ask --json``) and, on the passage that holds it, ``answer_span`` (``start``, ``end``,
``text``, ``score``): the exact answer when the reader model is confident of one (``answer_span=False`` skips
the model, for retrieval alone).

Needs the ``langchain`` extra (langchain-core); nothing else in the package imports LangChain.
"""
from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from ..reader import Passages, Reading, Response, cite_passage
from ..types import Citation


class AssistantRetriever(BaseRetriever):
    """The passages ``assistant`` would answer ``query`` from, as LangChain Documents with exact offsets."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    assistant: Any = Field(description="an assistant.Assistant (its index, embedding model and reader model)")
    k: int | None = Field(None, ge=1, description="passages to return (default: the assistant's top_k)")
    answer_span: bool = Field(True, description="run the reader model for the exact answer span")

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None) -> list[Document]:
        inner = self.assistant.reader_named("span") if self.answer_span else None
        answer = self.assistant.ask(query, k=k or self.k, reader=_Retrieval(inner))
        return [document(c, answer.span) for c in answer.citations]


def document(citation: Citation, span: Citation | None = None) -> Document:
    """One retrieved passage (a citation of the whole chunk) as a LangChain Document."""
    metadata = {"source": citation.source, "start": citation.start, "end": citation.end, "line": citation.line,
                "page": citation.page, "score": round(citation.score, 4),
                "scores": None if citation.why is None else citation.why.to_dict()}
    if span is not None and span.source == citation.source and citation.start <= span.start < span.end <= citation.end:
        metadata["answer_span"] = {"start": span.start, "end": span.end, "text": span.quote,
                                   "score": round(span.score, 4)}
    return Document(page_content=citation.quote, metadata=metadata,
                    id=f"{citation.source}:{citation.start}-{citation.end}")


class _Retrieval:
    """A reader that quotes every retrieved passage whole, in retrieval order, and takes the answer span from
    ``inner`` (the span reader) when given: ``Assistant.ask`` with it returns the retrieval itself."""

    name = "retrieval"

    def __init__(self, inner=None) -> None:
        self.inner = inner

    @property
    def loaded(self) -> bool:
        return self.inner is None or self.inner.loaded

    def load(self) -> None:
        if self.inner is not None:
            self.inner.load()

    def stream(self, passages: Passages) -> Response[Reading]:
        return Response.whole(lambda: self.read(passages))

    def read(self, passages: Passages) -> Reading:
        span = None if self.inner is None else self.inner.read(passages).span
        citations = tuple(cite_passage(n, hit, passages, 0, len(hit.chunk.text), hit.score)
                          for n, hit in enumerate(passages.hits, 1) if hit.chunk.text)
        return Reading("", False, citations, (), passages.evidence, span)


__all__ = ["AssistantRetriever", "document"]
