"""What the chat page shows, as HTML inside markdown: answers with their sources, notes, errors, reports.

Pure functions of the answer and the document text; nothing here imports Gradio. The answer's text is
markdown, its sources are HTML ``<details>`` blocks with the cited span highlighted in its context.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable

from .language import printable
from .generative import UNSUPPORTED
from .types import Answer, Citation

CONTEXT_CHARS = 120  # document text shown around a cited span
PENDING = '<span class="pending">Searching the documents…</span>'


# -- rendering an answer: markdown body, then the sources as HTML <details> -------------------------------
_MARKER = re.compile(r"[ \t]?\[(\d+)\](?=[ \t]*(?:\n\n|$))")
_FENCE = "```"


def _fix_code(segment: str) -> str:
    """Keep one quoted segment's code fences balanced, so a cut-off code block cannot swallow what follows."""
    if segment.count(_FENCE) % 2:
        first = segment.index(_FENCE)
        segment = f"{_FENCE}\n{segment}" if segment[:first].strip() else f"{segment}\n{_FENCE}"
    elif _FENCE not in segment:
        lines = segment.splitlines()
        indented = sum(1 for line in lines if line.startswith(("    ", "\t")))
        if indented >= 2 and indented * 2 >= len(lines) - 1:  # a code excerpt without its fences
            segment = f"{_FENCE}\n{segment}\n{_FENCE}"
    return segment


def answer_markdown(text: str, numbers: set[int] | None = None) -> str:
    """The answer text as markdown: each ``[n]`` marker (of ``numbers``) styled, after its code-safe segment."""
    parts, last = [], 0
    for m in _MARKER.finditer(text):
        if numbers is not None and int(m.group(1)) not in numbers:
            continue
        segment = _fix_code(text[last:m.start()].strip("\n"))
        glue = "\n\n" if segment.rstrip().endswith(_FENCE) else " "
        parts.append(f'{segment}{glue}<span class="cite">[{m.group(1)}]</span>')
        last = m.end()
    rest = text[last:].strip("\n")
    if rest:
        parts.append(_fix_code(rest))
    return "\n\n".join(parts)


def _where(c: Citation) -> str:
    return f"page {c.page}" if c.page else f"line {c.line}" if c.line else f"chars {c.start}–{c.end}"


def _html_text(text: str) -> str:
    # No raw newlines: a blank line would end the HTML block inside the markdown message.
    return html.escape(text).replace("\n", "&#10;")


def _marked(c: Citation, span: Citation | None) -> str:
    """The cited quote, with the exact answer span inside it marked as well."""
    if span is None or span.source != c.source or not (c.start <= span.start and span.end <= c.end):
        return f"<mark>{_html_text(c.quote)}</mark>"
    a, b = span.start - c.start, span.end - c.start
    return (f'<mark>{_html_text(c.quote[:a])}<strong class="answer-span">{_html_text(c.quote[a:b])}</strong>'
            f'{_html_text(c.quote[b:])}</mark>')


def _passage(c: Citation, document_text: str | None, span: Citation | None = None) -> str:
    """The cited span highlighted, with some of the document around it when the document can be read."""
    before = after = ""
    if document_text is not None and document_text[c.start:c.end] == c.quote:
        before = document_text[max(0, c.start - CONTEXT_CHARS):c.start]
        after = document_text[c.end:c.end + CONTEXT_CHARS]
        if c.start > CONTEXT_CHARS and "\n" in before:
            before = before[before.index("\n") + 1:]
        if c.end + CONTEXT_CHARS < len(document_text) and "\n" in after:
            after = after[:after.rindex("\n")]
        before = ("…" if c.start - len(before) > 0 and before else "") + before.lstrip("\n")
        after = after.rstrip() + ("…" if after.strip() and c.end + len(after) < len(document_text) else "")
    return f'<div class="passage">{_html_text(before)}{_marked(c, span)}{_html_text(after)}</div>'


def _source_item(c: Citation, document_text: str | None, label: str, span: Citation | None = None) -> str:
    snippet = re.sub(r"\s+", " ", c.quote).strip()
    snippet = snippet if len(snippet) <= 48 else snippet[:48] + "…"
    return (f'<details class="source"><summary><span class="num">{label}</span>'
            f'<span class="doc">{html.escape(printable(c.source))}</span><span class="where">{_where(c)}</span>'
            f'<span class="snippet">{html.escape(snippet)}</span></summary>'
            f'{_passage(c, document_text, span)}'
            f'<div class="span-info">{html.escape(printable(c.source))} · characters {c.start}–{c.end}</div></details>')


