"""The LangChain retriever (assistant/integrations/langchain.py) with the fake embedder, and LangChain's standard
retriever tests over that index (over the real index: test_integrations_e2e.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("langchain_core", reason="the langchain extra: pip install -e '.[langchain]'")
pytest.importorskip("langchain_tests", reason="langchain-tests is a test dependency: make install")

from langchain_core.documents import Document  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402

from assistant.integrations.langchain import AssistantRetriever  # noqa: E402
from test_api import QUESTION, built, make_assistant  # noqa: E402,F401  (built: a fixture)

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


class Recording:
    """The assistant's own reader, remembering the passages it was given."""

    def __init__(self, reader) -> None:
        self.reader, self.name, self.loaded, self.seen = reader, reader.name, True, []

    def load(self) -> None:
        pass

    def stream(self, passages):
        self.seen.append(passages.hits)
        return self.reader.stream(passages)

    def read(self, passages):
        return self.stream(passages).answer()


@pytest.fixture
def assistant(built, tmp_path):
    return make_assistant(built, tmp_path)


def test_documents_are_the_passages_an_answer_is_read_from_in_order(assistant, tmp_path):
    recording = Recording(assistant.reader)
    answer = assistant.ask(QUESTION, reader=recording)
    documents = AssistantRetriever(assistant=assistant).invoke(QUESTION)
    hits = recording.seen[0]
    assert len(documents) == len(hits) == assistant.settings.top_k
    assert [(d.metadata["source"], d.metadata["start"], d.metadata["end"]) for d in documents] == \
        [(h.chunk.source, h.chunk.start, h.chunk.end) for h in hits]
    for c in answer.citations:  # every citation of the answer lies inside a retrieved passage
        assert any(d.metadata["source"] == c.source and d.metadata["start"] <= c.start < c.end <= d.metadata["end"]
                   for d in documents)


def test_each_document_is_exact_and_carries_where_and_why(assistant, tmp_path):
    documents = AssistantRetriever(assistant=assistant, k=3).invoke(QUESTION)
    assert len(documents) == 3 and all(isinstance(d, Document) for d in documents)
    for rank, d in enumerate(documents, 1):
        m = d.metadata
        text = (tmp_path / "corpus" / m["source"]).read_text("utf-8")
        assert text[m["start"]:m["end"]] == d.page_content
        assert m["line"] == text.count("\n", 0, m["start"]) + 1 and m["page"] is None
        assert m["scores"]["fused_rank"] == rank and {"dense", "lexical", "matched_terms"} <= set(m["scores"])
        assert d.id == f"{m['source']}:{m['start']}-{m['end']}"
    assert len(AssistantRetriever(assistant=assistant).invoke(QUESTION, k=1)) == 1


def test_the_answer_span_is_on_the_passage_that_holds_it(assistant):
    from dataclasses import replace

    from assistant.reader import Response
    from assistant.types import Citation

    class Spanning:  # a reader model stand-in: the second passage's first five characters are the answer
        name, loaded = "span", True

        def load(self):
            pass

        def read(self, passages):
            hit = passages.hits[1]
            span = Citation(1, hit.chunk.source, hit.chunk.start, hit.chunk.start + 5, hit.chunk.text[:5], 0.8)
            return replace(assistant.reader.read(passages), span=span)

        def stream(self, passages):
            return Response.whole(lambda: self.read(passages))

    assistant._readers["span"] = Spanning()  # what reader_named("span") gives
    documents = AssistantRetriever(assistant=assistant).invoke(QUESTION)
    assert "answer_span" not in documents[0].metadata
    span = documents[1].metadata["answer_span"]
    assert span["text"] == documents[1].page_content[:5] and span["start"] == documents[1].metadata["start"]
    plain = AssistantRetriever(assistant=assistant, answer_span=False).invoke(QUESTION)
    assert all("answer_span" not in d.metadata for d in plain)


def test_langchain_is_imported_only_by_the_integration():
    code = ("import sys, assistant, assistant.cli, assistant.pipeline, assistant.api\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain_text_splitters')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


class TestStandardRetrieverTests(RetrieversIntegrationTests):
    """LangChain's own checks of a retriever (k in the constructor and in invoke, sync and async)."""

    pytestmark = pytest.mark.anyio  # its async test, on asyncio (anyio's plugin: Starlette's dependency)

    @pytest.fixture(autouse=True)
    def _assistant(self, assistant):
        type(self).made_for = assistant

    @property
    def retriever_constructor(self):
        return AssistantRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"assistant": self.made_for}

    @property
    def retriever_query_example(self) -> str:
        return QUESTION
