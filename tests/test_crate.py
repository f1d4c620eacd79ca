"""A run as a Process Run Crate (``GET /runs/{id}/crate``, ``Run.export_crate``): real runs on
LXD, the zip read back with ``rocrate`` and validated offline by ``roc-validator`` at the
REQUIRED level of the process-run-crate 0.5 profile (tests/crate_check.py seeds its cache)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import FINAL, requires_lxd, wait_for
from crate_check import read_back, seed_validator_cache, validate
from pkgbuild import build_pipeline, fastq

from pirus_jupyter.crate import METADATA_NAME, PROCESS_RUN_CRATE, STATUS_COMPLETED, STATUS_FAILED
from pirus_jupyter.kernel.client import Client

pytestmark = [pytest.mark.lxd, requires_lxd]


@pytest.fixture(scope="session")
def validator_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed_validator_cache(tmp_path_factory.mktemp("rocrate-cache") / "http_cache.sqlite")


async def crate_of(api: Any, run_id: int, folder: Path, **params: str) -> dict[str, Any]:
    """Download the run's crate, unzip it into ``folder``; its metadata."""
    response = await api("GET", "runs", run_id, "crate", params=params or None, raw=True)
    assert response.code == 200, response.body[:300]
    assert response.headers["Content-Type"] == "application/zip"
    assert "Content-Length" not in response.headers  # streamed as it is written
    assert f"run-{run_id}-crate.zip" in response.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(response.body)) as archive:
        archive.extractall(folder)
    return json.loads((folder / METADATA_NAME).read_text())


def by_id(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entity["@id"]: entity for entity in metadata["@graph"]}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


