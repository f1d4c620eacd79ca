"""Fast layer: a run whose ``target`` member is lost, on a fake three-member LXD cluster.

With ``requeue_on_member_loss`` the run starts again on another member (docs/cluster.md): its
target is dropped, since waiting for a lost member could last for ever."""

from __future__ import annotations

import pytest
from conftest import start_run, wait_for, wait_run
from test_fast_cluster import CLUSTER_CONFIG, MEMBERS

pytestmark = pytest.mark.fast


@pytest.fixture
def pirus_config():
    return {**CLUSTER_CONFIG, "requeue_on_member_loss": True}


@pytest.fixture(autouse=True)
def quick_member_watch(runs_timing):
    """The member watch re-places waiting runs every 50 ms (set before the server starts)."""
    runs_timing(MEMBER_WATCH_INTERVAL=0.05)


async def test_run_targeted_at_a_lost_member_is_requeued_elsewhere(api, fake, install,
                                                                 fake_package):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline, target="m2")
    assert run["location"] == "m2" and run["target"] == "m2"
    fake.set_member("m2", "Offline", "no heartbeat")
    # m2 stays lost: the run does not wait for it, it runs on another member.
    moved = await wait_for(api, "runs", str(run["id"]), timeout=15,
                           until=lambda b: b["status"] == "RUNNING" and b["location"] != "m2")
    assert moved["location"] in set(MEMBERS) - {"m2"}
    assert moved["target"] is None
    assert fake.container(run["id"]).location == moved["location"]
    fake.finish(run["id"])
    assert (await wait_run(api, run["id"], "DONE", "ERROR"))["status"] == "DONE"
    # A run created for the lost member still waits for it (its target is the user's choice).
    waiting = await start_run(api, pipeline, "WAITING", target="m2")
    fake.set_member("m2", "Online")
    assert (await wait_run(api, waiting["id"], "RUNNING"))["location"] == "m2"
