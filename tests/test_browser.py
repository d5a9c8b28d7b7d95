"""A real browser: Debian's headless Chromium driven by Playwright, against ``app.py`` with the real model, and
against the page launched in this process (the fake embedder, answers scripted where a test needs their timing).

Install the browser with ``make browser`` (scripts/install-browser.sh: apt-get, never a browser download).
Without /usr/bin/chromium or the playwright package the test skips and names what is missing. Set
ASSISTANT_SCREENSHOT=docs/screenshot.png to refresh the README's screenshot; otherwise it goes to tmp_path.
"""
from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import pytest

from assistant.reader import Response
from assistant.testing import FakeEmbedder
from assistant.types import Answer, Citation, Why
from test_ui import OFFSITE, _assistant, _free_port, built, running_app  # noqa: F401  (built: a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")]

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser build
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ANSWER = 240_000  # ms: the first answer loads the model on a busy 2-core machine
WAIT = 20_000  # ms: the page in this process, with the fake embedder
QUESTION = "初创公司缺少训练数据怎么办？"
SPAN_QUESTION = "Transformer 文本分类示例里 d_model 设为多少？"  # the real reader model's span: 512


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: run `make install`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


# Scroll the opened source's passage to its answer span, then the chat to the end of the answer, the source under it
SHOW_SOURCE = """(chat, source) => {
  const passage = source.querySelector(".passage"), span = passage.querySelector("strong.answer-span");
  passage.scrollTop += span.getBoundingClientRect().top - passage.getBoundingClientRect().top - 110;
  chat.scrollTop += source.getBoundingClientRect().top - chat.getBoundingClientRect().top - 90;
}"""


def _local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("data", "blob") or parsed.hostname in ("127.0.0.1", "localhost")


def test_chat_in_a_real_browser(browser, real_index, tmp_path):
    """The real model: an answer with its exact span, a source opened with "why this passage", the document list;
    the README's screenshot (1400 x 1000) is taken then. An upload is indexed, listed and answers."""
    from playwright.sync_api import expect

    screenshot = Path(os.environ.get("ASSISTANT_SCREENSHOT") or tmp_path / "screenshot.png")
    with running_app(tmp_path, real_index) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url)
        status = page.locator("#index-status")
        status.get_by_text("5 documents").wait_for()
        documents = page.locator("#document-list details.doc")
        expect(documents).to_have_count(5)
        expect(documents.first.locator(".doc-title")).to_have_text("大模型创业的航向标：行业痛点及解决方案")

        # ask in Chinese; the answer leads with its exact span, and arrives with a numbered, expandable source
        page.locator("#question textarea").fill(SPAN_QUESTION)
        page.locator("#question textarea").press("Enter")
        source = page.locator("details.source").first
        source.wait_for(timeout=ANSWER)
        answer = page.locator("#chat .message-row.bot-row").last
        assert answer.locator(".cite").first.inner_text() == "[1]"
        assert answer.locator(".quoted").first.inner_text().startswith("512")
        summary = source.locator(":scope > summary")
        assert "000_6d8c0b3cedab2c30.txt" in summary.inner_text() and "line" in summary.inner_text()
        summary.click()
        highlighted = source.locator("mark").first
        highlighted.wait_for()
        assert "d_model" in highlighted.inner_text()
        expect(source.locator("mark strong.answer-span")).to_have_text("512")  # the span, inside its passage
        why = source.locator("details.why")
        why.locator("summary").click()
        expect(why.locator("li").first).to_contain_text(re.compile(r"cosine 0\.\d{3} \(dense #\d+\)"))
        page.set_viewport_size({"width": 400, "height": 940})  # a phone: the answer's sources do not widen the page
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 402, f"at 400 px, after an answer, the page is {width} px wide"
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.locator("#chat .bubble-wrap").evaluate(SHOW_SOURCE, source.element_handle())
        expect(source.locator("strong.answer-span")).to_be_in_viewport()
        documents.first.locator(":scope > summary").click()  # a document opened: its preview
        expect(documents.first.locator(".doc-preview")).to_contain_text("大模型")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))

        # upload a document; it is indexed and listed
        upload = tmp_path / "团建安排.md"
        upload.write_text(OFFSITE, "utf-8")
        page.locator("#upload input[type=file]").set_input_files(str(upload))
        page.locator("#upload-report").get_by_text("Added 1 document").wait_for(timeout=ANSWER)
        status.get_by_text("6 documents").wait_for()
        assert "团建安排.md" in page.locator("#upload-report").inner_text()
        expect(documents.filter(has_text="团建安排.md").locator(".doc-title")).to_have_text("团队团建")

        # the new document answers
        page.locator("#question textarea").fill("年度团建去哪里？")
        page.locator("#question textarea").press("Enter")
        page.locator("details.source summary", has_text="团建安排.md").first.wait_for(timeout=ANSWER)
        page.close()
    external = [u for u in requests if not _local(u)]
    assert requests and external == [], f"the page fetched from outside: {external[:5]}"


