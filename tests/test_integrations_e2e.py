"""End-to-end: the same 5 questions through every way in, with the real model on the real corpus, offline.

The Python API, the CLI (``assistant ask --json`` in a subprocess), ``POST /api/ask``, ``/v1/chat/completions``
(the official openai client) and the LangChain retriever must agree: the same answers with the same citations,
and the retriever's documents are the passages the answer was read from, in order. One server (the page and the
API, as ``assistant serve`` runs them) and one index serve the module. LangChain's standard retriever tests run
over the real index too. The time each way takes is printed (``-s``), not asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from assistant import api
from offline_guard import offline_env
from test_api import same, serving
from test_langchain import Recording

openai = pytest.importorskip("openai", reason="the openai client is a test dependency: make install")
pytest.importorskip("langchain_tests", reason="langchain-tests is a test dependency: make install")
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402

from assistant.integrations.langchain import AssistantRetriever  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")]

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ("初创公司缺少训练数据怎么办？", "How can a small startup get enough compute?",
             "Transformer 文本分类示例里 d_model 设为多少？",  # the reader model's exact answer span: 512
             "大模型训练时怎样让数据输入更快？", "How much money did Zhipu AI raise in its most recent funding round?")


@pytest.fixture(scope="module")
def url(real_assistant):
    with serving(api.create_app(real_assistant, real_assistant.settings)) as url:
        yield url


def _timed(ask) -> tuple[list, list[float]]:
    out, seconds = [], []
    for question in QUESTIONS:
        t0 = time.perf_counter()
        out.append(ask(question))
        seconds.append(time.perf_counter() - t0)
    return out, seconds


def test_five_questions_get_the_same_cited_answers_through_every_interface(real_assistant, real_index, url):
    for question in QUESTIONS[:1]:  # a first question, untimed: the reader model loads
        real_assistant.ask(question)
    recording = Recording(real_assistant.reader)
    python, python_s = _timed(lambda q: real_assistant.ask(q, reader=recording).to_dict())
    assert [a["abstained"] for a in python] == [False, False, False, False, True]
    assert all(a["citations"] for a in python[:4])
    assert python[2]["answer_span"]["text"] == "512"

    t0 = time.perf_counter()
    env = offline_env({**os.environ, "ASSISTANT_INDEX": str(real_index), "ASSISTANT_CORPUS": str(ROOT / "corpus")})
    run = subprocess.run([sys.executable, "-m", "assistant", "ask", "--json", *QUESTIONS], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    cli_s = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr[-2000:]
    cli = [json.loads(line) for line in run.stdout.splitlines()]

    with httpx.Client(base_url=url, timeout=120) as http:
        rest, rest_s = _timed(lambda q: http.post("/api/ask", json={"question": q}).raise_for_status().json())
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not needed on 127.0.0.1", max_retries=0, timeout=120)
    chat, chat_s = _timed(lambda q: client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": q}]))
    retriever = AssistantRetriever(assistant=real_assistant)
    documents, documents_s = _timed(retriever.invoke)

    for i, question in enumerate(QUESTIONS):
        expected = python[i]
        assert same(cli[i], expected), question
        assert same(rest[i], expected), question
        assert chat[i].choices[0].message.content == expected["answer"], question
        assert same(chat[i].model_extra["answer"], expected) and chat[i].model_extra["citations"] == \
            expected["citations"], question
        hits = recording.seen[i]
        assert [(d.metadata["source"], d.metadata["start"], d.metadata["end"], d.page_content)
                for d in documents[i]] == [(h.chunk.source, h.chunk.start, h.chunk.end, h.chunk.text) for h in hits]
        for c in expected["citations"]:
            assert any(d.metadata["source"] == c["source"] and d.metadata["start"] <= c["start"] < c["end"]
                       <= d.metadata["end"] for d in documents[i]), question
        spans = [d.metadata["answer_span"] for d in documents[i] if "answer_span" in d.metadata]
        span = expected["answer_span"]
        assert spans == ([] if span is None else [{k: span[k] for k in ("start", "end", "text", "score")}]), question

    cli_ms = [row["timings_ms"]["total"] / 1000 for row in cli]
    print("\nseconds per question (5 questions, the real model; the CLI process also loads the models):")
    for name, seconds in (("Python API (Assistant.ask)", python_s), ("CLI, in its JSON timings_ms", cli_ms),
                          ("POST /api/ask", rest_s), ("/v1/chat/completions (openai)", chat_s),
                          ("LangChain retriever.invoke", documents_s)):
        print(f"  {name:32} {' '.join(f'{s:5.2f}' for s in seconds)}   mean {sum(seconds) / len(seconds):.2f}")
    print(f"  CLI process, all 5 questions:    {cli_s:.1f} s wall")


def test_the_api_streams_the_same_answer(real_assistant, url):
    expected = real_assistant.ask(QUESTIONS[1]).to_dict()
    with httpx.Client(base_url=url, timeout=120) as http:
        with http.stream("POST", "/api/ask", json={"question": QUESTIONS[1], "stream": True}) as reply:
            body = reply.read().decode("utf-8")
    blocks = [dict(line.split(": ", 1) for line in b.splitlines()) for b in body.strip().split("\n\n")]
    assert blocks[-1]["event"] == "answer" and same(json.loads(blocks[-1]["data"]), expected)
    stream = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0).chat.completions.create(
        model="assistant", stream=True, messages=[{"role": "user", "content": QUESTIONS[1]}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected["answer"]
    assert chunks[-1].model_extra["citations"] == expected["citations"]


class TestStandardRetrieverTestsOnTheRealIndex(RetrieversIntegrationTests):
    """LangChain's standard retriever tests, over the real index with the real model."""

    pytestmark = pytest.mark.anyio  # its async test, on asyncio (anyio's plugin: Starlette's dependency)

    @pytest.fixture(autouse=True)
    def _assistant(self, real_assistant):
        type(self).made_for = real_assistant

    @property
    def retriever_constructor(self):
        return AssistantRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"assistant": self.made_for}

    @property
    def retriever_query_example(self) -> str:
        return QUESTIONS[0]
