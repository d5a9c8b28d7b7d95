"""The chat UI: rendering, upload checks, the handlers with the fake embedder, a launched app.

Follow-up resolution is tested in test_conversation.py.

The last test starts ``app.py`` in a subprocess with the real model and asks through gradio_client (e2e).
"""
from __future__ import annotations

import html
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.errors import IngestError
from assistant.pipeline import Assistant
from assistant.reader import Response
from assistant.types import Answer, Citation, Why
from assistant.conversation import message_text
from assistant.render import (LANGUAGE_NOTE, LOADING_MODELS, PENDING, answer_markdown, answer_text, join_lines,
                              language_note, markdown_html, render_answer, stopped_html, stream_cuts)
from assistant.ui import ChatHandlers, build_app, launch_options
from assistant.uploads import safe_name, stage_uploads
from assistant.testing import FakeEmbedder
from offline_guard import offline_env

ROOT = Path(__file__).resolve().parent.parent
OFFSITE = "# 团队团建\n\n我们的年度团建地点定在杭州千岛湖，时间是十月第二周，预算每人两千元。\n"


# -- rendering ----------------------------------------------------------------------------------------
def test_answer_markdown_keeps_markers_and_closes_cut_code_blocks():
    text = "print(x)\n```\n\n**解析：** 上面的代码。 [1]\n\n    a = 1\n    b = 2 [2]"
    md = answer_markdown(text)
    assert md.count("```") % 2 == 0, md
    assert re.findall(r'class="cite">\[(\d)\]', md) == ["1", "2"]
    assert md.startswith('<div class="quoted">\n\n```\nprint(x)')  # a cut-off block gets its opening fence
    assert "```\n    a = 1\n    b = 2\n```" in md  # indented code without fences is fenced
    assert "x = arr[1]\n\ny <span" in answer_markdown("x = arr[1]\n\ny [2]", {2})  # [1] is not a marker


def test_each_quoted_passage_is_a_block_of_its_own_and_its_marker_links_to_its_source():
    md = answer_markdown("1. 收集数据\n2. 清洗数据 [1]\n\n4. 选择模型\n5. 训练模型 [2]", {1, 2}, anchor="answer-2")
    blocks = re.findall(r'<div class="quoted">\n\n(.*?)\n\n</div>', md, re.S)
    assert [b.split(" <a")[0] for b in blocks] == ["1. 收集数据\n2. 清洗数据", "4. 选择模型\n5. 训练模型"]
    assert '<a class="cite-link" href="#answer-2-2"><span class="cite">[2]</span></a>' in md
    citation = Citation(2, "b.md", 0, 5, "4. 选择", 0.5, line=1)
    assert 'id="answer-2-2"' in render_answer(Answer("q", "4. 选择 [2]", False, (citation,)), anchor="answer-2")


def test_lines_the_file_only_wrapped_are_joined_and_block_lines_are_kept():
    assert join_lines("大模型训练依赖海量\n高质量数据。\nIt needs\nmuch data.") == "大模型训练依赖海量高质量数据。It needs much data."
    kept = "# 标题\n正文\n\n1. 一\n2. 二\n- 三\n\n```\ncode\nmore\n```\n| a |\n| b |\nhard  \nbreak"
    assert join_lines(kept) == kept


def test_a_passage_renders_its_markdown_and_marks_exactly_the_quoted_characters():
    text = "#### 痛点1：数据\n1. **数据增强：** 利用 `GAN` 等技术\n- 其他"
    start = text.index("增强")
    shown = markdown_html(text, ((start, text.index("技术"), "mark"),))
    assert "####" not in shown and "**" not in shown and "`" not in shown
    assert '<strong class="heading">痛点1：数据</strong>&#10;1. <strong>数据</strong><mark><strong>增强：</strong> 利用 ' \
           '<code>GAN</code> 等</mark>技术&#10;• 其他' == shown


def test_the_copied_text_the_language_note_and_a_stopped_answer():
    quote = "**数据增强：** 利用生成对抗网络"
    citation = Citation(1, "a.md", 0, len(quote), quote, 0.5, line=3)
    answer = Answer("How do startups get data?", f"{quote} [1]", False, (citation,))
    assert answer_text(answer) == f"数据增强： 利用生成对抗网络 [1]\n\nSources:\n[1] a.md, line 3: 数据增强： 利用生成对抗网络"
    assert language_note(answer) == LANGUAGE_NOTE  # English question, Chinese quotes
    assert language_note(Answer("初创公司怎么获得数据？", answer.text, False, answer.citations)) == ""
    stopped = stopped_html('<div class="draft">Half an</div><div class="pending">Writing…</div>')
    assert stopped.startswith('<div class="draft">Half an</div>') and "Writing" not in stopped and "Stopped" in stopped