# -- the page launched in this process: the fake embedder, scripted answers -----------------------------
@contextmanager
def served(browser, assistant, handlers=None, width=1200, **context):
    """The app for ``assistant`` on a free port, and a page open on it; closed after."""
    from assistant.ui import build_app, launch_options

    settings = assistant.settings.with_(port=_free_port())
    app = build_app(assistant, settings, stream_delay=0, handlers=handlers)
    app.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    session = browser.new_context(viewport={"width": width, "height": 900}, **context)
    try:
        page = session.new_page()
        page.goto(f"http://127.0.0.1:{settings.port}/")
        page.locator("#index-status").get_by_text(re.compile(r"\d+ documents")).wait_for(timeout=WAIT)
        yield page
    finally:
        session.close()
        app.close()


class Scripted:
    """Stands in for ``Assistant.ask_stream``: writes ``words`` (after the first it waits for ``go``), then gives
    ``answer`` for the question asked. ``readers`` records the reader each question was asked with; ``closed`` is
    set when the answer is closed, finished or not (as a reader lets go of its model)."""

    def __init__(self, answer: Answer, words: tuple[str, ...] = ()) -> None:
        self.answer, self.words, self.readers = answer, words, []
        self.go, self.closed, self.finished = threading.Event(), threading.Event(), False

    def __call__(self, question, k=None, query=None, reader=None):
        def run():
            try:
                for i, word in enumerate(self.words):
                    yield word
                    if i == 0:
                        assert self.go.wait(60), "the test never let the answer go on"
                self.finished = True
                return replace(self.answer, question=question)
            finally:
                self.closed.set()

        self.readers.append(reader)
        return Response(run())


def _ask(page, question: str, enter: bool = True) -> None:
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter") if enter else page.locator("#ask").click()


def _bot(page):
    return page.locator("#chat .message-row.bot-row").last


def test_text_typed_while_an_answer_is_written_is_kept(browser, built, tmp_path):
    """Bug 1: every streaming update cleared the input box."""
    assistant = _assistant(built, tmp_path)
    script = Scripted(assistant.ask(QUESTION), ("Writing ", "the ", "answer ", "now."))
    assistant.ask_stream = script
    try:
        with served(browser, assistant) as page:
            _ask(page, QUESTION)
            page.locator("#chat .draft").wait_for(timeout=WAIT)
            box = page.locator("#question textarea")
            box.press_sequentially("what about compute")
            script.go.set()  # more of the answer streams in, then its sources
            _bot(page).locator("details.source").first.wait_for(timeout=WAIT)
            assert box.input_value() == "what about compute"
    finally:
        script.go.set()


def test_ask_is_disabled_while_an_answer_runs_and_stop_cancels_it(browser, built, tmp_path):
    """Bug 2: a second question sent while the first was pending was dropped and its text erased."""
    from playwright.sync_api import expect

    assistant = _assistant(built, tmp_path)
    answer = assistant.ask(QUESTION)
    first, second = Scripted(answer, ("Writing ", "it.")), Scripted(answer, ("Writing ", "more."))
    assistant.ask_stream = first
    try:
        with served(browser, assistant) as page:
            ask, stop, box = page.locator("#ask"), page.locator("#stop"), page.locator("#question textarea")
            _ask(page, QUESTION, enter=False)
            page.locator("#chat .draft").wait_for(timeout=WAIT)
            expect(ask).to_be_disabled()
            expect(stop).to_be_visible()
            box.fill("what about compute")
            box.press("Enter")  # not sent while the answer runs, and not erased
            first.go.set()
            _bot(page).locator("details.source").first.wait_for(timeout=WAIT)
            expect(ask).to_be_enabled()
            expect(stop).to_be_hidden()
            assert box.input_value() == "what about compute"
            assert page.locator("#chat .message-row.user-row").count() == 1 and len(first.readers) == 1

            assistant.ask_stream = second  # Stop cancels a running answer
            ask.click()
            _bot(page).locator(".draft").wait_for(timeout=WAIT)
            stop.click()
            _bot(page).get_by_text("Stopped").wait_for(timeout=WAIT)
            expect(ask).to_be_enabled()
            expect(stop).to_be_hidden()
            second.go.set()  # the reader would go on now: it was closed instead, and its answer is not shown
            assert second.closed.wait(20) and not second.finished
            assert _bot(page).locator("details.source").count() == 0
    finally:
        first.go.set()
        second.go.set()


