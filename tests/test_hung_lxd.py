"""A hung LXD daemon (SIGSTOP: it accepts connections and never answers) under a running run.

Every request to LXD has a timeout (backend/lxd_session.py), the unix socket too, so a hung
LXD is the "LXD unreachable" case of tests/test_faults.py: ``GET /pirus/api/v1`` answers
(``lxd.connected`` false), past the grace period the run ends in ERROR saying so, the queue
holds its runs. Without the timeout the monitor's thread waited for ever and the run stayed
RUNNING. Waiting on an LXD operation is done in short slices, so a daemon that falls silent
mid-operation is noticed within one slice, not after the operation's ten-minute deadline.
A *private* LXD daemon (tests/private_lxd.py), never the shared one.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import requests
from conftest import FINAL, requires_lxd, wait_for
from pkgbuild import build_pipeline, progress_script
from private_lxd import private_daemon

from pirus_jupyter.backend import lxd_session
from pirus_jupyter.backend.lxd import LXDBackend
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


@pytest.fixture
def sleeper(daemon, tmp_path, monkeypatch):
    """A running container on the private daemon, and a backend talking to that daemon with
    one-second wait slices."""
    monkeypatch.setattr(lxd_session, "WAIT_SLICE", 1.0)
    monkeypatch.setattr(lxd_session, "WAIT_SLACK", 2.0)
    monkeypatch.setenv("LXD_DIR", str(daemon.lxd_dir))
    package = build_pipeline(tmp_path / "sleeper.tar.gz", name="sleeper", form={},
                             script="#!/bin/sh\n")
    daemon.lxc("image", "import", str(package), "--alias", "sleeper")
    daemon.lxc("launch", "sleeper", "sleeper")
    try:
        yield LXDBackend().client
    finally:
        if daemon.pid is not None:
            os.kill(daemon.pid, signal.SIGCONT)
        daemon.lxc("delete", "--force", "sleeper", check=False)
        daemon.lxc("image", "delete", "sleeper", check=False)


def _start_sleep(client: Any, seconds: int) -> Any:
    """An exec operation that lasts ``seconds``; its ``/wait`` node."""
    response = client.api.instances["sleeper"].exec.post(json={
        "command": ["sleep", str(seconds)], "wait-for-websocket": False,
        "record-output": False, "interactive": False})
    operation_id = response.json()["operation"].rsplit("/", 1)[-1]
    return client.api.operations[operation_id].wait


@pytest.mark.lxd
@requires_lxd
def test_an_operation_longer_than_a_wait_slice_is_waited_for_to_its_end(sleeper):
    answer = _start_sleep(sleeper, 4).get().json()
    assert answer["metadata"]["status"] == "Success", answer


@pytest.mark.lxd
@requires_lxd
@pytest.mark.timeout(120)
def test_waiting_on_a_hung_lxd_fails_within_a_slice_not_the_deadline(sleeper, daemon):
    # The deadline stays at its ten minutes: only the slices can end this wait in time.
    wait = _start_sleep(sleeper, 600)
    os.kill(daemon.pid, signal.SIGSTOP)
    with pytest.raises(requests.ReadTimeout):
        wait.get()


@pytest.mark.lxd
@requires_lxd
def test_an_operation_outliving_its_deadline_is_an_unreachable_lxd(sleeper, monkeypatch):
    monkeypatch.setattr(lxd_session, "OPERATION_DEADLINE", 2.0)
    with pytest.raises(requests.ReadTimeout, match="still running after 2 s"):
        _start_sleep(sleeper, 600).get()
