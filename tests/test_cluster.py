"""Pirus on a real three-member LXD cluster (tests/lxd_cluster.py), with no shared filesystem:
members reported, runs spread and placed by limits and target, data pushed and pulled through
the LXD file API with outputs identical to the single-host path, and faults: a member SIGKILLed
mid-run, launches sent to a member that is gone, the database leader killed, a member
restarted mid-run."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FINAL, requires_lxd, wait_for
from lxd_cluster import LXDCluster
from pkgbuild import build_pipeline, fastq, progress_script
from server import LXD_PREFIX, ServerProcess

from pirus_jupyter.backend import Member
from pirus_jupyter.runs import placement

pytestmark = [pytest.mark.lxd, pytest.mark.slow]

INPUTS = {"a.fastq": fastq(12), "b.fastq": fastq(5, length=14)}


# -- placement rules (no LXD) ----------------------------------------------------------------
GiB = 1024**3


def members(*specs: tuple[str, str]) -> list[Member]:
    return [Member(name, status, cpu=4, memory=8 * GiB) for name, status in specs]


def test_placement_spreads_and_skips_offline_suspect_and_full_members() -> None:
    three = members(("m1", "Online"), ("m2", "Online"), ("m3", "Online"))
    loads = {"m1": placement.Load(runs=1), "m2": placement.Load(), "m3": placement.Load()}
    assert placement.choose(three, loads, {}, {}) == ("m2", None)
    assert placement.choose(three, loads, {}, {}, exclude={"m2"}) == ("m3", None)
    lost = members(("m1", "Online"), ("m2", "Offline"), ("m3", "Online"))
    assert placement.choose(lost, loads, {}, {}, exclude={"m3"}) == ("m1", None)
    full = {"m1": placement.Load(runs=1), "m2": placement.Load(runs=1)}
    two = members(("m1", "Online"), ("m2", "Online"))
    assert placement.choose(two, full, {}, {"*": {"runs": 1}}) == (None, None)  # waits
    assert placement.choose(two, full, {}, {"*": {"runs": 1}, "m2": {"runs": 2}}) == \
        ("m2", None)


def test_placement_by_limits_and_target() -> None:
    three = members(("m1", "Online"), ("m2", "Online"), ("m3", "Online"))
    setting = {"m1": {"memory": "512MiB"}, "m2": {"memory": "1GB"}, "m3": {"cpu": 8}}
    assert placement.choose(three, {}, {"memory": "1GiB"}, setting) == ("m3", None)
    busy = {"m3": placement.Load(runs=1, memory=7 * GiB + 1)}
    assert placement.choose(three, busy, {"memory": "1GiB"}, setting) == (None, None)
    member, reason = placement.choose(three, {}, {"memory": "16GiB"}, setting)
    assert member is None and reason.startswith("no cluster member can hold this run")
    assert "m1: memory 16.0 GiB > 512.0 MiB" in reason
    assert placement.choose(three, {}, {"cpu": "0-5"}, setting) == ("m3", None)
    assert placement.choose(three, {}, {}, setting, target="m2") == ("m2", None)
    assert placement.choose(three, {}, {}, setting, target="m9") == (
        None, "no cluster member is named 'm9'")
    assert placement.parse_bytes("50%", 8 * GiB) == 4 * GiB
    assert placement.cpu_count("0-1,4") == 3
    with pytest.raises(ValueError):
        placement.parse_bytes("lots")


# -- a real cluster ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lxd_cluster():
    """Started by the test session, torn down whatever happens (even after a failure)."""
    cluster = LXDCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def cluster_settings(request) -> dict[str, Any]:
    """Per-test PirusApp settings on top of the cluster's (parametrize indirectly)."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def pirus_config(lxd_cluster: LXDCluster, cluster_settings: dict[str, Any],
                 monkeypatch) -> dict[str, Any]:
    # requests would let these replace verify=False / the pinned certificate: Pirus must not.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    member = cluster_settings.pop("endpoint_member", "m2")
    settings = {
        # Its own prefix: container names (and their cgroups) never meet the shared daemon's.
        "lxd_prefix": f"{LXD_PREFIX}c",
        "lxd_endpoint": lxd_cluster.endpoint(member),
        "lxd_cert": str(lxd_cluster.cert), "lxd_key": str(lxd_cluster.key),
        "lxd_verify": str(lxd_cluster.server_cert),
        "max_parallel_runs": 6, "member_capacity": {"*": {"runs": 2}},
    }
    settings.update(cluster_settings)
    return settings