def test_long_sources_do_not_widen_the_page_at_400_px(browser, built, tmp_path):
    """Bug 3: source headings never wrapped, and the page grew to about 1,050 px after the first answer."""
    assistant = _assistant(built, tmp_path)
    name, quote = "x" * 150 + ".md", "https://example.com/" + "a" * 400
    citation = Citation(1, name, 0, len(quote), quote, 0.9, line=1)
    assistant.ask_stream = Scripted(Answer(QUESTION, f"{quote} [1]", False, (citation,)))
    with served(browser, assistant, width=400) as page:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 402, f"the empty page is {width} px wide"
        _ask(page, QUESTION)
        summary = _bot(page).locator("details.source summary").first
        summary.wait_for(timeout=WAIT)
        summary.click()
        _bot(page).locator("details.source mark").first.wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 402, f"after an answer with long sources the page is {width} px wide"


def test_each_cited_passage_keeps_its_own_list(browser, built, tmp_path):
    """Bug 4: two cited passages with numbered lists were rendered as one list numbered 1-5."""
    assistant = _assistant(built, tmp_path)
    one, two = "1. 收集数据\n2. 清洗数据\n3. 标注数据", "4. 选择模型\n5. 训练模型"
    citations = (Citation(1, "a.md", 0, len(one), one, 0.9, line=1), Citation(2, "b.md", 0, len(two), two, 0.8, line=9))
    assistant.ask_stream = Scripted(Answer(QUESTION, f"{one} [1]\n\n{two} [2]", False, citations))
    with served(browser, assistant) as page:
        _ask(page, QUESTION)
        _bot(page).locator("details.source").first.wait_for(timeout=WAIT)
        lists = _bot(page).evaluate("m => [...m.querySelectorAll('ol')].map(o => [o.start, o.children.length])")
        assert lists == [[1, 3], [4, 2]]


class SlowStart(FakeEmbedder):
    """Its first query (the warm-up's) waits until the test lets it go on: the models are loading till then."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def embed_queries(self, texts):
        assert self.go.wait(60), "the test never let the warm-up finish"
        return super().embed_queries(texts)


def test_the_page_says_the_models_are_loading_and_questions_wait(browser, built, tmp_path):
    """Bug 5: the first question waited on "Searching the documents…" with no word that the model was loading."""
    from playwright.sync_api import expect

    from assistant.ui import ChatHandlers

    embedder = SlowStart()
    assistant = _assistant(built, tmp_path, embedder=embedder)
    handlers = ChatHandlers(assistant, stream_delay=0)
    handlers.start_warm_up()
    try:
        with served(browser, assistant, handlers) as page:
            status = page.locator("#index-status")
            expect(status).to_contain_text("Loading the models…")
            _ask(page, QUESTION)
            _bot(page).get_by_text("Loading the models…").wait_for(timeout=WAIT)
            assert not handlers.ready.is_set()
            embedder.go.set()
            _bot(page).locator("details.source").first.wait_for(timeout=WAIT)
            expect(status).not_to_contain_text("Loading the models", timeout=WAIT)
            assert handlers.ready.is_set()
    finally:
        embedder.go.set()


class GatedBuild(FakeEmbedder):
    """Once ``armed``, embedding passages waits until the test lets it go on."""

    def __init__(self) -> None:
        super().__init__()
        self.armed, self.go = threading.Event(), threading.Event()

    def embed_documents(self, texts, titles=None):
        if self.armed.is_set():
            assert self.go.wait(60), "the test never let the build go on"
        return super().embed_documents(texts, titles)


# Whether the middle of the element's text is on top there (not under Gradio's progress overlay)
UNCOVERED = """(selector) => {
  const text = document.querySelector(selector + " .prose"), box = text.getBoundingClientRect();
  return text.contains(document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2));
}"""


def test_rebuild_shows_its_progress_and_keeps_the_status_visible(browser, built, tmp_path):
    """Bug 6: a rebuild showed only Gradio's "processing" overlay over the status, its progress only at the end."""
    from playwright.sync_api import expect

    embedder = GatedBuild()
    assistant = _assistant(built, tmp_path, embedder=embedder)
    try:
        with served(browser, assistant) as page:
            embedder.armed.set()
            page.locator("#rebuild").click()
            report = page.locator("#upload-report")
            expect(report).to_contain_text(re.compile(r"(Reading|Splitting|Embedding|Indexing)\D*\d+/\d+"),
                                           timeout=WAIT)
            expect(page.locator("#index-status")).to_contain_text("5 documents")
            assert page.evaluate(UNCOVERED, "#index-status") and page.evaluate(UNCOVERED, "#upload-report")
            embedder.go.set()
            expect(report).to_contain_text("Index rebuilt", timeout=WAIT)
    finally:
        embedder.go.set()


