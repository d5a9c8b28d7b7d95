"""What the chat page shows, as HTML inside markdown: answers with their sources, notes, errors, reports.

Pure functions of the answer and the document text; nothing here imports Gradio. The answer's text is
markdown, its sources are HTML ``<details>`` blocks with the cited span highlighted in its context (the
passage's own markdown rendered there too, by ``markdown_html``). ``anchor`` names a message's sources,
so that its ``[n]`` markers link to them (``#{anchor}-{n}``).
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from itertools import groupby

from .explain import why_html
from .language import is_chinese, printable
from .generative import UNSUPPORTED
from .types import Answer, Citation, IndexedDocument

CONTEXT_CHARS = 120  # document text shown around a cited span
PENDING = '<span class="pending">Searching the documents…</span>'
LOADING_MODELS = ('<span class="pending">Loading the models… (once, after the app starts): your question is '
                  "answered as soon as they are ready.</span>")


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


def cite_html(n: int | str, anchor: str = "") -> str:
    """The ``[n]`` marker, as a link to source n of the message ``anchor`` names (when it names one)."""
    marker = f'<span class="cite">[{n}]</span>'
    return f'<a class="cite-link" href="#{anchor}-{n}">{marker}</a>' if anchor else marker


def answer_markdown(text: str, numbers: set[int] | None = None, anchor: str = "") -> str:
    """The answer text as markdown: each quoted segment (before an ``[n]`` marker of ``numbers``) code-safe, its
    wrapped lines joined, in a block of its own (two passages' lists stay two lists), then its marker."""
    parts, last = [], 0
    for m in _MARKER.finditer(text):
        if numbers is not None and int(m.group(1)) not in numbers:
            continue
        segment = join_lines(_fix_code(text[last:m.start()].strip("\n")))
        glue = "\n\n" if segment.rstrip().endswith(_FENCE) else " "
        parts.append(f'<div class="quoted">\n\n{segment}{glue}{cite_html(m.group(1), anchor)}\n\n</div>')
        last = m.end()
    rest = text[last:].strip("\n")
    if rest:
        parts.append(join_lines(_fix_code(rest)))
    return "\n\n".join(parts)


# Lines that start a block of their own (or end a paragraph), and lines after which a line break is kept.
_BLOCK_LINE = re.compile(r"[ \t]*(?:$|[-*+][ \t]|\d{1,9}[.)][ \t]|[#>|<]|```|~~~|(?:[-=*_][ \t]*){3,}$)|    |\t")
_KEEP_BREAK = re.compile(r"[ \t]*(?:[#|<]|```|~~~)|    |\t|.*(?:  |\\)$")
_WIDE = re.compile(r"[\u2e80-\u9fff\u3000-\u303f\uff00-\uffef]")  # CJK characters and punctuation


def join_lines(text: str) -> str:
    """Markdown with each paragraph's lines joined where the file only wrapped them (no space between Chinese
    characters, one elsewhere); lists, headings, tables, quotes, code and hard breaks keep their lines."""
    lines: list[str] = []
    fenced = False
    for line in text.split("\n"):
        previous = lines[-1].rstrip() if lines else ""
        if previous and not fenced and not _BLOCK_LINE.match(line) and not _KEEP_BREAK.match(lines[-1]):
            line = line.lstrip()
            glue = "" if _WIDE.match(previous[-1]) or _WIDE.match(line[0]) else " "
            lines[-1] = previous + glue + line
        else:
            lines.append(line)
        if line.lstrip().startswith((_FENCE, "~~~")):
            fenced = not fenced
    return "\n".join(lines)


# -- a passage's markdown, rendered around exact highlights -----------------------------------------------
_HEADING = re.compile(r"^(…?)[ \t]{0,3}#{1,6}[ \t]+", re.M)  # after the "…" of a cut-off passage too
_BULLET = re.compile(r"^[ \t]*([-*+])[ \t]", re.M)
_INLINE = (("code", re.compile(r"`([^`\n]+)`")),
           ("b", re.compile(r"\*\*(?=\S)([^\n]+?)(?<=\S)\*\*|__(?=\S)([^\n]+?)(?<=\S)__")),
           ("i", re.compile(r"(?<![*\w])\*(?=[^\s*])([^*\n]+?)(?<=\S)\*(?![*\w])")))
_TAGS = {"mark": ("<mark>", "</mark>"), "span": ('<strong class="answer-span">', "</strong>"),
         "h": ('<strong class="heading">', "</strong>"), "b": ("<strong>", "</strong>"), "i": ("<em>", "</em>"),
         "code": ("<code>", "</code>")}


def markdown_html(text: str, marked: tuple[tuple[int, int, str], ...] = ()) -> str:
    """``text`` as HTML for a pre-wrapped passage: its headings, bold, italics, code and bullets rendered and their
    markup dropped, every other character kept in place; each (start, end, style) of ``marked`` ("mark" or "span")
    wraps exactly those characters of ``text``."""
    chars, styles, drop = list(text), [set() for _ in text], [False] * len(text)
    for start, end, style in marked:
        for i in range(start, end):
            styles[i].add(style)
    for m in _HEADING.finditer(text):
        end = text.find("\n", m.end()) % (len(text) + 1)  # the line's end (no newline: the text's end)
        drop[m.end(1):m.end()] = [True] * (m.end() - m.end(1))
        for i in range(m.end(), end):
            styles[i].add("h")
    for m in _BULLET.finditer(text):
        chars[m.start(1)] = "•"
    for style, pattern in _INLINE:
        for m in pattern.finditer(text):
            inner = next(g for g in range(1, len(m.groups()) + 1) if m.group(g) is not None)
            if any(drop[m.start():m.end()]) or any("code" in s for s in styles[m.start():m.end()]):
                continue
            for i in range(m.start(), m.end()):
                drop[i] = not m.start(inner) <= i < m.end(inner)
                styles[i].add(style)
    return _nested([(chars[i], styles[i]) for i in range(len(text)) if not drop[i]])


def _nested(chars: list[tuple[str, set[str]]], level: int = 0) -> str:
    """Runs of characters in their tags, always nested in the same order (so they never overlap)."""
    if level == len(_TAGS):
        return _html_text("".join(c for c, _ in chars))
    style = list(_TAGS)[level]
    parts = []
    for inside, run in groupby(chars, key=lambda c: style in c[1]):
        inner = _nested(list(run), level + 1)
        parts.append(f"{_TAGS[style][0]}{inner}{_TAGS[style][1]}" if inside else inner)
    return "".join(parts)


def plain_text(text: str) -> str:
    """Markdown as plain text on one line: headings' marks, bold, italics and code marks dropped."""
    return re.sub(r"\s+", " ", re.sub(r"\*\*|__|`", "", _HEADING.sub(r"\1", text))).strip()


def _where(c: Citation) -> str:
    return f"page {c.page}" if c.page else f"line {c.line}" if c.line else f"chars {c.start}–{c.end}"


def _html_text(text: str) -> str:
    # No raw newlines: a blank line would end the HTML block inside the markdown message.
    return html.escape(text).replace("\n", "&#10;")


def _passage(c: Citation, document_text: str | None, span: Citation | None = None, anchor: str = "") -> str:
    """The cited span highlighted (the exact answer span inside it too), with some of the document around it when
    the document can be read; its markdown rendered."""
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
    at = len(before)
    marked = [(at, at + len(c.quote), "mark")]
    if span is not None and span.source == c.source and c.start <= span.start and span.end <= c.end:
        marked.append((at + span.start - c.start, at + span.end - c.start, "span"))
    ident = f' id="{anchor}-{c.n}"' if anchor else ""
    return f'<div class="passage"{ident}>{markdown_html(before + c.quote + after, tuple(marked))}</div>'


def _source_item(c: Citation, document_text: str | None, label: str, span: Citation | None = None,
                 anchor: str = "") -> str:
    snippet = plain_text(c.quote)
    snippet = snippet if len(snippet) <= 48 else snippet[:48] + "…"
    return (f'<details class="source"><summary><span class="num">{label}</span>'
            f'<span class="doc">{html.escape(printable(c.source))}</span><span class="where">{_where(c)}</span>'
            f'<span class="snippet">{html.escape(snippet)}</span></summary>'
            f'{_passage(c, document_text, span, anchor)}{why_html(c.why) if c.why is not None else ""}'
            f'<div class="span-info">{html.escape(printable(c.source))} · characters {c.start}–{c.end}</div></details>')


def render_answer(answer: Answer, read_text: Callable[[str], str | None] = lambda source: None,
                  upto: int | None = None, body: Callable[[str, set[int], str], str] = answer_markdown,
                  anchor: str = "", notes: str = "") -> str:
    """One chat message: what was searched for, the answer (or the "not covered" note), its sources, and a button
    that copies it all as text.

    ``upto`` renders only the first characters of the answer, without sources (for streaming); ``body``
    renders the answer text (the LLM reader's text has markers inside paragraphs); ``anchor`` (unique in the
    chat) links the ``[n]`` markers to the sources; ``notes`` (HTML) go under the sources.
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
        return "\n\n".join(filter(None, [*parts, notes, copy_html(answer)]))
    parts.append(body(answer.text if upto is None else answer.text[:upto], {c.n for c in answer.citations}, anchor))
    if upto is not None:
        return "\n\n".join(parts)
    if answer.citations:
        items = "".join(_source_item(c, read_text(c.source), str(c.n),
                                     answer.span if answer.span is not None and c.n == answer.span.n else None,
                                     anchor) for c in answer.citations)
        parts.append(f'<div class="sources"><div class="sources-title">Sources</div>{items}</div>')
    parts += [changed_html(answer)] if answer.changed else []
    return "\n\n".join(filter(None, [*parts, notes, copy_html(answer)]))


def answer_text(answer: Answer) -> str:
    """The answer as plain text, to copy: its text with the [n] markers, then each source and its quote."""
    text = join_lines(answer.text.replace(UNSUPPORTED, "(not in the documents)"))
    lines = [re.sub(r"\*\*|__|`", "", _HEADING.sub(r"\1", text)).strip()]
    listed = answer.citations or answer.related
    if listed:
        lines += ["", "Sources:" if answer.citations else "Related reading:"]
        lines += [f"[{c.n}] {printable(c.source)}, {_where(c)}: {plain_text(c.quote)}" for c in listed]
    return "\n".join(lines)


def copy_html(answer: Answer) -> str:
    """A button that copies the answer and its sources as plain text (assistant/ui.py's page script copies it)."""
    text = html.escape(answer_text(answer), quote=True).replace("\n", "&#10;")
    return (f'<div class="answer-tools"><button class="copy-answer" value="{text}" '
            'title="Copy the answer and its sources as plain text">Copy</button></div>')


LANGUAGE_NOTE = ("<div class='reader-note language-note'>The quotes are in the documents' language (Chinese). For "
                 "an answer written in English, press <em>Ask again with the LLM</em> under the chat.</div>")


def language_note(answer: Answer) -> str:
    """LANGUAGE_NOTE for an English question answered with Chinese quotes (a quoting reader does not translate)."""
    quoted = "".join(c.quote for c in answer.citations)
    return LANGUAGE_NOTE if not answer.abstained and not is_chinese(answer.question) and is_chinese(quoted) else ""


_PENDING_BLOCK = re.compile(r'<(span|div) class="pending">.*?</\1>', re.S)


def stopped_html(content: str) -> str:
    """A message whose answer was stopped: what was written of it, without its "Writing…" line, and a note."""
    return _PENDING_BLOCK.sub("", content) + "<div class='reader-note'>Stopped: this answer was not finished.</div>"


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


def checked_markdown(text: str, numbers: set[int] | None = None, anchor: str = "") -> str:
    """A checked LLM answer as markdown: [n] markers styled as citations (links to the sources, with ``anchor``),
    [?] as a visible "not in the documents"."""
    text = _CITE.sub(lambda m: cite_html(m.group(1), anchor)
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


def documents_html(documents: tuple[IndexedDocument, ...] | list[IndexedDocument]) -> str:
    """The document list: each document's title (else its name), name, type, size, date added and number of
    passages; opened, its preview and a Delete that asks first (the page's DOCUMENTS_JS sends its source)."""
    if not documents:
        return '<div class="doc-list empty muted">No documents indexed yet.</div>'
    items = []
    for d in documents:
        name = html.escape(printable(d.source))
        title = html.escape(printable(d.title)) if d.title else name
        added = d.added_at.replace("T", " ").replace("Z", " UTC")
        meta = [f'<span class="doc-name">{name}</span>' if d.title else "", d.kind.upper(), _size(d.bytes),
                f'<span title="added {added}">{added[:10]}</span>' if added else "",
                f"{d.chunks} passage{'s' * (d.chunks != 1)}"]
        source = html.escape(d.source, quote=True)
        items.append(f'<details class="doc"><summary><span class="doc-title">{title}</span>'
                     f'<span class="doc-meta">{" · ".join(filter(None, meta))}</span></summary>'
                     f'<div class="doc-preview">{_html_text(_preview_text(d.preview)) or "<em>(no text)</em>"}</div>'
                     f'<details class="doc-delete"><summary>Delete…</summary><div class="doc-confirm">Delete '
                     f'<strong>{name}</strong>? It is removed from the documents folder and the index.</div>'
                     f'<button class="delete-doc" value="{source}">Delete</button> '
                     f'<button class="cancel-delete">Cancel</button></details></details>')
    return f'<div class="doc-list">{"".join(items)}</div>'


def _preview_text(preview: str) -> str:
    """A document's preview (its text's start on one line) without markdown marks: headings, bold, code."""
    return plain_text(re.sub(r"(^|\s)#{1,6}\s+", r"\1", preview))


def _size(n: int) -> str:
    """A file size as people read it: 512 B, 12.3 KB, 4.1 MB ("" when not recorded)."""
    if n <= 0:
        return ""
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MB"
