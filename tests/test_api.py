"""The HTTP API (assistant/api.py) with the fake embedder: answers, streaming, documents, errors, limits, the key.

In process through Starlette's TestClient, and as ``assistant serve`` runs it (uvicorn, the page mounted at /)
on a free 127.0.0.1 port in a thread (``serving``; test_openai_api.py uses it too). The same questions through
every interface with the real model: test_integrations_e2e.py.
"""
from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from assistant import api
from assistant.config import Settings
from assistant.conversation import resolve_query
from assistant.errors import ConfigError
from assistant.pipeline import Assistant
from assistant.reader import Reading, Response, cite_passage
from assistant.testing import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "初创公司缺少训练数据怎么办？"
OFFSITE = "# 团队团建\n\n我们的年度团建地点定在杭州千岛湖，时间是十月第二周，预算每人两千元。\n"
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The default corpus indexed once with the fake embedder; each test works on its own copy."""
    folder = tmp_path_factory.mktemp("api-built")
    shutil.copytree(ROOT / "corpus", folder / "corpus")
    Assistant(Settings(corpus=folder / "corpus", index=folder / "index"), embedder=FakeEmbedder()).build()
    return folder


def make_assistant(built: Path, tmp_path: Path, reader=None, **settings) -> Assistant:
    shutil.copytree(built / "corpus", tmp_path / "corpus")
    shutil.copytree(built / "index", tmp_path / "index")
    values = {"min_evidence": 0.01, **settings}
    return Assistant(Settings(corpus=tmp_path / "corpus", index=tmp_path / "index", **values),
                     embedder=FakeEmbedder(), reader=reader)


def client(assistant: Assistant, ready: threading.Event | None = None, **settings) -> TestClient:
    return TestClient(api.create_api(assistant, assistant.settings.with_(**settings), ready))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, timeout: float = 60):
    """``app`` served by uvicorn on a free 127.0.0.1 port in a thread, as ``serve`` runs it; yields its URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:  # bounded: the server is up when uvicorn says so
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"the server did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def events(text: str) -> list[tuple[str, dict]]:
    """(event, data) of each server-sent event in ``text``."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def same(a: dict, b: dict) -> bool:
    """Two answers' JSON alike but for their timings."""
    return {k: v for k, v in a.items() if k != "timings_ms"} == {k: v for k, v in b.items() if k != "timings_ms"}


# -- asking -------------------------------------------------------------------------------------------
def test_ask_returns_the_json_of_ask_json(built, tmp_path):
    assistant = make_assistant(built, tmp_path)
    reply = client(assistant).post("/api/ask", json={"question": QUESTION})
    assert reply.status_code == 200
    body = reply.json()
    assert same(body, assistant.ask(QUESTION).to_dict()) and body["citations"] and not body["abstained"]
    for c in body["citations"]:
        assert (tmp_path / "corpus" / c["source"]).read_text("utf-8")[c["start"]:c["end"]] == c["quote"]
    few = client(assistant).post("/api/ask", json={"question": QUESTION, "k": 1, "reader": "extractive"}).json()
    assert same(few, assistant.ask(QUESTION, k=1).to_dict())


class Scripted:
    """A reader that writes its answer in two pieces, citing the first passage."""

    name, loaded = "scripted", True

    def load(self) -> None:
        pass

    def stream(self, passages) -> Response[Reading]:
        def run():
            yield "The answer "
            yield "is here [1]"
            hit = passages.hits[0]
            return Reading("The answer is here [1]", False, (cite_passage(1, hit, passages, 0, 10, 0.9),), (),
                           passages.evidence)

        return Response(run())

    def read(self, passages) -> Reading:
        return self.stream(passages).answer()


def test_ask_streams_the_text_as_written_then_the_answer(built, tmp_path):
    assistant = make_assistant(built, tmp_path, reader=Scripted())
    with client(assistant).stream("POST", "/api/ask", json={"question": QUESTION, "stream": True}) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        got = events(reply.read().decode("utf-8"))
    assert [name for name, _ in got] == ["delta", "delta", "answer"]
    assert "".join(data["text"] for name, data in got[:2]) == "The answer is here [1]"
    assert same(got[-1][1], assistant.ask(QUESTION).to_dict())


def test_a_follow_up_is_searched_with_the_conversations_topic(built, tmp_path):
    assistant = make_assistant(built, tmp_path)
    history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "…"}]
    body = client(assistant).post("/api/ask", json={"question": "那第二点具体怎么做？", "history": history}).json()
    query = resolve_query("那第二点具体怎么做？", history)
    assert query != "那第二点具体怎么做？" and body["query"] == query
    assert same(body, assistant.ask("那第二点具体怎么做？", query=query).to_dict())