def test_chat_basics_in_a_real_browser(browser, built, tmp_path):
    """A long question refused, [n] opening its source, the passage's markdown, Copy, the LLM offered for an
    English question, the conversation kept across a reload, and New conversation."""
    from playwright.sync_api import expect

    from assistant.ingest import read_document
    from assistant.ui import ChatHandlers

    assistant = _assistant(built, tmp_path, max_question_chars=200)
    corpus = Path(assistant.status().corpus)
    text = read_document(corpus / "000_6d8c0b3cedab2c30.txt", corpus).text
    quote = "2. **数据增强：** 利用生成对抗网络（GAN）等技术，对现有数据进行增强，提升数据多样性。"
    start = text.index(quote)
    citation = Citation(1, "000_6d8c0b3cedab2c30.txt", start, start + len(quote), quote, 0.9,
                        line=text.count("\n", 0, start) + 1)
    assistant.ask_stream = Scripted(Answer("", f"{quote} [1]", False, (citation,)))
    handlers = ChatHandlers(assistant, stream_delay=0)
    picked = []
    handlers.readers.pick = lambda name: picked.append(name) or (None, "")
    with served(browser, assistant, handlers, permissions=["clipboard-read", "clipboard-write"]) as page:
        box = page.locator("#question textarea")
        _ask(page, "x" * 201)  # refused in the chat, not cut; kept in the box to shorten it
        _bot(page).get_by_text("the limit is 200").wait_for(timeout=WAIT)
        assert box.input_value() == "x" * 201

        _ask(page, "How can a startup get more training data?")
        answer = _bot(page)
        answer.locator("details.source").wait_for(timeout=WAIT)
        expect(answer.locator(".language-note")).to_be_visible()
        answer.locator("a.cite-link").first.click()  # [1] opens source 1 and scrolls to it
        source = answer.locator("details.source").first
        expect(source).to_have_attribute("open", "")
        passage = source.locator(".passage")
        expect(passage).to_be_in_viewport()
        assert "**" not in passage.inner_text() and "####" not in passage.inner_text()
        assert passage.locator("mark").inner_text() == quote.replace("**", "")
        answer.locator("button.copy-answer").click()
        expect(answer.locator("button.copy-answer")).to_have_text("Copied")
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied.startswith("2. 数据增强： 利用生成对抗网络") and "\n\nSources:\n[1] 000_6d8c0b3cedab2c30.txt, line" in copied

        page.locator("#ask-llm").click()  # the same question again, for the LLM
        expect(page.locator("#chat .message-row.user-row")).to_have_count(2)
        _bot(page).locator("details.source").wait_for(timeout=WAIT)
        assert picked[-1] == "llm" and page.locator("#chat .message-row.user-row").last.inner_text().startswith("How")
        expect(page.locator("#ask")).to_be_enabled()  # the answer is complete, and kept in the browser

        page.reload()  # the conversation is kept in the browser
        expect(page.locator("#chat .message-row.bot-row")).to_have_count(3, timeout=WAIT)
        page.get_by_role("button", name="New conversation").click()
        expect(page.locator("#chat .message-row")).to_have_count(0)
        page.reload()
        page.locator("#index-status").get_by_text(re.compile(r"\d+ documents")).wait_for(timeout=WAIT)
        expect(page.locator("#chat .message-row")).to_have_count(0)


# -- documents, uploads, ratings and "why this passage" (issue 16) ----------------------------------------
WHY = Why(0.612, 1, 7.31, 2, ("训练", "数据"), 1, 2.4)
LAST = "004_bbdcb1c1b08f7d82.txt"  # the default corpus's last document: "产品定位：大模型创业的核心"


