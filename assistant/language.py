"""Which language a text is in, the names a question asks about, the "not covered" sentence in its language,
and names made printable on one line."""
from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u9fff]")  # CJK ideographs (extension A and the unified block)
_LATIN = re.compile(r"[A-Za-z]")
_TERM = re.compile(r"(?<![A-Za-z0-9])[A-Za-z][A-Za-z0-9]*(?:[-.][A-Za-z0-9]+)*")


def is_chinese(text: str) -> bool:
    cjk = len(CJK.findall(text))
    return cjk > 0 and cjk >= 0.25 * len(_LATIN.findall(text))


def named_terms(question: str) -> list[str]:
    """Latin-script names in a Chinese question (``Kubernetes``, ``H100``, ``LoRA``), in order, once each.

    A Chinese document that covers such a topic writes the name as is, so a name that no document
    contains means the documents do not cover the question: measured on our eval set, this catches
    questions on near topics (Kubernetes, H100) whose passages are otherwise close enough to answer,
    and never fired on an answerable question; on CMRC it fired for 3 of 3,219 questions. English
    questions are left out: their names are often translated in Chinese documents.
    """
    if not is_chinese(question):
        return []
    found = dict.fromkeys(m.group() for m in _TERM.finditer(question))
    return [t for t in found if len(t) >= 2 and not t.islower()]


def not_covered(question: str, missing: tuple[str, ...] = ()) -> str:
    """What a reader says when the documents do not cover ``question`` (naming the ``missing`` terms), in its language."""
    if is_chinese(question):
        said = f"文档中没有提到 {'、'.join(missing)}，" if missing else "文档中没有涉及这个问题。"
        return said + "下面是最接近的段落，仅供参考。"
    said = f"The documents never mention {', '.join(missing)}." if missing else \
        "The documents do not cover this question."
    return said + " The closest passages are listed below for reference."


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def printable(name: str) -> str:
    """A file name (or any label) as one line: newlines, tabs and other control characters escaped
    (``\\n``, ``\\t``, ``\\x1b``...), so a hostile name cannot split or forge an output line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), name)