def test_stream_cuts_grow_and_stay_inside_the_text():
    text = "第一句。第二句，很长的一句话。\n" * 12
    cuts = stream_cuts(text)
    assert 3 <= len(cuts) <= 12
    assert cuts == sorted(set(cuts)) and all(0 < c < len(text) for c in cuts)


def test_abstained_answer_looks_different_and_lists_related_reading():
    related = (Citation(1, "a.md", 0, 5, "hello", 0.3, line=1), Citation(2, "b.md", 3, 8, "world", 0.2, line=2))
    abstained = render_answer(Answer("q?", "The documents do not cover this question.", True, (), related))
    answered = render_answer(Answer("q?", "hello [1]", False, related[:1], ()))
    assert 'class="not-covered"' in abstained and "Related reading" in abstained
    assert abstained.count('<details class="source">') == 2 and 'class="cite"' not in abstained
    assert "Sources" not in abstained
    assert 'class="not-covered"' not in answered and "Sources" in answered and 'class="cite">[1]' in answered


def test_source_shows_the_cited_span_highlighted_in_its_context():
    document = "# 标题\n\n前文。\n被引用的句子 <b>。\n后文。"
    start = document.index("被引用")
    end = start + len("被引用的句子 <b>。")
    citation = Citation(1, "doc.md", start, end, document[start:end], 0.9, line=4)
    content = render_answer(Answer("q", f"{citation.quote} [1]", False, (citation,)), lambda source: document)
    assert "<mark>被引用的句子 &lt;b&gt;。</mark>" in content  # escaped, highlighted
    assert "前文。" in content and "后文。" in content  # context around the span
    assert "doc.md" in content and "line 4" in content
    sources = content.split('<div class="sources">')[1].split('<div class="answer-tools">')[0].rstrip()
    assert "\n\n" not in sources  # one HTML block: markdown cannot break it


def test_each_source_explains_why_its_passage_was_chosen_collapsed():
    why = Why(0.6123, 1, 7.314, 2, ("训练", "数据"), 1, 2.37)
    cited = Citation(1, "a.md", 0, 4, "训练数据", 0.5, line=1, why=why)
    content = render_answer(Answer("q", "训练数据 [1]", False, (cited, replace(cited, n=2, why=None))))
    first, second = re.findall(r'<details class="source">.*?<div class="span-info">', content)
    block = re.search(r'<details class="why"><summary>why this passage</summary><ul>(.*?)</ul></details>', first)
    assert block, first
    assert re.findall(r"<li>(.*?)</li>", block.group(1)) == ["cosine 0.612 (dense #1)",
                                                             "BM25 7.31 (#2; matched: 训练, 数据)", "fused #1",
                                                             "answerability +2.4"]
    assert 'class="why"' not in second  # no explanation recorded: none shown
    assert " open" not in block.group(0)  # collapsed until the user opens it
    abstained = render_answer(Answer("q", "not covered", True, (), (cited,)))
    assert "cosine 0.612" in abstained  # related reading is explained too


# -- uploads ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x.txt", "..", "a/b.md", "..\\..\\x.txt", "/etc/passwd.txt", "x\x00.txt",
                                  "bad\x1bname.md", ".hidden.md", "", "\u202eevil.txt", "长" * 80 + ".md"])
def test_unsafe_file_names_are_refused(name):
    with pytest.raises(IngestError):
        safe_name(name)


@pytest.mark.parametrize("name", ["notes.md", "第三季度 报告 (final).docx", "a..b.txt", "report-2024.pdf"])
def test_ordinary_file_names_are_kept(name):
    assert safe_name(name) == name


def test_stage_uploads_never_writes_outside_the_staging_folder(tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_text("正文", "utf-8")
    staging = tmp_path / "a" / "b"
    staging.mkdir(parents=True)
    staged, refused = stage_uploads([(upload, "../../x.txt"), (upload, "ok.txt"), (upload, "ok.txt")], staging,
                                    1 << 20)
    assert staged == [staging / "ok.txt"]
    assert [name for name, _ in refused] == ["../../x.txt", "ok.txt"]
    assert "path" in refused[0][1] and "same name" in refused[1][1]
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "a" / "x.txt").exists()


