"""Fast layer: a server restarted while runs were active picks them up again (reconcile),
with the fake backend's containers living on across the restart as LXD's do."""

from __future__ import annotations

import hashlib

import pytest
from conftest import FAST_CONFIG, start_run, wait_for, wait_run

from pirus_jupyter.backend.fake import Outcome

pytestmark = pytest.mark.fast


@pytest.fixture
def pirus_config():
    return dict(FAST_CONFIG)


async def test_run_that_ended_while_the_server_was_down_is_finished(
        api, fake, install, fake_package, restart_pirus):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    await restart_pirus(while_down=lambda: fake.finish(
        run["id"], Outcome(outputs={"result.txt": b"finished\n"})))
    done = await wait_run(api, run["id"], "DONE", "ERROR")
    assert done["status"] == "DONE", done
    assert [(o["name"], o["sha256"]) for o in done["outputs"]] == [
        ("result.txt", hashlib.sha256(b"finished\n").hexdigest())]
    await wait_for(api, "", until=lambda b: not fake.containers, timeout=15)


async def test_run_that_failed_while_the_server_was_down_ends_in_error(
        api, fake, install, fake_package, restart_pirus):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    await restart_pirus(while_down=lambda: fake.finish(run["id"], Outcome(exit_code=2)))
    ended = await wait_run(api, run["id"], "DONE", "ERROR")
    assert (ended["status"], ended["exit_code"]) == ("ERROR", 2)
    assert ended["error"] == "the pipeline exited with code 2"


async def test_container_gone_while_the_server_was_down_ends_in_error(
        api, fake, install, fake_package, restart_pirus):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    paused = await start_run(api, pipeline)
    assert (await api("POST", "runs", paused["id"], "pause"))[0] == 200

    def lose_both() -> None:
        fake.vanish(run["id"])
        fake.vanish(paused["id"])

    await restart_pirus(while_down=lose_both)
    for run_id in (run["id"], paused["id"]):
        ended = await wait_run(api, run_id, "DONE", "ERROR")
        assert ended["status"] == "ERROR"
        assert ended["error"] == "the container disappeared while the server was down"


async def test_run_still_running_is_monitored_again(api, fake, install, fake_package,
                                                    restart_pirus):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    paused = await start_run(api, pipeline)
    assert (await api("POST", "runs", paused["id"], "pause"))[0] == 200
    services = await restart_pirus()
    await wait_for(api, "", until=lambda b: b["active_runs"] == 2, timeout=15)
    assert services.runs.active_count == 2
    # Followed again: progress lines are read, resume works, the end is seen.
    fake.report(run["id"], {"progress": {"value": 7}})
    await wait_for(api, "runs", run["id"], until=lambda b: b["progress"]["value"] == 7,
                   timeout=15)
    code, body = await api("POST", "runs", paused["id"], "resume")
    assert (code, body["status"]) == (200, "RUNNING")
    fake.finish(run["id"])
    fake.finish(paused["id"])
    for run_id in (run["id"], paused["id"]):
        assert (await wait_run(api, run_id, "DONE", "ERROR"))["status"] == "DONE"


async def test_run_initializing_at_the_restart_starts_again(api, fake, install, fake_package,
                                                            restart_pirus):
    """A run caught between create and start goes back to the queue: its half-made container
    is deleted and it starts again in a new one."""
    pipeline = await install(fake_package)
    held = fake.hold("start")
    run = await start_run(api, pipeline, "INITIALIZING")
    await wait_for(api, "runs", run["id"], until=lambda b: fake.called("start"), timeout=15)
    first = fake.called("create_container")[-1]
    await restart_pirus(while_down=held.set)  # the old server's start returns: nothing follows
    await wait_run(api, run["id"], "RUNNING")
    assert first not in fake.containers
    second = fake.container(run["id"]).spec.name
    assert second != first and fake.called("create_container")[-1] == second
    fake.finish(run["id"])
    assert (await wait_run(api, run["id"], "DONE", "ERROR"))["status"] == "DONE"

