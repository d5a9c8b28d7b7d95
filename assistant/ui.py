"""The chat UI: ``build_app(assistant, settings) -> gradio Blocks``. No module-level app, no work at import.

Gradio is imported inside the functions that need it, after analytics are switched off, so importing
this module costs nothing and calls nobody. The handlers live in ``ChatHandlers`` (plain Python, tested
without a server); ``build_app`` only lays out the page and wires events to them. What the page shows is
rendered by ``render``, follow-up questions are resolved by ``conversation``, uploads are checked by
``uploads``; the styles are in ``ui.css``.

The extractive reader answers while the LLM loads (in the background, once) and when the LLM cannot
be used (the llm extra or the model is missing); a note under the answer says so. ``serve`` loads the
models when the app starts; questions asked meanwhile wait, and the page says the models are loading.
"""
from __future__ import annotations

import errno
import html
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import closing
from importlib import resources
from pathlib import Path

from .config import Settings
from .conversation import is_follow_up, last_question, message_text, resolve_query  # noqa: F401  (re-exported)
from .errors import AssistantError, IngestError, NoIndexError, QuestionError
from .language import printable
from .ingest import SUPPORTED, read_document
from .render import (LANGUAGE_NOTE, LOADING_MODELS, PENDING, answer_markdown, checked_markdown, draft_html,
                     language_note, note_html, render_answer, render_error, report_markdown, stopped_html,
                     stream_cuts)
from .uploads import named_uploads, safe_name, stage_uploads  # noqa: F401  (safe_name: re-exported)

log = logging.getLogger(__name__)

EXAMPLES = (
    "初创公司缺少训练数据怎么办？",
    "注意力机制的原理是什么？",
    "How can a small startup get enough compute?",
    "What does the GAN example use as its loss?",
    "大模型训练时怎样让数据输入更快？",
)
SANS = ("system-ui", "-apple-system", "Segoe UI", "Noto Sans", "Noto Sans CJK SC", "PingFang SC",
        "Microsoft YaHei", "Helvetica Neue", "Arial", "sans-serif")
MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Noto Sans Mono CJK SC", "DejaVu Sans Mono",
        "monospace")
