"""@tus/server, the official Node TUS server (with @tus/file-store), as an upload baseline.

Installed from npm into ``~/.cache/pirus-bench/tus-node`` on first use (benchmark time only,
never in the tests), then started on loopback with its files in a folder the caller chooses
(the same disk as Pirus' uploads).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import requests

from benchmarks.common import free_port

CACHE = Path(os.environ.get("PIRUS_BENCH_CACHE", Path.home() / ".cache" / "pirus-bench"))
PACKAGES = ["@tus/server@2", "@tus/file-store@2"]

SCRIPT = """\
import http from 'node:http';
import {Server} from '@tus/server';
import {FileStore} from '@tus/file-store';
const [port, directory] = process.argv.slice(2);
const tus = new Server({path: '/files', datastore: new FileStore({directory})});
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), '127.0.0.1');
"""


def install() -> tuple[Path | None, str]:
    """The folder holding @tus/server (installed if needed), or ``None`` and why not."""
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node or npm is not installed"
    folder = CACHE / "tus-node"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "node_modules" / "@tus" / "file-store").is_dir():
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix",
                               str(folder), *PACKAGES], capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            return None, f"npm install failed: {done.stderr.strip()[-300:]}"
    (folder / "server.mjs").write_text(SCRIPT)
    return folder, ""


class TusNode:
    """``node server.mjs`` on a free loopback port; ``url`` is its TUS endpoint."""

    def __init__(self, folder: Path, files: Path) -> None:
        self.folder, self.files = folder, files
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/files"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TusNode:
        self.files.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["node", str(self.folder / "server.mjs"), str(self.port), str(self.files)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.options(self.url, timeout=2)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("@tus/server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def create(self, size: int) -> str:
        response = requests.post(self.url, headers={"Tus-Resumable": "1.0.0",
                                                    "Upload-Length": str(size)}, timeout=30)
        assert response.status_code == 201, response.text
        return str(response.headers["Location"])

    def clean(self) -> None:
        for f in self.files.iterdir():
            f.unlink()