# -- the handlers with the fake embedder --------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The default corpus indexed once with the fake embedder; each test works on its own copy."""
    folder = tmp_path_factory.mktemp("ui-built")
    shutil.copytree(ROOT / "corpus", folder / "corpus")
    Assistant(Settings(corpus=folder / "corpus", index=folder / "index"), embedder=FakeEmbedder()).build()
    return folder


def _assistant(built: Path, tmp_path: Path, embedder=None, **settings) -> Assistant:
    shutil.copytree(built / "corpus", tmp_path / "corpus")
    shutil.copytree(built / "index", tmp_path / "index")
    values = {"min_evidence": 0.01, **settings}
    return Assistant(Settings(corpus=tmp_path / "corpus", index=tmp_path / "index", **values),
                     embedder=embedder or FakeEmbedder())


def _final(handlers: ChatHandlers, question: str, history=None) -> tuple[list, str]:
    *_, (messages, box) = handlers.respond(question, history or [])
    assert box == ""
    return messages, messages[-1]["content"]


def _numbers(content: str) -> tuple[list[str], list[str]]:
    """The [n] markers in the answer, and the numbers of the sources listed under it."""
    return re.findall(r'class="cite">\[(\d+)\]', content), re.findall(r'<span class="num">(\d+)</span>', content)


def test_chat_handler_streams_a_cited_answer(built, tmp_path):
    assistant = _assistant(built, tmp_path)
    handlers = ChatHandlers(assistant, stream_delay=0)
    outputs = list(handlers.respond("初创公司缺少训练数据怎么办？", []))
    first, *streamed, final = [messages for messages, _ in outputs]
    assert first == [{"role": "user", "content": "初创公司缺少训练数据怎么办？"}, {"role": "assistant", "content": PENDING}]
    assert streamed, "the answer is streamed before the sources are added"
    lengths = [len(messages[-1]["content"]) for messages in streamed]
    assert lengths == sorted(lengths)
    content = final[-1]["content"]
    markers, sources = _numbers(content)
    answer = assistant.ask("初创公司缺少训练数据怎么办？")
    assert not answer.abstained and markers and sorted(set(markers)) == sources
    assert sources == [str(c.n) for c in answer.citations]
    marks = [html.unescape(re.sub(r"<[^>]+>", "", m)) for m in re.findall(r"<mark>(.*?)</mark>", content, re.S)]
    for c in answer.citations:  # document name, location, and the exact quote highlighted, its markdown rendered
        assert f'<span class="doc">{c.source}</span>' in content and f"line {c.line}" in content
        assert re.sub(r"^([ \t]*)[-*+] ", r"\1• ", re.sub(r"\*\*|^#+ ", "", c.quote, flags=re.M), flags=re.M) in marks
    assert "Searched for" not in content


def test_follow_up_is_searched_with_the_previous_question(built, tmp_path, monkeypatch):
    assistant = _assistant(built, tmp_path)
    asked = []
    ask_stream = assistant.ask_stream
    monkeypatch.setattr(assistant, "ask_stream", lambda q, k=None, query=None, reader=None:
                        asked.append((q, query)) or ask_stream(q, k, query, reader=reader))
    handlers = ChatHandlers(assistant, stream_delay=0)
    history, _ = _final(handlers, "注意力机制的原理是什么？")
    history, content = _final(handlers, "那第二点具体怎么做？", history)
    assert asked == [("注意力机制的原理是什么？", None), ("那第二点具体怎么做？", "注意力机制的原理是什么？ 那第二点具体怎么做？")]
    assert "Searched for: 注意力机制的原理是什么？ 那第二点具体怎么做？" in content
    assert [m["role"] for m in history] == ["user", "assistant"] * 2


def test_abstained_answer_is_rendered_as_not_covered(built, tmp_path):
    handlers = ChatHandlers(_assistant(built, tmp_path, min_evidence=0.99), stream_delay=0)
    _, content = _final(handlers, "How do I bake sourdough bread?")
    assert 'class="not-covered"' in content and "do not cover" in content and "Related reading" in content
    assert '<details class="source">' in content and 'class="cite"' not in content