def test_documents_are_listed_and_one_is_deleted_after_confirming_with_progress(browser, built, tmp_path,
                                                                                monkeypatch):
    from playwright.sync_api import expect

    import assistant.pipeline as pipeline

    assistant = _assistant(built, tmp_path)
    entered, go, build_index = threading.Event(), threading.Event(), pipeline.build_index

    def gated(*args, **kwargs):  # the documents are read (and that is reported); the index waits for the test
        entered.set()
        assert go.wait(60), "the test never let the build go on"
        return build_index(*args, **kwargs)

    monkeypatch.setattr(pipeline, "build_index", gated)
    try:
        with served(browser, assistant, width=1400) as page:
            documents = page.locator("#document-list details.doc")
            expect(documents).to_have_count(5, timeout=WAIT)
            last = documents.filter(has_text=LAST)
            expect(last.locator(".doc-title")).to_have_text("产品定位：大模型创业的核心")
            expect(last.locator(".doc-meta")).to_have_text(
                re.compile(rf"^{LAST} · TXT · [\d.]+ KB · \d{{4}}-\d\d-\d\d · \d+ passages$"))
            preview = last.locator(".doc-preview")
            expect(preview).to_be_hidden()
            last.locator(":scope > summary").click()
            expect(preview).to_be_visible()
            assert len(preview.inner_text()) > 100

            # Delete asks first; Cancel deletes nothing
            confirm = last.locator(".doc-confirm")
            last.get_by_text("Delete…").click()
            expect(confirm).to_contain_text(f"Delete {LAST}?")
            last.get_by_role("button", name="Cancel").click()
            expect(confirm).to_be_hidden()
            assert not entered.is_set() and len(assistant.status().documents) == 5

            last.get_by_text("Delete…").click()
            last.get_by_role("button", name="Delete", exact=True).click()
            report = page.locator("#upload-report")
            expect(report).to_contain_text(re.compile(rf"Deleting {LAST}… Reading documents 4/4 · \d+ s"), timeout=WAIT)
            expect(page.locator("#index-status")).to_contain_text("5 documents")  # the previous index serves
            assert entered.is_set() and page.evaluate(UNCOVERED, "#upload-report")
            go.set()
            expect(report).to_contain_text("Deleted 1 document", timeout=WAIT)
            expect(documents).to_have_count(4, timeout=WAIT)
            expect(page.locator("#document-list")).not_to_contain_text(LAST)
            expect(page.locator("#index-status")).to_contain_text("4 documents")
            assert not (assistant.settings.corpus / LAST).exists()

            documents.first.locator(":scope > summary").click()  # a phone: the list does not widen the page
            page.set_viewport_size({"width": 400, "height": 900})
            expect(documents.first.locator(".doc-preview")).to_be_visible()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 402, f"at 400 px, with the document list, the page is {width} px wide"
    finally:
        go.set()


def test_uploads_show_progress_say_already_indexed_and_ask_before_replacing(browser, built, tmp_path):
    from playwright.sync_api import expect

    from assistant.ui import ChatHandlers

    embedder = GatedBuild()
    assistant = _assistant(built, tmp_path, embedder=embedder)
    handlers = ChatHandlers(assistant, stream_delay=0)
    corpus = assistant.settings.corpus

    def upload(page, text: str) -> None:
        folder = tmp_path / f"upload-{len(list(tmp_path.glob('upload-*')))}"
        folder.mkdir()
        (folder / "offsite.md").write_text(text, "utf-8")
        page.locator("#upload input[type=file]").set_input_files(str(folder / "offsite.md"))

    try:
        with served(browser, assistant, handlers) as page:
            report, replace = page.locator("#upload-report"), page.locator("#replace-question")  # in #replace-confirm
            embedder.armed.set()
            upload(page, OFFSITE)
            expect(report).to_contain_text(re.compile(r"Adding documents… (Reading|Splitting|Embedding|Indexing)"
                                                      r"\D*\d+/\d+ · \d+ s"), timeout=WAIT)
            assert page.evaluate(UNCOVERED, "#upload-report") and page.evaluate(UNCOVERED, "#index-status")
            embedder.armed.clear()
            embedder.go.set()
            expect(report).to_contain_text("Added 1 document", timeout=WAIT)
            expect(page.locator("#document-list .doc-title", has_text="团队团建")).to_be_visible(timeout=WAIT)

            upload(page, OFFSITE)  # the same file again
            expect(report).to_contain_text("Already indexed", timeout=WAIT)
            expect(report).to_contain_text("offsite.md (already indexed)")

            upload(page, "# 团建改期\n\n团建改在十一月。")  # same name, new content: asks; Keep keeps the old one
            expect(replace).to_be_visible(timeout=WAIT)
            expect(replace).to_contain_text("Replace offsite.md?")
            assert (corpus / "offsite.md").read_text("utf-8") == OFFSITE
            page.locator("#keep").click()
            expect(replace).to_be_hidden()
            expect(report).to_contain_text("Kept the indexed version")
            assert (corpus / "offsite.md").read_text("utf-8") == OFFSITE and handlers.waiting._root is None

            upload(page, "# 团建改期\n\n团建改在十一月。")  # again; Replace replaces it
            expect(replace).to_contain_text("Replace offsite.md?", timeout=WAIT)
            page.locator("#replace").click()
            expect(report).to_contain_text("Replaced 1 document", timeout=WAIT)
            expect(replace).to_be_hidden()
            expect(page.locator("#document-list .doc-title", has_text="团建改期")).to_be_visible(timeout=WAIT)
            assert "十一月" in (corpus / "offsite.md").read_text("utf-8") and handlers.waiting._root is None
    finally:
        embedder.go.set()


