"""The runs next in the queue get their container made while every slot is taken
(runs/prepare.py): it exists, not started, while the run is WAITING; the run then starts in it
and ends DONE with its outputs; a cancel deletes it; a restart deletes it and the queue makes
a new one."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
from conftest import requires_lxd, wait_run
from pkgbuild import build_pipeline

pytestmark = [pytest.mark.lxd, requires_lxd]

# Held until the test drops "release" into the run's inputs (two minutes at most).
HOLD = ('#!/bin/sh\ni=0\nwhile [ ! -e "$PIRUS_INPUTS_DIR/release" ] && [ $i -lt 1200 ]; do '
        'i=$((i+1)); sleep 0.1; done\n')
COPY = '#!/bin/sh\ncat "$PIRUS_INPUTS_DIR/data.txt" > "$PIRUS_OUTPUTS_DIR/copy.txt"\n'


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pkg")
    return (build_pipeline(folder / "held.tar.gz", name="held", script=HOLD, form={}),
            build_pipeline(folder / "copy.tar.gz", name="copy", script=COPY, form={}))


async def fill_slots(api, install, packages, jp_root_dir) -> tuple[list[dict], dict]:
    """Both slots (max_parallel_runs is 2 in tests) held; a copy run queued behind them."""
    held_pipeline = await install(packages[0])
    copy_pipeline = await install(packages[1])
    held = []
    for _ in range(2):
        code, run = await api("POST", "runs", body={"pipeline_id": held_pipeline["id"]})
        assert code == 201, run
        held.append(await wait_run(api, run["id"], "RUNNING", timeout=60))
    (Path(jp_root_dir) / "data.txt").write_bytes(b"prepared ahead\n" * 1000)
    code, queued = await api("POST", "runs", body={"pipeline_id": copy_pipeline["id"],
                                                   "inputs": ["data.txt"]})
    assert code == 201, queued
    return held, queued


async def prepared_container(pirus, run_id: int, other_than: str | None = None) -> str:
    """The name of the stopped container made for the WAITING run ``run_id``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = await pirus.store.get("runs", run_id)
        assert row["status"] == "WAITING", row["status"]
        name = row.get("lxd_container")
        if name and name != other_than:
            state = await asyncio.to_thread(pirus.backend.state, name)
            if state is not None:
                assert state.status == "Stopped", state
                return name
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} got no container while it waited")


async def deleted(pirus, name: str) -> None:
    deadline = time.monotonic() + 60
    while await asyncio.to_thread(pirus.backend.state, name) is not None:
        assert time.monotonic() < deadline, f"{name} is still there"
        await asyncio.sleep(0.05)


async def release(pirus, runs: list[dict]) -> None:
    for run in runs:
        row = await pirus.store.get("runs", run["id"])
        (Path(row["root_path"]) / "inputs" / "release").write_text("")


async def test_a_prepared_run_starts_in_its_container(api, install, packages, jp_root_dir,
                                                      pirus):
    held, queued = await fill_slots(api, install, packages, jp_root_dir)
    name = await prepared_container(pirus, queued["id"])
    await release(pirus, held)
    done = await wait_run(api, queued["id"], "DONE", "ERROR", timeout=60)
    assert done["status"] == "DONE", done
    assert (await pirus.store.get("runs", queued["id"]))["lxd_container"] == name
    [output] = done["outputs"]
    expected = hashlib.sha256(b"prepared ahead\n" * 1000).hexdigest()
    assert output["name"] == "copy.txt" and output["sha256"] == expected
    assert [i["sha256"] for i in done["inputs"]] == [expected]
    for run in held:
        assert (await wait_run(api, run["id"], "DONE", "ERROR"))["status"] == "DONE"


async def test_cancelling_a_prepared_run_deletes_its_container(api, install, packages,
                                                              jp_root_dir, pirus):
    held, queued = await fill_slots(api, install, packages, jp_root_dir)
    name = await prepared_container(pirus, queued["id"])
    code, canceled = await api("POST", "runs", queued["id"], "cancel")
    assert code == 200 and canceled["status"] == "CANCELED"
    await deleted(pirus, name)  # by the cancel, or by the preparation if still under way
    await release(pirus, held)
    for run in held:
        assert (await wait_run(api, run["id"], "DONE", "ERROR"))["status"] == "DONE"
    assert (await api("GET", "runs", queued["id"]))[1]["status"] == "CANCELED"


async def test_a_restart_remakes_the_prepared_container(api, install, packages, jp_root_dir,
                                                        pirus, restart_pirus):
    held, queued = await fill_slots(api, install, packages, jp_root_dir)
    before = await prepared_container(pirus, queued["id"])
    services = await restart_pirus()
    after = await prepared_container(services, queued["id"], other_than=before)
    await deleted(services, before)  # at once, or retried if LXD was still creating it
    await release(services, held)
    done = await wait_run(api, queued["id"], "DONE", "ERROR", timeout=60)
    assert done["status"] == "DONE", done
    assert (await services.store.get("runs", queued["id"]))["lxd_container"] == after
