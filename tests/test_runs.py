"""Runs on a real LXD through the real REST API: success with outputs and hashes, failures,
progress and events, pause/resume, cancel, queue, input validation."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from conftest import FINAL, requires_lxd, wait_for
from pkgbuild import build_pipeline, fastq

pytestmark = [pytest.mark.lxd, requires_lxd]


async def run_to_end(api, run_id: int, timeout: float = 60) -> dict:
    return await wait_for(api, "runs", run_id, until=lambda b: b["status"] in FINAL,
                          timeout=timeout)


async def test_fastq_count_run_done_with_outputs_and_hashes(api, install, count_package,
                                                            jp_root_dir):
    pipeline = await install(count_package)
    root = Path(jp_root_dir)
    (root / "data").mkdir()
    (root / "data" / "a.fastq").write_bytes(fastq(10))
    (root / "data" / "b.fastq").write_bytes(fastq(4))
    code, run = await api("POST", "runs", body={
        "pipeline_id": pipeline["id"], "name": "count reads",
        "config": {"min_length": 11}, "inputs": ["data/a.fastq", "data/b.fastq"]})
    assert code == 201, run
    assert run["status"] == "WAITING"
    assert run["config"] == {"min_length": 11, "label": "sample"}  # defaults filled
    run = await run_to_end(api, run["id"])
    assert run["status"] == "DONE", run
    assert run["exit_code"] == 0
    assert run["progress"]["value"] == run["progress"]["max"] == 2
    outputs = {o["name"]: o for o in run["outputs"]}
    assert set(outputs) == {"counts.tsv", "sub/status.txt"}
    counts = root / outputs["counts.tsv"]["path"]
    assert counts.read_text() == "file\treads\na.fastq\t6\nb.fastq\t2\n"
    assert outputs["counts.tsv"]["sha256"] == hashlib.sha256(counts.read_bytes()).hexdigest()
    assert outputs["counts.tsv"]["path"].startswith("pirus-runs/")
    # outputs are file records, downloadable
    code, record = await api("GET", "files", outputs["counts.tsv"]["file_id"])
    assert code == 200 and record["run_id"] == run["id"] and record["source"] == "run"
    response = await api("GET", "files", record["id"], "content", raw=True)
    assert response.body == counts.read_bytes()
    code, listing = await api("GET", "runs", run["id"], "outputs")
    assert listing["total"] == 2
    code, log = await api("GET", "runs", run["id"], "logs", "out")
    assert "counted /pipeline/inputs/a.fastq" in log
    code, log = await api("GET", "runs", run["id"], "logs", "out", params={"tail": "1"})
    assert log.strip() == "counted /pipeline/inputs/b.fastq"
    metrics = run["metrics"]
    assert metrics["wall_seconds"] > 0 and metrics["memory_peak_bytes"] > 0
    assert set(metrics["phases"]) >= {"WAITING", "INITIALIZING", "RUNNING", "FINISHING"}
    # inputs were mounted read-only and config.json written where pipelines expect it
    run_dir = counts.parent.parent
    assert json.loads((run_dir / "inputs" / "config.json").read_text())["min_length"] == 11


async def test_failing_pipeline_ends_in_error_with_exit_code_and_stderr(api, install, tmp_path):
    package = build_pipeline(tmp_path / "fail.tar.gz", name="fail", form={},
                             script="#!/bin/sh\necho 'reference genome not found' >&2\nexit 3\n")
    pipeline = await install(package)
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    assert code == 201
    run = await run_to_end(api, run["id"])
    assert run["status"] == "ERROR"
    assert run["exit_code"] == 3
    assert "exited with code 3" in run["error"]
    assert "reference genome not found" in run["error"]


async def test_inputs_are_read_only_in_the_container(api, install, tmp_path, jp_root_dir):
    script = "#!/bin/sh\necho x > \"$PIRUS_INPUTS_DIR/a.fastq\" && exit 0\nexit 7\n"
    pipeline = await install(build_pipeline(tmp_path / "ro.tar.gz", name="ro", form={},
                                            script=script))
    (Path(jp_root_dir) / "a.fastq").write_bytes(fastq(1))
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                "inputs": ["a.fastq"]})
    run = await run_to_end(api, run["id"])
    assert run["status"] == "ERROR" and run["exit_code"] == 7
    assert (Path(jp_root_dir) / "a.fastq").read_bytes() == fastq(1)


async def test_progress_reported_live_over_the_events_websocket(api, install, sleepy_package,
                                                               jp_ws_fetch):
    pipeline = await install(sleepy_package)
    ws = await jp_ws_fetch("pirus", "api", "v1", "events")
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    seen_status, seen_progress = [], []
    while True:
        message = json.loads(await asyncio.wait_for(ws.read_message(), 60))
        if message["type"] != "run.updated" or message["data"]["id"] != run["id"]:
            continue
        data = message["data"]
        if not seen_status or seen_status[-1] != data["status"]:
            seen_status.append(data["status"])
        seen_progress.append(data["progress"]["value"])
        if data["status"] in FINAL:
            break
    ws.close()
    assert seen_status == ["INITIALIZING", "RUNNING", "FINISHING", "DONE"]
    middle = [v for v in seen_progress if 0 < v < 25]
    assert middle, seen_progress  # intermediate progress arrived while running
    assert middle == sorted(middle)


async def test_pause_and_resume(api, install, sleepy_package):
    pipeline = await install(sleepy_package)
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    await wait_for(api, "runs", run["id"], until=lambda b: b["progress"]["value"] >= 2)
    code, paused = await api("POST", "runs", run["id"], "pause")
    assert code == 200 and paused["status"] == "PAUSE"
    before = paused["progress"]["value"]
    await asyncio.sleep(1.0)
    code, still = await api("GET", "runs", run["id"])
    assert still["status"] == "PAUSE"
    assert still["progress"]["value"] <= before + 1  # frozen: no progress
    code, again = await api("POST", "runs", run["id"], "pause")
    assert code == 409 and again["error"]["code"] == "illegal_transition"
    code, resumed = await api("POST", "runs", run["id"], "resume")
    assert code == 200 and resumed["status"] == "RUNNING"
    done = await run_to_end(api, run["id"])
    assert done["status"] == "DONE"
    assert done["metrics"]["phases"]["PAUSE"] >= 0.9


async def test_cancel_running_and_waiting(api, install, sleepy_package, pirus):
    pipeline = await install(sleepy_package)
    runs = []
    for _ in range(3):  # max_parallel_runs is 2 in tests: the third waits
        code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
        runs.append(run)
    await wait_for(api, "runs", runs[0]["id"], until=lambda b: b["status"] == "RUNNING")
    code, third = await api("GET", "runs", runs[2]["id"])
    assert third["status"] == "WAITING"
    code, canceled = await api("POST", "runs", runs[2]["id"], "cancel")
    assert code == 200 and canceled["status"] == "CANCELED"
    code, canceled = await api("POST", "runs", runs[0]["id"], "cancel")
    assert code == 200 and canceled["status"] == "CANCELED"
    code, body = await api("POST", "runs", runs[0]["id"], "resume")
    assert code == 409
    row = await pirus.store.get("runs", runs[0]["id"])
    await asyncio.sleep(0.5)
    state = await asyncio.to_thread(pirus.backend.state, row["lxd_container"])
    assert state is None  # container deleted
    final = await run_to_end(api, runs[1]["id"])
    assert final["status"] == "DONE"
    for run in runs:
        code, body = await api("DELETE", "runs", run["id"])
        assert code == 204
    code, body = await api("GET", "runs", runs[0]["id"])
    assert code == 404


async def test_target_on_a_single_host(api, install, tmp_path):
    """Without an LXD cluster: an empty target means any member (the run goes on as usual);
    a member's name is refused with its own code and nothing is created."""
    pipeline = await install(build_pipeline(tmp_path / "t.tar.gz", name="t", form={},
                                            script="#!/bin/sh\ntrue\n"))
    code, body = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "target": "m1"})
    assert code == 400 and body["error"]["code"] == "unknown_member", body
    assert "not clustered" in body["error"]["message"]
    code, listing = await api("GET", "runs", params={"pipeline_id": str(pipeline["id"])})
    assert listing["total"] == 0
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "target": ""})
    assert code == 201 and run["target"] is None, run
    assert (await run_to_end(api, run["id"]))["status"] == "DONE"


