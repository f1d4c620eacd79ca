"""Reuse on a real LXD through the real REST API: an identical run comes back DONE at once with
the first run's outputs and no container; a changed config is a miss that names it."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from conftest import FINAL, requires_lxd, wait_for
from pkgbuild import fastq

pytestmark = [pytest.mark.lxd, requires_lxd]


async def test_identical_run_reused_without_container_and_a_miss_names_its_cause(
        api, install, count_package, jp_root_dir, pirus):
    pipeline = await install(count_package)
    root = Path(jp_root_dir)
    (root / "data").mkdir()
    (root / "data" / "a.fastq").write_bytes(fastq(10))
    body = {"pipeline_id": pipeline["id"], "config": {"min_length": 11},
            "inputs": ["data/a.fastq"], "reuse": True}
    code, first = await api("POST", "runs", body=body)
    assert code == 201 and first["status"] == "WAITING", first
    first = await wait_for(api, "runs", first["id"], until=lambda b: b["status"] in FINAL,
                           timeout=120)
    assert first["status"] == "DONE", first

    started = time.perf_counter()
    code, again = await api("POST", "runs", body=body)
    latency = time.perf_counter() - started
    assert code == 201, again
    print(f"\nreuse hit on LXD answered in {latency * 1000:.0f} ms")
    assert again["status"] == "DONE" and again["reused_from"] == first["id"]
    row = await pirus.store.get("runs", again["id"])
    assert row["lxd_container"] is None and row["timings"][0][0] == "WAITING" and \
        [t[0] for t in row["timings"]] == ["WAITING", "DONE"]  # never INITIALIZING: no container
    assert [(o["name"], o["sha256"]) for o in again["outputs"]] == \
        [(o["name"], o["sha256"]) for o in first["outputs"]]
    for output in again["outputs"]:
        assert hashlib.sha256((root / output["path"]).read_bytes()).hexdigest() == \
            output["sha256"]

    code, changed = await api("POST", "runs", body={**body, "config": {"min_length": 12}})
    assert code == 201 and changed["status"] == "WAITING", changed
    print(f"miss as a user sees it: {changed['reuse_miss']['message']}")
    assert changed["reuse_miss"]["config"] == ["min_length"]
    assert changed["reuse_miss"]["message"] == \
        f"differs from run {first['id']} in config key 'min_length'"
    code, canceled = await api("POST", "runs", changed["id"], "cancel")
    assert code == 200, canceled