def test_bad_questions_and_a_missing_index_become_messages(tmp_path, built):
    handlers = ChatHandlers(_assistant(built, tmp_path, max_question_chars=50), stream_delay=0)
    assert list(handlers.respond("   ", [])) == [([], "")]
    messages, content = _final(handlers, "长" * 60)  # refused in the chat, not cut
    assert 'class="error-note"' in content and "limit is 50" in content
    assert [m["role"] for m in messages] == ["assistant"]  # the question is not shown: the page keeps it in the box
    assert handlers.refusal("长" * 60) is not None and handlers.refusal("长" * 50) is None
    empty = ChatHandlers(Assistant(Settings(corpus=tmp_path / "none", index=tmp_path / "no-index"),
                                   embedder=FakeEmbedder()), stream_delay=0)
    _, content = _final(empty, "初创公司缺少训练数据怎么办？")
    assert 'class="error-note"' in content and "index" in content
    assert "No index yet" in empty.status_markdown()


def test_uploaded_document_becomes_answerable(built, tmp_path):
    assistant = _assistant(built, tmp_path)
    handlers = ChatHandlers(assistant, stream_delay=0)
    upload = tmp_path / "uploads" / "offsite.md"
    upload.parent.mkdir()
    upload.write_text(OFFSITE, "utf-8")
    steps = []
    report, status = handlers.add_files([str(upload)], progress=lambda step, **kw: steps.append(step))
    assert "Added 1 document" in report and "offsite.md" in report
    assert "6 documents" in status and '<span class="doc-title">团队团建</span>' in handlers.documents_html()
    assert steps and steps[-1][0] == steps[-1][1]  # the progress bar reached the end
    assert (tmp_path / "corpus" / "offsite.md").read_text("utf-8") == OFFSITE
    _, content = _final(handlers, "年度团建地点定在哪里？")
    assert '<span class="doc">offsite.md</span>' in content and "千岛湖" in content


