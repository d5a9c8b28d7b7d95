"""The chat UI: ``build_app(assistant, settings) -> gradio Blocks``. No module-level app, no work at import.

Gradio is imported inside the functions that need it, after analytics are switched off, so importing
this module costs nothing and calls nobody. The handlers live in ``ChatHandlers`` (plain Python, tested
without a server); ``build_app`` only lays out the page and wires events to them.
"""
from __future__ import annotations

import html
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .config import Settings
from .errors import AssistantError, IngestError
from .index_store import read_manifest
from .ingest import SUPPORTED, read_document
from .llm_ui import CSS as LLM_CSS
from .llm_ui import READER_CHOICES, ReaderPicker, checked_markdown, draft_html, note_html
from .types import Answer, Citation

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
CONTEXT_CHARS = 120  # document text shown around a cited span
PENDING = '<span class="pending">Searching the documents…</span>'

# -- follow-up questions: folded into the retrieval query, no language model -----------------------------
_ZH_REFERS = re.compile(r"它|这个|这些|这种|这样|那个|那些|那种|上面|上述|刚才|前面|前者|后者|"
                        r"第[一二三四五六七八九十两\d]+(?:点|条|个|步|项|种|部分)")
_ZH_OPENERS = re.compile(r"^(?:那|那么|这|其|还有|另外|然后|所以|再)")
_ZH_VAGUE = re.compile(r"具体|详细|展开|更多|举个?例|为什么|为啥|怎么做|怎么办|呢")
_EN_REFERS = re.compile(r"\b(?:it|that|this|these|those|they|them|the (?:first|second|third|fourth|fifth|last|"
                        r"previous|above|other) (?:one|point|item|step|part|option|idea))\b")
_EN_PHRASES = re.compile(r"\b(?:tell me more|more about|more detail|in detail|elaborate|go on|expand on|what about|"
                         r"how about|and then|for example|an example|why is that|how so)\b")
_EN_VAGUE = frozenset("why how what so and then more else really example examples please details detail explain "
                      "elaborate go on continue about tell me".split())
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u9fff]")


def is_follow_up(question: str) -> bool:
    """Whether a question leans on the conversation ("那第二点具体怎么做？", "tell me more about that")."""
    q = question.strip().lower()
    if _CJK.search(q):
        bare = _PUNCT.sub("", q)
        return bool(_ZH_REFERS.search(q) or (_ZH_OPENERS.match(bare) and len(bare) <= 12)
                    or (_ZH_VAGUE.search(q) and len(bare) <= 8))
    words = re.findall(r"[a-z']+", q)
    if not words:
        return False
    return bool(_EN_PHRASES.search(q) or (_EN_REFERS.search(q) and len(words) <= 8)
                or (len(words) <= 3 and all(w in _EN_VAGUE for w in words)))