READER_CHOICES = [("Quote + exact span (reader model)", "span"), ("Quote only (fastest)", "extractive"),
                  ("Write (local LLM, every sentence checked)", "llm")]


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
    """What the page's events call. One Assistant (and so one model) serves every browser tab."""

    def __init__(self, assistant, settings: Settings | None = None, stream_delay: float = 0.02) -> None:
        self.assistant = assistant
        self.settings = settings or assistant.settings
        self.stream_delay = stream_delay
        self.readers = ReaderPicker(assistant)
        self.ready = threading.Event()  # the models are loaded; cleared by start_warm_up until they are
        self.ready.set()

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

    def respond(self, message: str, history: list | None, reader: str | None = None) -> Iterator[tuple[list, str]]:
        """Stream one answer: the question at once, then the answer growing, then the answer with sources.

        ``reader``: "extractive" or "llm" (default: the assistant's reader). A question that is refused (too
        long) is answered by the reason alone; one asked while the models load waits for them, and says so."""
        history = [{"role": m["role"], "content": message_text(m.get("content"))} for m in history or ()]
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
        yield [*history, {"role": "assistant", "content": content}], ""

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

    def add_files(self, files, progress: Callable | None = None, replace: bool = False) -> tuple[str, str]:
        """Add uploaded files to the corpus and the index; returns (report, index status) as markdown.

        ``replace``: replace a document of the same name whose content differs (else it is refused)."""
        uploads = named_uploads(files)
        if not uploads:
            return "", self.status_markdown()
        with tempfile.TemporaryDirectory(prefix="assistant-upload-") as staging:
            staged, refused = stage_uploads(uploads, Path(staging), self.settings.max_file_mb << 20)
            if not staged:
                return report_markdown("Nothing added", [], refused), self.status_markdown()
            t0 = time.monotonic()
            try:
                report = self.assistant.add(staged, progress=_embedding_progress(progress), replace=replace)
            except AssistantError as exc:
                return report_markdown("Nothing added", [], [*refused, ("index", str(exc))]), self.status_markdown()
        changed = [*report.added, *report.replaced]
        counts = [f"{verb} {len(names)} document{'s' * (len(names) != 1)}"
                  for verb, names in (("added", report.added), ("replaced", report.replaced)) if names]
        title = ", ".join(counts).capitalize() or ("Already indexed" if report.already_indexed else "Nothing added")
        n = report.build.embedded_chunks
        detail = f"{n} new passage{'s' * (n != 1)} indexed in {time.monotonic() - t0:.1f} s" if changed else ""
        names = [*report.added, *(f"{name} (replaced)" for name in report.replaced),
                 *(f"{name} (already indexed)" for name in report.already_indexed)]
        return report_markdown(title, names, [*refused, *report.refused], detail), self.status_markdown()

    def rebuild_steps(self) -> Iterator[tuple[str, str]]:
        """``rebuild``, with what it is doing shown as it goes: (report, index status) every half second."""
        yield from with_progress("Rebuilding the index…", self.rebuild, self.status_markdown)

    def rebuild(self, progress: Callable | None = None) -> tuple[str, str]:
        """Re-embed the whole corpus; questions are answered from the previous index until it is done."""
        try:
            report = self.assistant.build(rebuild=True, progress=_embedding_progress(progress))
        except AssistantError as exc:
            return report_markdown("Rebuild failed", [], [("index", str(exc))]), self.status_markdown()
        return (report_markdown("Index rebuilt", [], list(report.skipped),
                                f"{report.documents} documents, {report.chunks} passages in {report.seconds:.1f} s"),
                self.status_markdown())

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
            return f"**{title}** {html.escape(str(exc))}\n\nAdd documents below, or press *Rebuild index*."
        built = status.built_at.replace("T", " ").replace("Z", " UTC")
        lines = [f"**{len(status.documents)} documents · {status.chunks} passages**",
                 f"<span class='muted'>model {html.escape(status.embedding_model)}<br>built {built}</span>"]
        if status.documents:
            items = "".join(f"<li>{html.escape(printable(d.source))}</li>" for d in status.documents)
            lines.append(f"<details class='doc-list'><summary>Documents</summary><ul>{items}</ul></details>")
        if status.skipped:
            lines.append(f"<span class='muted'>{len(status.skipped)} files skipped when indexing</span>")
        return "\n\n".join(lines)


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


# -- the page -----------------------------------------------------------------------------------------
def _gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before the import: no version check, no telemetry
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr

    return gr