def _cited_answer(assistant) -> Answer:
    """A scripted answer quoting the first document, its source explained (``WHY``)."""
    from assistant.ingest import read_document

    corpus = Path(assistant.status().corpus)
    text = read_document(corpus / "000_6d8c0b3cedab2c30.txt", corpus).text
    quote = "2. **数据增强：** 利用生成对抗网络（GAN）等技术，对现有数据进行增强，提升数据多样性。"
    start = text.index(quote)
    citation = Citation(1, "000_6d8c0b3cedab2c30.txt", start, start + len(quote), quote, 0.9,
                        line=text.count("\n", 0, start) + 1, why=WHY)
    return Answer("", f"{quote} [1]", False, (citation,))


def test_a_thumbs_down_with_a_comment_is_stored_with_the_question_and_its_citations(browser, built, tmp_path):
    import json

    from playwright.sync_api import expect

    from assistant.feedback import feedback_path

    assistant = _assistant(built, tmp_path)
    answer = _cited_answer(assistant)
    assistant.ask_stream = Scripted(answer)
    stored = feedback_path(assistant.settings.index)
    with served(browser, assistant) as page:
        _ask(page, QUESTION)
        _bot(page).locator("details.source").wait_for(timeout=WAIT)
        page.locator("#chat button[aria-label=Dislike]").last.click()
        note = page.locator("#feedback-note")
        expect(note).to_contain_text("Rated down", timeout=WAIT)
        assert not stored.exists()  # not before Save: the comment goes with the rating
        page.locator("#feedback-comment textarea").fill("数据增强不是我问的")
        page.locator("#save-rating").click()
        expect(note).to_contain_text("Saved", timeout=WAIT)
        expect(page.locator("#feedback-comment")).to_be_hidden()
    line, = stored.read_text("utf-8").splitlines()
    rating = json.loads(line)
    assert (rating["rating"], rating["comment"], rating["question"]) == (-1, "数据增强不是我问的", QUESTION)
    c = answer.citations[0]
    assert rating["citations"] == [{"n": 1, "source": c.source, "start": c.start, "end": c.end, "quote": c.quote}]
    assert rating["answer"] == answer.text and rating["reader"] == assistant.reader.name


def test_why_this_passage_is_collapsed_under_its_source_and_opens(browser, built, tmp_path):
    from playwright.sync_api import expect

    assistant = _assistant(built, tmp_path)
    assistant.ask_stream = Scripted(_cited_answer(assistant))
    with served(browser, assistant) as page:
        _ask(page, QUESTION)
        source = _bot(page).locator("details.source")
        source.wait_for(timeout=WAIT)
        source.locator(":scope > summary").click()
        why = source.locator("details.why")
        expect(why.locator("summary")).to_have_text("why this passage")
        expect(why).not_to_have_attribute("open", "")
        expect(why.locator("ul")).to_be_hidden()
        why.locator("summary").click()
        expect(why).to_have_attribute("open", "")
        expect(why.locator("li")).to_have_text(["cosine 0.612 (dense #1)", "BM25 7.31 (#2; matched: 训练, 数据)",
                                                "fused #1", "answerability +2.4"])
