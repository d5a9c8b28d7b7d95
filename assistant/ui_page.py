"""The chat page: ``build_app(assistant, settings) -> gradio Blocks`` lays it out and wires its events to
``ui.ChatHandlers``; ``api.serve`` mounts it beside the API (``launch_options``: local only, offline, our
theme, styles and script).

Gradio is imported inside the functions that need it, after analytics are switched off, so importing this module
costs nothing and calls nobody. No module-level app. The styles are in ``ui.css``; the page's script is
``PAGE_JS``, the document list's ``DOCUMENTS_JS``.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import closing
from importlib import resources

from .config import Settings
from .conversation import last_question
from .errors import AssistantError
from .feedback import MAX_COMMENT_CHARS
from .ingest import SUPPORTED
from .language import printable
from .render import stopped_html
from .ui import ChatHandlers, plain_message

EXAMPLES = (
    "初创公司缺少训练数据怎么办？",
    "注意力机制的原理是什么？",
    "How can a small startup get enough compute?",
    # An exact span leads this one's answer (10000). "What does the GAN example use as its loss?", here until
    # 2026-12-04, got the training loop's print line: the reader model scores code low (docs/reader-model.md).
    "How many timesteps is the PPO agent trained for in the CartPole example?",
    "大模型训练时怎样让数据输入更快？",
)
SANS = ("system-ui", "-apple-system", "Segoe UI", "Noto Sans", "Noto Sans CJK SC", "PingFang SC",
        "Microsoft YaHei", "Helvetica Neue", "Arial", "sans-serif")
MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Noto Sans Mono CJK SC", "DejaVu Sans Mono",
        "monospace")
READER_CHOICES = [("Quote + exact span (reader model)", "span"), ("Quote only (fastest)", "extractive"),
                  ("Write (local LLM, every sentence checked)", "llm")]
RATED = {1: "**Rated up.** Anything to add? (optional)", -1: "**Rated down.** What was wrong or missing? (optional)"}
NOT_SAVED = (" <span class='muted'>Not saved until you press *Save rating*; kept on this machine, beside the "
             "index.</span>")


def _gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before the import: no version check, no telemetry
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr

    return gr


def build_app(assistant, settings: Settings | None = None, stream_delay: float = 0.02,
              handlers: ChatHandlers | None = None):
    """The chat page for ``assistant``: chat with cited answers, and a documents panel. Nothing runs yet.

    ``handlers``: the page's ChatHandlers (``api.serve`` passes them, to warm the models up first)."""
    gr = _gradio()
    settings = settings or assistant.settings
    handlers = handlers or ChatHandlers(assistant, settings, stream_delay)
    skip = gr.skip

    def takes(**hints):  # what Gradio passes a function (gr.Request, event data) is told by real classes
        def mark(fn):
            fn.__annotations__ = hints
            return fn
        return mark

    # -- the chat ---------------------------------------------------------------------------------------
    def turn(replies: Iterator[tuple[list, str]], keep_text: bool):
        """The page's outputs for one answer: the box is cleared once, when the question is taken (kept when it is
        refused, or not taken from the box); Ask is disabled and Stop shown until the answer is complete, when the
        chat is saved in the browser. Stop closes ``replies``: the reader stops writing (and lets go of the LLM)."""
        messages = []
        with closing(replies):
            for i, (messages, _) in enumerate(replies):
                yield (messages, skip(), skip(), skip(), skip(), skip()) if i else (
                    messages, gr.update(interactive=False), gr.update(visible=True), gr.update(visible=False), skip(),
                    skip() if keep_text else "")
        yield skip(), *idle(offer=handlers.offers_llm(messages)), messages, skip()

    def idle(offer: bool = False) -> tuple:  # Ask, Stop, "Ask again with the LLM" when no answer runs
        return gr.update(interactive=True), gr.update(visible=False), gr.update(visible=offer)

    def ask_question(message, history, reader):
        yield from turn(handlers.respond(message, history, reader), handlers.refusal(message) is not None)

    def ask_again(history):  # the last question, written by the LLM
        yield from turn(handlers.respond(last_question(history), history, "llm"), keep_text=True)

    @takes(evt=gr.SelectData)
    def ask_example(history, reader, evt):
        text = evt.value.get("text", "") if isinstance(evt.value, dict) else ""
        yield from turn(handlers.respond(text, history, reader), keep_text=True)

    def stop_answer(history):
        history = [plain_message(m) for m in history or ()]
        if history and history[-1]["role"] == "assistant":
            history[-1]["content"] = stopped_html(history[-1]["content"])
        return history, *idle(), history

    # -- ratings: a thumb on an answer opens the comment form; Save keeps the rating -----------------------
    def save(pending: dict, comment: str) -> str:
        try:
            handlers.rate(pending["message"], pending["rating"], comment)
        except AssistantError as exc:
            return f"**Not saved:** {exc}"
        return f"**Saved:** rated {'up' if pending['rating'] > 0 else 'down'}. Thank you."

    @takes(evt=gr.LikeData)
    def rate_answer(history, pending, comment, evt):
        """The thumb clicked on message ``evt.index`` (clicked again: no rating); a rating not yet saved for another
        answer is saved first, with the comment typed for it."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        same = bool(pending) and pending["index"] == index
        note = save(pending, comment) + "\n\n" if pending and not same else ""
        message = history[index] if 0 <= index < len(history) else {}
        if evt.liked == "" or not message:
            return gr.update(visible=bool(note)), note, gr.update(visible=False), "", None
        if not handlers.can_rate(message):
            return gr.update(visible=True), note + "Only answers can be rated.", gr.update(visible=False), "", None
        rating = 1 if evt.liked is True else -1
        return (gr.update(visible=True), note + RATED[rating] + NOT_SAVED, gr.update(visible=True),
                comment if same else "", {"index": index, "rating": rating, "message": plain_message(message)})

    def save_rating(pending, comment):
        if not pending:
            return skip(), gr.update(visible=False), "", None
        return save(pending, comment), gr.update(visible=False), "", None

    # -- the documents panel ----------------------------------------------------------------------------
    @takes(request=gr.Request)
    def add_documents(files, request):
        for i, (report, status) in enumerate(handlers.add_steps(files, request.session_hash)):
            yield report, status, None if i == 0 else skip()  # the upload box is emptied at once

    @takes(request=gr.Request)
    def documents_panel(request):  # the list, and the question an upload waits on (Replace or Keep)
        names = [path.name for path in handlers.waiting.paths(request.session_hash)] if request.session_hash else []
        question = (f"**Replace {', '.join(printable(n) for n in names)}?** A different version is indexed. "
                    "*Replace* indexes the new file in its place; *Keep* keeps the indexed one.")
        return handlers.documents_html(), gr.update(visible=bool(names)), question if names else ""

    @takes(request=gr.Request)
    def replace_documents(request):
        for i, (report, status) in enumerate(handlers.replace_steps(request.session_hash)):
            yield report, status, gr.update(visible=False) if i == 0 else skip()

    @takes(request=gr.Request)
    def keep_documents(request):
        return handlers.keep_waiting(request.session_hash), gr.update(visible=False)

    @takes(evt=gr.EventData)
    def delete_document(evt):  # the document list's Delete, confirmed (DOCUMENTS_JS sends the source)
        data = evt._data if isinstance(evt._data, dict) else {}
        if isinstance(data.get("source"), str):
            yield from handlers.remove_steps(data["source"])
        else:
            yield skip(), skip()

    @takes(request=gr.Request)
    def forget_session(request):
        if request.session_hash:
            handlers.waiting.discard(request.session_hash)

    with gr.Blocks(title="Ask your documents", analytics_enabled=False) as app:
        saved = gr.BrowserState([], storage_key="assistant-conversation")  # the chat, kept across page reloads
        pending = gr.State(None)  # the rating given, until it is saved
        with gr.Row(equal_height=False, elem_id="layout"):
            with gr.Column(scale=3, min_width=320, elem_id="conversation"):
                gr.Markdown("## Ask your documents\n<span class='muted'>Answers are quoted verbatim from the "
                            "documents, each with its numbered source. Ask in Chinese or English; follow-up "
                            "questions build on the previous one.</span>", elem_id="intro")
                chatbot = gr.Chatbot(show_label=False, elem_id="chat", height=640, layout="bubble",
                                     examples=[{"text": q} for q in EXAMPLES], feedback_options=("Like", "Dislike"),
                                     allow_tags=False, buttons=[], autoscroll=True,
                                     placeholder="<div class='empty'>Ask a question about the documents, "
                                                 "or try one of these:</div>")
                with gr.Group(visible=False, elem_id="feedback") as feedback_form:
                    feedback_note = gr.Markdown(elem_id="feedback-note")
                    with gr.Row(visible=False, elem_id="feedback-row") as comment_row:
                        comment = gr.Textbox(show_label=False, placeholder="A comment (optional)", lines=1, max_lines=4,
                                             max_length=MAX_COMMENT_CHARS, scale=8, elem_id="feedback-comment")
                        save_button = gr.Button("Save rating", size="sm", scale=1, min_width=110, elem_id="save-rating")
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
                with gr.Group(visible=False, elem_id="replace-confirm") as replace_form:
                    replace_question = gr.Markdown(elem_id="replace-question")
                    with gr.Row():
                        replace = gr.Button("Replace", variant="primary", size="sm", min_width=90, elem_id="replace")
                        keep = gr.Button("Keep", size="sm", min_width=90, elem_id="keep")
                document_list = gr.HTML("", elem_id="document-list", js_on_load=DOCUMENTS_JS, max_height=480)
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
        rating_io = {"api_visibility": "private", "show_progress": "hidden"}
        chatbot.like(rate_answer, [chatbot, pending, comment], [feedback_form, feedback_note, comment_row, comment,
                                                                pending], **rating_io)
        save_button.click(save_rating, [pending, comment], [feedback_note, comment_row, comment, pending], **rating_io)
        comment.submit(save_rating, [pending, comment], [feedback_note, comment_row, comment, pending], **rating_io)

        index_io = {"concurrency_id": "index", "concurrency_limit": 1, "show_progress": "hidden"}  # one build at a time
        panel_io = {"fn": documents_panel, "outputs": [document_list, replace_form, replace_question],
                    "api_visibility": "private", "show_progress": "hidden"}
        files.upload(add_documents, [files], [report, status, files], api_name="add_documents", **index_io
                     ).then(**panel_io)
        rebuild.click(handlers.rebuild_steps, None, [report, status], api_name="rebuild", **index_io).then(**panel_io)
        replace.click(replace_documents, None, [report, status, replace_form], api_visibility="private", **index_io
                      ).then(**panel_io)
        keep.click(keep_documents, None, [report, replace_form], api_visibility="private")
        document_list.click(delete_document, None, [report, status], api_visibility="private", **index_io
                            ).then(**panel_io)
        app.load(handlers.status_updates, None, status, api_visibility="private", show_progress="hidden",
                 concurrency_limit=None)
        app.load(**panel_io)
        app.unload(forget_session)
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

# The document list's script (gr.HTML's js_on_load): a confirmed Delete sends its document's source to the
# server (the list's click event); Cancel closes the confirmation.
DOCUMENTS_JS = """element.addEventListener("click", (event) => {
  const button = event.target.closest("button.delete-doc, button.cancel-delete");
  if (!button) return;
  if (button.classList.contains("cancel-delete")) {
    button.closest("details.doc-delete").open = false;
    return;
  }
  button.disabled = true;
  button.textContent = "Deleting…";
  trigger("click", {source: button.value});
});"""


def launch_options(settings: Settings) -> dict:
    """Keyword arguments for ``Blocks.launch``: local only, offline page, our theme and styles."""
    gr = _gradio()
    theme = gr.themes.Default(primary_hue="indigo", neutral_hue="slate", font=list(SANS), font_mono=list(MONO))
    return {"server_name": settings.host, "server_port": settings.port, "share": False, "theme": theme,
            "css": _css(), "js": PAGE_JS, "footer_links": ["api"], "max_file_size": f"{settings.max_file_mb}mb",
            "ssr_mode": False, "pwa": False, "mcp_server": False, "enable_monitoring": False, "show_error": False}


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
