"""A real ``jupyter server`` subprocess with the Pirus extension, for tests that kill and
restart the server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

# Containers and images of this test session carry this prefix (see conftest's cleanup).
LXD_PREFIX = os.environ.setdefault("PIRUS_TEST_LXD_PREFIX", f"pt{os.getpid():x}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, root_dir: Path, data_dir: Path, env: dict[str, str] | None = None,
                 **settings: Any) -> None:
        self.root_dir = root_dir
        self.data_dir = data_dir
        self.env = env  # e.g. LXD_DIR of a private LXD daemon; default: this process' own
        self.settings = settings
        self.port = free_port()
        self.token = "pirus-test-token"
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"

    def start(self, timeout: float = 60) -> ServerProcess:
        args = [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
            f"--port={self.port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={self.root_dir}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.jpserver_extensions={'pirus_jupyter': True}",
            f"--PirusApp.data_dir={self.data_dir}",
            f"--PirusApp.lxd_prefix={LXD_PREFIX}",
        ]
        args += [f"--PirusApp.{k}={v}" for k, v in self.settings.items()]
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process' lifetime
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     env={**(self.env or os.environ), "JUPYTER_PLATFORM_DIRS": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.session.get(self.api(""), timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"server did not start; log:\n{self.log_path.read_text()[-3000:]}")

    def api(self, path: str) -> str:
        return f"{self.url}pirus/api/v1/{path}".rstrip("/")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def cancel_runs_and_stop(self) -> None:
        """End of a module: cancel the runs still active (their containers go), then stop."""
        try:
            for run in self.session.get(self.api("runs"), timeout=30, params={
                    "status": "WAITING,INITIALIZING,RUNNING,PAUSE,FINISHING"}).json()["items"]:
                self.session.post(self.api(f"runs/{run['id']}/cancel"), timeout=60)
        finally:
            self.stop()

    def wait_for(self, path: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.session.get(self.api(path), timeout=5).json()
            if predicate(body):
                return body
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting on {path}: {body}")


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, label: str) -> Iterator[Path]:
    """``folder`` (created if needed) on a tmpfs of ``size`` (e.g. ``16m``) while the block
    runs: a small disk that fills up. Needs root."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", label,
                    str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