def build_app(assistant, settings: Settings | None = None, stream_delay: float = 0.02,
              handlers: ChatHandlers | None = None):
    """The chat page for ``assistant``: chat with cited answers, and a documents panel. Nothing runs yet.

    ``handlers``: the page's ChatHandlers (``serve`` passes them, to warm the models up first)."""
    gr = _gradio()
    settings = settings or assistant.settings
    handlers = handlers or ChatHandlers(assistant, settings, stream_delay)

    def turn(replies: Iterator[tuple[list, str]], keep_text: bool):
        """The page's outputs for one answer: the box is cleared once, when the question is taken (kept when it is
        refused, or not taken from the box); Ask is disabled and Stop shown until the answer is complete, when the
        chat is saved in the browser. Stop closes ``replies``: the reader stops writing (and lets go of the LLM)."""
        skip, messages = gr.skip(), []
        with closing(replies):
            for i, (messages, _) in enumerate(replies):
                yield (messages, skip, skip, skip, skip, skip) if i else (
                    messages, gr.update(interactive=False), gr.update(visible=True), gr.update(visible=False), skip,
                    skip if keep_text else "")
        yield skip, *idle(offer=handlers.offers_llm(messages)), messages, skip

    def idle(offer: bool = False) -> tuple:  # Ask, Stop, "Ask again with the LLM" when no answer runs
        return gr.update(interactive=True), gr.update(visible=False), gr.update(visible=offer)

    def ask_question(message, history, reader):
        yield from turn(handlers.respond(message, history, reader), handlers.refusal(message) is not None)

    def ask_again(history):  # the last question, written by the LLM
        yield from turn(handlers.respond(last_question(history), history, "llm"), keep_text=True)

    def ask_example(history, reader, evt):
        text = evt.value.get("text", "") if isinstance(evt.value, dict) else ""
        yield from turn(handlers.respond(text, history, reader), keep_text=True)

    ask_example.__annotations__ = {"evt": gr.SelectData}  # a real class: Gradio passes the clicked example

    def stop_answer(history):
        history = [{"role": m["role"], "content": message_text(m.get("content"))} for m in history or ()]
        if history and history[-1]["role"] == "assistant":
            history[-1]["content"] = stopped_html(history[-1]["content"])
        return history, *idle(), history

    def add_documents(files, progress=gr.Progress()):
        report, status = handlers.add_files(files, progress)
        return report, status, None

    with gr.Blocks(title="Ask your documents", analytics_enabled=False) as app:
        saved = gr.BrowserState([], storage_key="assistant-conversation")  # the chat, kept across page reloads
        with gr.Row(equal_height=False, elem_id="layout"):
            with gr.Column(scale=3, min_width=320, elem_id="conversation"):
                gr.Markdown("## Ask your documents\n<span class='muted'>Answers are quoted verbatim from the "
                            "documents, each with its numbered source. Ask in Chinese or English; follow-up "
                            "questions build on the previous one.</span>", elem_id="intro")
                chatbot = gr.Chatbot(show_label=False, elem_id="chat", height=640, layout="bubble",
                                     examples=[{"text": q} for q in EXAMPLES], feedback_options=None,
                                     allow_tags=False, buttons=[], autoscroll=True,
                                     placeholder="<div class='empty'>Ask a question about the documents, "
                                                 "or try one of these:</div>")
                again = gr.Button("Ask again with the LLM", size="sm", visible=False, elem_id="ask-llm")
                with gr.Row(elem_id="ask-row"):
                    question = gr.Textbox(show_label=False, placeholder="Ask a question… e.g. 那第二点具体怎么做？",
                                          scale=8, lines=1, max_lines=6, autofocus=True, elem_id="question")
                    send = gr.Button("Ask", variant="primary", scale=1, min_width=72, elem_id="ask")
                    stop = gr.Button("Stop", variant="stop", scale=1, min_width=72, visible=False, elem_id="stop")
                with gr.Row(elem_id="chat-tools"):
                    reader_choice = gr.Radio(READER_CHOICES, value=settings.reader, label="Answers", scale=4,
                                             min_width=320, elem_id="reader")  # on a phone: a row of its own
                    new = gr.Button("New conversation", size="sm", scale=1, min_width=160, elem_id="new-conversation")
                reader = gr.State(settings.reader)  # not part of the API: API calls use the default reader
                api_ask = gr.Button(visible=False)  # the /ask endpoint: (question, history) -> (history, "")
            with gr.Column(scale=1, min_width=260, elem_id="documents"):
                gr.Markdown("### Documents")
                status = gr.Markdown("Loading the index…", elem_id="index-status")
                files = gr.File(label="Add documents", file_count="multiple", type="filepath", elem_id="upload",
                                height=120)
                gr.Markdown(f"<span class='muted'>{' '.join(s.lstrip('.') for s in SUPPORTED)} · up to "
                            f"{settings.max_file_mb} MB each</span>")
                report = gr.Markdown(elem_id="upload-report")
                rebuild = gr.Button("Rebuild index", size="sm", elem_id="rebuild")

        chat = [chatbot, send, stop, again, saved]  # what an answer changes, and the box it clears once
        chat_io = {"outputs": [*chat, question], "concurrency_id": "ask", "concurrency_limit": 4,
                   "show_progress": "hidden", "api_visibility": "private"}
        answers = [send.click(ask_question, [question, chatbot, reader], **chat_io),
                   again.click(ask_again, chatbot, **chat_io),
                   chatbot.example_select(ask_example, [chatbot, reader], **chat_io)]
        # Enter clicks Ask, so that a question cannot be sent while Ask is disabled (an answer runs)
        question.submit(None, js="() => document.querySelector('#ask:not([disabled])')?.click()")
        stop.click(stop_answer, chatbot, chat, cancels=answers, api_visibility="private")
        new.click(lambda: ([], *idle(), []), None, chat, cancels=answers, api_visibility="private")
        chatbot.clear(lambda: [], None, saved, api_visibility="private")  # the chat's own trash button
        app.load(lambda messages: messages, saved, chatbot, api_visibility="private")  # the chat before a reload
        api_ask.click(handlers.respond, [question, chatbot], [chatbot, question], api_name="ask",
                      concurrency_id="ask", concurrency_limit=4)
        reader_choice.change(lambda choice: choice, reader_choice, reader, api_visibility="private")
        index_io = {"concurrency_id": "index", "concurrency_limit": 1}  # one build at a time; they queue
        files.upload(add_documents, [files], [report, status, files], api_name="add_documents", **index_io)
        rebuild.click(handlers.rebuild_steps, None, [report, status], api_name="rebuild", show_progress="hidden",
                      **index_io)
        app.load(handlers.status_updates, None, status, api_visibility="private", show_progress="hidden",
                 concurrency_limit=None)
    return app