def message_text(content) -> str:
    """The text of a chat message, in either form Gradio uses (a string, or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, (list, tuple)):
        return " ".join(message_text(part) for part in content).strip()
    return ""


def resolve_query(question: str, history: list, limit: int = 2000) -> str:
    """What to search for: the question, with the conversation's topic folded in when it is a follow-up.

    The topic is the latest earlier question that is not itself a follow-up (else the latest one).
    """
    question = question.strip()
    asked = [message_text(m.get("content")).strip() for m in history or () if m.get("role") == "user"]
    asked = [q for q in asked if q]
    if not asked or not is_follow_up(question):
        return question
    topic = next((q for q in reversed(asked) if not is_follow_up(q)), asked[-1])
    room = limit - len(question) - 1
    if room < 8:
        return question
    return f"{topic[:room]} {question}"


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
            f'<span class="doc">{html.escape(c.source)}</span><span class="where">{_where(c)}</span>'
            f'<span class="snippet">{html.escape(snippet)}</span></summary>'
            f'{_passage(c, document_text, span)}'
            f'<div class="span-info">{html.escape(c.source)} · characters {c.start}–{c.end}</div></details>')


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
        return "\n\n".join(parts)
    parts.append(body(answer.text if upto is None else answer.text[:upto], {c.n for c in answer.citations}))
    if upto is None and answer.citations:
        items = "".join(_source_item(c, read_text(c.source), str(c.n), answer.span if c.n == 1 else None)
                        for c in answer.citations)
        parts.append(f'<div class="sources"><div class="sources-title">Sources</div>{items}</div>')
    return "\n\n".join(parts)


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


# -- uploads ------------------------------------------------------------------------------------------
_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def safe_name(name: str) -> str:
    """The name an uploaded file is stored under in the corpus, or IngestError saying why it cannot be."""
    name = (name or "").strip()
    if not name:
        raise IngestError("the file has no name")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise IngestError("the file name contains a path (/, \\ or ..); upload the file itself")
    if _NAME_CONTROL.search(name):
        raise IngestError("the file name contains control characters; rename the file")
    if name.startswith("."):
        raise IngestError("hidden file names (starting with '.') are not accepted; rename the file")
    if len(name.encode("utf-8")) > 200:
        raise IngestError("the file name is longer than 200 bytes; rename the file")
    return name


def stage_uploads(uploads: list[tuple[Path, str]], staging: Path,
                  max_bytes: int) -> tuple[list[Path], list[tuple[str, str]]]:
    """Copy each (uploaded file, original name) into ``staging`` under its safe name; refuse the rest.

    Returns the staged paths and (name, reason) for each refused upload. Nothing is written outside
    ``staging``; the readable files then go to ``Assistant.add``, which copies them into the corpus.
    """
    staged: list[Path] = []
    refused: list[tuple[str, str]] = []
    for path, name in uploads:
        shown = _NAME_CONTROL.sub("?", name or "?")[:120]
        try:
            name = safe_name(name)
            suffix = Path(name).suffix.lower()
            if suffix not in SUPPORTED:
                raise IngestError(f"unsupported type {suffix or '(none)'}; supported: {', '.join(SUPPORTED)}")
            size = Path(path).stat().st_size
            if size > max_bytes:
                raise IngestError(f"the file is {size / (1 << 20):.1f} MB; the limit is {max_bytes >> 20} MB "
                                  "(ASSISTANT_MAX_FILE_MB)")
            target = staging / name
            if target.exists():
                raise IngestError("a file of the same name is already in this upload")
            shutil.copyfile(path, target)
        except IngestError as exc:
            refused.append((shown, str(exc)))
            continue
        except OSError as exc:
            refused.append((shown, f"could not read the upload ({exc.strerror or exc})"))
            continue
        staged.append(target)
    return staged, refused


def _report(title: str, added: list[str], refused: list[tuple[str, str]], detail: str = "") -> str:
    lines = [f"**{title}**" + (f" — {detail}" if detail else "")]
    lines += [f"✓ {html.escape(name)}" for name in added]
    lines += [f"✗ **{html.escape(name)}**: {html.escape(reason)}" for name, reason in refused]
    return "  \n".join(lines)


# -- handlers -----------------------------------------------------------------------------------------
class ChatHandlers:
    """What the page's events call. One Assistant (and so one model) serves every browser tab."""

    def __init__(self, assistant, settings: Settings | None = None, stream_delay: float = 0.02) -> None:
        self.assistant = assistant
        self.settings = settings or assistant.settings
        self.stream_delay = stream_delay
        self.readers = ReaderPicker(assistant)

    def _corpus(self) -> Path:
        try:
            return Path(self.assistant.status().get("corpus") or self.settings.corpus)
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

        ``reader``: "extractive" or "llm" (default: the assistant's reader)."""
        history = [{"role": m["role"], "content": message_text(m.get("content"))} for m in history or ()]
        question = (message or "").strip()
        if not question:
            yield history, ""
            return
        query = resolve_query(question, history, self.settings.max_question_chars)
        history.append({"role": "user", "content": question})
        yield [*history, {"role": "assistant", "content": PENDING}], ""
        chosen, note = self.readers.pick(reader)
        streams, draft = chosen is not None and hasattr(chosen, "stream"), ""
        try:
            if streams:
                for item in self.assistant.ask_stream(question, query=query if query != question else None,
                                                      reader=chosen):
                    if isinstance(item, str):
                        draft += item
                        yield [*history, {"role": "assistant", "content": draft_html(draft)}], ""
                    else:
                        answer = item
            else:
                answer = self.assistant.ask(question, query=query if query != question else None,
                                            **({"reader": chosen} if chosen is not None else {}))
        except AssistantError as exc:
            yield [*history, {"role": "assistant", "content": render_error(exc)}], ""
            return
        except Exception as exc:  # the UI edge: one message for the user, the traceback in the log
            log.exception("answering %r failed", question[:200])
            yield [*history, {"role": "assistant", "content": render_error(
                RuntimeError(f"something went wrong ({exc.__class__.__name__}); see the server log"))}], ""
            return
        body = checked_markdown if streams else answer_markdown
        if not answer.abstained and not streams:
            for cut in stream_cuts(answer.text):
                yield [*history, {"role": "assistant", "content": render_answer(answer, upto=cut)}], ""
                time.sleep(self.stream_delay)
        content = render_answer(answer, self._reader(), body=body) + note_html(note)
        yield [*history, {"role": "assistant", "content": content}], ""

    def add_files(self, files, progress: Callable | None = None) -> tuple[str, str]:
        """Add uploaded files to the corpus and the index; returns (report, index status) as markdown."""
        paths = [str(f) for f in (files if isinstance(files, (list, tuple)) else [files] if files else [])]
        if not paths:
            return "", self.status_markdown()
        uploads = [(Path(p), os.path.basename(p)) for p in paths]
        with tempfile.TemporaryDirectory(prefix="assistant-upload-") as staging:
            staged, refused = stage_uploads(uploads, Path(staging), self.settings.max_file_mb << 20)
            if not staged:
                return _report("Nothing added", [], refused), self.status_markdown()
            t0 = time.monotonic()
            try:
                report, not_read = self.assistant.add(staged, progress=_embedding_progress(progress))
            except AssistantError as exc:
                return _report("Nothing added", [], [*refused, ("index", str(exc))]), self.status_markdown()
        names = {name for name, _ in not_read}
        added = [p.name for p in staged if p.name not in names]
        n = report.embedded_chunks
        detail = f"{n} new passage{'s' * (n != 1)} indexed in {time.monotonic() - t0:.1f} s" if added else ""
        title = f"Added {len(added)} document{'s' * (len(added) != 1)}" if added else "Nothing added"
        return _report(title, added, [*refused, *not_read], detail), self.status_markdown()

    def rebuild(self, progress: Callable | None = None) -> tuple[str, str]:
        """Re-embed the whole corpus; questions are answered from the previous index until it is done."""
        try:
            report = self.assistant.build(rebuild=True, progress=_embedding_progress(progress))
        except AssistantError as exc:
            return _report("Rebuild failed", [], [("index", str(exc))]), self.status_markdown()
        return (_report("Index rebuilt", [], list(report.skipped),
                        f"{report.documents} documents, {report.chunks} passages in {report.seconds:.1f} s"),
                self.status_markdown())

    def status_markdown(self) -> str:
        try:
            status = self.assistant.status()
        except AssistantError as exc:
            title = "Index not usable." if (self.settings.index / "manifest.json").exists() else "No index yet."
            return f"**{title}** {html.escape(str(exc))}\n\nAdd documents below, or press *Rebuild index*."
        built = status.get("built_at", "").replace("T", " ").replace("Z", " UTC")
        lines = [f"**{status['documents']} documents · {status['chunks']} passages**",
                 f"<span class='muted'>model {html.escape(status['embedding_model'])}<br>built {built}</span>"]
        try:
            sources = [d["source"] for d in read_manifest(Path(status["index"]))["documents"]]
        except AssistantError:
            sources = []
        if sources:
            items = "".join(f"<li>{html.escape(s)}</li>" for s in sources)
            lines.append(f"<details class='doc-list'><summary>Documents</summary><ul>{items}</ul></details>")
        if status.get("skipped"):
            lines.append(f"<span class='muted'>{len(status['skipped'])} files skipped when indexing</span>")
        return "\n\n".join(lines)


def _embedding_progress(progress: Callable | None) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress((done, total), desc="Embedding passages", unit="passages")


# -- the page -----------------------------------------------------------------------------------------
def _gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before the import: no version check, no telemetry
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr

    return gr


def build_app(assistant, settings: Settings | None = None, stream_delay: float = 0.02):
    """The chat page for ``assistant``: chat with cited answers, and a documents panel. Nothing runs yet."""
    gr = _gradio()
    settings = settings or assistant.settings
    handlers = ChatHandlers(assistant, settings, stream_delay)

    def ask(message, history, reader):
        yield from handlers.respond(message, history, reader)

    def ask_example(history, reader, evt):
        yield from handlers.respond(evt.value.get("text", "") if isinstance(evt.value, dict) else "", history,
                                    reader)

    ask_example.__annotations__ = {"evt": gr.SelectData}  # a real class: Gradio passes the clicked example

    def add_documents(files, progress=gr.Progress()):
        report, status = handlers.add_files(files, progress)
        return report, status, None

    def rebuild_index(progress=gr.Progress()):
        return handlers.rebuild(progress)

    with gr.Blocks(title="Ask your documents", analytics_enabled=False) as app:
        with gr.Row(equal_height=False, elem_id="layout"):
            with gr.Column(scale=3, min_width=420):
                gr.Markdown("## Ask your documents\n<span class='muted'>Answers are quoted verbatim from the "
                            "documents, each with its numbered source. Ask in Chinese or English; follow-up "
                            "questions build on the previous one.</span>", elem_id="intro")
                chatbot = gr.Chatbot(show_label=False, elem_id="chat", height=640, layout="bubble",
                                     examples=[{"text": q} for q in EXAMPLES], feedback_options=None,
                                     allow_tags=False, buttons=[], autoscroll=True,
                                     placeholder="<div class='empty'>Ask a question about the documents, "
                                                 "or try one of these:</div>")
                with gr.Row(elem_id="ask-row"):
                    question = gr.Textbox(show_label=False, placeholder="Ask a question… e.g. 那第二点具体怎么做？",
                                          scale=8, lines=1, max_lines=6, autofocus=True, elem_id="question",
                                          max_length=settings.max_question_chars)
                    send = gr.Button("Ask", variant="primary", scale=1, min_width=72, elem_id="ask")
                reader_choice = gr.Radio(READER_CHOICES, value=settings.reader, label="Answers", elem_id="reader")
                reader = gr.State(settings.reader)  # not part of the API: API calls use the default reader
            with gr.Column(scale=1, min_width=260, elem_id="documents"):
                gr.Markdown("### Documents")
                status = gr.Markdown("Loading the index…", elem_id="index-status")
                files = gr.File(label="Add documents", file_count="multiple", type="filepath", elem_id="upload",
                                height=120)
                gr.Markdown(f"<span class='muted'>{' '.join(s.lstrip('.') for s in SUPPORTED)} · up to "
                            f"{settings.max_file_mb} MB each</span>")
                report = gr.Markdown(elem_id="upload-report")
                rebuild = gr.Button("Rebuild index", size="sm", elem_id="rebuild")

        chat_io = {"outputs": [chatbot, question], "concurrency_id": "ask", "concurrency_limit": 4,
                   "show_progress": "hidden"}
        question.submit(ask, [question, chatbot, reader], api_name="ask", **chat_io)
        send.click(ask, [question, chatbot, reader], api_visibility="private", **chat_io)
        chatbot.example_select(ask_example, [chatbot, reader], api_visibility="private", **chat_io)
        reader_choice.change(lambda choice: choice, reader_choice, reader, api_visibility="private")
        index_io = {"concurrency_id": "index", "concurrency_limit": 1}  # one build at a time; they queue
        files.upload(add_documents, [files], [report, status, files], api_name="add_documents", **index_io)
        rebuild.click(rebuild_index, None, [report, status], api_name="rebuild", **index_io)
        app.load(handlers.status_markdown, None, status, api_visibility="private")
    return app


def launch_options(settings: Settings) -> dict:
    """Keyword arguments for ``Blocks.launch``: local only, offline page, our theme and styles."""
    gr = _gradio()
    theme = gr.themes.Default(primary_hue="indigo", neutral_hue="slate", font=list(SANS), font_mono=list(MONO))
    return {"server_name": settings.host, "server_port": settings.port, "share": False, "theme": theme,
            "css": CSS + LLM_CSS, "footer_links": ["api"], "max_file_size": f"{settings.max_file_mb}mb",
            "ssr_mode": False, "pwa": False, "mcp_server": False, "enable_monitoring": False, "show_error": False}


def warm_up(assistant) -> None:
    """Load the index and the model before the first question (run in a background thread)."""
    try:
        assistant.status()
        assistant.embedder.embed_queries(["warm-up"])
        if getattr(assistant.reader, "name", "") == "llm":
            assistant.reader.load()
    except AssistantError as exc:
        log.warning("not ready yet: %s", exc)


def serve(assistant, settings: Settings) -> None:
    """Start the app on settings.host:settings.port and block; the model loads in the background meanwhile."""
    threading.Thread(target=warm_up, args=(assistant,), name="warm-up", daemon=True).start()
    build_app(assistant, settings).launch(**launch_options(settings))


CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto; }
#intro h2 { margin-bottom: 2px; }
.muted { color: var(--body-text-color-subdued); font-size: 0.92em; }
#chat .message-content h1, #chat .message-content h2, #chat .message-content h3,
#chat .message-content h4 { font-size: 1em; margin: 0.4em 0 0.2em; }
#chat .empty { color: var(--body-text-color-subdued); }
.cite { display: inline-block; padding: 0 5px; margin-left: 2px; border-radius: 6px; font-size: 0.8em;
        font-weight: 600; line-height: 1.5; color: var(--color-accent); background: var(--color-accent-soft); }