async def test_crate_of_a_done_run(api, install, count_package, jp_root_dir, jp_serverapp,
                                   tmp_path, validator_cache):
    pipeline = await install(count_package)
    root = Path(jp_root_dir)
    (root / "data").mkdir()
    (root / "data" / "a.fastq").write_bytes(fastq(10))
    code, run = await api("POST", "runs", body={
        "pipeline_id": pipeline["id"], "name": "count for the crate",
        "config": {"min_length": 11}, "inputs": ["data/a.fastq"]})
    assert code == 201, run
    code, early = await api("GET", "runs", run["id"], "crate")
    assert code == 409 and early["error"]["code"] == "run_active"  # only a run that ended
    run = await wait_for(api, "runs", run["id"], until=lambda b: b["status"] in FINAL)
    assert run["status"] == "DONE", run

    folder = tmp_path / "crate"
    metadata = await crate_of(api, run["id"], folder)
    assert validate(folder, validator_cache) == []  # REQUIRED level, offline
    entities = by_id(metadata)
    root_entity = entities["./"]
    assert root_entity["conformsTo"] == {"@id": PROCESS_RUN_CRATE}
    action = entities[root_entity["mentions"]["@id"]]
    assert action["@type"] == "CreateAction"
    assert action["actionStatus"] == STATUS_COMPLETED and "error" not in action
    assert (action["startTime"], action["endTime"]) == (run["start"], run["end"])
    instrument = entities[action["instrument"]["@id"]]
    assert instrument["@type"] == "SoftwareApplication"
    assert (instrument["name"], instrument["version"]) == ("count", "1.0")
    assert instrument["identifier"] == f"sha256:{pipeline['fingerprint']}"
    assert entities[action["agent"]["@id"]]["@type"] == "Person"
    objects = [entities[ref["@id"]] for ref in as_list(action["object"])]
    config = {e["name"]: e["value"] for e in objects if e["@type"] == "PropertyValue"}
    assert config == run["config"] == {"min_length": 11, "label": "sample"}
    (given,) = [e for e in objects if e["@type"] == "File"]
    assert given["sha256"] == run["inputs"][0]["sha256"] == hashlib.sha256(
        fastq(10)).hexdigest()
    assert given["@id"].endswith("/files/data/a.fastq")  # not copied: its URL on the server
    results = {entities[ref["@id"]]["name"]: entities[ref["@id"]]
               for ref in as_list(action["result"])}
    for output in run["outputs"]:
        entity = results[output["name"]]
        assert (entity["sha256"], entity["contentSize"]) == (output["sha256"], output["size"])
        assert entity["@id"] == f"outputs/{output['name']}"
        copied = (folder / entity["@id"]).read_bytes()  # the bytes are in the crate
        assert hashlib.sha256(copied).hexdigest() == output["sha256"]

    # rocrate reads the same crate back: entities and hashes
    read = read_back(folder)
    assert read["outputs/counts.tsv"]["sha256"] == results["counts.tsv"]["sha256"]
    assert read[action["@id"]]["@type"] == "CreateAction"
    assert set(entities) == set(read)

    # metadata only: no bytes, the outputs referenced on the server; still valid
    lean = tmp_path / "lean"
    metadata = await crate_of(api, run["id"], lean, data="false")
    assert sorted(p.name for p in lean.iterdir()) == [METADATA_NAME]
    assert validate(lean, validator_cache) == []
    outputs = [e for e in metadata["@graph"] if e.get("name") == "counts.tsv"]
    assert outputs[0]["@id"].startswith("http") and "metadata only" in outputs[0]["description"]

    # an output changed since the run: the result keeps its recorded sha256 (referenced on the
    # server), the bytes found are in the crate as a file of their own that says so
    counts = root / next(o["path"] for o in run["outputs"] if o["name"] == "counts.tsv")
    counts.write_text("edited by hand\n")
    edited = tmp_path / "edited"
    metadata = await crate_of(api, run["id"], edited)
    entities = by_id(metadata)
    action = entities[entities["./"]["mentions"]["@id"]]
    result = next(entities[ref["@id"]] for ref in as_list(action["result"])
                  if entities[ref["@id"]]["name"] == "counts.tsv")
    assert result["sha256"] == results["counts.tsv"]["sha256"]
    assert result["@id"].startswith("http") and "bytes changed" in result["description"]
    found = entities["outputs/counts.tsv"]
    assert found["sha256"] == hashlib.sha256(b"edited by hand\n").hexdigest()
    assert "changed since the run" in found["description"]
    assert (edited / "outputs" / "counts.tsv").read_bytes() == b"edited by hand\n"
    assert (edited / "outputs" / "sub" / "status.txt").exists()  # the others as they were
    assert validate(edited, validator_cache) == []

    # the kernel's export writes the same crate
    url = jp_serverapp.connection_url
    token = jp_serverapp.identity_provider.token
    target = tmp_path / "exported.zip"

    def export() -> Path:
        return Client(url, token).run(run["id"]).export_crate(target, data=False)

    assert await asyncio.to_thread(export) == target
    with zipfile.ZipFile(target) as archive:
        assert archive.namelist() == [METADATA_NAME]
        assert by_id(json.loads(archive.read(METADATA_NAME)))[action["@id"]]["result"]


async def test_crate_of_an_error_run(api, install, tmp_path, validator_cache):
    package = build_pipeline(tmp_path / "fail.tar.gz", name="fail", form={},
                             script="#!/bin/sh\necho 'reference genome not found' >&2\nexit 3\n")
    pipeline = await install(package)
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    assert code == 201
    run = await wait_for(api, "runs", run["id"], until=lambda b: b["status"] in FINAL)
    assert run["status"] == "ERROR"
    folder = tmp_path / "crate"
    metadata = await crate_of(api, run["id"], folder)
    assert validate(folder, validator_cache) == []
    entities = by_id(metadata)
    action = entities[entities["./"]["mentions"]["@id"]]
    assert action["actionStatus"] == STATUS_FAILED
    assert "reference genome not found" in action["error"]
    assert "exit code 3" in action["description"]
    assert action["result"] == []
    code, body = await api("GET", "runs", run["id"], "crate", params={"data": "maybe"})
    assert code == 400 and body["error"]["code"] == "invalid_request"
    code, body = await api("GET", "runs", 999999, "crate")
    assert code == 404
