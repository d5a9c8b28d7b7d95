"""Document -> Chunk with exact character offsets (``document.text[start:end] == chunk.text``).

Made for Chinese and English Markdown-ish text. The text is cut into *units* (a heading line, a
sentence or list item, a group of code lines), grouped into *blocks* (paragraphs separated by blank
lines, or one fenced code block), and blocks are packed into chunks of at most ``size`` characters:

- a heading (``#`` lines, also in mid-line, and whole-line bold numbered items such as
  ``**3. 如何评估…？**``) starts a new chunk, so an interview question stays with its answer and a
  section's code stays with the text that explains it. A heading is its whole line when that is a short
  title that ends, if at all, with its only sentence mark; in mid-line, or on a long line, it is the ``#``
  marks and the first word, and the rest is text
  (a page flattened to one line: ``简介。 ## 数据 初创公司缺少…。 ## 算力 …``);
- a block that fits is never split; a longer one is split at sentence ends (``。！？；.!?;``) or
  line ends, and only a sentence longer than ``size`` is cut mid-sentence (at a comma when possible);
- chat-template debris such as ``<|bot|>`` is never part of a chunk.

Offsets are never recomputed by searching: every unit carries its span from the start.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .types import Chunk, Document

# The version of what this module outputs (chunk_document's chunks and spans' units). Bump it by hand
# whenever the same text gives other chunks or units: an index of another version is re-chunked and
# re-embedded on its next build. tests/test_chunking.py fails on a forgotten bump.
CHUNKER_VERSION = 4

DEBRIS = re.compile(r"<\|[A-Za-z_]{1,32}\|>")
_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)
_BLANK = re.compile(r"\n[ \t\r\u3000]*\n")
_HEADING = re.compile(r"(?:^|(?<=[。！？.!?）)]))[ \t]*(#{1,6})[ \t]+\S", re.M)  # where one starts; _heading_end
_HEADING_WORD = re.compile(r"[ \t]*#{1,6}[ \t]+[^\s。]+")
_COMMA = re.compile(r"[，,；;]")
_HEADING_CHARS = 200  # a title line up to this long is one heading (never cut, even past a smaller size)
_SENTENCE_MARK = re.compile(r"[。！？!?]|(?<!\d)\.(?=\s|$)")  # in a title only as its last mark, and not a full stop
_BOLD_ITEM = re.compile(r"^[ \t]*\*\*(?:\d+(?:\.\d+)*[.、．]|[一二三四五六七八九十]+[、.]|问题|面试题|题目)[^\n]*\*\*[ \t]*$"
                        r"|^[ \t]*\*\*[^\n*]*[？?]\*\*[ \t]*$", re.M)
_SENTENCE_END = re.compile(r"[。！？；!?;]+[”’」』）)\"']*|\.(?=\s)|\n")
_SOFT_CUT = re.compile(r"[，,、：:\s]")
_STRIP_HEADING = re.compile(r"^[#\s*]+|[*\s]+$")


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    kind: str  # "heading", "text" or "code"
    block: int  # units of one block share this number
    segment: int = 0  # text between two debris markers; a chunk never spans two


def chunk_document(document: Document, size: int = 400, overlap: int = 0, code_size: int | None = None) -> list[Chunk]:
    """Split ``document`` into chunks of at most ``size`` characters (code blocks: ``code_size``).

    Each chunk's ``heading`` is the path of the (at most two) section headings above it, for
    context; headings inside the chunk are already part of its text.
    """
    text = document.text
    code_size = code_size or 3 * size
    chunks: list[Chunk] = []
    current: list[_Unit] = []
    stack: list[tuple[int, str]] = []  # (level, heading text) of the sections we are in
    context = ""

    def has_body() -> bool:
        return any(u.kind != "heading" for u in current)

    def flush(keep: list[_Unit] = ()) -> None:
        nonlocal context
        if current:
            start, end = current[0].start, current[-1].end
            chunks.append(Chunk(document.source, start, end, text[start:end], context))
        current[:] = list(keep)
        context = " > ".join(h for _, h in stack[-2:])

    for group in _groups(text, _units(text, size, code_size)):
        first = group[0]
        if current and current[-1].segment != first.segment:
            flush()
        if first.kind == "heading":
            if has_body() or (current and first.end - current[0].start > size):
                flush()
            line = text[first.start:first.end]
            level = len(line) - len(line.lstrip("#")) if line.startswith("#") else 7
            while stack and stack[-1][0] >= level:
                stack.pop()
            if not current:  # the context of a chunk opened by a heading: its parents, not its siblings
                context = " > ".join(h for _, h in stack[-2:])
            stack.append((level, _STRIP_HEADING.sub("", line)))
            current.append(first)
            continue
        limit = code_size if any(u.kind == "code" for u in group) else size  # an intro grouped with its code
        if group[-1].end - (current[0].start if current else first.start) <= limit:
            current.extend(group)
        elif has_body() and group[-1].end - first.start <= limit:
            flush(_overlap_tail(current, overlap, group[-1].end - limit))
            current.extend(group)
        else:  # longer than a chunk: add it unit by unit
            for u in group:  # a heading alone is flushed too: heading + unit must fit as well
                if current and u.end - current[0].start > limit:
                    flush(_overlap_tail(current, overlap, u.end - limit))
                current.append(u)
    flush()
    return chunks


def _groups(text: str, units: list[_Unit]) -> list[list[_Unit]]:
    """Each heading alone; other units grouped by block. A block that ends with a colon (it introduces
    what follows, e.g. ``以下是实现：`` before a list or code) is grouped with the next block."""
    groups: list[list[_Unit]] = []
    for u in units:
        last = groups[-1] if groups else None
        same_block = last is not None and last[0].kind != "heading" and u.kind != "heading" and (
            last[-1].block == u.block or text[last[-1].end - 1] in ":：")
        if same_block and last[-1].segment == u.segment:
            last.append(u)
        else:
            groups.append([u])
    return groups


def _overlap_tail(current: list[_Unit], overlap: int, min_start: int) -> list[_Unit]:
    """The last units of ``current`` (whole sentences, no headings) that fit in ``overlap`` characters
    and start at or after ``min_start``, so that the next chunk stays within its size."""
    tail: list[_Unit] = []
    for u in reversed(current[1:]):
        if u.kind == "heading" or current[-1].end - u.start > overlap or u.start < min_start:
            break
        tail.insert(0, u)
    return tail


def _units(text: str, size: int, code_size: int) -> list[_Unit]:
    units: list[_Unit] = []
    block = 0
    for segment, (seg_start, seg_end) in enumerate(_segments(text)):
        for b_start, b_end, is_code in _blocks(text, seg_start, seg_end):
            block += 1
            found = (_code_units(text, b_start, b_end, code_size, block) if is_code
                     else _text_units(text, b_start, b_end, size, block))
            units.extend(_Unit(u.start, u.end, u.kind, u.block, segment) for u in found)
    return units


def _segments(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` between chat-template debris markers."""
    spans, pos = [], 0
    for m in DEBRIS.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    return spans


