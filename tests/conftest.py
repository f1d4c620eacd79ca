"""Shared fixtures: a real Jupyter server (pytest-jupyter) with the Pirus extension enabled."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]


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
                "poll_interval": 0.1}
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