@pytest.fixture(scope="session")
def long_package(tmp_path_factory) -> Path:
    """Reports progress every 0.5 s for ~15 s: long enough to lose a member under it."""
    return build_pipeline(tmp_path_factory.mktemp("pkg") / "long.tar.gz", name="long",
                          script=progress_script(30, 0.5), form={"type": "object",
                                                                 "properties": {}})


@pytest.fixture(scope="session")
def quick_package(tmp_path_factory) -> Path:
    return build_pipeline(tmp_path_factory.mktemp("pkg") / "quick.tar.gz", name="quick",
                          script="#!/bin/sh\necho quick > \"$PIRUS_OUTPUTS_DIR/quick.txt\"\n",
                          form={"type": "object", "properties": {}})


def write_inputs(root: Path) -> list[str]:
    (root / "data").mkdir(exist_ok=True)
    for name, data in INPUTS.items():
        (root / "data" / name).write_bytes(data)
    return [f"data/{name}" for name in INPUTS]


async def finished(api, run_id: int, timeout: float = 120) -> dict:
    return await wait_for(api, "runs", run_id, until=lambda b: b["status"] in FINAL,
                          timeout=timeout)


def container_names(cluster: LXDCluster, via: str) -> dict[str, str]:
    rows = json.loads(cluster.lxc(via, "query", "/1.0/instances?recursion=1"))
    return {row["name"]: row["location"] for row in rows}


async def eventually(check, timeout: float = 60) -> None:
    """Poll a blocking ``check`` (in a thread) until it is true."""
    for _ in range(int(timeout / 0.5)):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.5)
    assert await asyncio.to_thread(check)


async def test_members_and_their_state_are_reported(api, lxd_cluster):
    code, info = await api("GET")
    assert code == 200, info
    assert info["lxd"]["connected"] and info["lxd"]["clustered"], info["lxd"]
    assert info["data_transfer"] == "push"
    members = {m["name"]: m for m in info["cluster"]["members"]}
    assert set(members) == {"m1", "m2", "m3"}
    for member in members.values():
        assert member["status"] == "Online"
        assert member["url"] == lxd_cluster.endpoint(member["name"])
        assert member["capacity"]["runs"] == 2
        assert member["memory"] > 0 and member["cpu"] > 0
        assert member["active_runs"] == 0


@pytest.mark.parametrize("cluster_settings", [{"lxd_verify": False}], indirect=True)
async def test_verify_false_is_not_overridden_by_the_ca_bundle_variables(api):
    code, info = await api("GET")
    assert info["lxd"]["connected"], info["lxd"]
    assert len(info["cluster"]["members"]) == 3


async def test_runs_spread_over_members_and_outputs_come_back_checked(
        api, install, count_package, jp_root_dir, lxd_cluster):
    pipeline = await install(count_package)
    inputs = write_inputs(Path(jp_root_dir))
    runs = []
    for i in range(3):
        code, run = await api("POST", "runs", body={
            "pipeline_id": pipeline["id"], "name": f"count {i}", "config": {"min_length": 11},
            "inputs": inputs})
        assert code == 201, run
        assert run["location"] is None and run["target"] is None
        runs.append(run)
    done = [await finished(api, run["id"]) for run in runs]
    for run in done:
        assert run["status"] == "DONE", run
    # Least-loaded placement with 2 slots per member: three runs at once land on three members.
    assert sorted(run["location"] for run in done) == ["m1", "m2", "m3"]
    root = Path(jp_root_dir)
    for run in done:
        outputs = {o["name"]: o for o in run["outputs"]}
        assert set(outputs) == {"counts.tsv", "sub/status.txt"}
        counts = root / outputs["counts.tsv"]["path"]
        assert counts.read_text() == "file\treads\na.fastq\t8\nb.fastq\t5\n"
        assert outputs["counts.tsv"]["sha256"] == hashlib.sha256(counts.read_bytes()).hexdigest()
        # logs pulled back; config.json pushed in (and kept in the run folder on this host)
        code, log = await api("GET", "runs", run["id"], "logs", "out")
        assert "counted /pipeline/inputs/a.fastq" in log
        assert json.loads((counts.parent.parent / "inputs" / "config.json").read_text())[
            "min_length"] == 11
        assert run["progress"]["value"] == 2
    # containers are deleted on every member (just after DONE is recorded)
    await eventually(lambda: not [n for n in container_names(lxd_cluster, "m1") if "-run-" in n])


@pytest.mark.parametrize("cluster_settings", [{"member_capacity": {
    "*": {"runs": 2}, "m1": {"memory": "256MiB"}, "m2": {"memory": "256MiB"},
    "m3": {"memory": "2GiB"}}}], indirect=True)
