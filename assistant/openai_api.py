"""The OpenAI-compatible endpoints, ``POST /v1/chat/completions`` and ``GET /v1/models`` (``api.create_api`` adds them).

Any OpenAI client or chat front end can ask: the last user message is the question, the messages before it the
conversation (a follow-up is searched for with its topic, as on the chat page). The reply's content is the
answer's text with its ``[n]`` markers; the response (and, streaming, its last chunk) carries two fields more:
``citations`` (each ``{n, source, start, end, quote, score, line, page, why}``) and ``answer`` (the whole JSON of
``assistant ask --json``). A stream sends the text once it is checked against the documents (a writing reader's
draft is not sent: it may change), then the last chunk, then ``[DONE]``.

``model`` chooses the reader: ``assistant-span``, ``assistant-extractive`` or ``assistant-llm``; any other name
(``assistant``, or a client's default) gets the server's reader. Options such as ``temperature`` are accepted and
ignored: the answer is quoted from the documents.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .api import NO_CACHE, ApiError, Message, authorized, public, service_of, unexpected
from .config import READERS
from .errors import AssistantError

log = logging.getLogger(__name__)

MODELS = ("assistant", *(f"assistant-{name}" for name in READERS))
_PIECE = re.compile(r"[^\n。！？!?]*[\n。！？!?]*")  # a sentence or a line, with its end marks


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens, ...: accepted, ignored
    model: str = Field("assistant", description="assistant-span, assistant-extractive or assistant-llm pick the "
                       "reader; any other name gets the server's reader")
    messages: list[Message] = Field(min_length=1, description="the conversation; the last one is the question")
    stream: bool = False


router = APIRouter(prefix="/v1", dependencies=[Depends(authorized)])


@router.get("/models", summary="The models (readers) this server answers with")
def models() -> dict:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "assistant"}
                                       for m in MODELS]}


@router.post("/chat/completions", summary="OpenAI-compatible chat: cited answers, citations in an extra field")
def chat_completions(body: ChatRequest, request: Request):
    service = service_of(request)
    messages = [m.plain() for m in body.messages]
    if messages[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's question")
    chosen = body.model.removeprefix("assistant-") if body.model.removeprefix("assistant-") in READERS else None
    question, query, reader = service.prepare(messages[-1]["content"], messages[:-1], chosen)
    response = service.assistant.ask_stream(question, query=query, reader=reader)
    model = f"assistant-{(reader or service.assistant.reader).name}"
    reply = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
    if body.stream:
        return StreamingResponse(_chunks(reply, response), media_type="text/event-stream", headers=NO_CACHE)
    answer = response.answer()
    return {**reply, "object": "chat.completion", "choices": [{
        "index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop",
        "logprobs": None}], **_extra(answer)}


def _extra(answer) -> dict:
    whole = answer.to_dict()
    return {"citations": whole["citations"], "answer": whole}


def _chunks(reply: dict, response) -> Iterator[str]:
    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
        return _data({**reply, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra})

    yield chunk({"role": "assistant", "content": ""})
    try:
        answer = response.answer()  # a writing reader's draft is read here, not sent: the checked text follows
    except AssistantError as exc:
        yield _data({"error": {"message": public(str(exc)), "type": "invalid_request_error"}})
        return
    except Exception as exc:  # the API edge: one line for the caller, the traceback in the log
        log.exception("answering failed")
        yield _data({"error": {"message": unexpected(exc), "type": "server_error"}})
        return
    for piece in pieces(answer.text):
        yield chunk({"content": piece})
    yield chunk({}, "stop", **_extra(answer))
    yield "data: [DONE]\n\n"


def pieces(text: str) -> list[str]:
    """``text`` in sentences and lines (their end marks kept): joined, they are ``text`` exactly."""
    return [p for p in _PIECE.findall(text) if p]


def _data(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
