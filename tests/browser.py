"""What the browser tests share: ``jupyter lab`` with the Pirus server extension and the built
panel (``LabProcess``; the ``lab`` fixture in conftest.py starts one per test), the check that
the browser, node, the build and playwright-core are there (``require_browser``), the
screenshots folder, and running a ``labextension/ui-tests/*.spec.mjs`` script with node.

Builds nothing: the extension must have been built (``npm ci && npm run build`` in
``labextension/``, which writes ``pirus_jupyter/labextension/``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import FINAL
from server import LXD_PREFIX, free_port

ROOT = Path(__file__).resolve().parent.parent
LABEXT_SRC = ROOT / "labextension"
LABEXT_BUILD = ROOT / "pirus_jupyter" / "labextension"
UI_TESTS = LABEXT_SRC / "ui-tests"
CHROMIUM = os.environ.get("PIRUS_CHROMIUM", "/usr/bin/chromium")
TOKEN = "pirus-ui-test-token"


def browser_prerequisites() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if os.environ.get("PIRUS_SKIP_BROWSER") == "1":
        return "PIRUS_SKIP_BROWSER=1"
    if not shutil.which("node"):
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


def require_browser() -> None:
    """Skip a browser test on a machine without the browser (never in CI: scripts/setup.sh
    installs it), and fail it when the extension or playwright-core is not built/installed."""
    skip = browser_prerequisites()
    if skip and os.environ.get("CI") and skip != "PIRUS_SKIP_BROWSER=1":
        pytest.fail(f"CI must run the browser tests: {skip}")
    if skip:
        pytest.skip(skip)
    if not (LABEXT_BUILD / "package.json").is_file():
        pytest.fail(f"{LABEXT_BUILD} is not built: run `npm ci && npm run build` in labextension/")
    if not (LABEXT_SRC / "node_modules" / "playwright-core").is_dir():
        pytest.fail("playwright-core is missing: run `npm ci` in labextension/")


def screenshots_dir(*own: str) -> Path:
    """The screenshots folder (``$PIRUS_SCREENSHOTS``, default ``test-artifacts/screenshots/``),
    with the calling test's own files from an earlier run (the ``own`` patterns) removed."""
    folder = Path(os.environ.get("PIRUS_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in own:
        for old in folder.glob(pattern):
            old.unlink(missing_ok=True)
    return folder.resolve()


def ui_env(lab: LabProcess, shots: Path, **variables: str) -> dict[str, str]:
    """The environment of a ui-tests script: the server, its token, the browser, the
    screenshots folder, and the script's own ``PIRUS_*`` variables."""
    return {**os.environ, "PIRUS_URL": lab.url, "PIRUS_TOKEN": TOKEN, "PIRUS_CHROMIUM": CHROMIUM,
            "PIRUS_SCREENSHOTS": str(shots), **variables}


def run_ui(script: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs ``labextension/ui-tests/<script>`` with node; its output is printed."""
    result = subprocess.run(["node", str(UI_TESTS / script)], cwd=LABEXT_SRC, env=env, text=True,
                            capture_output=True, timeout=timeout)
    print(result.stdout)
    print(result.stderr, file=sys.stderr)
    return result


class LabProcess:
    """``jupyter lab`` with the Pirus server extension and the built lab extension."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.data = base / "pirus-data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = base / "jupyter-lab.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {TOKEN}"

    def start(self, timeout: float = 90) -> LabProcess:
        for folder in ("root", "pirus-data", "labext", "settings", "workspaces", "config",
                       "runtime", "data"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        # The freshly built output comes first on the labextensions path, whatever is installed.
        link = self.base / "labext" / "pirus-jupyter"
        if not link.exists():
            link.symlink_to(LABEXT_BUILD, target_is_directory=True)
        args = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            f"--port={self.port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={TOKEN}",
            "--ServerApp.jpserver_extensions={'pirus_jupyter': True}",
            f"--PirusApp.data_dir={self.data}", "--PirusApp.max_parallel_runs=2",
            "--PirusApp.poll_interval=0.2", f"--PirusApp.lxd_prefix={LXD_PREFIX}",
            f"--LabApp.extra_labextensions_path={self.base / 'labext'}",
            f"--LabApp.user_settings_dir={self.base / 'settings'}",
            f"--LabApp.workspaces_dir={self.base / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        # No "receive Jupyter news?" toast over the panel (and no request to the internet).
        notification = self.base / "settings" / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1",
               "JUPYTER_CONFIG_DIR": str(self.base / "config"),
               "JUPYTER_RUNTIME_DIR": str(self.base / "runtime"),
               "JUPYTER_DATA_DIR": str(self.base / "data")}
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process' lifetime
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (self.session.get(f"{self.url}pirus/api/v1", timeout=2).status_code == 200
                        and self.session.get(f"{self.url}lab", timeout=5).status_code == 200):
                    return self
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"jupyter lab did not start; log:\n{self.log_tail()}")

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def api(self, path: str) -> str:
        return f"{self.url}pirus/api/v1/{path}".rstrip("/")

    def cleanup(self) -> None:
        """Cancel what still runs and uninstall the pipelines (their LXD images go too)."""
        try:
            runs = self.session.get(self.api("runs"), params={"limit": 1000}, timeout=10).json()
            for run in runs.get("items", []):
                if run["status"] not in FINAL:
                    self.session.post(self.api(f"runs/{run['id']}/cancel"), timeout=30)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = self.session.get(self.api("runs"), params={"limit": 1000}, timeout=10)
                if all(r["status"] in FINAL for r in runs.json().get("items", [])):
                    break
                time.sleep(0.5)
            pipelines = self.session.get(self.api("pipelines"), timeout=10).json()
            for pipeline in pipelines.get("items", []):
                self.session.delete(self.api(f"pipelines/{pipeline['id']}"), timeout=60)
        except (requests.RequestException, ValueError) as e:
            print(f"cleanup after the browser test failed: {e}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