def _blocks(text: str, start: int, end: int):
    """Yield (start, end, is_code) for paragraphs and fenced code blocks in text[start:end]."""
    pos = start
    fences = [m for m in _FENCE.finditer(text, start, end)]
    k = 0
    while pos < end:
        opening = fences[k] if k < len(fences) else None
        prose_end = opening.start() if opening else end
        yield from _paragraphs(text, pos, prose_end)
        if not opening:
            break
        closing = fences[k + 1] if k + 1 < len(fences) else None
        code_end = text.find("\n", closing.start()) if closing else -1
        code_end = end if closing is None else (code_end if 0 <= code_end < end else end)
        yield opening.start(), code_end, True
        pos, k = code_end, k + 2


def _paragraphs(text: str, start: int, end: int):
    pos = start
    for m in _BLANK.finditer(text, start, end):
        yield pos, m.start(), False
        pos = m.end()
    yield pos, end, False


def _text_units(text: str, start: int, end: int, size: int, block: int) -> list[_Unit]:
    """Headings, then sentences / lines; sentences longer than ``size`` are cut at soft points."""
    cuts = sorted({start, end} | {m.start() for m in _HEADING.finditer(text, start, end)}
                  | {m.start() for m in _BOLD_ITEM.finditer(text, start, end) if m.end() - m.start() <= _HEADING_CHARS})
    units: list[_Unit] = []
    for a, b in zip(cuts, cuts[1:]):
        # A block starts a line, also right after chat-template debris: there ^ must match.
        subject, pos = (text[a:b], 0) if a == start else (text, a)
        bold = _BOLD_ITEM.match(subject, pos)
        heading_end = None
        if bold and bold.end() - pos <= _HEADING_CHARS:  # a long bold line is text
            heading_end = a + bold.end() - pos
        elif _HEADING.match(subject, pos):
            heading_end = _heading_end(text, a, b, size)
        if heading_end is not None:
            units += _trimmed(text, a, heading_end, "heading", block)
            a = heading_end
        pos = a
        for s in _SENTENCE_END.finditer(text, a, b):
            units += _split_long(text, pos, s.end(), size, block)
            pos = s.end()
        units += _split_long(text, pos, b, size, block)
    return units


