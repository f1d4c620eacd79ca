"""Faults injected into a running Pirus: each test fails if data is lost or a state is wrong.

* the LXD daemon stopped mid-run (SIGKILL, or SIGTERM: LXD's own shutdown) and started again:
  a *private* LXD daemon (tests/private_lxd.py), never the shared one;
* the Jupyter server killed with SIGKILL while a run and an upload are both in flight;
* the upload store's disk full in the middle of a PATCH (a small tmpfs);
* runaway pipelines: gigabytes to stdout, never ending, a fork bomb, beside a well-behaved run.

The container deleted from outside (``lxc delete --force``) is in tests/test_restart.py, the
server killed mid-PATCH of a 200 MiB upload in tests/test_tus.py; docs/reliability.md lists
every fault with the test that proves it.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from conftest import FINAL, requires_lxd, wait_for
from pkgbuild import build_pipeline, fastq, progress_script
from private_lxd import PrivateLXD
from server import LXD_PREFIX, ServerProcess, tmpfs
from test_restart import install, start_run
from tus_helpers import (
    OCTET,
    TUS,
    MiB,
    blocking_request,
    metadata,
    pattern,
    pattern_bytes,
    pattern_sha256,
)

from pirus_jupyter.hashing import sha256_file
from pirus_jupyter.runs import lifecycle as runs_module


def integrity(db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def error_body(response: Any) -> dict[str, Any]:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    return response.json()["error"]


# -- LXD stopped mid-run -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def private_lxd():
    daemon = PrivateLXD()
    try:
        yield daemon.start()
    finally:
        daemon.destroy()


@pytest.fixture
def private_lxd_env(private_lxd, monkeypatch):
    """The in-process server (created after this fixture) talks to the private daemon."""
    monkeypatch.setenv("LXD_DIR", str(private_lxd.lxd_dir))
    return private_lxd


@pytest.fixture(scope="module")
def slow_package(tmp_path_factory) -> Path:
    """About 12 s of progress: long enough to stop LXD in the middle of it."""
    return build_pipeline(tmp_path_factory.mktemp("pkg") / "slow.tar.gz", name="slow",
                          script=progress_script(24, 0.5), form={})


@pytest.mark.lxd
@requires_lxd
@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_lxd_stopped_mid_run_and_started_again(private_lxd, slow_package, tmp_path, stop):
    """The run in flight is never stuck: it ends DONE (its command goes on inside the
    container while LXD is away); a run queued while LXD is down waits for it instead of
    failing; no container is left behind."""
    root = tmp_path / "root"
    root.mkdir()
    server = ServerProcess(root, tmp_path / "data", env=private_lxd.env, max_parallel_runs=2,
                           poll_interval=0.1, notify_enabled=False)
    server.start()
    try:
        pipeline = install(server, slow_package)
        run = start_run(server, pipeline)

        # kill: SIGKILL, the daemon is gone at once. terminate: LXD's own shutdown, which
        # waits for the running exec (the pipeline) and refuses new operations meanwhile.
        getattr(private_lxd, stop)()
        server.wait_for("", lambda b: not b["lxd"]["connected"], timeout=120)
        queued = server.session.post(server.api("runs"),
                                     json={"pipeline_id": pipeline["id"]}).json()
        private_lxd.start()

        ended = server.wait_for(f"runs/{run['id']}", lambda b: b["status"] in FINAL,
                                timeout=180)
        # The command went on in its container (LXD's exec helper outlives the daemon): the
        # run is DONE with its outputs. Were the command lost with LXD, the heartbeat would
        # end it in ERROR with a reason (test_runs.py::test_lost_pipeline_process_ends_in_error).
        assert ended["status"] == "DONE", ended
        assert [o["name"] for o in ended["outputs"]] == ["result.txt"]
        assert ended["progress"]["value"] == 24
        later = server.wait_for(f"runs/{queued['id']}", lambda b: b["status"] in FINAL,
                                timeout=180)
        assert later["status"] == "DONE", later
        assert server.session.get(server.api("")).json()["lxd"]["connected"]

        def containers() -> list[str]:
            listing = private_lxd.lxc("list", "--format", "csv", "-c", "n").stdout.split()
            return [n for n in listing if n.startswith(f"{LXD_PREFIX}-run-")]

        deadline = time.monotonic() + 120  # a deletion refused during the outage is retried
        while containers():
            assert time.monotonic() < deadline, containers()
            time.sleep(0.5)
    finally:
        server.stop()
    assert integrity(server.data_dir / "pirus.db") == "ok"


@pytest.mark.lxd
@requires_lxd
async def test_lxd_gone_for_good_ends_the_run_in_error(private_lxd_env, private_lxd, slow_package,
                                                       monkeypatch, api, install, pirus):
    """LXD stopped and not started again: past the grace period the run ends in ERROR saying
    so, instead of waiting forever; a run still queued stays WAITING (it has not started)."""
    monkeypatch.setattr(runs_module, "LXD_OUTAGE_GRACE", 3.0)
    pirus.runs.max_parallel = 1
    pipeline = await install(slow_package)
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    code, queued = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    await wait_for(api, "runs", run["id"], until=lambda b: b["status"] == "RUNNING" and
                   b["progress"]["value"] >= 1, timeout=120)
    private_lxd.kill()
    try:
        ended = await wait_for(api, "runs", run["id"], until=lambda b: b["status"] in FINAL,
                               timeout=60)
        assert ended["status"] == "ERROR", ended
        assert "LXD unreachable for over 3 s" in ended["error"]
        # The slot is free, but the queue found LXD down and held the run back.
        await wait_for(api, "", until=lambda b: pirus.runs._queue_retry is not None)
        code, body = await api("GET", "runs", queued["id"])
        assert body["status"] == "WAITING", body
        code, body = await api("POST", "runs", queued["id"], "cancel")
        assert code == 200, body
    finally:
        private_lxd.start()


# -- the server killed mid-run and mid-upload ----------------------------------------------------
@pytest.mark.lxd
@requires_lxd
def test_server_killed_mid_run_and_mid_upload(tmp_path, sleepy_package):
    root = tmp_path / "root"
    root.mkdir()
    data_dir = tmp_path / "data"
    server = ServerProcess(root, data_dir, max_parallel_runs=2, poll_interval=0.1).start()
    try:
        pipeline = install(server, sleepy_package)
        run = start_run(server, pipeline)
        total, first, sent = 48 * MiB, 8 * MiB, 24 * MiB
        created = server.session.post(server.api("uploads"), headers={
            **TUS, "Upload-Length": str(total),
            "Upload-Metadata": metadata(filename="reads.bin")})
        assert created.status_code == 201, created.text
        path = urlparse(created.headers["Location"]).path
        url = f"http://127.0.0.1:{server.port}{path}"
        upload_id = path.rsplit("/", 1)[1]
        response = server.session.patch(url, data=pattern_bytes(0, first),
                                        headers={**TUS, **OCTET, "Upload-Offset": "0"})
        assert response.status_code == 204
        # A PATCH of the rest that stops sending half-way and stays open: the server dies
        # with bytes received but not acknowledged.
        sock = blocking_request(server.port, "PATCH", path, {
            **server.session.headers, **TUS, **OCTET, "Upload-Offset": str(first),
            "Content-Length": str(total - first)}, pattern(first, total, piece=MiB),
            stop_after=sent - first)
        part = data_dir / "uploads" / upload_id
        deadline = time.monotonic() + 30
        while part.stat().st_size <= first:
            assert time.monotonic() < deadline, "no byte of the second PATCH reached the disk"
            time.sleep(0.05)
        server.kill()
        sock.close()

        server.start()
        head = server.session.head(url, headers=TUS)
        assert head.status_code == 200
        offset = int(head.headers["Upload-Offset"])
        assert first <= offset <= sent  # never ahead of what was sent
        deadline = time.monotonic() + 30
        while part.stat().st_size != offset:  # the unacknowledged bytes were cut off
            assert time.monotonic() < deadline, (part.stat().st_size, offset)
            time.sleep(0.1)
        response = server.session.patch(url, data=pattern(offset, total, piece=MiB),
                                        headers={**TUS, **OCTET, "Upload-Offset": str(offset)})
        assert response.status_code == 204, response.text
        record = server.session.get(url).json()
        assert record["status"] == "complete"
        expected = pattern_sha256(total)
        assert record["sha256"] == expected
        assert sha256_file(root / record["file"]["path"]) == expected

        done = server.wait_for(f"runs/{run['id']}", lambda b: b["status"] in FINAL, timeout=90)
        assert done["status"] == "DONE", done
        assert done["progress"]["value"] == 25
        assert [o["name"] for o in done["outputs"]] == ["result.txt"]
        assert integrity(data_dir / "pirus.db") == "ok"
        with sqlite3.connect(data_dir / "pirus.db") as db:
            # Nothing half-recorded: every upload's offset is backed by bytes on disk.
            for uid, recorded, status in db.execute("SELECT id, offset, status FROM uploads"):
                if status == "uploading":
                    assert (data_dir / "uploads" / uid).stat().st_size >= recorded
    finally:
        server.stop()


# -- disk full during an upload ------------------------------------------------------------------
@pytest.fixture
def small_upload_store(tmp_path):
    """The upload part store (``<data_dir>/uploads``) on a 16 MiB tmpfs."""
    with tmpfs(tmp_path / "data" / "uploads", "16m", "pirus-test-full") as store:
        yield store


def test_disk_full_during_upload(tmp_path, small_upload_store):
    """A PATCH that does not fit: a 507 JSON error saying where to resume, the offset never
    past the bytes really stored (those are kept), and after space is freed the upload
    resumes to identical bytes."""
    root = tmp_path / "root"
    root.mkdir()
    server = ServerProcess(root, small_upload_store.parent).start()
    try:
        total = 24 * MiB
        created = server.session.post(server.api("uploads"), headers={
            **TUS, "Upload-Length": str(total), "Upload-Metadata": metadata(filename="big.bin")})
        assert created.status_code == 201, created.text
        url = f"http://127.0.0.1:{server.port}{urlparse(created.headers['Location']).path}"
        part = small_upload_store / url.rsplit("/", 1)[1]

        response = server.session.patch(url, data=pattern_bytes(0, total),
                                        headers={**TUS, **OCTET, "Upload-Offset": "0"})
        assert response.status_code == 507, response.text
        error = error_body(response)
        assert error["code"] == "insufficient_storage"
        assert "full" in error["message"]
        kept = int(response.headers["Upload-Offset"])
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert f"Upload-Offset {kept}" in error["message"]
        assert 0 < kept < total
        head = server.session.head(url, headers=TUS)
        assert int(head.headers["Upload-Offset"]) == kept
        # The recorded offset is exactly what is on disk, and those bytes are the right ones.
        assert part.stat().st_size == kept
        assert sha256_file(part) == hashlib.sha256(pattern_bytes(0, kept)).hexdigest()

        # Still full: the next PATCH fails the same way and records nothing new.
        response = server.session.patch(url, data=pattern_bytes(kept, total),
                                        headers={**TUS, **OCTET, "Upload-Offset": str(kept)})
        assert response.status_code == 507, response.text
        assert int(response.headers["Upload-Offset"]) == kept
        assert int(server.session.head(url, headers=TUS).headers["Upload-Offset"]) == kept

        # Space is freed: the upload resumes where it stopped, to identical bytes.
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_upload_store)],
                       check=True)
        response = server.session.patch(url, data=pattern_bytes(kept, total),
                                        headers={**TUS, **OCTET, "Upload-Offset": str(kept)})
        assert response.status_code == 204, response.text
        assert response.headers["Upload-Offset"] == str(total)
        record = server.session.get(url).json()
        assert record["status"] == "complete", record
        assert record["sha256"] == pattern_sha256(total)
        assert sha256_file(root / record["file"]["path"]) == pattern_sha256(total)
    finally:
        server.stop()
    assert integrity(small_upload_store.parent / "pirus.db") == "ok"


def test_disk_full_at_creation_with_upload(tmp_path, small_upload_store):
    """The same through a creation-with-upload POST: the upload exists (Location), holds what
    fit, and takes the rest once there is room."""
    root = tmp_path / "root"
    root.mkdir()
    server = ServerProcess(root, small_upload_store.parent).start()
    try:
        total = 20 * MiB
        data = pattern_bytes(0, total)
        response = server.session.post(server.api("uploads"), data=data, headers={
            **TUS, **OCTET, "Upload-Length": str(total),
            "Upload-Metadata": metadata(filename="c.bin")})
        assert response.status_code == 507, response.text
        assert error_body(response)["code"] == "insufficient_storage"
        kept = int(response.headers["Upload-Offset"])
        url = f"http://127.0.0.1:{server.port}{urlparse(response.headers['Location']).path}"
        assert int(server.session.head(url, headers=TUS).headers["Upload-Offset"]) == kept
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_upload_store)],
                       check=True)
        digest = base64.b64encode(hashlib.sha256(data[kept:]).digest()).decode()
        response = server.session.patch(url, data=data[kept:], headers={
            **TUS, **OCTET, "Upload-Offset": str(kept), "Upload-Checksum": f"sha256 {digest}"})
        assert response.status_code == 204, response.text
        assert server.session.get(url).json()["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        server.stop()


# -- runaway pipelines ---------------------------------------------------------------------------
PROCESS_LIMIT = 40
LOG_CAP = 4 * MiB

FLOOD = "#!/bin/sh\nyes 'a line of output that never stops, gigabytes of it'\n"
FOREVER = "#!/bin/sh\nsleep 100000\n"
# Tries to start 500 processes: busybox sh gives up at the first fork refused. The count of
# processes started is written with shell builtins only (no fork needed).
FORK_BOMB = """#!/bin/sh
n=0
while [ $n -lt 500 ]; do
  sleep 120 &
  n=$((n+1))
  echo $n > "$PIRUS_OUTPUTS_DIR/started"