def render_answer(answer: Answer, read_text: Callable[[str], str | None] = lambda source: None,
                  upto: int | None = None, body: Callable[[str, set[int]], str] = answer_markdown) -> str:
    """One chat message: what was searched for, the answer (or the "not covered" note), then its sources.

    ``upto`` renders only the first characters of the answer, without sources (for streaming); ``body``
    renders the answer text (the LLM reader's text has markers inside paragraphs).
    """
    parts = []
    if answer.query and answer.query != answer.question:
        parts.append(f'<div class="searched">Searched for: {html.escape(answer.query)}</div>')
    if answer.abstained:
        parts.append(f'<div class="not-covered"><span class="badge">Not covered</span> '
                     f'{html.escape(answer.text)}</div>')
        if answer.related:
            items = "".join(_source_item(c, read_text(c.source), "·") for c in answer.related)
            parts.append(f'<div class="sources related"><div class="sources-title">Related reading</div>{items}</div>')
        parts += [changed_html(answer)] if answer.changed else []
        return "\n\n".join(parts)
    parts.append(body(answer.text if upto is None else answer.text[:upto], {c.n for c in answer.citations}))
    if upto is None and answer.citations:
        items = "".join(_source_item(c, read_text(c.source), str(c.n),
                                     answer.span if answer.span is not None and c.n == answer.span.n else None)
                        for c in answer.citations)
        parts.append(f'<div class="sources"><div class="sources-title">Sources</div>{items}</div>')
    parts += [changed_html(answer)] if answer.changed and upto is None else []
    return "\n\n".join(parts)


def changed_html(answer: Answer) -> str:
    """The warning that cited documents changed since indexing (their quotes may no longer match)."""
    names = ", ".join(html.escape(printable(s)) for s in answer.changed)
    return (f'<div class="error-note">⚠ Changed since the index was built: {names}. Their quotes may not match '
            "the files any more: rebuild the index.</div>")


def render_error(error: Exception) -> str:
    return f'<div class="error-note">⚠ {html.escape(str(error))}</div>'


def stream_cuts(text: str, steps: int = 8) -> list[int]:
    """Where to cut the answer while streaming it: about ``steps`` prefixes, ending at a line or sentence end."""
    cuts, size = [], max(1, len(text) // steps)
    for target in range(size, len(text), size):
        end = max(text.rfind(stop, 0, target) for stop in ("\n", "。", "；", ". ", "，", " "))
        end = end + 1 if end > (cuts[-1] if cuts else 0) else target
        if not cuts or end > cuts[-1]:
            cuts.append(end)
    return cuts


# -- the LLM reader's answers: a plain draft while writing, then checked sentences ------------------------
WRITTEN = ("Written by a local language model from the passages below. A sentence with [n] was checked "
           "against source n; one marked <em>not in the documents</em> was not, and is not cited.")
_CITE = re.compile(r"\[(\d+)\]")


def draft_html(draft: str) -> str:
    """The LLM's text while it is being written: plain text, not yet checked, nothing styled as a citation."""
    return (f'<div class="draft">{html.escape(draft)}</div>'
            '<div class="pending">Writing… each sentence is checked against the documents when it is done.</div>')


def checked_markdown(text: str, numbers: set[int] | None = None) -> str:
    """A checked LLM answer as markdown: [n] markers styled as citations, [?] as a visible "not in the documents"."""
    text = _CITE.sub(lambda m: f'<span class="cite">[{m.group(1)}]</span>'
                     if numbers is None or int(m.group(1)) in numbers else m.group(0), text)
    text = text.replace(UNSUPPORTED, '<span class="unsupported" title="Not found in the passages: not cited">'
                                     'not in the documents</span>')
    return f"{text}\n\n<div class='reader-note'>{WRITTEN}</div>"


def note_html(note: str) -> str:
    return f"<div class='reader-note'>{html.escape(note)}</div>" if note else ""


# -- the documents panel ------------------------------------------------------------------------------
def report_markdown(title: str, added: list[str], refused: list[tuple[str, str]], detail: str = "") -> str:
    """An upload or rebuild report: the title, then ✓ for each added file and ✗ with the reason for each refused."""
    lines = [f"**{title}**" + (f" — {detail}" if detail else "")]
    lines += [f"✓ {html.escape(printable(name))}" for name in added]
    lines += [f"✗ **{html.escape(printable(name))}**: {html.escape(reason)}" for name, reason in refused]
    return "  \n".join(lines)

