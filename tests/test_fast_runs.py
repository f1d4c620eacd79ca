"""Fast layer: the run state machine, the queue, pause/cancel, and a run's end (exit code,
timeout, lost heartbeat, vanished container, LXD unreachable), through the REST API of a real
in-process server whose container backend is the fake one (no LXD)."""

from __future__ import annotations

import hashlib

import pytest
from conftest import FAST_CONFIG, start_run, wait_for, wait_run

from pirus_jupyter.backend.fake import Outcome
from pirus_jupyter.errors import BackendError
from pirus_jupyter.models import RUN_TRANSITIONS, RunStatus

pytestmark = pytest.mark.fast


def settings(**values):
    """This test's PirusApp settings, on top of the fast layer's."""
    return pytest.mark.parametrize("pirus_config", [{**FAST_CONFIG, **values}])


@pytest.fixture
def pirus_config():
    return dict(FAST_CONFIG)


async def test_run_goes_to_done_with_progress_logs_and_outputs(api, fake, install, fake_package):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    fake.report(run["id"], {"progress": {"value": 3, "max": 10, "label": "aligning"}})
    body = await wait_for(api, "runs", run["id"],
                          until=lambda b: b["progress"]["value"] == 3, timeout=15)
    assert body["progress"] == {"value": 3, "min": 0, "max": 10, "label": "aligning"}
    container = fake.container(run["id"]).spec.name
    fake.finish(run["id"], Outcome(out="counted 12 reads\n", outputs={
        "counts.tsv": b"file\treads\n", "sub/status.txt": b"done\n"}))
    done = await wait_run(api, run["id"], "DONE", "ERROR")
    assert done["status"] == "DONE", done
    assert done["exit_code"] == 0 and done["error"] is None
    assert done["progress"]["value"] == 10  # a finished run shows its progress full
    assert {o["name"]: o["sha256"] for o in done["outputs"]} == {
        "counts.tsv": hashlib.sha256(b"file\treads\n").hexdigest(),
        "sub/status.txt": hashlib.sha256(b"done\n").hexdigest()}
    code, text = await api("GET", "runs", run["id"], "logs", "out")
    assert (code, text) == (200, "counted 12 reads\n")
    # deleted after DONE, off the run's slot
    await wait_for(api, "", until=lambda b: container not in fake.containers, timeout=15)
    assert container in fake.called("delete_container")


async def test_nonzero_exit_ends_in_error_quoting_the_error_log(api, fake, install, fake_package):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    fake.finish(run["id"], Outcome(exit_code=3, err="no reads in sample.fastq\n"))
    ended = await wait_run(api, run["id"], "DONE", "ERROR")
    assert ended["status"] == "ERROR" and ended["exit_code"] == 3
    assert ended["error"] == "the pipeline exited with code 3: no reads in sample.fastq"
    # what a failed pipeline wrote is listed (hashed), once its folder is made safe
    failed = await start_run(api, pipeline)
    fake.finish(failed["id"], Outcome(exit_code=1, err="disk quota\n",
                                      outputs={"part-1.tsv": b"half\n"}))
    ended = await wait_for(api, "runs", failed["id"], until=lambda b: b["outputs"], timeout=15)
    assert ended["status"] == "ERROR"
    assert [(o["name"], o["sha256"]) for o in ended["outputs"]] == [
        ("part-1.tsv", hashlib.sha256(b"half\n").hexdigest())]
    code, files = await api("GET", "files", params={"run_id": str(failed["id"])})
    assert [f["name"] for f in files["items"]] == ["part-1.tsv"]


async def test_pipeline_reporting_finishing_moves_the_run_to_finishing(api, fake, install,
                                                                        fake_package):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    fake.report(run["id"], {"status": "FINISHING"})
    await wait_run(api, run["id"], "FINISHING")
    fake.finish(run["id"])
    assert (await wait_run(api, run["id"], "DONE", "ERROR"))["status"] == "DONE"


# What each action does at each status, through the API: the spec the table must follow.
ACTIONS = {  # status -> {action: allowed}
    "WAITING": {"pause": False, "resume": False, "cancel": True, "delete": False},
    "INITIALIZING": {"pause": False, "resume": False, "cancel": True, "delete": False},
    "RUNNING": {"pause": True, "resume": False, "cancel": True, "delete": False},
    "PAUSE": {"pause": False, "resume": True, "cancel": True, "delete": False},
    "FINISHING": {"pause": False, "resume": False, "cancel": True, "delete": False},
    "DONE": {"pause": False, "resume": False, "cancel": False, "delete": True},
    "ERROR": {"pause": False, "resume": False, "cancel": False, "delete": True},
    "CANCELED": {"pause": False, "resume": False, "cancel": False, "delete": True},
}