@pytest.mark.parametrize("body, says", [
    ({"question": ""}, "the question is empty"),
    ({"question": "大" * 3000}, "the limit is 2,000"),
    ({}, "question: Field required"),
    ({"question": "x", "k": 0}, "k: Input should be greater than or equal to 1"),
    ({"question": "x", "reader": "gpt"}, "reader: Input should be"),
    ({"question": "x", "colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_bad_questions_are_400_with_one_line(built, tmp_path, body, says):
    reply = client(make_assistant(built, tmp_path)).post("/api/ask", json=body)
    assert reply.status_code == 400 and says in reply.json()["error"] and "\n" not in reply.json()["error"]


def test_not_json_is_400(built, tmp_path):
    reply = client(make_assistant(built, tmp_path)).post("/api/ask", content=b"{not json",
                                                        headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and "error" in reply.json()


def test_questions_while_the_models_load_are_503_and_status_says_so(built, tmp_path):
    loading = threading.Event()
    api_client = client(make_assistant(built, tmp_path), loading)
    for path, body in (("/api/ask", {"question": QUESTION}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}]})):
        reply = api_client.post(path, json=body)
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "5"
        assert "loading" in json.dumps(reply.json())
    assert api_client.get("/api/status").json()["ready"] is False
    loading.set()
    assert api_client.post("/api/ask", json={"question": QUESTION}).status_code == 200
    assert api_client.get("/api/status").json()["ready"] is True


def test_without_an_index_errors_are_503_and_name_no_server_path(tmp_path):
    settings = Settings(corpus=tmp_path / "corpus", index=tmp_path / "no-index")
    api_client = TestClient(api.create_api(Assistant(settings, embedder=FakeEmbedder()), settings))
    reply = api_client.post("/api/ask", json={"question": QUESTION})
    assert reply.status_code == 503 and "no index at no-index" in reply.json()["error"]
    status = api_client.get("/api/status")
    assert status.status_code == 200 and status.json()["index"] is None and status.json()["problem"]
    assert api_client.get("/api/documents").json() == {"documents": []}
    for reply in (reply, status):
        assert str(tmp_path) not in reply.text


def test_status_and_documents_name_no_server_path(built, tmp_path):
    api_client = client(make_assistant(built, tmp_path))
    status = api_client.get("/api/status")
    assert status.json()["index"]["documents"] == 5 and status.json()["index"]["chunks"] > 0
    documents = api_client.get("/api/documents").json()["documents"]
    assert len(documents) == 5 and {"source", "title", "kind", "bytes", "chunks"} <= set(documents[0])
    for reply in (status, api_client.get("/api/documents")):
        assert str(tmp_path) not in reply.text and "/tmp" not in reply.text


def test_public_keeps_the_last_part_of_server_paths():
    assert api.public("no index at /srv/data/index: build one") == "no index at index: build one"
    assert api.public("Milvus collection 'a' at /home/u/m.db.") == "Milvus collection 'a' at m.db."
    assert api.public("and/or 1/2 http://host:19530 index/") == "and/or 1/2 http://host:19530 index/"


# -- documents ----------------------------------------------------------------------------------------
def test_upload_makes_a_document_answerable_and_delete_removes_it(built, tmp_path):
    assistant = make_assistant(built, tmp_path)
    api_client = client(assistant)
    name = "团建 offsite.md"
    reply = api_client.post("/api/documents", files=[("files", (name, OFFSITE.encode(), "text/markdown"))])
    assert reply.status_code == 200, reply.text
    assert reply.json()["added"] == [name] and reply.json()["documents"] == 6
    answer = api_client.post("/api/ask", json={"question": "年度团建地点定在哪里？"}).json()
    assert answer["citations"][0]["source"] == name
    again = api_client.post("/api/documents", files=[("files", (name, OFFSITE.encode(), "text/markdown"))]).json()
    assert again["already_indexed"] == [name]
    changed = [("files", (name, (OFFSITE + "改了。\n").encode(), "text/markdown"))]
    refused = api_client.post("/api/documents", files=changed)
    assert refused.status_code == 400 and "replace" in refused.json()["error"]
    assert api_client.post("/api/documents", files=changed, data={"replace": "true"}).json()["replaced"] == [name]
    removed = api_client.delete(f"/api/documents/{quote(name)}")
    assert removed.status_code == 200 and removed.json()["removed"] == [name] and removed.json()["documents"] == 5
    assert name not in {d["source"] for d in api_client.get("/api/documents").json()["documents"]}
    assert not (tmp_path / "corpus" / name).exists()


def test_uploads_get_the_pages_checks(built, tmp_path):
    api_client = client(make_assistant(built, tmp_path))
    files = [("files", ("../escape.md", OFFSITE.encode(), "text/markdown")),
             ("files", ("tool.exe", b"MZ\x90\x00", "application/octet-stream")),
             ("files", (".hidden.md", OFFSITE.encode(), "text/markdown"))]
    reply = api_client.post("/api/documents", files=files)
    assert reply.status_code == 400 and reply.json()["error"].startswith("nothing added: ")
    reasons = {r["name"]: r["reason"] for r in reply.json()["refused"]}
    assert "path" in reasons["../escape.md"] and "hidden" in reasons[".hidden.md"] and "tool.exe" in reasons
    assert not (tmp_path / "escape.md").exists() and len(list((tmp_path / "corpus").iterdir())) == 5
    mixed = api_client.post("/api/documents", files=[files[1], ("files", ("ok.md", OFFSITE.encode(), "text/plain"))])
    assert mixed.status_code == 200 and mixed.json()["added"] == ["ok.md"]
    assert [r["name"] for r in mixed.json()["refused"]] == ["tool.exe"]
    assert api_client.post("/api/documents").status_code == 400  # no files


def test_unknown_and_last_documents_cannot_be_deleted(built, tmp_path):
    api_client = client(make_assistant(built, tmp_path))
    reply = api_client.delete("/api/documents/" + quote("nope/不在.txt", safe=""))
    assert reply.status_code == 404 and "nope/不在.txt" in reply.json()["error"]
    sources = [d["source"] for d in api_client.get("/api/documents").json()["documents"]]
    for source in sources[:-1]:
        assert api_client.delete(f"/api/documents/{quote(source)}").status_code == 200
    last = api_client.delete(f"/api/documents/{quote(sources[-1])}")
    assert last.status_code == 409 and "at least one document" in last.json()["error"]


def test_too_large_files_uploads_and_bodies_are_413(built, tmp_path):
    api_client = client(make_assistant(built, tmp_path), max_file_mb=1, max_upload_mb=2, max_request_kb=4)
    big = ("files", ("big.md", b"a" * (1 << 20 | 1), "text/markdown"))
    reply = api_client.post("/api/documents", files=[big])
    assert reply.status_code == 413 and "the limit is 1 MB" in reply.json()["error"]
    huge = [("files", (f"part{i}.md", b"a" * (900 << 10), "text/markdown")) for i in range(3)]
    reply = api_client.post("/api/documents", files=huge)
    assert reply.status_code == 413 and "ASSISTANT_MAX_UPLOAD_MB" in reply.json()["error"]
    body = json.dumps({"question": "x" * 5000}).encode()
    reply = api_client.post("/api/ask", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and "ASSISTANT_MAX_REQUEST_KB" in reply.json()["error"]
    chunked = api_client.post("/api/ask", content=iter([body[:3000], body[3000:]]),
                              headers={"Content-Type": "application/json"})  # no Content-Length: counted
    assert chunked.status_code == 413
    reply = api_client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and "ASSISTANT_MAX_REQUEST_KB" in reply.json()["error"]["message"]


# -- safe by default ----------------------------------------------------------------------------------
def test_with_a_key_every_api_call_needs_it(built, tmp_path):
    api_client = client(make_assistant(built, tmp_path), api_key=KEY)
    calls = [("GET", "/api/status", None), ("GET", "/api/documents", None), ("POST", "/api/ask", {"question": "x"}),
             ("DELETE", "/api/documents/x.txt", None), ("GET", "/v1/models", None),
             ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})]
    for method, path, body in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                        {"Authorization": f"Bearer {KEY}x"}):
            reply = api_client.request(method, path, json=body, headers=headers)
            assert reply.status_code == 401, (method, path, headers)
            assert reply.headers["WWW-Authenticate"] == "Bearer" and "API key" in reply.text
    good = {"Authorization": f"Bearer {KEY}"}
    assert api_client.get("/api/status", headers=good).status_code == 200
    assert api_client.post("/api/ask", json={"question": QUESTION}, headers=good).status_code == 200
    upload = api_client.post("/api/documents", files=[("files", ("a.md", OFFSITE.encode(), "text/plain"))])
    assert upload.status_code == 401