async def test_queue_honours_max_parallel(api, install, tmp_path, pirus):
    script = "#!/bin/sh\nsleep 0.6\n"
    pipeline = await install(build_pipeline(tmp_path / "q.tar.gz", name="q", form={},
                                            script=script))
    ids = []
    for i in range(5):
        code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                    "name": f"q{i}"})
        ids.append(run["id"])
    peak = 0
    while True:
        code, page = await api("GET", "runs", params={"pipeline_id": str(pipeline["id"])})
        statuses = [r["status"] for r in page["items"]]
        active = sum(s in ("INITIALIZING", "RUNNING", "FINISHING") for s in statuses)
        peak = max(peak, active)
        assert active <= 2, statuses
        if all(s in FINAL for s in statuses):
            break
        await asyncio.sleep(0.05)
    assert peak == 2
    assert statuses == ["DONE"] * 5
    # started in creation order
    starts = [(await api("GET", "runs", i))[1]["start"] for i in ids]
    assert starts == sorted(starts)


async def test_pipeline_in_use_cannot_be_removed(api, install, sleepy_package):
    pipeline = await install(sleepy_package)
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    code, body = await api("DELETE", "pipelines", pipeline["id"])
    assert code == 409 and body["error"]["code"] == "pipeline_in_use"
    await api("POST", "runs", run["id"], "cancel")
    code, body = await api("DELETE", "pipelines", pipeline["id"])
    assert code == 204
    code, body = await api("GET", "pipelines", pipeline["id"])
    assert code == 404
    code, body = await api("GET", "runs", run["id"])  # the run's record survives
    assert code == 200 and body["pipeline_name"] == "sleepy"