def _heading_end(text: str, a: int, b: int, size: int) -> int:
    """Where the ``#`` heading at ``text[a]`` ends (before ``b``): at its line's end when the rest of the line is a
    title (at most ``_HEADING_CHARS`` long, no sentence end but a last ?/!), else after its first word, at most
    ``size`` long. Decided on the line alone, so a chunk's text read again (``spans``) gives the same units."""
    end = text.find("\n", a, b)
    end = b if end < 0 else end
    title = text[a:end].rstrip()
    core = title.rstrip("*_ \t)）]】」』”’\"'")  # ``### **如何利用渠道优势？**``: the ？ is its last mark
    mark = _SENTENCE_MARK.search(core)
    # A title may end with a full stop (``### 1. 实现一个基于 GAN 的人脸生成模型。``) but holds no comma: a
    # heading word followed by a sentence (``## 数据 初创公司缺少训练数据时，可以…。``) is a page flattened
    # to one line. Decided on the line alone, as a chunk's text is read again by ``spans``.
    last = mark is not None and mark.end() == len(core) and (core[-1] not in "。." or not _COMMA.search(core))
    if len(title) <= _HEADING_CHARS and (mark is None or last):
        return end
    word = _HEADING_WORD.match(text, a, min(end, a + size))
    return word.end() if word else min(end, a + size)


def _code_units(text: str, start: int, end: int, code_size: int, block: int) -> list[_Unit]:
    """A code block is one unit when it fits, else groups of whole lines."""
    if end - start <= code_size:
        return _trimmed(text, start, end, "code", block)
    units, pos = [], start
    while pos < end:
        cut = text.rfind("\n", pos, min(end, pos + code_size))
        cut = min(end, pos + code_size) if cut <= pos else cut
        units += _trimmed(text, pos, cut, "code", block)
        pos = cut
    return units


def _split_long(text: str, start: int, end: int, size: int, block: int) -> list[_Unit]:
    units = []
    while end - start > size:
        window = text[start:start + size]
        soft = [m.end() for m in _SOFT_CUT.finditer(window) if m.end() > size // 2]
        cut = start + (soft[-1] if soft else size)
        units += _trimmed(text, start, cut, "text", block)
        start = cut
    return units + _trimmed(text, start, end, "text", block)


def _trimmed(text: str, start: int, end: int, kind: str, block: int) -> list[_Unit]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return [_Unit(start, end, kind, block)] if end > start else []


@dataclass(frozen=True)
class Span:
    """A unit of a passage: ``text[start:end]`` is a heading, a sentence / list item, or code."""

    start: int
    end: int
    kind: str
    block: int


def spans(text: str, size: int = 400) -> list[Span]:
    """The units of ``text`` (as the chunker sees them), for readers that pick sentences."""
    return [Span(u.start, u.end, u.kind, u.block) for u in _units(text, size, 1 << 30)]
