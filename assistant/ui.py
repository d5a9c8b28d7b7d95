"""The chat page's handlers: what its events call, as plain Python tested without a server (``ChatHandlers``).

The page itself (``build_app``: its layout, wiring and script; ``launch_options``, ``check_port``) is in
``ui_page``, and importable from here as before. Nothing here imports Gradio. What the page shows is rendered by
``render``, follow-up questions are resolved by ``conversation``, uploads are checked by ``uploads``, ratings are
kept by ``feedback``.

The extractive reader answers while the LLM loads (in the background, once) and when the LLM cannot
be used (the llm extra or the model is missing); a note under the answer says so. ``api.serve`` (the page with
the API) loads the models when the app starts; questions asked meanwhile wait, and the page says the models are loading.
"""
from __future__ import annotations

import hashlib
import html
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from . import feedback
from .config import Settings
from .conversation import is_follow_up, last_question, message_text, resolve_query  # noqa: F401  (re-exported)
from .errors import AssistantError, IngestError, NoIndexError, QuestionError
from .ingest import read_document
from .language import printable
from .pipeline import DIFFERENT_VERSION
from .render import (LANGUAGE_NOTE, LOADING_MODELS, PENDING, answer_markdown, checked_markdown, documents_html,
                     draft_html, language_note, note_html, render_answer, render_error, report_markdown, stream_cuts)
from .types import Answer
from .uploads import named_uploads, safe_name, stage_uploads  # noqa: F401  (safe_name: re-exported)

log = logging.getLogger(__name__)
ANSWERS_KEPT = 1000  # answers a page can still rate (the latest, over all tabs)
WAITING = "a different version is already indexed: answer *Replace* or *Keep* below"


# -- which reader answers -----------------------------------------------------------------------------
LOADING = ("The language model is still loading, so the extractive reader quoted this answer. "
           "Ask again in a moment for a written one.")


class ReaderPicker:
    """Chooses the reader for each question; loads the LLM in the background the first time it is asked for."""

    def __init__(self, assistant) -> None:
        self.assistant = assistant
        self._loading: threading.Thread | None = None
        self._error: AssistantError | None = None
        self._lock = threading.Lock()

    def _default(self) -> str:
        return self.assistant.reader.name

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
        if llm.loaded:
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


