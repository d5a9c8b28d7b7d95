"""The chat page's part of the generative reader: which reader answers, and how its answers look.

The extractive reader answers while the LLM loads (in the background, once) and when the LLM cannot
be used (the llm extra or the model is missing); a note under the answer says so.
"""
from __future__ import annotations

import html
import logging
import re
import threading

from .errors import AssistantError
from .generative import UNSUPPORTED

log = logging.getLogger(__name__)

READER_CHOICES = [("Quote (extractive, fast)", "extractive"), ("Exact span (reader model)", "span"), ("Write (local LLM, every sentence checked)", "llm")]
LOADING = ("The language model is still loading, so the extractive reader quoted this answer. "
           "Ask again in a moment for a written one.")
WRITTEN = ("Written by a local language model from the passages below. A sentence with [n] was checked "
           "against source n; one marked <em>not in the documents</em> was not, and is not cited.")
_CITE = re.compile(r"\[(\d+)\]")


class ReaderPicker:
    """Chooses the reader for each question; loads the LLM in the background the first time it is asked for."""

    def __init__(self, assistant) -> None:
        self.assistant = assistant
        self._loading: threading.Thread | None = None
        self._error: AssistantError | None = None
        self._lock = threading.Lock()

    def _default(self) -> str:
        return getattr(getattr(self.assistant, "reader", None), "name", "extractive")

    def _fallback(self):
        return None if self._default() != "llm" else self.assistant.reader_named("extractive")

    def pick(self, name: str | None) -> tuple[object | None, str]:
        """(reader, note): reader None means the assistant's default reader; note says why another one answered."""
        name = name or self._default()
        if name != "llm":
            return (None if self._default() == name else self.assistant.reader_named(name)), ""
        if self._error is not None:
            return self._fallback(), unavailable(self._error)
        try:
            llm = self.assistant.reader_named("llm")
        except AssistantError as exc:
            return self._fallback(), unavailable(exc)
        if getattr(llm, "loaded", True):
            return llm, ""
        self.start_loading(llm)
        return self._fallback(), LOADING

    def start_loading(self, llm) -> None:
        with self._lock:
            if self._loading is None:
                self._loading = threading.Thread(target=self._load, args=(llm,), name="llm-load", daemon=True)
                self._loading.start()

    def _load(self, llm) -> None:
        try:
            llm.load()
        except AssistantError as exc:
            log.warning("the LLM reader cannot be used: %s", exc)
            self._error = exc


def unavailable(error: Exception) -> str:
    return f"The LLM reader cannot be used ({error}), so the extractive reader quoted this answer."


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


CSS = """
.draft { white-space: pre-wrap; }
.unsupported { display: inline-block; padding: 0 5px; margin-left: 2px; border-radius: 6px; font-size: 0.75em;
               color: #b45309; background: rgba(245, 158, 11, 0.15); }
.reader-note { font-size: 0.8em; color: var(--body-text-color-subdued); margin-top: 6px; }
"""
