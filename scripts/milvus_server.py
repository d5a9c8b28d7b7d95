"""A real Milvus standalone server on 127.0.0.1, from the ``milvus`` package: for the tests and ``make bench``.

The ``milvus`` package (2.3.5, the extra ``milvus-server``) ships the Milvus standalone binary and its
libraries lzma-compressed. They are unpacked once into ``<assistant home>/milvus-server-<version>/bin``
(about 250 MB, a few seconds), shared by every server; each server gets its own folder (config, embedded
etcd, data, logs), ports that were free when it started, and stops (SIGTERM, then SIGKILL) when the
context exits::

    with MilvusServer(tmp_path / "milvus") as server:
        os.environ["ASSISTANT_VECTOR_STORE"] = server.uri   # http://127.0.0.1:PORT

Clients connect to 127.0.0.1, the components advertise 127.0.0.1 to each other and the embedded etcd listens
on 127.0.0.1 only; the gRPC and metrics ports of Milvus 2.3.5 listen on every interface (the binary has no
setting for their address). Run by hand: ``python scripts/milvus_server.py FOLDER`` prints the URI and serves
until Ctrl-C.
"""
from __future__ import annotations

import logging
import lzma
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

# The config template's port settings (each gets a free port) and the components whose address is registered
# in etcd (set to loopback, so nothing is looked up or advertised off this machine).
PORTS = ("etcd_port", "root_coord_port", "proxy_port", "proxy_internal_port", "query_coord_port",
         "query_node_port", "index_coord_port", "index_node_port", "data_coord_port", "data_node_port")
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexCoord", "indexNode", "dataCoord", "dataNode")


class ServerError(RuntimeError):
    """The server binary could not start (its reason is the last lines of its log)."""


def binaries(home: Path | None = None) -> Path:
    """The unpacked server binary and libraries of the installed ``milvus`` package (unpacked on first use)."""
    try:
        import milvus
    except ImportError:
        raise ServerError("the Milvus server needs the `milvus` package: pip install .[milvus-server]") from None
    if home is None:
        from assistant.config import Settings

        home = Settings.from_env().home
    packed = Path(milvus.__file__).parent / "data" / "bin"
    target = home / f"milvus-server-{milvus.__version__}" / "bin"
    if (target / "milvus").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"bin.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for source in sorted(packed.glob("*.lzma")):
        out = partial / source.name.removesuffix(".lzma")
        with lzma.open(source) as raw, open(out, "wb") as plain:
            shutil.copyfileobj(raw, plain, 1 << 20)
        out.chmod(0o755)
    try:
        partial.rename(target)  # atomic: a concurrent unpacking that finished first wins
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (held open together while they are picked)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class MilvusServer:
    """One Milvus standalone process serving ``folder`` on 127.0.0.1 (``uri``), until :meth:`stop`."""

    def __init__(self, folder: Path, *, home: Path | None = None, start_timeout: float = 120.0) -> None:
        self.folder, self.home, self.start_timeout = Path(folder).resolve(), home, start_timeout
        self.process: subprocess.Popen | None = None
        self.port = self.health_port = 0
        self._logs: list = []

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.folder / "logs" / "milvus-stderr.log"

    def start(self) -> str:
        from milvus import MilvusServerConfig

        bin_dir = binaries(self.home)
        *ports, self.health_port, peer_port = free_ports(len(PORTS) + 2)
        config = MilvusServerConfig(data_dir=str(self.folder), **dict(zip(PORTS, ports)))
        for component in COMPONENTS:
            config.set(f"{component}.ip", "127.0.0.1")
        config.resolve()  # writes <folder>/configs/milvus.yaml; data, etcd and logs under <folder>
        self.port = int(config.get("proxy_port"))
        # the embedded etcd listens where its own config says (2379 and 2380 by default, whatever etcd.endpoints says)
        client, peer = f"http://127.0.0.1:{config.get('etcd_port')}", f"http://127.0.0.1:{peer_port}"
        etcd = self.folder / "configs" / "embedEtcd.yaml"
        etcd.write_text(f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
                        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
                        f"initial-cluster: default={peer}\n", "utf-8")
        env = {**os.environ, "DEPLOY_MODE": "STANDALONE", "METRICS_PORT": str(self.health_port),
               "MILVUSCONF": str(self.folder / "configs") + "/", "ETCD_CONFIG_PATH": str(etcd),
               # a lone query node has nowhere to hand its segments to: stop without waiting (default 30 s)
               "QUERYNODE_GRACEFULSTOPTIMEOUT": "0",
               "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(bin_dir), os.environ.get("LD_LIBRARY_PATH")]))}
        self._logs = [open(self.folder / "logs" / f"milvus-{name}.log", "wb") for name in ("stdout", "stderr")]
        try:
            # -alias: the pid file (/run/milvus/standalone-<alias>.pid) is locked, one per server
            self.process = subprocess.Popen([str(bin_dir / "milvus"), "run", "standalone", "-alias", str(self.port)],
                                            cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                                            stdout=self._logs[0], stderr=self._logs[1], start_new_session=True)
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        log.info("Milvus server %s (pid %s) serving %s", self.uri, self.process.pid, self.folder)
        return self.uri

    def _wait_healthy(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the Milvus server exited with status {self.process.returncode} while starting: "
                                  f"{self.reason()}")
            try:
                with opener.open(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5) as reply:
                    if b"OK" in reply.read():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise ServerError(f"the Milvus server did not become healthy in {self.start_timeout:.0f} s: {self.reason()}")

    def reason(self) -> str:
        """The last meaningful line of the server's stderr (why it stopped), or where its logs are."""
        try:
            lines = self.log_file.read_text("utf-8", "replace").splitlines()
        except OSError:
            lines = []
        wanted = [ln for ln in lines if ln.strip() and not ln.startswith(("\t", "goroutine ", "runtime.", " "))]
        return (wanted[-1] if wanted else "no output") + f" (logs: {self.log_file.parent})"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``timeout`` seconds; waits until it is gone.

        Milvus 2.3.5 stops in well under a second, and ends with "panic: context canceled" (exit status -6)
        after its etcd has closed: a known wart of that binary's shutdown, not a failure here."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("the Milvus server %s did not stop in %.0f s: killing it", self.uri, timeout)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
            except ProcessLookupError:
                process.wait(timeout=30)
        elif process is not None:
            process.wait()
        for f in self._logs:
            f.close()
        self._logs = []

    def __enter__(self) -> MilvusServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python scripts/milvus_server.py FOLDER  (serves FOLDER on 127.0.0.1 until Ctrl-C)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with MilvusServer(Path(args[0])) as server:
        print(f"ASSISTANT_VECTOR_STORE={server.uri}", flush=True)
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