# -- handlers -----------------------------------------------------------------------------------------
class ChatHandlers:
    """What the page's events call. One Assistant (and so one model) serves every browser tab.

    Each answer it gives carries a key in its message's metadata (``answer_key``), under which it remembers the
    Answer and the reader that gave it (the latest ``ANSWERS_KEPT``), so that the answer can be rated."""

    def __init__(self, assistant, settings: Settings | None = None, stream_delay: float = 0.02) -> None:
        self.assistant = assistant
        self.settings = settings or assistant.settings
        self.stream_delay = stream_delay
        self.readers = ReaderPicker(assistant)
        self.ready = threading.Event()  # the models are loaded; cleared by start_warm_up until they are
        self.ready.set()
        self.waiting = WaitingUploads()
        self._answers: OrderedDict[str, tuple[Answer, str]] = OrderedDict()
        self._lock = threading.Lock()

    def start_warm_up(self) -> threading.Thread:
        """Load the index and the models in the background; questions asked meanwhile wait until ``ready``."""
        self.ready.clear()
        thread = threading.Thread(target=self._warm_up, name="warm-up", daemon=True)
        thread.start()
        return thread

    def _warm_up(self) -> None:
        try:
            warm_up(self.assistant)
        finally:
            self.ready.set()

    def _corpus(self) -> Path:
        try:
            return Path(self.assistant.status().corpus or self.settings.corpus)
        except AssistantError:
            return self.settings.corpus

    def _reader(self) -> Callable[[str], str | None]:
        corpus, texts = self._corpus(), {}

        def read_text(source: str) -> str | None:
            if source not in texts:
                path = corpus / source
                texts[source] = None
                if path.suffix.lower() != ".pdf" and path.is_file():  # PDFs are slow to re-read: quote only
                    try:
                        texts[source] = read_document(path, corpus, self.settings.max_file_mb << 20).text
                    except IngestError as exc:
                        log.info("no context for %s: %s", source, exc)
            return texts[source]

        return read_text

    # -- answers --------------------------------------------------------------------------------------
    def respond(self, message: str, history: list | None, reader: str | None = None) -> Iterator[tuple[list, str]]:
        """Stream one answer: the question at once, then the answer growing, then the answer with sources.

        ``reader``: "extractive" or "llm" (default: the assistant's reader). A question that is refused (too
        long) is answered by the reason alone; one asked while the models load waits for them, and says so."""
        history = [plain_message(m) for m in history or ()]
        question = (message or "").strip()
        if not question:
            yield history, ""
            return
        refused = self.refusal(question)
        if refused is not None:
            yield [*history, {"role": "assistant", "content": render_error(refused)}], ""
            return
        query = resolve_query(question, history, self.settings.max_question_chars)
        history.append({"role": "user", "content": question})
        anchor = f"answer-{len(history)}"  # unique in the chat: the answer's place in it
        yield [*history, {"role": "assistant", "content": PENDING if self.ready.is_set() else LOADING_MODELS}], ""
        self.ready.wait()
        chosen, note = self.readers.pick(reader)
        draft, streamed = "", False  # streamed: the reader wrote its answer (the LLM), rather than quoting
        try:
            response = self.assistant.ask_stream(question, query=query if query != question else None,
                                                 reader=chosen)
            for delta in response:
                draft, streamed = draft + delta, True
                yield [*history, {"role": "assistant", "content": draft_html(draft)}], ""
            answer = response.answer()
        except AssistantError as exc:
            yield [*history, {"role": "assistant", "content": render_error(exc)}], ""
            return
        except Exception as exc:  # the UI edge: one message for the user, the traceback in the log
            log.exception("answering %r failed", question[:200])
            yield [*history, {"role": "assistant", "content": render_error(
                RuntimeError(f"something went wrong ({exc.__class__.__name__}); see the server log"))}], ""
            return
        body = checked_markdown if streamed else answer_markdown
        if not answer.abstained and not streamed:
            for cut in stream_cuts(answer.text):
                yield [*history, {"role": "assistant", "content": render_answer(answer, upto=cut, anchor=anchor)}], ""
                time.sleep(self.stream_delay)
        notes = ("" if streamed else language_note(answer)) + note_html(note)
        content = render_answer(answer, self._reader(), body=body, anchor=anchor, notes=notes)
        key = self._remember(answer, getattr(chosen or self.assistant.reader, "name", ""))
        yield [*history, {"role": "assistant", "content": content, "metadata": {"id": key}}], ""

    def refusal(self, message: str) -> QuestionError | None:
        """Why a question is refused before it is searched for (too long, say); None for one that is asked."""
        try:
            self.assistant.clean_question(message)
        except QuestionError as exc:
            return exc if (message or "").strip() else None
        return None

    @staticmethod
    def offers_llm(messages: list) -> bool:
        """Whether the last answer offers to ask again with the LLM (an English question, Chinese quotes)."""
        return bool(messages) and LANGUAGE_NOTE in message_text(messages[-1].get("content"))

    def _remember(self, answer: Answer, reader: str) -> str:
        key = uuid.uuid4().hex
        with self._lock:
            self._answers[key] = (answer, reader)
            while len(self._answers) > ANSWERS_KEPT:
                self._answers.popitem(last=False)
        return key

    def can_rate(self, message: dict) -> bool:
        """Whether ``message`` is an answer this page gave that can still be rated."""
        with self._lock:
            return answer_key(message) in self._answers

    def rate(self, message: dict, rating: int, comment: str = "") -> None:
        """Keep a rating (+1 or -1, an optional comment) of the answer in chat ``message``, beside the index, with
        its question, text, citations and reader (``feedback``). AssistantError for a message that is not such an
        answer (an error, a stopped answer, one given before the app restarted), or when it cannot be saved."""
        with self._lock:
            rated = self._answers.get(answer_key(message) or "")
        if rated is None:
            raise AssistantError("only the answers given since the app started can be rated")
        answer, reader = rated
        feedback.append(feedback.feedback_path(self.settings.index),
                        feedback.record(answer.to_dict(), rating, comment, reader=reader))

    # -- documents ------------------------------------------------------------------------------------
    def add_steps(self, files, session: str | None = None) -> Iterator[tuple[str, str]]:
        """``add_files``, with what it is doing shown as it goes: (report, index status) every half second."""
        def work(progress):
            return self.add_files(files, progress, session=session)

        yield from with_progress("Adding documents…", work, self.status_markdown)

    def add_files(self, files, progress: Callable | None = None, replace: bool = False,
                  session: str | None = None) -> tuple[str, str]:
        """Add uploaded files to the corpus and the index; returns (report, index status) as markdown.

        ``replace``: replace a document of the same name whose content differs. Else such a file is refused; with
        a browser ``session``, it waits for the user's answer (``replace_steps``, ``keep_waiting``)."""
        uploads = named_uploads(files)
        if not uploads:
            return "", self.status_markdown()
        waiting: list[str] = []
        with tempfile.TemporaryDirectory(prefix="assistant-upload-") as staging:
            staged, refused = stage_uploads(uploads, Path(staging), self.settings.max_file_mb << 20)
            if not staged:
                return report_markdown("Nothing added", [], refused), self.status_markdown()
            t0 = time.monotonic()
            try:
                report = self.assistant.add(staged, progress=_embedding_progress(progress), replace=replace)
            except AssistantError as exc:
                return (report_markdown("Nothing added", [], [*refused, ("index", self._message(exc))]),
                        self.status_markdown())
            if session:
                waiting = [name for name, reason in report.refused if reason == DIFFERENT_VERSION]
                self.waiting.keep(session, [Path(staging, name) for name in waiting])
        changed = [*report.added, *report.replaced]
        counts = [f"{verb} {len(names)} document{'s' * (len(names) != 1)}"
                  for verb, names in (("added", report.added), ("replaced", report.replaced)) if names]
        title = ", ".join(counts).capitalize() or ("Already indexed" if report.already_indexed else
                                                   "Replace it?" if waiting else "Nothing added")
        n = report.build.embedded_chunks
        detail = f"{n} new passage{'s' * (n != 1)} indexed in {time.monotonic() - t0:.1f} s" if changed else ""
        names = [*report.added, *(f"{name} (replaced)" for name in report.replaced),
                 *(f"{name} (already indexed)" for name in report.already_indexed)]
        refused += [(name, WAITING if name in waiting else reason) for name, reason in report.refused]
        return report_markdown(title, names, refused, detail), self.status_markdown()

    def replace_steps(self, session: str) -> Iterator[tuple[str, str]]:
        """Replace the documents of the names this session's waiting uploads have by those uploads (the user
        answered Replace), with progress as ``add_steps``; the waiting uploads are deleted after."""
        paths = self.waiting.paths(session)
        try:
            if not paths:
                yield "**Nothing to replace** (the upload is no longer kept; add it again)", self.status_markdown()
                return
            yield from with_progress("Replacing…", lambda progress: self.add_files(paths, progress, replace=True),
                                     self.status_markdown)
        finally:
            self.waiting.discard(session)

    def keep_waiting(self, session: str) -> str:
        """The user answered Keep: this session's waiting uploads are deleted; the report says what was kept."""
        names = [path.name for path in self.waiting.paths(session)]
        self.waiting.discard(session)
        return report_markdown("Kept the indexed version", names, [], "the upload was not added") if names else ""

    def remove_steps(self, source: str) -> Iterator[tuple[str, str]]:
        """``remove_documents`` of one document, with what it is doing shown as it goes (as ``rebuild_steps``)."""
        yield from with_progress(f"Deleting {html.escape(printable(source))}…",
                                 lambda progress: self.remove_documents([source], progress), self.status_markdown)

    def remove_documents(self, sources: Iterable[str], progress: Callable | None = None) -> tuple[str, str]:
        """Delete documents (by ``IndexedDocument.source``) from the corpus folder and the index; returns (report,
        index status). The previous index answers until the new one is written, and still does if that fails."""
        sources = list(sources)
        try:
            report = self.assistant.remove(sources, progress=_embedding_progress(progress))
        except AssistantError as exc:
            return (report_markdown("Nothing deleted", [], [(", ".join(sources), self._message(exc))]),
                    self.status_markdown())
        n = len(report.removed)
        return (report_markdown(f"Deleted {n} document{'s' * (n != 1)}", list(report.removed), [],
                                f"{report.documents} documents, {report.chunks} passages left · "
                                f"{report.seconds:.1f} s"), self.status_markdown())

    def documents_html(self) -> str:
        """The document list (``render.documents_html``) of the serving index; empty when there is none."""
        try:
            return documents_html(self.assistant.status().documents)
        except AssistantError:
            return documents_html(())

    def rebuild_steps(self) -> Iterator[tuple[str, str]]:
        """``rebuild``, with what it is doing shown as it goes: (report, index status) every half second."""
        yield from with_progress("Rebuilding the index…", self.rebuild, self.status_markdown)

    def rebuild(self, progress: Callable | None = None) -> tuple[str, str]:
        """Re-embed the whole corpus; questions are answered from the previous index until it is done."""
        try:
            report = self.assistant.build(rebuild=True, progress=_embedding_progress(progress))
        except AssistantError as exc:
            return report_markdown("Rebuild failed", [], [("index", self._message(exc))]), self.status_markdown()
        return (report_markdown("Index rebuilt", [], list(report.skipped),
                                f"{report.documents} documents, {report.chunks} passages in {report.seconds:.1f} s"),
                self.status_markdown())

    def _message(self, error: Exception) -> str:
        """An error's message for the page: the index and corpus folders named, not their server paths."""
        text = str(error)
        for folder in (self.settings.index, self.settings.corpus):
            for path in {str(folder.resolve()), str(folder)}:
                text = text.replace(path, folder.name)
        return text

    def status_updates(self) -> Iterator[str]:
        """The index status for a page that opens, and again once the models are loaded (while they load)."""
        yield self.status_markdown()
        if not self.ready.is_set():
            self.ready.wait()
            yield self.status_markdown()

    def status_markdown(self) -> str:
        loading = "" if self.ready.is_set() else "<span class='pending'>Loading the models…</span>\n\n"
        return loading + self._index_markdown()

    def _index_markdown(self) -> str:
        try:
            status = self.assistant.status()
        except AssistantError as exc:
            title = "No index yet." if isinstance(exc, NoIndexError) else "Index not usable."
            return (f"**{title}** {html.escape(self._message(exc))}\n\n"
                    "Add documents below, or press *Rebuild index*.")
        built = status.built_at.replace("T", " ").replace("Z", " UTC")
        lines = [f"**{len(status.documents)} documents · {status.chunks} passages**",
                 f"<span class='muted'>model {html.escape(status.embedding_model)}<br>built {built}</span>"]
        if status.skipped:
            lines.append(f"<span class='muted'>{len(status.skipped)} files skipped when indexing</span>")
        return "\n\n".join(lines)