async def test_limited_and_targeted_runs_land_where_they_fit(api, install, tmp_path):
    small = await install(build_pipeline(tmp_path / "small.tar.gz", name="small", form={},
                                         script="#!/bin/sh\necho ok > \"$PIRUS_OUTPUTS_DIR/x\"\n"))
    big = await install(build_pipeline(tmp_path / "big.tar.gz", name="big", form={},
                                       script="#!/bin/sh\necho big > \"$PIRUS_OUTPUTS_DIR/x\"\n",
                                       limits={"memory": "1GiB"}))
    huge = await install(build_pipeline(tmp_path / "huge.tar.gz", name="huge", form={},
                                        script="#!/bin/sh\ntrue\n", limits={"memory": "8GiB"}))
    code, big_run = await api("POST", "runs", body={"pipeline_id": big["id"]})
    assert code == 201
    code, targeted = await api("POST", "runs", body={"pipeline_id": small["id"],
                                                     "target": "m1"})
    assert code == 201 and targeted["target"] == "m1"
    code, never = await api("POST", "runs", body={"pipeline_id": huge["id"]})
    assert code == 201
    big_run = await finished(api, big_run["id"])
    assert big_run["status"] == "DONE" and big_run["location"] == "m3", big_run
    targeted = await finished(api, targeted["id"])
    assert targeted["status"] == "DONE" and targeted["location"] == "m1", targeted
    never = await finished(api, never["id"])
    assert never["status"] == "ERROR" and never["location"] is None
    assert "no cluster member can hold this run" in never["error"], never
    assert "m3: memory 8.0 GiB > 2.0 GiB" in never["error"]
    # a member that does not exist is refused at once, with nothing created
    code, body = await api("POST", "runs", body={"pipeline_id": small["id"], "target": "m9"})
    assert code == 400 and body["error"]["code"] == "unknown_member"
    assert "no cluster member is named 'm9'" in body["error"]["message"]
    code, listing = await api("GET", "runs")
    assert listing["total"] == 3


@requires_lxd
async def test_outputs_identical_to_the_single_host_path(api, install, count_package,
                                                         jp_root_dir, tmp_path):
    pipeline = await install(count_package)
    inputs = write_inputs(Path(jp_root_dir))
    body = {"pipeline_id": pipeline["id"], "config": {"min_length": 11}, "inputs": inputs}
    code, run = await api("POST", "runs", body=body)
    assert code == 201
    clustered = await finished(api, run["id"])
    assert clustered["status"] == "DONE" and clustered["location"], clustered
    # The same package and inputs on the single-host path: the shared LXD, bind mounts.
    root = tmp_path / "single"
    root.mkdir()
    write_inputs(root)
    (root / count_package.name).write_bytes(count_package.read_bytes())
    local = ServerProcess(root, tmp_path / "single-data", poll_interval=0.1).start()
    try:
        assert local.session.get(local.api("")).json()["data_transfer"] == "mounts"
        installed = local.session.post(local.api("pipelines"),
                                       json={"path": count_package.name}).json()
        local.wait_for(f"pipelines/{installed['id']}", lambda b: b["status"] == "READY")
        single = local.session.post(local.api("runs"), json=dict(
            body, pipeline_id=installed["id"])).json()
        single = local.wait_for(f"runs/{single['id']}", lambda b: b["status"] in FINAL, 120)
    finally:
        local.stop()
    assert single["status"] == "DONE" and single["location"] is None, single

    def digests(run: dict) -> dict[str, tuple[int, str]]:
        return {o["name"]: (o["size"], o["sha256"]) for o in run["outputs"]}

    assert digests(clustered) == digests(single)
    assert [(i["name"], i["sha256"]) for i in clustered["inputs"]] == \
        [(i["name"], i["sha256"]) for i in single["inputs"]]


@pytest.mark.parametrize("cluster_settings", [{"member_capacity": {
    "*": {"runs": 1}, "m3": {"runs": 2}}}], indirect=True)
