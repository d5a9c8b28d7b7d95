"""Pure functions: why a passage was chosen (``Citation.why``) as one line for the terminal, or HTML for the UI.

    cosine 0.612 (dense #1) · BM25 7.31 (#2; matched: 训练, 数据) · fused #1 · answerability +2.4

A rank is left out where the passage was not among that side's candidates; the answerability margin
(best span score minus the "no answer" score) where the reader model did not read the passage.
"""
from __future__ import annotations

from html import escape

from .types import Why


def why_parts(why: Why) -> list[str]:
    """The explanation's parts: dense, BM25, fused rank, and the reader model's margin when there is one."""
    lexical = [f"#{why.lexical_rank}"] if why.lexical_rank is not None else []
    if why.matched_terms:
        lexical.append(f"matched: {', '.join(why.matched_terms)}")
    parts = [f"cosine {why.dense:.3f}" + (f" (dense #{why.dense_rank})" if why.dense_rank is not None else ""),
             f"BM25 {why.lexical:.2f}" + (f" ({'; '.join(lexical)})" if lexical else ""),
             f"fused #{why.fused_rank}"]
    if why.answerability is not None:
        parts.append(f"answerability {why.answerability:+.1f}")
    return parts


def why_text(why: Why) -> str:
    """One line, as ``assistant ask --explain`` prints it under a source."""
    return " · ".join(why_parts(why))


def why_html(why: Why) -> str:
    """A collapsed ``<details class="why">`` block with one list item per part, every value escaped."""
    items = "".join(f"<li>{escape(part)}</li>" for part in why_parts(why))
    return f'<details class="why"><summary>why this passage</summary><ul>{items}</ul></details>'