def answer_key(message: dict) -> str | None:
    """The key under which ChatHandlers remembers the Answer a chat message shows (its metadata id), if any."""
    metadata = message.get("metadata") if isinstance(message, dict) else None
    key = metadata.get("id") if isinstance(metadata, dict) else None
    return key if isinstance(key, str) else None


def plain_message(message: dict) -> dict:
    """A chat message as the handlers keep it: its role, its text and, for an answer, the key to its Answer."""
    plain = {"role": message["role"], "content": message_text(message.get("content"))}
    key = answer_key(message)
    return {**plain, "metadata": {"id": key}} if key else plain


class WaitingUploads:
    """Uploads waiting for the user's answer (a different version of a document of that name is indexed: replace
    it?), in a folder per browser session inside a temporary folder made when first needed. A session's folder
    is deleted when the user answers or the session ends (``discard``); the temporary folder with the last one."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._lock = threading.Lock()

    def _folder(self, session: str) -> Path | None:
        return None if self._root is None else self._root / hashlib.sha256(session.encode()).hexdigest()[:32]

    def keep(self, session: str, paths: list[Path]) -> None:
        """Move ``paths`` (staged uploads) into the session's folder, replacing earlier ones of the same names."""
        if not paths:
            return
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="assistant-waiting-"))
            folder = self._folder(session)
            folder.mkdir(exist_ok=True)
            for path in paths:
                shutil.move(path, folder / path.name)

    def paths(self, session: str) -> list[Path]:
        with self._lock:
            folder = self._folder(session)
            return sorted(folder.iterdir()) if folder is not None and folder.is_dir() else []

    def discard(self, session: str) -> None:
        with self._lock:
            folder = self._folder(session)
            if folder is None:
                return
            shutil.rmtree(folder, ignore_errors=True)
            if not any(self._root.iterdir()):
                self._root.rmdir()
                self._root = None