async def test_member_killed_mid_run_ends_the_run_in_error_and_is_reconciled(
        api, install, long_package, quick_package, lxd_cluster, pirus):
    long = await install(long_package)
    quick = await install(quick_package)
    runs = {}
    for member in ("m3", "m1", "m2"):
        code, run = await api("POST", "runs", body={"pipeline_id": long["id"],
                                                    "target": member})
        assert code == 201, run
        runs[member] = run["id"]
    for run_id in runs.values():
        await wait_for(api, "runs", run_id, timeout=60,
                       until=lambda b: b["status"] == "RUNNING" and b["progress"]["value"] >= 2)
    lost_id = runs["m3"]
    container = next(n for n, where in container_names(lxd_cluster, "m1").items()
                     if where == "m3" and f"-run-{lost_id}-" in n)
    await asyncio.to_thread(lxd_cluster.kill, "m3")
    try:
        # m3's free slot is the only one, but m3 is gone and LXD does not say so yet: the
        # launch fails to connect, m3 is avoided, the run waits for room elsewhere.
        code, other = await api("POST", "runs", body={"pipeline_id": quick["id"]})
        assert code == 201
        lost = await finished(api, lost_id, timeout=120)
        assert lost["status"] == "ERROR", lost
        assert lost["location"] == "m3"
        assert lost["error"].startswith("cluster member m3 was lost while the run was RUNNING"), \
            lost["error"]
        other = await finished(api, other["id"], timeout=120)
        assert other["status"] == "DONE" and other["location"] in ("m1", "m2"), other
        attempts = (await pirus.store.get("runs", other["id"]))["attempts"]
        assert [a["member"] for a in attempts] == ["m3"], attempts
        code, info = await api("GET")
        assert {m["name"]: m["status"] for m in info["cluster"]["members"]}["m3"] == "Offline"
        # the lost run's container is still on m3, unreachable
        assert container in container_names(lxd_cluster, "m1")
    finally:
        await asyncio.to_thread(lxd_cluster.start_member, "m3")
        await asyncio.to_thread(lxd_cluster.wait_status, "m3", "Online")
    # Back: the containers left on m3 are removed (reconciled), and m3 takes runs again.
    left = {container, attempts[0]["container"]}
    await eventually(lambda: not left & set(container_names(lxd_cluster, "m1")))
    code, again = await api("POST", "runs", body={"pipeline_id": quick["id"], "target": "m3"})
    again = await finished(api, again["id"])
    assert again["status"] == "DONE" and again["location"] == "m3", again
    for member in ("m1", "m2"):
        assert (await finished(api, runs[member]))["status"] == "DONE"


@pytest.mark.parametrize("cluster_settings", [{"requeue_on_member_loss": True}], indirect=True)
async def test_member_lost_with_requeue_runs_again_elsewhere(api, install, long_package,
                                                             lxd_cluster):
    long = await install(long_package)
    code, run = await api("POST", "runs", body={"pipeline_id": long["id"]})
    run = await wait_for(api, "runs", run["id"], timeout=60,
                         until=lambda b: b["status"] == "RUNNING")
    first = run["location"]
    await asyncio.to_thread(lxd_cluster.kill, first)
    try:
        run = await finished(api, run["id"], timeout=180)
    finally:
        await asyncio.to_thread(lxd_cluster.start_member, first)
        await asyncio.to_thread(lxd_cluster.wait_status, first, "Online")
    assert run["status"] == "DONE", run
    assert run["location"] != first
    assert {o["name"] for o in run["outputs"]} == {"result.txt"}


async def test_leader_killed_requests_ride_through(api, install, quick_package, lxd_cluster):
    pipeline = await install(quick_package)
    leader = await asyncio.to_thread(lxd_cluster.leader)
    await asyncio.to_thread(lxd_cluster.kill, leader)
    try:
        # The endpoint may be the leader itself: Pirus moves to another member.
        code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
        assert code == 201, run
        run = await finished(api, run["id"], timeout=180)
        assert run["status"] == "DONE", run
        assert run["location"] != leader
        code, info = await api("GET")
        assert code == 200 and info["lxd"]["connected"], info
    finally:
        await asyncio.to_thread(lxd_cluster.start_member, leader)
        await asyncio.to_thread(lxd_cluster.wait_status, leader, "Online")


@pytest.mark.parametrize("cluster_settings", [{"endpoint_member": "m1"}], indirect=True)
async def test_member_restarted_mid_run_keeps_the_run(api, install, long_package, lxd_cluster):
    long = await install(long_package)
    code, run = await api("POST", "runs", body={"pipeline_id": long["id"], "target": "m1"})
    run = await wait_for(api, "runs", run["id"], timeout=60,
                         until=lambda b: b["status"] == "RUNNING")
    # Killed and started again well within cluster.offline_threshold: the container kept
    # running, the run goes on (the endpoint was that member: requests go elsewhere meanwhile).
    await asyncio.to_thread(lxd_cluster.kill, "m1")
    await asyncio.sleep(2)
    await asyncio.to_thread(lxd_cluster.start_member, "m1")
    run = await finished(api, run["id"], timeout=120)
    assert run["status"] == "DONE", run
    assert run["location"] == "m1"
    assert run["progress"]["value"] == 30
