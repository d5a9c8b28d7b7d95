"""Refuse outbound network connections in this process: loopback and Unix sockets only.

The test suite installs it for itself (tests/conftest.py) and for its child processes (the
``sitecustomize`` beside this file, through ``offline_env()``); any attempt raises OSError naming the address.
"""
from __future__ import annotations

import ipaddress
import os
import socket

BLOCKED = "network access blocked in tests"
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", ""})


def allowed(sock: socket.socket, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # Unix sockets and the like
    host = address[0] if isinstance(address, tuple) else address
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def install() -> dict:
    """Patch socket.socket.connect / connect_ex and getaddrinfo; return the originals (for ``uninstall``)."""
    originals = {"connect": socket.socket.connect, "connect_ex": socket.socket.connect_ex,
                 "getaddrinfo": socket.getaddrinfo}

    def connect(sock, address):
        if not allowed(sock, address):
            raise OSError(f"{BLOCKED}: {address}")
        return originals["connect"](sock, address)

    def connect_ex(sock, address):
        if not allowed(sock, address):
            raise OSError(f"{BLOCKED}: {address}")
        return originals["connect_ex"](sock, address)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in _LOCAL_NAMES:
            try:
                ipaddress.ip_address(name.split("%")[0])  # a literal address needs no lookup; connect decides
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, f"{BLOCKED}: name lookup of {name!r}") from None
        return originals["getaddrinfo"](host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    return originals


def uninstall(originals: dict) -> None:
    socket.socket.connect = originals["connect"]
    socket.socket.connect_ex = originals["connect_ex"]
    socket.getaddrinfo = originals["getaddrinfo"]


def offline_env(env: dict | None = None) -> dict:
    """Environment for a child process: the guard loads at its start; hubs and telemetry off."""
    env = dict(os.environ if env is None else env)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_DISABLE_TELEMETRY="1")
    return env
