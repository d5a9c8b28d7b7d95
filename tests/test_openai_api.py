"""The OpenAI-compatible endpoint (assistant/openai_api.py), called with the official ``openai`` client against a
running server (uvicorn on a free 127.0.0.1 port, the fake embedder)."""
from __future__ import annotations

import pytest

from assistant import api
from assistant.conversation import resolve_query
from assistant.openai_api import MODELS, pieces
from test_api import KEY, QUESTION, Scripted, built, make_assistant, serving  # noqa: F401  (built: a fixture)

openai = pytest.importorskip("openai", reason="the openai client is a test dependency: make install")


@pytest.fixture
def server(built, tmp_path):
    """(assistant, OpenAI client) for a server that needs the key."""
    assistant = make_assistant(built, tmp_path, api_key=KEY)
    with serving(api.create_api(assistant)) as url:
        yield assistant, openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_a_plain_client_gets_the_cited_answer_and_its_citations(server):
    assistant, client = server
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "system", "content": "You are helpful."}, {"role": "user", "content": QUESTION}])
    expected = assistant.ask(QUESTION).to_dict()
    content = completion.choices[0].message.content
    assert content == expected["answer"] and "[1]" in content and completion.choices[0].finish_reason == "stop"
    extra = completion.model_extra
    assert extra["citations"] == expected["citations"] and extra["citations"]
    assert {k: v for k, v in extra["answer"].items() if k != "timings_ms"} == \
        {k: v for k, v in expected.items() if k != "timings_ms"}
    assert completion.model == f"assistant-{assistant.reader.name}"


def test_streaming_sends_the_checked_text_then_the_citations(server):
    assistant, client = server
    stream = client.chat.completions.create(model="assistant", stream=True,
                                            messages=[{"role": "user", "content": QUESTION}])
    chunks = list(stream)
    expected = assistant.ask(QUESTION).to_dict()
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == expected["answer"] and len(chunks) > 3
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and last.model_extra["citations"] == expected["citations"]
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_a_writing_readers_draft_is_not_sent_only_its_checked_answer(built, tmp_path):
    assistant = make_assistant(built, tmp_path, reader=Scripted())
    with serving(api.create_api(assistant)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="assistant", stream=True,
                                                messages=[{"role": "user", "content": QUESTION}])
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "The answer is here [1]"


def test_follow_ups_use_the_conversation_in_messages(server):
    assistant, client = server
    first = client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": QUESTION}])
    messages = [{"role": "user", "content": QUESTION},
                {"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": [{"type": "text", "text": "那第二点具体怎么做？"}]}]
    follow_up = client.chat.completions.create(model="assistant", messages=messages)
    query = resolve_query("那第二点具体怎么做？", messages[:2])
    assert query.startswith(QUESTION) and follow_up.model_extra["answer"]["query"] == query
    assert follow_up.choices[0].message.content == assistant.ask("那第二点具体怎么做？", query=query).text


def test_models_name_the_readers_and_the_model_picks_one(server):
    assistant, client = server
    assert [m.id for m in client.models.list()] == list(MODELS)
    quoted = client.chat.completions.create(model="assistant-extractive",
                                            messages=[{"role": "user", "content": QUESTION}])
    assert quoted.model == "assistant-extractive"


def test_errors_reach_the_client_as_openai_errors(server):
    assistant, client = server
    with pytest.raises(openai.BadRequestError, match="last message must be the user"):
        client.chat.completions.create(model="assistant", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="the question is empty"):
        client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "  "}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="assistant", messages=[])
    for key in ("wrong", KEY + "x"):
        other = client.with_options(api_key=key)
        with pytest.raises(openai.AuthenticationError, match="API key"):
            other.chat.completions.create(model="assistant", messages=[{"role": "user", "content": QUESTION}])
        with pytest.raises(openai.AuthenticationError):
            other.models.list()


def test_pieces_join_to_the_text_exactly():
    for text in ("", "一。二！三？\n\n- four [1]\n", "No end mark", "a.b? c!\n\n\n[2]"):
        assert "".join(pieces(text)) == text
    assert pieces("一。二！\n三") == ["一。", "二！\n", "三"]