def test_listening_beyond_this_machine_needs_a_key():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        api.check_exposure(Settings(host=host))
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        with pytest.raises(ConfigError, match="refusing to listen on .* without an API key") as refused:
            api.check_exposure(Settings(host=host))
        assert "\n" not in str(refused.value)
        api.check_exposure(Settings(host=host, api_key=KEY))


def test_serve_refuses_a_public_address_without_a_key_before_loading_anything(monkeypatch, capsys, tmp_path):
    import assistant.cli as cli

    monkeypatch.delenv("ASSISTANT_API_KEY", raising=False)
    monkeypatch.setattr(cli, "_assistant", lambda settings: pytest.fail("the models were loaded"))
    assert cli.main(["serve", "--host", "0.0.0.0", "--index", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to listen on 0.0.0.0 without an API key") and err.count("\n") == 1


def test_serve_command_passes_host_port_and_cors_to_the_server(monkeypatch, tmp_path):
    import assistant.cli as cli

    started = []
    monkeypatch.setattr(cli, "_assistant", lambda settings: "the assistant")
    monkeypatch.setattr(api, "serve", lambda assistant, settings: started.append((assistant, settings)))
    monkeypatch.setenv("ASSISTANT_API_KEY", KEY)
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "8123", "--cors-origins", "http://a.test",
                     "--index", str(tmp_path / "i")]) == 0
    (assistant, settings), = started
    assert (settings.host, settings.port, settings.cors_origins, settings.api_key) == \
        ("0.0.0.0", 8123, "http://a.test", KEY)
    assert KEY not in repr(settings)


