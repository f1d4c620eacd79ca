"""Shared fixtures: a real Jupyter server (pytest-jupyter) with the Pirus extension enabled."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from server import LXD_PREFIX

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="session", autouse=True)
def remove_test_containers_and_images():
    """Runs outlive their server by design, so tests that stop a server mid-run leave
    containers behind: at the end of the session, delete everything this session created
    (its own prefix only; nothing else on the LXD daemon is touched)."""
    yield
    if not lxd_available():
        return
    listing = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"],
                             capture_output=True, text=True).stdout.split()
    for name in listing:
        if name.startswith(f"{LXD_PREFIX}-"):
            subprocess.run(["lxc", "delete", "--force", name], capture_output=True)
    images = subprocess.run(["lxc", "image", "list", "--format", "json"],
                            capture_output=True, text=True).stdout
    for image in json.loads(images or "[]"):
        aliases = [a["name"] for a in image.get("aliases") or []]
        ours = [a for a in aliases if a.startswith(f"{LXD_PREFIX}-")]
        if ours and len(ours) == len(aliases):
            subprocess.run(["lxc", "image", "delete", image["fingerprint"]],
                           capture_output=True)
        else:
            for alias in ours:
                subprocess.run(["lxc", "image", "alias", "delete", alias], capture_output=True)


def lxd_available() -> bool:
    if not shutil.which("lxc"):
        return False
    return subprocess.run(["lxc", "info"], capture_output=True).returncode == 0


@pytest.fixture
def pirus_config() -> dict[str, Any]:
    """Override in a test module (or parametrize) to change PirusApp settings."""
    return {}


@pytest.fixture
def jp_server_config(tmp_path: Path, pirus_config: dict[str, Any]) -> dict[str, Any]:
    settings = {"data_dir": str(tmp_path / "pirus-data"), "max_parallel_runs": 2,
                "poll_interval": 0.1, "lxd_prefix": LXD_PREFIX}
    settings.update(pirus_config)
    return {
        "ServerApp": {"jpserver_extensions": {"pirus_jupyter": True}},
        "PirusApp": settings,
    }


@pytest.fixture
def pirus(jp_serverapp):
    """The Services object of the running extension."""
    return jp_serverapp.web_app.settings["pirus"]


@pytest.fixture
def api(jp_fetch):
    """Call the Pirus REST API: ``await api("GET", "runs")`` -> (status, json body).
    Never raises on 4xx/5xx so tests can assert error bodies."""

    async def call(method: str, *path: str, body: Any = None, params: dict | None = None,
                   headers: dict | None = None, raw: bool = False):
        kwargs: dict[str, Any] = {"method": method, "raise_error": False}
        if body is not None:
            kwargs["body"] = body if isinstance(body, (bytes, str)) else json.dumps(body)
        elif method in ("POST", "PUT", "PATCH"):
            kwargs["body"] = b""
            kwargs["allow_nonstandard_methods"] = True
        if params:
            kwargs["params"] = params
        if headers:
            kwargs["headers"] = headers
        response = await jp_fetch("pirus", "api", "v1", *[str(p) for p in path], **kwargs)
        if raw:
            return response
        text = response.body.decode() if response.body else ""
        return response.code, (json.loads(text) if text and response.headers.get(
            "Content-Type", "").startswith("application/json") else text)

    return call


FINAL = {"DONE", "ERROR", "CANCELED"}


async def wait_for(api, *path: str, until, timeout: float = 60.0):
    """Poll a GET endpoint until ``until(body)`` is true; return the body."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        code, body = await api("GET", *path)
        assert code == 200, body
        if until(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting on {'/'.join(map(str, path))}: {body}")


@pytest.fixture
def install(api, jp_root_dir):
    """Copy a package into the Jupyter root, install it through the API, wait until it settles."""

    async def do(package: Path, expect: str = "READY") -> dict:
        target = Path(jp_root_dir) / package.name
        if package != target:
            shutil.copyfile(package, target)
        code, body = await api("POST", "pipelines", body={"path": package.name})
        assert code == 202, body
        assert body["status"] == "INSTALLING", body
        body = await wait_for(api, "pipelines", body["id"],
                              until=lambda b: b["status"] not in ("INSTALLING", "UPLOADING"))
        assert body["status"] == expect, body
        return body

    return do


@pytest.fixture(scope="session")
def count_package(tmp_path_factory) -> Path:
    from pkgbuild import build_pipeline

    return build_pipeline(tmp_path_factory.mktemp("pkg") / "count.tar.gz")


@pytest.fixture(scope="session")
def sleepy_package(tmp_path_factory) -> Path:
    """Runs for a few seconds, reporting progress every 0.2 s: long enough to pause or cancel."""
    from pkgbuild import build_pipeline, progress_script

    script = progress_script(25, 0.2)
    return build_pipeline(tmp_path_factory.mktemp("pkg") / "sleepy.tar.gz", name="sleepy",
                          script=script, form={"type": "object", "properties": {}})


requires_lxd = pytest.mark.skipif(not lxd_available(), reason="no LXD daemon reachable")


# -- the fast layer: a real in-process server on the fake backend (no LXD) ---------------------
def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``pytest -m fast`` selects the fast layer, which lives in test_fast_*.py: the other test
    modules are not even imported (importing them takes longer than the layer runs)."""
    name = collection_path.name
    if config.getoption("markexpr") == "fast" and name.startswith("test_") and \
            name.endswith(".py") and not name.startswith("test_fast_"):
        return True
    return None


FAKE_BACKEND = "pirus_jupyter.backend.fake.FakeBackend"
# Settings of the fast tests' servers (a test module's pirus_config adds to them).
FAST_CONFIG: dict[str, Any] = {"backend_class": FAKE_BACKEND, "poll_interval": 0.02}


@pytest.fixture(scope="session")
def fake_package(tmp_path_factory) -> Path:
    """A pipeline package of a few hundred bytes (a rootfs with a placeholder /bin/sh): the
    fake backend never runs it, so it is only there to be installed."""
    import io
    import tarfile

    from pirus_jupyter.packaging import build_package_from_parts

    folder = tmp_path_factory.mktemp("fake-pkg")
    base = folder / "rootfs.tar"
    with tarfile.open(base, "w") as tar:
        for name in ("bin", "etc"):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(entry)
        entry = tarfile.TarInfo("bin/sh")
        entry.size, entry.mode = 1, 0o755
        tar.addfile(entry, io.BytesIO(b"\n"))
    manifest = {"name": "fake", "run": "/pipeline/run.sh", "version": "1.0",
                "description": "fake test pipeline", "license": "MIT",
                "developers": ["Pirus tests"]}
    files = {"/pipeline/run.sh": b"#!/bin/sh\n",
             "/pipeline/form.json": json.dumps({"type": "object", "properties": {}}).encode()}
    return build_package_from_parts(manifest, files, folder / "fake.tar.gz", base=base)


@pytest.fixture
def fake(pirus):
    """The server's FakeBackend; every gate a test held is opened at its end."""
    from pirus_jupyter.backend.fake import FakeBackend

    backend = pirus.backend
    assert isinstance(backend, FakeBackend), "set backend_class (FAST_CONFIG) in pirus_config"
    yield backend
    backend.release()


@pytest.fixture
def runs_timing(monkeypatch):
    """Shorten the run manager's timing constants (``STATE_CHECK_INTERVAL=0.05``, ...) in
    whichever module of pirus_jupyter.runs defines them, so that a fast test waits for no
    production interval. A name no module defines fails the test (renamed: update it)."""
    import importlib
    import pkgutil

    import pirus_jupyter.runs as runs_package

    modules = [importlib.import_module(f"pirus_jupyter.runs.{info.name}")
               for info in pkgutil.iter_modules(runs_package.__path__)]

    def tune(**constants: float) -> None:
        for name, value in constants.items():
            holders = [m for m in modules if hasattr(m, name)]
            assert holders, f"no module of pirus_jupyter.runs defines {name}"
            for module in holders:
                monkeypatch.setattr(module, name, value)

    return tune


@pytest.fixture
def restart_pirus(jp_serverapp):
    """Stop the extension's services and build new ones on the same database, folders and
    backend, as a restart of the server would (containers live on in the backend). Calls
    ``while_down()`` in between. Returns the new Services; HTTP requests reach them."""
    from pirus_jupyter.services import Services

    async def restart(while_down=None):
        settings = jp_serverapp.web_app.settings
        old = settings["pirus"]
        await old.stop()
        if while_down is not None:
            while_down()
        new = Services.build(app=old.app, root_dir=old.root_dir, data_dir=old.data_dir,
                             backend=old.backend)
        settings["pirus"] = old.app.services = new
        await new.start()
        return new

    return restart


async def wait_run(api, run_id: int, *statuses: str, timeout: float = 15.0) -> dict:
    """Wait until the run is in one of ``statuses``; return it."""
    return await wait_for(api, "runs", run_id, until=lambda b: b["status"] in statuses,
                          timeout=timeout)


async def start_run(api, pipeline: dict, status: str | None = "RUNNING", **body: Any) -> dict:
    """Create a run of ``pipeline`` and wait until it is ``status`` (None: do not wait)."""
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"], **body})
    assert code == 201, run
    return await wait_run(api, run["id"], status) if status else run


@pytest.fixture
def lab(tmp_path: Path):
    """A running ``jupyter lab`` with the Pirus server extension and the built panel, in its
    own folders (tests/browser.py); what its runs and pipelines left is removed after."""
    from browser import LabProcess  # here: browser.py imports this module

    proc = LabProcess(tmp_path)
    try:
        yield proc.start()
    finally:
        if proc.proc is not None:
            proc.cleanup()
        proc.stop()