def _css() -> str:
    """The page's styles (assistant/ui.css), read when the page is launched."""
    return resources.files(__package__).joinpath("ui.css").read_text("utf-8")


# The page's script: an [n] marker opens and shows its source; Copy puts the answer's text on the clipboard.
PAGE_JS = """() => document.addEventListener("click", (event) => {
  const link = event.target.closest("a.cite-link");
  const source = link && document.getElementById(link.getAttribute("href").slice(1))?.closest("details");
  if (source) {
    event.preventDefault();
    source.open = true;
    source.scrollIntoView({behavior: "smooth", block: "nearest"});
  }
  const copy = event.target.closest("button.copy-answer");
  if (copy) {
    navigator.clipboard.writeText(copy.value).then(() => {
      copy.textContent = "Copied";
      setTimeout(() => { copy.textContent = "Copy"; }, 1500);
    });
  }
})"""


def launch_options(settings: Settings) -> dict:
    """Keyword arguments for ``Blocks.launch``: local only, offline page, our theme and styles."""
    gr = _gradio()
    theme = gr.themes.Default(primary_hue="indigo", neutral_hue="slate", font=list(SANS), font_mono=list(MONO))
    return {"server_name": settings.host, "server_port": settings.port, "share": False, "theme": theme,
            "css": _css(), "js": PAGE_JS, "footer_links": ["api"], "max_file_size": f"{settings.max_file_mb}mb",
            "ssr_mode": False, "pwa": False, "mcp_server": False, "enable_monitoring": False, "show_error": False}


def warm_up(assistant) -> None:
    """Load the index and the model before the first question (run in a background thread)."""
    try:
        assistant.status()
        assistant.embedder.embed_queries(["warm-up"])
        assistant.reader.load()  # the reader model (span) or the LLM; nothing for the passage reader
    except AssistantError as exc:
        log.warning("not ready yet: %s", exc)


def check_port(host: str, port: int) -> None:
    """AssistantError (one line) when ``host:port`` cannot be listened on: taken, or not this machine's."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server sets it
        try:
            probe.bind((host, port))
        except OSError as exc:
            taken = exc.errno == errno.EADDRINUSE
            raise AssistantError(
                f"port {port} on {host} is already in use (another `assistant serve`?): pick a free one with "
                "--port N or ASSISTANT_PORT" if taken else f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve(assistant, settings: Settings) -> None:
    """Start the app on settings.host:settings.port and block; the models load in the background meanwhile."""
    check_port(settings.host, settings.port)
    handlers = ChatHandlers(assistant, settings)
    handlers.start_warm_up()
    build_app(assistant, settings, handlers=handlers).launch(**launch_options(settings))