async def test_a_package_that_finds_no_room_is_a_507_recording_nothing(api, pirus, jp_root_dir,
                                                                       fake_package, monkeypatch):
    import errno
    from pathlib import Path

    def full(source, target):
        target.write_bytes(b"part")  # what a copy leaves when the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pirus.pipelines, "_copy_in", full)
    (Path(jp_root_dir) / fake_package.name).write_bytes(fake_package.read_bytes())
    code, body = await api("POST", "pipelines", body={"path": fake_package.name})
    assert code == 507 and body["error"]["code"] == "insufficient_storage", body
    assert await pirus.store.count("pipelines") == 0
    assert not list(Path(pirus.pipelines.packages_dir).iterdir())


def test_paused_time_counts_ended_pauses_and_the_current_one_start() -> None:
    from pirus_jupyter.models import paused_time

    t = "2026-01-01T00:00:{:02d}.000+00:00".format
    timings = [["WAITING", t(0)], ["RUNNING", t(1)], ["PAUSE", t(5)], ["RUNNING", t(15)],
               ["PAUSE", t(20)]]
    assert paused_time(timings) == (10.0, t(20))
    assert paused_time([*timings, ["CANCELED", t(30)]]) == (20.0, None)
    assert paused_time(None) == (0.0, None)


def test_action_spec_follows_the_transition_table() -> None:
    """The API's spec above is what models.RUN_TRANSITIONS allows, status by status."""
    assert set(ACTIONS) == {s.value for s in RunStatus}
    for status, moves in RUN_TRANSITIONS.items():
        allowed = ACTIONS[status.value]
        assert allowed["pause"] == (RunStatus.PAUSE in moves), status
        assert allowed["cancel"] == (RunStatus.CANCELED in moves), status
        assert allowed["resume"] == (status == RunStatus.PAUSE), status
        assert allowed["delete"] == (not moves), status


async def act(api, run_id: int, action: str):
    if action == "delete":
        return await api("DELETE", "runs", run_id)
    return await api("POST", "runs", run_id, action)


@settings(max_parallel_runs=4)
async def test_every_action_at_every_status(api, fake, install, fake_package):
    """One run in each status at once; every refused action answers 409 and changes nothing,
    every allowed one does what it says (and frees the container)."""
    pipeline = await install(fake_package)
    runs: dict[str, int] = {}
    fake.outcome = Outcome()
    runs["DONE"] = (await start_run(api, pipeline, "DONE"))["id"]
    fake.outcome = Outcome(exit_code=1)
    runs["ERROR"] = (await start_run(api, pipeline, "ERROR"))["id"]
    fake.outcome = None
    canceled = await start_run(api, pipeline)
    assert (await api("POST", "runs", canceled["id"], "cancel"))[0] == 200
    runs["CANCELED"] = canceled["id"]
    runs["RUNNING"] = (await start_run(api, pipeline))["id"]
    runs["PAUSE"] = (await start_run(api, pipeline))["id"]
    code, body = await api("POST", "runs", runs["PAUSE"], "pause")
    assert (code, body["status"]) == (200, "PAUSE"), body
    runs["FINISHING"] = (await start_run(api, pipeline))["id"]
    fake.report(runs["FINISHING"], {"status": "FINISHING"})
    await wait_run(api, runs["FINISHING"], "FINISHING")
    started = fake.hold("start")  # the next run stays INITIALIZING
    runs["INITIALIZING"] = (await start_run(api, pipeline, "INITIALIZING"))["id"]
    runs["WAITING"] = (await start_run(api, pipeline, "WAITING"))["id"]  # 4 slots taken

    for status, run_id in runs.items():
        for action, allowed in ACTIONS[status].items():
            if allowed:
                continue
            code, body = await act(api, run_id, action)
            assert code == 409, (status, action, body)
            assert body["error"]["code"] in ("illegal_transition", "run_active"), body
            assert (await api("GET", "runs", run_id))[1]["status"] == status, (status, action)

    paused = fake.container(runs["PAUSE"])
    assert paused.status == "Frozen"
    code, body = await api("POST", "runs", runs["PAUSE"], "resume")
    assert (code, body["status"]) == (200, "RUNNING") and paused.status == "Running"
    assert body["paused_since"] is None and body["paused_seconds"] > 0  # that pause ended
    code, body = await api("POST", "runs", runs["RUNNING"], "pause")
    assert (code, body["status"]) == (200, "PAUSE")
    assert body["paused_since"] is not None and body["paused_seconds"] == 0
    assert body["paused_since"] >= body["start"]  # clients stop its clock there
    assert fake.container(runs["RUNNING"]).status == "Frozen"
    # Cancel in every status that allows it: RUNNING (now), PAUSE (the one just paused),
    # INITIALIZING and WAITING.
    for run_id in (runs["PAUSE"], runs["RUNNING"], runs["INITIALIZING"], runs["WAITING"]):
        container = fake.container(run_id).spec.name if fake.started(run_id) else None
        code, body = await act(api, run_id, "cancel")
        assert (code, body["status"]) == (200, "CANCELED"), body
        assert body["end"] is not None
        if container:
            assert container not in fake.containers
    started.set()  # the INITIALIZING run's start returns: it must not go on
    for status in ("DONE", "ERROR", "CANCELED"):
        assert (await act(api, runs[status], "delete"))[0] == 204
        assert (await api("GET", "runs", runs[status]))[0] == 404
    fake.finish(runs["FINISHING"])
    assert (await wait_run(api, runs["FINISHING"], "DONE", "ERROR"))["status"] == "DONE"
    # The canceled INITIALIZING run left nothing behind; the canceled WAITING one never began.
    await wait_for(api, "", until=lambda b: b["active_runs"] == 0, timeout=15)
    assert [n for n in fake.containers if f"-run-{runs['INITIALIZING']}-" in n] == []
    assert not fake.started(runs["WAITING"])
    assert (await api("GET", "runs", runs["INITIALIZING"]))[1]["status"] == "CANCELED"


