"""Offline by construction: every test runs with outbound sockets and name lookups refused (the
session-wide guard in conftest.py), child processes get the same guard, and the UI page names no
external resource. The real browser check (Chromium's request log) is test_browser.py (e2e).
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from offline_guard import BLOCKED, offline_env


@pytest.mark.parametrize("address", [("198.51.100.7", 80), ("2001:db8::1", 443), ("8.8.8.8", 53)])
def test_outbound_connections_are_refused_without_asking_for_a_fixture(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(OSError, match=BLOCKED):
        sock.connect(address)
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(OSError, match=BLOCKED):
        sock.connect_ex(address)


def test_name_lookups_and_http_clients_are_refused():
    with pytest.raises(socket.gaierror, match=BLOCKED):
        socket.getaddrinfo("pypi.org", 443)
    with pytest.raises(urllib.error.URLError, match=BLOCKED):
        urllib.request.urlopen("https://huggingface.co/api/models", timeout=5)
    import httpx

    with pytest.raises(httpx.ConnectError, match=BLOCKED):
        httpx.get("https://huggingface.co/api/models", timeout=5)


def test_loopback_still_works():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        accepted = threading.Thread(target=lambda: server.accept()[0].sendall(b"hello"))
        accepted.start()
        with socket.create_connection(("localhost", port), timeout=10) as client:
            assert client.recv(5) == b"hello"
        accepted.join(10)


def test_child_processes_get_the_same_guard():
    code = ("import socket\n"
            "try:\n    socket.create_connection(('198.51.100.7', 80), timeout=2)\n"
            "except OSError as e:\n    print(e)\n"
            "try:\n    socket.getaddrinfo('pypi.org', 443)\n"
            "except OSError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=offline_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(BLOCKED) == 2, out.stdout


# Attributes and CSS constructs that make a browser fetch something when the page loads
_LOADS = re.compile(r"""<(?:script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?\b(?:src|href|data)\s*=\s*["']([^"']+)""",
                    re.I)
_CSS_LOADS = re.compile(r"""@import\s+(?:url\()?\s*["']?([^"')\s;]+)|url\(\s*["']?([^"')]+)""", re.I)


def _external(url: str) -> bool:
    url = url.strip()
    if url.startswith(("data:", "blob:", "#", "./", "/", "../")) and not url.startswith("//"):
        return False
    return bool(re.match(r"(?:[a-z]+:)?//", url, re.I)) and not re.match(
        r"(?:https?:)?//(?:127\.0\.0\.1|localhost)(?::\d+)?(?:/|$)", url, re.I)


def test_ui_page_names_no_external_resource(tmp_path, fake_embedder):
    import httpx

    from assistant.config import Settings
    from assistant.pipeline import Assistant
    from assistant.ui import build_app, launch_options
    from test_ui import _free_port

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.md").write_text("苹果应放在阴凉处保存。", "utf-8")
    assistant = Assistant(Settings(corpus=tmp_path / "corpus", index=tmp_path / "index"), embedder=fake_embedder)
    assistant.build()
    settings = assistant.settings.with_(port=_free_port())
    app = build_app(assistant, settings)
    app.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    base = f"http://127.0.0.1:{settings.port}/"
    try:
        page = httpx.get(base, timeout=30).text
        loads = _LOADS.findall(page)
        assert any(u.endswith(".js") for u in loads) and any(u.endswith(".css") for u in loads)
        stylesheets = [u for u in loads if u.endswith(".css")] + ["theme.css"]
        css = [httpx.get(base + u.lstrip("./"), timeout=30) for u in stylesheets]
        assert all(r.status_code == 200 for r in css)
        css_urls = [a or b for r in css for a, b in _CSS_LOADS.findall(r.text)]
        external = [u for u in loads + css_urls if _external(u)]
        assert external == [], f"the page loads from outside: {external[:5]}"
        assert "fonts.googleapis" not in page and not any("fonts.g" in r.text for r in css)
    finally:
        app.close()
