"""Shared benchmark plumbing: a real Pirus server process, timing helpers, table printing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
# Containers and image aliases of this benchmark process carry this prefix.
LXD_PREFIX = f"pb{os.getpid():x}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``jupyter server`` with the Pirus extension, in a temporary root, on loopback."""

    poll = 0.2  # seconds between attempts to reach the starting server

    def __init__(self, tmp: Path | None = None, **settings: Any) -> None:
        self.own_tmp = tmp is None  # removed on exit (an upload benchmark leaves GiBs)
        self.tmp = tmp or Path(tempfile.mkdtemp(prefix="pirus-bench-"))
        self.root = self.tmp / "root"
        self.root.mkdir(exist_ok=True)
        self.port = free_port()
        self.token = "pirus-bench"
        self.url = f"http://127.0.0.1:{self.port}/"
        # Own LXD prefix: the daemon is shared with other servers (and test sessions).
        self.settings = {"data_dir": str(self.tmp / "data"), "lxd_prefix": LXD_PREFIX,
                         **settings}
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        args = [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                f"--port={self.port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={self.root}",
                f"--IdentityProvider.token={self.token}", "--ServerApp.log_level=WARN",
                "--ServerApp.jpserver_extensions={'pirus_jupyter': True}"]
        args += [f"--PirusApp.{k}={v}" for k, v in self.settings.items()]
        log = open(self.tmp / "server.log", "wb")  # lives as long as the process
        # The repository on the path: the server imports this checkout (and its IdleBackend).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.session.get(self.api(""), timeout=2).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(self.poll)
        raise RuntimeError((self.tmp / "server.log").read_text()[-2000:])

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.own_tmp and not os.environ.get("PIRUS_BENCH_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def api(self, path: str) -> str:
        return f"{self.url}pirus/api/v1/{path}".rstrip("/")

    def rss_bytes(self) -> int:
        assert self.proc
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        assert self.proc
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait(self, path: str, until: Callable[[dict[str, Any]], bool], timeout: float = 300,
             interval: float = 0.02) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.session.get(self.api(path), timeout=10).json()
            if until(body):
                return body
            time.sleep(interval)
        raise TimeoutError(path)

    def install(self, package: Path) -> dict[str, Any]:
        target = self.root / package.name
        if target != package:
            target.write_bytes(package.read_bytes())
        created = self.session.post(self.api("pipelines"), json={"path": package.name}).json()
        return self.wait(f"pipelines/{created['id']}", lambda b: b["status"] in ("READY", "ERROR"))


class RssSampler(threading.Thread):
    """Peak RSS of the server process, sampled every 20 ms from /proc."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak = server.rss_bytes()
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.server.rss_bytes())
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(name: str, value: str) -> None:
    """One result per line, ``name: value``, so scripts can read it."""
    print(f"{name}: {value}", flush=True)


def cpu_count() -> int:
    return os.cpu_count() or 1
