"""Pure functions: spans of retrieved chunks -> verified Citation objects."""
from __future__ import annotations

import bisect

from .types import Chunk, Citation


def cite(n: int, chunk: Chunk, chunk_line: int, start: int, end: int, score: float,
         pages: list[tuple[int, int]] | None = None) -> Citation:
    """A citation of ``chunk.text[start:end]`` with offsets into the document the chunk came from."""
    if not 0 <= start < end <= len(chunk.text):
        raise ValueError(f"span {start}:{end} is outside the chunk (length {len(chunk.text)})")
    doc_start = chunk.start + start
    line = chunk_line + chunk.text.count("\n", 0, start) if chunk_line else 0
    return Citation(n, chunk.source, doc_start, chunk.start + end, chunk.text[start:end], score, line,
                    page_of(pages, doc_start))


def page_of(pages: list[tuple[int, int]] | None, offset: int) -> int | None:
    """The page holding ``offset``, given (start offset, page number) pairs in order."""
    if not pages:
        return None
    i = bisect.bisect_right([p[0] for p in pages], offset) - 1
    return pages[max(i, 0)][1]


def is_verbatim(citation: Citation, document_text: str) -> bool:
    return document_text[citation.start:citation.end] == citation.quote