async def test_run_timeout_and_log_cap(api, install, tmp_path, pirus):
    async def run_script(name: str, script: str) -> dict:
        pipeline = await install(build_pipeline(tmp_path / f"{name}.tar.gz", name=name,
                                                form={}, script=script))
        code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
        return await run_to_end(api, run["id"], timeout=30)

    pirus.runs.run_timeout = 1.0
    run = await run_script("t", "#!/bin/sh\nsleep 30\n")
    assert run["status"] == "ERROR" and "timed out" in run["error"]
    pirus.runs.run_timeout = 0
    pirus.runs.log_max_bytes = 100_000
    run = await run_script(
        "l", "#!/bin/sh\nwhile true; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done\n")
    assert run["status"] == "ERROR" and "exceeded" in run["error"]


async def test_progress_posted_to_notify_url_with_the_runs_own_token(api, install, tmp_path,
                                                                   pirus):
    script = """#!/bin/sh
wget -q -O - --header 'Content-Type: application/json' \\
  --post-data '{"progress": {"value": 7, "max": 9, "label": "posted"}}' "$PIRUS_NOTIFY_URL" \\
  || exit 9
sleep 0.5
"""
    pipeline = await install(build_pipeline(tmp_path / "n.tar.gz", name="n", form={},
                                            script=script))
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    row = await pirus.store.get("runs", run["id"])
    # a wrong token, or another run's token, is refused
    code, body = await api("POST", "runs", run["id"], "notify", params={"token": "nope"},
                           body={"progress": {"value": 1}})
    assert code == 403
    await wait_for(api, "runs", run["id"], until=lambda b: b["progress"]["label"] == "posted")
    run = await run_to_end(api, run["id"])
    assert run["status"] == "DONE", run
    assert run["progress"]["max"] == 9
    # the token stops working once the run has ended
    code, body = await api("POST", "runs", run["id"], "notify",
                           params={"token": row["notify_token"]}, body={"progress": {"value": 1}})
    assert code == 403 and body["error"]["code"] == "forbidden"


async def test_deleting_an_output_file_updates_its_run(api, install, count_package, jp_root_dir):
    pipeline = await install(count_package)
    (Path(jp_root_dir) / "a.fastq").write_bytes(fastq(3))
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                "inputs": ["a.fastq"]})
    run = await run_to_end(api, run["id"])
    assert run["inputs"][0]["sha256"] == hashlib.sha256(fastq(3)).hexdigest()
    status_file = next(o for o in run["outputs"] if o["name"] == "sub/status.txt")
    code, _ = await api("DELETE", "files", status_file["file_id"])
    assert code == 204
    assert not (Path(jp_root_dir) / status_file["path"]).exists()
    code, run = await api("GET", "runs", run["id"])
    assert [o["name"] for o in run["outputs"]] == ["counts.tsv"]
    code, body = await api("GET", "files", status_file["file_id"])
    assert code == 404


async def test_lost_pipeline_process_ends_in_error(api, install, sleepy_package, pirus):
    """The wrapper around the command killed without writing an exit code (as when LXD's exec
    helper dies): the container stays up, the heartbeat stops, and the run ends in ERROR."""
    import subprocess

    pirus.runs.heartbeat_timeout = 3.0
    pipeline = await install(sleepy_package)
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    await wait_for(api, "runs", run["id"], until=lambda b: b["progress"]["value"] >= 1)
    row = await pirus.store.get("runs", run["id"])
    container = row["lxd_container"]
    killed = await asyncio.to_thread(subprocess.run, [
        "lxc", "exec", container, "--", "sh", "-c",
        "kill -9 $(cat /.pirus/pid)"], capture_output=True, text=True)
    assert killed.returncode == 0, killed.stderr
    ended = await run_to_end(api, run["id"], timeout=30)
    assert ended["status"] == "ERROR"
    assert "process was lost" in ended["error"]