def test_bad_uploads_are_refused_per_file_and_nothing_is_written_elsewhere(built, tmp_path, monkeypatch):
    assistant = _assistant(built, tmp_path, max_file_mb=1)
    handlers = ChatHandlers(assistant, stream_delay=0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    up = tmp_path / "uploads"
    up.mkdir()
    (up / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (up / "tool.exe").write_bytes(b"MZ\x90\x00" * 100)
    (up / "huge.md").write_text("大" * (1 << 20), "utf-8")  # 3 MB, the limit is 1 MB
    (up / "good.md").write_text(OFFSITE, "utf-8")
    files = [str(up / "binary.txt"), str(up / "tool.exe"), str(up / "huge.md"), str(up / ".."), str(up / "good.md")]
    corpus_before = sorted(p.name for p in (tmp_path / "corpus").iterdir())
    outside_before = _tree(tmp_path, skip=("corpus", "index"))
    report, status = handlers.add_files(files)
    assert "Added 1 document" in report and "✓ good.md" in report
    refused = dict(re.findall(r"✗ \*\*(.+?)\*\*: (.+)", report))
    assert set(refused) == {"binary.txt", "tool.exe", "huge.md", ".."}
    assert "unsupported type .exe" in refused["tool.exe"] and "limit is 1 MB" in refused["huge.md"]
    assert "path" in refused[".."] and refused["binary.txt"]
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == sorted([*corpus_before, "good.md"])
    assert _tree(tmp_path, skip=("corpus", "index")) == outside_before  # the staging folder is gone too
    assert "6 documents" in status
    # an upload that is all bad changes nothing, and what was indexed still answers
    report, status = handlers.add_files([str(up / "tool.exe")])
    assert "Nothing added" in report and "6 documents" in status
    assert not assistant.ask("初创公司缺少训练数据怎么办？").abstained


def _tree(root: Path, skip: tuple[str, ...]) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.relative_to(root).parts[0] not in skip)


def test_a_question_asked_while_the_models_load_waits_and_says_so(built, tmp_path):
    handlers = ChatHandlers(_assistant(built, tmp_path), stream_delay=0)
    handlers.ready.clear()  # as start_warm_up leaves it until the models are loaded
    replies = handlers.respond("初创公司缺少训练数据怎么办？", [])
    messages, _ = next(replies)
    assert messages[-1]["content"] == LOADING_MODELS and "Loading the models…" in handlers.status_markdown()
    handlers.ready.set()
    *_, (messages, _) = replies
    assert _numbers(messages[-1]["content"])[1] and "Loading the models" not in handlers.status_markdown()
    handlers.start_warm_up().join(60)  # the fake models load at once
    assert handlers.ready.is_set()


def test_an_english_question_answered_with_chinese_quotes_offers_the_llm(built, tmp_path, monkeypatch):
    assistant = _assistant(built, tmp_path)
    quote = "利用生成对抗网络等技术，对现有数据进行增强，提升数据多样性。"
    answer = Answer("", f"{quote} [1]", False, (Citation(1, "a.md", 0, len(quote), quote, 0.5, line=1),))
    monkeypatch.setattr(assistant, "ask_stream", lambda question, query=None, reader=None:
                        Response.whole(lambda: replace(answer, question=question)))
    handlers = ChatHandlers(assistant, stream_delay=0)
    messages, content = _final(handlers, "How can a small startup get enough training data?")
    assert LANGUAGE_NOTE in content and handlers.offers_llm(messages)
    messages, content = _final(handlers, "初创公司缺少训练数据怎么办？")
    assert LANGUAGE_NOTE not in content and not handlers.offers_llm(messages)


def test_a_builds_progress_is_one_line_for_any_step():
    from assistant.ui import ProgressText, _embedding_progress, with_progress

    progress = ProgressText()
    build = _embedding_progress(progress)  # as the build reports: embedding, and its other steps by name
    build.stage("reading", 3, 12, "document")
    assert re.fullmatch(r"Reading documents 3/12 · \d+ s", progress.line())
    build.stage("checking links", 1, 2, "link")  # a step this page does not know
    assert progress.line().startswith("checking links 1/2 · ")
    build(64, 98)
    assert progress.line().startswith("Embedding passages 64/98 · ")
    *steps, result = with_progress("Adding…", lambda p: ("report", "status"), lambda: "status")
    assert result == ("report", "status") and all(r.startswith("**Adding…** ") for r, _ in steps)


class GatedEmbedder(FakeEmbedder):
    """Embeds normally, except in the rebuild's thread ("index-build…"), which waits until the test lets it go on."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed_documents(self, texts, titles=None):
        if threading.current_thread().name.startswith("index-build"):
            self.entered.set()
            assert self.release.wait(60), "the test never released the rebuild"
        return super().embed_documents(texts, titles)


def test_questions_are_answered_from_the_previous_index_while_rebuilding(built, tmp_path):
    embedder = GatedEmbedder()
    assistant = _assistant(built, tmp_path, embedder=embedder)
    handlers = ChatHandlers(assistant, stream_delay=0)
    assert "5 documents" in handlers.status_markdown()
    (tmp_path / "corpus" / "offsite.md").write_text(OFFSITE, "utf-8")
    steps = handlers.rebuild_steps()
    try:
        report, status = next(steps)  # at once, before anything is read
        assert report.startswith("**Rebuilding the index…**") and "5 documents" in status
        assert embedder.entered.wait(60), "the rebuild never started embedding"
        _, content = _final(handlers, "初创公司缺少训练数据怎么办？")  # served by the old index meanwhile
        assert _numbers(content)[1] and "offsite.md" not in content
        report, status = next(steps)  # half a second later: still waiting to embed, what was done is shown
        assert re.search(r"\*\* \w[\w ]* \d+/\d+ · \d+ s$", report) and "5 documents" in status
    finally:
        embedder.release.set()
    *_, (report, status) = steps
    assert "Index rebuilt" in report and "6 documents" in status
    _, content = _final(handlers, "年度团建地点定在哪里？")
    assert '<span class="doc">offsite.md</span>' in content


# -- the app, launched in this process (fake embedder) -------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def outbound(monkeypatch):
    """Records (and refuses) every connection to a non-loopback address."""
    attempts: list = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "localhost" \
                and not ipaddress.ip_address(address[0]).is_loopback:
            attempts.append(address)
            raise OSError(f"network access blocked in tests: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def test_build_app_wires_the_chat_and_the_documents_panel(built, tmp_path):
    import gradio as gr

    app = build_app(_assistant(built, tmp_path))
    assert isinstance(app, gr.Blocks) and not app.analytics_enabled
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    names = {fn.api_name for fn in app.fns.values()}
    assert {"ask", "add_documents", "rebuild"} <= names
    options = launch_options(Settings())
    assert (options["server_name"], options["server_port"], options["share"]) == ("127.0.0.1", 7860, False)
    assert "googleapis" not in str(options["theme"]._stylesheets)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")  # gradio's own use of pandas
def test_launched_app_answers_and_adds_documents_over_http(built, tmp_path, outbound):
    from gradio_client import Client, handle_file

    assistant = _assistant(built, tmp_path)
    settings = assistant.settings.with_(port=_free_port())
    app = build_app(assistant, settings, stream_delay=0)
    app.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    try:
        client = Client(f"http://127.0.0.1:{settings.port}/", verbose=False)
        history, box = client.predict("初创公司缺少训练数据怎么办？", [], api_name="/ask")
        content = message_text(history[-1]["content"])
        markers, sources = _numbers(content)
        assert box == "" and markers and sorted(set(markers)) == sources
        upload = tmp_path / "offsite.md"
        upload.write_text(OFFSITE, "utf-8")
        report, status, _ = client.predict([handle_file(str(upload))], api_name="/add_documents")
        assert "Added 1 document" in report and "6 documents" in status
        history, _ = client.predict("年度团建地点定在哪里？", history, api_name="/ask")
        assert '<span class="doc">offsite.md</span>' in message_text(history[-1]["content"])
    finally:
        app.close()
    assert outbound == [], "the app or its client tried to reach the internet"


# -- a real server: app.py in a subprocess with the real model ---------------------------------------
@contextmanager
def running_app(folder: Path, index: Path, timeout: float = 300):
    """Start ``python app.py`` on a free port over copies of the corpus and ``index``; yield its URL."""
    shutil.copytree(ROOT / "corpus", folder / "corpus")
    shutil.copytree(index, folder / "index", ignore=shutil.ignore_patterns(".lock"))
    port = _free_port()
    env = offline_env({**os.environ, "ASSISTANT_HOST": "127.0.0.1", "ASSISTANT_PORT": str(port),
                       "ASSISTANT_CORPUS": str(folder / "corpus"), "ASSISTANT_INDEX": str(folder / "index"),
                       "PYTHONUNBUFFERED": "1"})
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:  # poll the port, bounded: the app is ready when it accepts connections
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n{_tail(folder / 'server.log')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not listen on port {port} in {timeout:.0f}s:\n"
                                f"{_tail(folder / 'server.log')}")
                time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])


@pytest.mark.e2e
def test_served_app_answers_a_corpus_question_with_citations(real_index, tmp_path):
    from gradio_client import Client

    with running_app(tmp_path, real_index) as url:
        client = Client(url, verbose=False)
        t0 = time.monotonic()
        history, _ = client.predict("初创公司缺少训练数据怎么办？", [], api_name="/ask")
        first = time.monotonic() - t0
        content = message_text(history[-1]["content"])
        markers, sources = _numbers(content)
        assert markers and sorted(set(markers)) == sources, content
        assert '<span class="doc">000_6d8c0b3cedab2c30.txt</span>' in content and "数据增强" in content
        t0 = time.monotonic()
        history, _ = client.predict("How can a small startup get enough compute?", history, api_name="/ask")
        warm = time.monotonic() - t0
        assert "云计算" in message_text(history[-1]["content"])
    print(f"\nUI over HTTP, real model: first answer {first:.1f}s after the port opened, warm answer {warm:.1f}s")


def test_serve_command_starts_the_ui_with_host_and_port(monkeypatch, tmp_path):
    import assistant.api as api
    import assistant.cli as cli

    started = []
    monkeypatch.setattr(cli, "_assistant", lambda settings: "the assistant")
    monkeypatch.setattr(api, "serve", lambda assistant, settings: started.append((assistant, settings)))
    assert cli.main(["serve", "--host", "127.0.0.2", "--port", "8123", "--index", str(tmp_path / "i"),
                     "--corpus", str(tmp_path / "c")]) == 0
    (assistant, settings), = started
    assert assistant == "the assistant" and (settings.host, settings.port) == ("127.0.0.2", 8123)
    assert (settings.index, settings.corpus) == (tmp_path / "i", tmp_path / "c")
    assert cli.main(["serve", "--port", "-1"]) == 2  # a bad port is one clear error line


def test_warm_up_loads_the_index_the_embedder_and_the_readers_model(monkeypatch):
    """The app loads everything the first answer needs in the background: the span reader's model and jieba too."""
    from types import SimpleNamespace

    from assistant import lexical
    from assistant.ui import warm_up

    calls = []
    assistant = SimpleNamespace(status=lambda: calls.append("status"),
                                embedder=SimpleNamespace(embed_queries=lambda texts: calls.append("embed")),
                                reader=SimpleNamespace(name="span", load=lambda: calls.append("load")))
    monkeypatch.setattr(lexical, "_jieba", None)  # as in a fresh process
    warm_up(assistant)
    assert sorted(calls) == ["embed", "load", "status"]  # side by side (pipeline.warm_up), all done on return
    assert lexical._jieba is not None  # the lexical query's tokenizer: its dictionary load is not the first answer's
