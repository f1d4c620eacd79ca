"""A hung LXD daemon (SIGSTOP: it accepts connections and never answers) under a running run.

Every request to LXD has a timeout (backend/lxd_session.py), the unix socket too, so a hung
LXD is the "LXD unreachable" case of tests/test_faults.py: ``GET /pirus/api/v1`` answers
(``lxd.connected`` false), past the grace period the run ends in ERROR saying so, the queue
holds its runs. Without the timeout the monitor's thread waited for ever and the run stayed
RUNNING. A *private* LXD daemon (tests/private_lxd.py), never the shared one.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from conftest import FINAL, requires_lxd, wait_for
from pkgbuild import build_pipeline, progress_script
from private_lxd import private_daemon

from pirus_jupyter.backend import lxd_session
from pirus_jupyter.runs import lifecycle

GRACE = 3.0


@pytest.fixture(scope="module")
def daemon():
    with private_daemon() as started:
        yield started


@pytest.fixture
def hung_lxd_env(daemon, monkeypatch):
    """Set before the in-process server starts (first in the test's arguments): it talks to
    the private daemon, with a short timeout and grace period."""
    monkeypatch.setattr(lxd_session, "LOCAL_TIMEOUT", (2.0, 2.0))
    monkeypatch.setattr(lifecycle, "LXD_OUTAGE_GRACE", GRACE)
    monkeypatch.setenv("LXD_DIR", str(daemon.lxd_dir))
    return daemon


@pytest.fixture
def pirus_config() -> dict[str, Any]:
    return {"max_parallel_runs": 1, "notify_enabled": False}


@pytest.mark.lxd
@requires_lxd
async def test_hung_lxd_is_unreachable_and_ends_the_run_in_error(hung_lxd_env, tmp_path, api,
                                                                 install, pirus):
    # A minute of progress: still running when the run ends on the hung LXD.
    long_package = build_pipeline(tmp_path / "long.tar.gz", name="long", form={},
                                  script=progress_script(120, 0.5))
    pipeline = await install(long_package)
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    assert code == 201, run
    code, queued = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    assert code == 201, queued
    await wait_for(api, "runs", str(run["id"]), until=lambda b: b["status"] == "RUNNING" and
                   b["progress"]["value"] >= 1, timeout=120)
    pid = hung_lxd_env.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        info = await wait_for(api, "", until=lambda b: not b["lxd"]["connected"], timeout=120)
        assert info["lxd"]["error"], info
        ended = await wait_for(api, "runs", str(run["id"]),
                               until=lambda b: b["status"] in FINAL, timeout=120)
        assert ended["status"] == "ERROR", ended
        assert f"LXD unreachable for over {GRACE:g} s" in ended["error"], ended
        # The slot is free, but the queue found LXD unreachable and held the run back.
        await wait_for(api, "", until=lambda b: pirus.runs._queue_retry is not None)
        code, body = await api("GET", "runs", str(queued["id"]))
        assert body["status"] == "WAITING", body
        code, body = await api("POST", "runs", str(queued["id"]), "cancel")
        assert code == 200, body
    finally:
        os.kill(pid, signal.SIGCONT)