class ProgressText:
    """A build's progress, taken as Gradio's Progress takes it (``progress((done, total), desc=...)``, as
    ``_embedding_progress`` reports it), kept as a line for the page: "Embedding passages 64/98 · 12 s"."""

    def __init__(self) -> None:
        self._t0, self._step = time.monotonic(), "Starting"

    def __call__(self, value=None, desc: str | None = None, total: int | None = None, unit: str = "") -> None:
        done, total = value if isinstance(value, tuple) else (value, total)
        self._step = f"{desc or 'Working'} {done}/{total}" if total else desc or self._step

    def line(self) -> str:
        return f"{self._step} · {time.monotonic() - self._t0:.0f} s"


def with_progress(title: str, work: Callable[[ProgressText], tuple[str, str]], status: Callable[[], str],
                  interval: float = 0.5) -> Iterator[tuple[str, str]]:
    """Run ``work(progress)`` (a build returning (report, index status)) in a thread; yield ``title`` with what it
    is doing and ``status()`` at once and every ``interval`` seconds while it runs, then what it returned."""
    progress = ProgressText()
    with ThreadPoolExecutor(1, thread_name_prefix="index-build") as pool:
        future = pool.submit(work, progress)
        while not future.done():
            yield f"**{title}** {html.escape(progress.line())}", status()
            wait([future], interval)
        yield future.result()


