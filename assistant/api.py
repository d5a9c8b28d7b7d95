"""The HTTP API, served by ``assistant serve`` beside the chat page, on the same port.

``create_api(assistant, settings)`` is the FastAPI app of the API alone (tests use it); ``create_app`` mounts the
chat page (``ui.build_app``) at ``/`` beside it; ``serve`` checks the address and the port, loads the models in the
background and runs the app. The OpenAI-compatible ``/v1`` endpoints are in ``openai_api``.

- ``POST /api/ask``: the JSON of ``assistant ask --json`` (``"stream": true``: server-sent events);
- ``GET /api/documents``, ``POST /api/documents`` (multipart upload, the page's checks: ``uploads``),
  ``DELETE /api/documents/{source}``; ``GET /api/status``; the OpenAPI description at ``/api/openapi.json``,
  readable at ``/api/docs`` (a page made here: no script or style from elsewhere).

Errors are ``{"error": "<one line>"}``: 400 bad input, 401 without the key (or a wrong one), 404 unknown document,
409 a change the index cannot take, 413 too large, 503 while the models load or without a usable index. Nothing in a
response names a server path (``public``); request bodies are limited (``body_limit``). FastAPI comes with this
module, Gradio with ``create_app``; ``assistant serve`` and the tests import it, ``import assistant`` does not.
"""
from __future__ import annotations

import hmac
import html
import inspect
import ipaddress
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from . import __version__
from .body_limit import BodyLimit
from .config import READERS, Settings
from .conversation import message_text, resolve_query
from .errors import AssistantError, ConfigError, IndexStoreError, ModelError, NoIndexError
from .language import printable
from .uploads import stage_uploads

log = logging.getLogger(__name__)