.searched { font-size: 0.85em; color: var(--body-text-color-subdued); margin-bottom: 6px; font-style: italic; }
.pending { color: var(--body-text-color-subdued); font-style: italic; }
.sources { margin-top: 10px; border-top: 1px solid var(--border-color-primary); padding-top: 6px; }
.sources-title { font-size: 0.8em; font-weight: 600; text-transform: uppercase; letter-spacing: 0.05em;
                 color: var(--body-text-color-subdued); margin-bottom: 4px; }
details.source { margin: 3px 0; border: 1px solid var(--border-color-primary); border-radius: 8px;
                 background: var(--background-fill-secondary); }
details.source > summary { cursor: pointer; padding: 5px 8px; font-size: 0.88em; list-style-position: inside;
                           white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
details.source > summary .num { display: inline-block; min-width: 1.4em; text-align: center; font-weight: 700;
                                color: var(--color-accent); margin-right: 4px; }
details.source > summary .doc { font-weight: 600; margin-right: 6px; }
details.source > summary .where { color: var(--body-text-color-subdued); margin-right: 8px; }
details.source > summary .snippet { color: var(--body-text-color-subdued); }
details.source .passage { white-space: pre-wrap; font-size: 0.88em; line-height: 1.55; padding: 6px 10px;
                          max-height: 320px; overflow: auto; border-top: 1px solid var(--border-color-primary); }
details.source mark { background: #fde68a; color: inherit; padding: 1px 0; border-radius: 2px; }
details.source mark strong.answer-span { background: #f59e0b; font-weight: 600; }
details.source .span-info { font-size: 0.75em; color: var(--body-text-color-subdued); padding: 4px 10px 6px;
                            border-top: 1px dashed var(--border-color-primary); }
.not-covered { border-left: 4px solid #f59e0b; background: rgba(245, 158, 11, 0.10); padding: 8px 12px;
               border-radius: 6px; }
.not-covered .badge { font-size: 0.75em; font-weight: 700; text-transform: uppercase; color: #b45309;
                      margin-right: 6px; }
.sources.related details.source > summary .num { color: var(--body-text-color-subdued); }
.error-note { border-left: 4px solid #ef4444; background: rgba(239, 68, 68, 0.08); padding: 8px 12px;
              border-radius: 6px; }
#documents { border-left: 1px solid var(--border-color-primary); padding-left: 14px; }
#index-status ul { margin: 4px 0 0 1em; font-size: 0.88em; }
details.doc-list summary { cursor: pointer; font-size: 0.9em; }
#upload-report { font-size: 0.9em; }
"""