@settings(max_parallel_runs=2)
async def test_queue_runs_oldest_first_within_max_parallel(api, fake, install, fake_package):
    """Two slots: runs start in creation order as slots free up, and a paused run keeps its
    slot (its container still holds memory)."""
    pipeline = await install(fake_package)
    first = await start_run(api, pipeline)
    second = await start_run(api, pipeline)
    third = await start_run(api, pipeline, "WAITING")
    fourth = await start_run(api, pipeline, "WAITING")
    assert (await api("POST", "runs", first["id"], "pause"))[0] == 200
    code, info = await api("GET", "")
    assert info["active_runs"] == 2
    assert (await api("GET", "runs", third["id"]))[1]["status"] == "WAITING"

    fake.finish(second["id"])
    await wait_run(api, second["id"], "DONE")
    await wait_run(api, third["id"], "RUNNING")
    assert (await api("GET", "runs", fourth["id"]))[1]["status"] == "WAITING"
    assert (await api("POST", "runs", first["id"], "cancel"))[0] == 200  # frees PAUSE's slot
    await wait_run(api, fourth["id"], "RUNNING")
    created = [name.split("-run-")[1].split("-")[0] for name in fake.called("create_container")]
    assert created == [str(r["id"]) for r in (first, second, third, fourth)]


async def test_refused_freeze_leaves_the_run_running(api, fake, install, fake_package):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    fake.broken["freeze"] = BackendError("LXD failed to freeze container: busy")
    code, body = await api("POST", "runs", run["id"], "pause")
    assert code == 502 and "busy" in body["error"]["message"], body
    assert (await api("GET", "runs", run["id"]))[1]["status"] == "RUNNING"


@settings(run_timeout=0.3)
async def test_run_over_its_timeout_ends_in_error(api, fake, install, fake_package, runs_timing):
    runs_timing(STATE_CHECK_INTERVAL=0.05)
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    ended = await wait_run(api, run["id"], "DONE", "ERROR")
    assert ended["error"] == "timed out after 0.3 s"
    assert fake.started(run["id"]) and not fake.containers  # its container was deleted


async def test_lost_heartbeat_ends_the_run_and_a_beating_one_lives_on(
        api, fake, install, fake_package, runs_timing, pirus):
    runs_timing(STATE_CHECK_INTERVAL=0.05)
    pirus.runs.heartbeat_timeout = 0.3
    pipeline = await install(fake_package)
    beating = await start_run(api, pipeline)
    lost = await start_run(api, pipeline)
    fake.stop_heartbeat(lost["id"])
    ended = await wait_run(api, lost["id"], "DONE", "ERROR")
    assert ended["status"] == "ERROR" and "process was lost" in ended["error"], ended
    # Older than the lost one, so it had as long to be declared lost: its heartbeat saved it.
    assert (await api("GET", "runs", beating["id"]))[1]["status"] == "RUNNING"


async def test_vanished_container_ends_the_run(api, fake, install, fake_package, runs_timing):
    runs_timing(STATE_CHECK_INTERVAL=0.05)
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    fake.vanish(run["id"])
    ended = await wait_run(api, run["id"], "DONE", "ERROR")
    assert ended["error"] == "the container disappeared before the pipeline finished"