done
"""


def run_folder(root: Any, run: dict[str, Any]) -> Path:
    return next(Path(root).glob(f"pirus-runs/{run['id']}-*"))


@pytest.fixture
def pirus_config() -> dict[str, Any]:
    """The in-process server of this module: four runs at once, no notify proxy."""
    return {"max_parallel_runs": 4, "notify_enabled": False}


@pytest.mark.lxd
@requires_lxd
async def test_runaway_pipelines_are_bounded(api, install, pirus, tmp_path, jp_root_dir,
                                             count_package):
    """Four runs at once: one floods stdout, one never ends, one forks as much as it can, one
    behaves. Each misbehaving run is stopped by its own limit (log cap, timeout, limits.processes)
    and ends in ERROR with a reason; the well-behaved run is DONE with the right output."""
    pirus.runs.log_max_bytes = LOG_CAP
    pirus.runs.run_timeout = 6

    async def pipeline(name: str, script: str, **manifest: Any) -> dict[str, Any]:
        return await install(build_pipeline(tmp_path / f"{name}.tar.gz", name=name, form={},
                                            script=script, **manifest))

    flood = await pipeline("flood", FLOOD)
    forever = await pipeline("forever", FOREVER)
    bomb = await pipeline("bomb", FORK_BOMB, limits={"processes": PROCESS_LIMIT})
    good = await install(count_package)
    (Path(jp_root_dir) / "r.fastq").write_bytes(fastq(7))

    runs = {}
    for key, body in (("flood", {"pipeline_id": flood["id"]}),
                      ("forever", {"pipeline_id": forever["id"]}),
                      ("bomb", {"pipeline_id": bomb["id"]}),
                      ("good", {"pipeline_id": good["id"], "inputs": ["r.fastq"]})):
        code, run = await api("POST", "runs", body=body)
        assert code == 201, run
        runs[key] = run["id"]
    ended = {key: await wait_for(api, "runs", run_id, until=lambda b: b["status"] in FINAL,
                                 timeout=120)
             for key, run_id in runs.items()}

    assert ended["good"]["status"] == "DONE", ended["good"]
    counts = Path(jp_root_dir) / next(o["path"] for o in ended["good"]["outputs"]
                                      if o["name"] == "counts.tsv")
    assert counts.read_text().splitlines()[1] == "r.fastq\t7"

    run = ended["flood"]
    assert run["status"] == "ERROR" and "exceeded" in run["error"], run
    out_log = run_folder(jp_root_dir, run) / "logs" / "out.log"
    assert 0 < out_log.stat().st_size <= LOG_CAP  # cut back to the cap

    run = ended["forever"]
    assert run["status"] == "ERROR" and "timed out" in run["error"], run

    run = ended["bomb"]
    assert run["status"] == "ERROR" and run["error"], run
    started = run_folder(jp_root_dir, run) / "outputs" / "started"
    assert int(started.read_text()) < PROCESS_LIMIT  # the wrapper and init hold some too