def test_cors_is_off_unless_origins_are_configured(built, tmp_path):
    preflight = {"Origin": "http://app.test", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    assistant = make_assistant(built, tmp_path)
    plain = client(assistant)
    assert "access-control-allow-origin" not in plain.options("/api/ask", headers=preflight).headers
    assert "access-control-allow-origin" not in plain.get("/api/status", headers={"Origin": "http://app.test"}).headers
    allowed = client(assistant, cors_origins="http://app.test, http://other.test")
    reply = allowed.options("/api/ask", headers=preflight)
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "http://app.test"
    assert "access-control-allow-origin" not in allowed.options(
        "/api/ask", headers={**preflight, "Origin": "http://evil.test"}).headers


def test_openapi_description_and_its_page(built, tmp_path):
    api_client = client(make_assistant(built, tmp_path), api_key=KEY)  # the description is readable without it
    spec = api_client.get("/api/openapi.json").json()
    assert {"/api/ask", "/api/documents", "/api/documents/{source}", "/api/status", "/v1/chat/completions",
            "/v1/models"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    page = api_client.get("/api/docs")
    assert page.status_code == 200 and "/api/ask" in page.text and "/v1/chat/completions" in page.text
    assert "<script" not in page.text and "://" not in page.text  # nothing loaded from elsewhere


@pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")
def test_the_page_and_the_api_share_one_port_and_the_page_asks_for_the_key(built, tmp_path):
    assistant = make_assistant(built, tmp_path)
    with serving(api.create_app(assistant, assistant.settings.with_(api_key=KEY))) as url:
        page = httpx.get(url + "/")
        assert page.status_code == 200 and "<html" in page.text
        assert httpx.get(url + "/config").status_code == 401  # the page's config, before the login
        assert httpx.get(url + "/api/status").status_code == 401
        status = httpx.get(url + "/api/status", headers={"Authorization": f"Bearer {KEY}"})
        assert status.status_code == 200 and status.json()["index"]["documents"] == 5
        with httpx.Client(base_url=url) as browser:
            assert browser.post("/login", data={"username": "me", "password": "wrong"}).status_code == 400
            assert browser.post("/login", data={"username": "me", "password": KEY}).status_code == 200
            assert browser.get("/config").status_code == 200


def test_page_options_are_the_launch_options_mount_takes(built, tmp_path):
    from assistant.ui import launch_options

    settings = Settings(port=8123)
    options = api.page_options(settings)
    launch = launch_options(settings)
    assert {"theme", "css", "js", "max_file_size", "footer_links"} <= set(options) and "share" not in options
    assert options["css"] == launch["css"] and (options["server_name"], options["server_port"]) == ("127.0.0.1", 8123)
    assert "auth" not in options
    login = api.page_options(settings.with_(api_key=KEY))["auth"]
    assert login("anyone", KEY) and not login("anyone", "nope") and not login("anyone", None)