async def test_lxd_unreachable_holds_the_queue_and_spares_running_runs(
        api, fake, install, fake_package, runs_timing):
    """Within the grace period a running run goes on and queued runs stay WAITING; when LXD
    is back the queue moves and the run finishes normally."""
    runs_timing(STATE_CHECK_INTERVAL=0.05, QUEUE_RETRY=0.05)
    pipeline = await install(fake_package)
    running = await start_run(api, pipeline)
    fake.reachable = False
    queued = await start_run(api, pipeline, "WAITING")
    looks = len(fake.called("info"))
    # The queue has looked again several times (and health checks failed) meanwhile.
    await wait_for(api, "runs", queued["id"], timeout=15,
                   until=lambda b: len(fake.called("info")) >= looks + 3)
    assert (await api("GET", "runs", queued["id"]))[1]["status"] == "WAITING"
    assert (await api("GET", "runs", running["id"]))[1]["status"] == "RUNNING"
    assert not fake.started(queued["id"])
    fake.reachable = True
    await wait_run(api, queued["id"], "RUNNING")
    fake.finish(running["id"])
    assert (await wait_run(api, running["id"], "DONE", "ERROR"))["status"] == "DONE"


async def test_lxd_unreachable_past_the_grace_ends_the_run(api, fake, install, fake_package,
                                                           runs_timing):
    runs_timing(STATE_CHECK_INTERVAL=0.05, LXD_OUTAGE_GRACE=0.3)
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    fake.reachable = False
    ended = await wait_run(api, run["id"], "DONE", "ERROR")
    assert ended["error"].startswith("LXD unreachable for over 0.3 s"), ended


async def test_target_without_a_cluster_is_refused(api, fake, install, fake_package):
    pipeline = await install(fake_package)
    code, body = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "target": "m1"})
    assert code == 400, body
    assert body["error"]["message"] == "target needs an LXD cluster; this LXD is not clustered"


@settings(max_parallel_runs=1)
async def test_slot_is_free_at_done_while_the_container_is_deleted(
        api, fake, install, fake_package, runs_timing):
    """The next run starts while the ended run's container is still being deleted; a deletion
    LXD refuses is tried again until the container is gone."""
    runs_timing(REMOVAL_RETRY=0.05)
    pipeline = await install(fake_package)
    first = await start_run(api, pipeline)
    second = await start_run(api, pipeline, "WAITING")
    container = fake.container(first["id"]).spec.name
    held = fake.hold("delete_container")
    fake.finish(first["id"])
    await wait_run(api, first["id"], "DONE")
    await wait_run(api, second["id"], "RUNNING")
    assert container in fake.containers  # its deletion is still held
    fake.broken["delete_container"] = BackendError("LXD failed to delete: busy")
    held.set()
    await wait_for(api, "", until=lambda b: fake.called("delete_container").count(container) > 1,
                   timeout=15)
    assert container in fake.containers
    del fake.broken["delete_container"]
    await wait_for(api, "", until=lambda b: container not in fake.containers, timeout=15)


async def test_notify_proxy_only_for_pipelines_that_name_the_url(
        api, fake, install, fake_package, tmp_path):
    """A package whose files never name $PIRUS_NOTIFY_URL (the builder says notify: false)
    gets neither the proxy nor the variable; one that does gets both, the proxy plugged into
    the started container and the wrapper waiting for it before the command."""
    from pirus_jupyter.packaging import build_package_from_parts

    quiet = await install(fake_package)
    run = await start_run(api, quiet)
    box = fake.container(run["id"])
    assert "PIRUS_NOTIFY_URL" not in box.environment and box.spec.proxy_port is None
    assert "add_proxy" not in [method for method, _ in fake.calls]
    fake.finish(run["id"])

    talker = build_package_from_parts(
        {"name": "talker", "run": "/pipeline/run.sh", "version": "1.0"},
        {"/pipeline/run.sh": b'#!/bin/sh\nwget -q --post-data {} "$PIRUS_NOTIFY_URL"\n'},
        tmp_path / "talker.tar.gz", base=fake_package.parent / "rootfs.tar")
    run = await start_run(api, await install(talker))
    box = fake.container(run["id"])
    await wait_for(api, "", until=lambda b: box.spec.proxy_port is not None, timeout=15)
    assert box.environment["PIRUS_NOTIFY_URL"].startswith(
        f"http://127.0.0.1:{box.spec.proxy_port}/")
    assert f"0100007F:{box.spec.proxy_port:04X} 00000000:0000 0A" in box.script