LOADING = "the models are still loading; ask again in a few seconds"
NO_CACHE = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])~?/[^\s'\"`,;:()<>]+")


class ApiError(Exception):
    """An error response: its status, one line for the caller, and any extra fields or headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


def public(message: str) -> str:
    """``message`` without server paths: each absolute path becomes its last part ("/srv/x/index" -> "index")."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group().rstrip("/").rsplit("/", 1)[-1] or "/", message)


def status_of(error: AssistantError) -> int:
    """The HTTP status of an AssistantError: 503 when the index or a model cannot be used, else 400 (bad input)."""
    return 503 if isinstance(error, (IndexStoreError, ModelError)) else 400


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """ConfigError (one line) for a server that would listen beyond this machine without an API key."""
    if not settings.api_key and not is_loopback(settings.host):
        raise ConfigError(f"refusing to listen on {settings.host} without an API key: anyone who can reach it could "
                          "read and change the documents; set ASSISTANT_API_KEY (every API call then needs it and the "
                          "page asks for it) or listen on 127.0.0.1")


# -- what the endpoints share -------------------------------------------------------------------------
class Service:
    """The assistant behind the endpoints; ``ready``: the models are loaded (the page's warm-up clears it until
    they are); ``changing``: one change of the index at a time from the API."""

    def __init__(self, assistant, settings: Settings, ready: threading.Event | None = None) -> None:
        self.assistant, self.settings = assistant, settings
        if ready is None:
            ready = threading.Event()
            ready.set()
        self.ready = ready
        self.changing = threading.Lock()

    def require_ready(self) -> None:
        if not self.ready.is_set():
            raise ApiError(503, LOADING, {"Retry-After": "5"})

    def prepare(self, question: str, history: list[dict], reader: str | None):
        """(question, query or None, reader or None) for ``Assistant.ask_stream``: the question checked (400
        before any answer starts), a follow-up searched with the conversation's topic, as on the page."""
        self.require_ready()
        question = self.assistant.clean_question(question)
        query = resolve_query(question, history, self.settings.max_question_chars)
        chosen = None if reader in (None, self.assistant.reader.name) else self.assistant.reader_named(reader)
        return question, (query if query != question else None), chosen


def service_of(request: Request) -> Service:
    return request.app.state.service


_bearer = HTTPBearer(auto_error=False, description="ASSISTANT_API_KEY, when the server has one")


def authorized(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """401 unless the request carries the server's key (when it has one) as ``Authorization: Bearer <key>``."""
    key = service_of(request).settings.api_key
    if key and (credentials is None or not hmac.compare_digest(credentials.credentials.encode(), key.encode())):
        raise ApiError(401, "missing or wrong API key: send the header Authorization: Bearer <ASSISTANT_API_KEY>",
                       {"WWW-Authenticate": "Bearer"})


# -- requests -----------------------------------------------------------------------------------------
class Message(BaseModel):
    """One message of a conversation: ``content`` a string, or OpenAI's list of ``{"type": "text", "text"}`` parts."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def plain(self) -> dict:
        return {"role": self.role, "content": message_text(self.content)}


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(description="the question, in Chinese or English")
    history: list[Message] = Field(default_factory=list, description="the conversation so far: a follow-up "
                                   "question is searched for with its topic, as on the chat page")
    k: int | None = Field(None, ge=1, le=100, description="passages to retrieve (default ASSISTANT_TOP_K)")
    reader: Literal["span", "extractive", "llm"] | None = Field(None, description="default: the server's reader")
    stream: bool = Field(False, description="server-sent events: `delta` (text as a writing reader writes it), "
                         "then `answer` (the checked answer) or `error`")


# -- /api ---------------------------------------------------------------------------------------------
router = APIRouter(prefix="/api", dependencies=[Depends(authorized)])


@router.post("/ask", summary="Answer a question with verified citations", responses={
    200: {"description": "the JSON object of `assistant ask --json`; with `stream`, text/event-stream"}})
def ask(body: AskRequest, request: Request):
    service = service_of(request)
    question, query, reader = service.prepare(body.question, [m.plain() for m in body.history], body.reader)
    response = service.assistant.ask_stream(question, body.k, query, reader=reader)
    if not body.stream:
        return response.answer().to_dict()
    return StreamingResponse(_answer_events(response), media_type="text/event-stream", headers=NO_CACHE)


def _answer_events(response) -> Iterator[str]:
    try:
        for delta in response:
            yield event("delta", {"text": delta})
        yield event("answer", response.answer().to_dict())
    except AssistantError as exc:
        yield event("error", {"error": public(str(exc))})
    except Exception as exc:  # the API edge: one line for the caller, the traceback in the log
        log.exception("answering failed")
        yield event("error", {"error": unexpected(exc)})


def event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.get("/documents", summary="The indexed documents (as `assistant index list --json`)")
def documents(request: Request) -> dict:
    try:
        found = service_of(request).assistant.status().documents
    except NoIndexError:
        found = ()
    return {"documents": [d.to_dict() for d in found]}


@router.post("/documents", summary="Add documents (txt, md, pdf, docx), checked as the page checks uploads")
def add_documents(request: Request, files: list[UploadFile] = File(description="one or more files"),
                  replace: bool = Form(False, description="replace a document of the same name whose content "
                                                          "differs (without it, such a file is refused)")) -> dict:
    service = service_of(request)
    service.require_ready()
    limit = service.settings.max_file_mb << 20
    for upload in files:
        if (upload.size or 0) > limit:
            raise ApiError(413, f"{printable(upload.filename or '?')}: the file is {upload.size / (1 << 20):.1f} MB; "
                                f"the limit is {service.settings.max_file_mb} MB (ASSISTANT_MAX_FILE_MB)")
    with tempfile.TemporaryDirectory(prefix="assistant-api-upload-") as folder:
        received = []
        for i, upload in enumerate(files):
            path = Path(folder) / f"upload-{i}"
            with path.open("wb") as out:
                shutil.copyfileobj(upload.file, out)
            received.append((path, upload.filename or ""))
        (Path(folder) / "staged").mkdir()
        staged, refused = stage_uploads(received, Path(folder) / "staged", limit)
        if staged:
            with service.changing:
                report = service.assistant.add(staged, replace=replace)
            refused += report.refused
    refusals = [{"name": name, "reason": public(reason)} for name, reason in refused]
    if not staged or not (report.added or report.replaced or report.already_indexed):
        raise ApiError(400, "nothing added: " + "; ".join(f"{r['name']}: {r['reason']}" for r in refusals),
                       refused=refusals)
    return {"added": list(report.added), "replaced": list(report.replaced),
            "already_indexed": list(report.already_indexed), "refused": refusals,
            "documents": report.build.documents, "chunks": report.build.chunks}


@router.delete("/documents/{source:path}", summary="Remove a document (its source name, URL-encoded)")
def remove_document(source: str, request: Request) -> dict:
    service = service_of(request)
    service.require_ready()
    indexed = {d.source for d in service.assistant.status().documents}
    if source not in indexed:
        raise ApiError(404, f"no document {printable(source)!r} in the index (GET /api/documents lists them)")
    if len(indexed) == 1:
        raise ApiError(409, "an index needs at least one document: add another before removing the last")
    with service.changing:
        report = service.assistant.remove([source])
    return {"removed": list(report.removed), "documents": report.documents, "chunks": report.chunks,
            "seconds": round(report.seconds, 2)}


@router.get("/status", summary="Whether the models are loaded, and what the index holds")
def status(request: Request) -> dict:
    service = service_of(request)
    out = {"ready": service.ready.is_set(), "version": __version__, "reader": service.assistant.reader.name,
           "readers": list(READERS)}
    try:
        held = service.assistant.status()
    except AssistantError as exc:
        return {**out, "index": None, "problem": public(str(exc))}
    return {**out, "problem": "", "index": {
        "documents": len(held.documents), "chunks": held.chunks, "embedding_model": public(held.embedding_model),
        "built_at": held.built_at, "vector_store": public(held.vector_store),
        "skipped": [{"source": s, "reason": public(r)} for s, r in held.skipped]}}


# -- the app ------------------------------------------------------------------------------------------
def create_api(assistant, settings: Settings | None = None, ready: threading.Event | None = None) -> FastAPI:
    """The API for ``assistant`` (/api and /v1): errors as JSON, the key checked, bodies limited, CORS only when
    configured. ``ready``: set once the models are loaded (until then questions get 503)."""
    from .openai_api import router as openai_router

    settings = settings or assistant.settings
    app = FastAPI(title="assistant", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json", description="Answers from your documents, with exact, verified "
                  "citations. With ASSISTANT_API_KEY set, send `Authorization: Bearer <key>`.")
    app.state.service = Service(assistant, settings, ready)
    app.include_router(router)
    app.include_router(openai_router)
    app.add_api_route("/api/docs", _docs_page, include_in_schema=False, response_class=HTMLResponse)
    for kind in (ApiError, AssistantError, HTTPException, RequestValidationError, Exception):
        app.add_exception_handler(kind, _error_response)
    app.add_middleware(BodyLimit, json_bytes=settings.max_request_kb << 10, upload_bytes=settings.max_upload_mb << 20)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def unexpected(exc: Exception) -> str:
    return f"something went wrong ({exc.__class__.__name__}); see the server log"


async def _error_response(request: Request, exc: Exception) -> JSONResponse:
    headers, extra = None, {}
    if isinstance(exc, ApiError):
        status, message, headers, extra = exc.status, exc.message, exc.headers, exc.extra
    elif isinstance(exc, AssistantError):
        status, message = status_of(exc), public(str(exc))
    elif isinstance(exc, RequestValidationError):
        status, message = 400, "; ".join(_invalid(e) for e in exc.errors()[:3])
    elif isinstance(exc, HTTPException):
        status, message, headers = exc.status_code, str(exc.detail), getattr(exc, "headers", None)
    else:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        status, message = 500, unexpected(exc)
    if request.url.path.startswith("/v1/"):  # OpenAI's shape, which its clients read
        kind = {401: "authentication_error", 404: "not_found_error", 503: "service_unavailable"}.get(
            status, "invalid_request_error" if status < 500 else "server_error")
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status,
                            headers)
    return JSONResponse({"error": message, **extra}, status, headers)


def _invalid(error: dict) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid request"))


def _docs_page(request: Request) -> str:
    """The endpoints, read from the OpenAPI description: no Swagger UI, which would load its script from a CDN."""
    spec = request.app.openapi()
    rows = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op.get('summary', ''))}</td></tr>")
    return ("<!doctype html><meta charset='utf-8'><title>assistant API</title><style>body{font:15px system-ui;"
            "margin:2em auto;max-width:60em}td{padding:.3em 1em;border-bottom:1px solid #ddd}</style>"
            f"<h1>assistant API {html.escape(spec['info']['version'])}</h1>"
            f"<p>{html.escape(spec['info']['description'])}"
            "</p><table>" + "".join(rows) + "</table><p>The full description: <a href='/api/openapi.json'>"
            "/api/openapi.json</a> (OpenAPI 3).</p>")


# -- the page beside it, and the server ---------------------------------------------------------------
def create_app(assistant, settings: Settings, handlers=None) -> FastAPI:
    """The API with the chat page (``ui.build_app``) mounted at ``/``; ``handlers``: the page's ChatHandlers,
    whose ``ready`` the API shares (``serve`` warms the models up through them)."""
    from . import ui

    handlers = handlers or ui.ChatHandlers(assistant, settings)
    app = create_api(assistant, settings, handlers.ready)
    page = ui.build_app(assistant, settings, handlers=handlers)
    import gradio as gr  # after build_app: it switched Gradio's analytics off before the first import

    return gr.mount_gradio_app(app, page, "/", **page_options(settings))


def page_options(settings: Settings) -> dict:
    """``ui.launch_options`` as ``gradio.mount_gradio_app`` takes them (theme and styles included; ``share``
    has no meaning there), with a login asking for the API key when the server has one."""
    import gradio as gr

    from . import ui

    accepted = inspect.signature(gr.mount_gradio_app).parameters
    options = {k: v for k, v in ui.launch_options(settings).items() if k in accepted}
    if settings.api_key:
        key = settings.api_key.encode()
        options["auth"] = lambda _user, password: hmac.compare_digest((password or "").encode(), key)
        options["auth_message"] = "Enter the server's API key (ASSISTANT_API_KEY) as the password; any user name."
    return options


def serve(assistant, settings: Settings) -> None:
    """Serve the page and the API on settings.host:settings.port and block; the models load in the background."""
    import uvicorn

    from . import ui

    check_exposure(settings)
    ui.check_port(settings.host, settings.port)
    handlers = ui.ChatHandlers(assistant, settings)
    app = create_app(assistant, settings, handlers)
    handlers.start_warm_up()
    log.info("the page at /, the API at /api (described at /api/docs), OpenAI-compatible at /v1%s",
             "; every API call needs the key" if settings.api_key else "")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False, server_header=False)