def _embedding_progress(progress: Callable | None) -> Callable[[int, int], None] | None:
    """A build's progress (index_build.Progress: embedding, and the other steps by ``stage``) for a Gradio
    progress bar: "Reading documents 3/10 files" from the first file on, then each step of the build."""
    if progress is None:
        return None
    steps = {"reading": "Reading documents", "chunking": "Splitting into passages", "embedding": "Embedding passages",
             "indexing words": "Indexing words"}

    def stage(name: str, done: int, total: int, unit: str) -> None:
        progress((done, total), desc=steps.get(name, name), unit=f"{unit.replace('chunk', 'passage')}s")

    def embedding(done: int, total: int) -> None:
        stage("embedding", done, total, "passage")

    embedding.stage = stage
    return embedding


def warm_up(assistant) -> None:
    """Load the index, the models and jieba's dictionary (0.7 s of the first question otherwise) before the
    first question, side by side (``pipeline.warm_up``); returns when all are loaded or have failed."""
    from .pipeline import warm_up as start

    for thread in start(assistant):
        thread.join()


_PAGE = ("build_app", "launch_options", "check_port")


def __getattr__(name: str):
    """The page's functions (``ui_page``), importable from here as before; loaded when first asked for (PEP 562),
    since ``ui_page`` imports this module."""
    if name in _PAGE:
        from . import ui_page

        return getattr(ui_page, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
