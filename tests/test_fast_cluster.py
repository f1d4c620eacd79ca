"""Fast layer: placement of runs on a fake three-member LXD cluster (capacity, target,
unknown member, member loss with and without re-queueing)."""

from __future__ import annotations

import pytest
from conftest import FAST_CONFIG, start_run, wait_for, wait_run

from pirus_jupyter.backend.fake import FakeBackend

pytestmark = pytest.mark.fast

MEMBERS = ("m1", "m2", "m3")


class FakeCluster(FakeBackend):
    """A fake LXD cluster of three Online members, there from the server's start."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in MEMBERS:
            self.add_member(name, cpu=4, memory=8 * 1024**3)


CLUSTER_CONFIG = {**FAST_CONFIG, "backend_class": f"{__name__}.FakeCluster",
                  "data_transfer": "mounts", "max_parallel_runs": 10,
                  "member_capacity": {"*": {"runs": 1}}}


def settings(**values):
    return pytest.mark.parametrize("pirus_config", [{**CLUSTER_CONFIG, **values}])


@pytest.fixture
def pirus_config():
    return dict(CLUSTER_CONFIG)


@pytest.fixture(autouse=True)
def quick_member_watch(runs_timing):
    """The member watch (which re-places waiting runs and cleans up after a member comes
    back) looks every 50 ms; autouse, so it is set before the server starts."""
    runs_timing(MEMBER_WATCH_INTERVAL=0.05)


async def test_runs_spread_over_members_within_their_capacity(api, fake, install, fake_package):
    pipeline = await install(fake_package)
    placed = [await start_run(api, pipeline) for _ in MEMBERS]
    assert sorted(r["location"] for r in placed) == list(MEMBERS)  # one run per member
    waiting = await start_run(api, pipeline, "WAITING")  # every member full
    code, info = await api("GET", "")
    members = {m["name"]: m for m in info["cluster"]["members"]}
    assert {n: (m["active_runs"], m["capacity"]["runs"]) for n, m in members.items()} == {
        n: (1, 1) for n in MEMBERS}
    freed = placed[1]
    fake.finish(freed["id"])
    await wait_run(api, freed["id"], "DONE")
    moved = await wait_run(api, waiting["id"], "RUNNING")
    assert moved["location"] == freed["location"]
    assert fake.container(waiting["id"]).location == freed["location"]


async def test_target_member_is_honoured_and_waited_for(api, fake, install, fake_package):
    pipeline = await install(fake_package)
    first = await start_run(api, pipeline, target="m2")
    assert first["location"] == "m2" and first["target"] == "m2"
    second = await start_run(api, pipeline, "WAITING", target="m2")  # m2 is full
    younger = await start_run(api, pipeline, target="m3")  # passes the one waiting for m2
    assert younger["location"] == "m3"
    assert (await api("GET", "runs", second["id"]))[1]["status"] == "WAITING"
    fake.finish(first["id"])
    assert (await wait_run(api, second["id"], "RUNNING"))["location"] == "m2"


async def test_unknown_target_member_is_refused(api, fake, install, fake_package):
    pipeline = await install(fake_package)
    code, body = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "target": "m9"})
    assert code == 400, body
    assert body["error"]["message"] == (
        "no cluster member is named 'm9' (members: m1, m2, m3)")
    code, body = await api("GET", "runs")
    assert body["total"] == 0


async def test_lost_member_ends_its_run_in_error(api, fake, install, fake_package):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline, target="m2")
    other = await start_run(api, pipeline, target="m1")
    fake.set_member("m2", "Offline", "no heartbeat")
    ended = await wait_run(api, run["id"], "DONE", "ERROR")
    assert ended["status"] == "ERROR"
    assert ended["error"].startswith(
        "cluster member m2 was lost while the run was RUNNING (LXD: Offline: no heartbeat)")
    assert (await api("GET", "runs", other["id"]))[1]["status"] == "RUNNING"
    # A new run targeting the lost member waits for it; it is placed when m2 is back.
    waiting = await start_run(api, pipeline, "WAITING", target="m2")
    lost_container = fake.container(run["id"]).spec.name
    fake.set_member("m2", "Online")
    assert (await wait_run(api, waiting["id"], "RUNNING"))["location"] == "m2"
    # The run's container, left on m2 while it was away, is removed once it is back.
    await wait_for(api, "", until=lambda b: lost_container not in fake.containers, timeout=15)


@settings(requeue_on_member_loss=True)
async def test_lost_member_requeues_its_run_elsewhere(api, fake, install, fake_package):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    lost = run["location"]
    fake.set_member(lost, "Offline")
    moved = await wait_for(api, "runs", run["id"], timeout=15,
                           until=lambda b: b["status"] == "RUNNING" and b["location"] != lost)
    assert moved["location"] in set(MEMBERS) - {lost}
    fake.finish(run["id"])
    assert (await wait_run(api, run["id"], "DONE", "ERROR"))["status"] == "DONE"
