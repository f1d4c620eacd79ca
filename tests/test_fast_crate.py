"""The crate's metadata from a run record, without a server: Debian packages from the
manifest's ``provenance.packages``, output names that would leave the crate, a canceled run."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pirus_jupyter.crate import (
    STATUS_FAILED,
    agent_of,
    build_crate,
    crate_member,
    crate_metadata,
)

pytestmark = pytest.mark.fast

RUN = {"id": 7, "pipeline_id": 2, "pipeline_name": "count", "pipeline_version": "1.0",
       "pipeline_fingerprint": "ab" * 32, "name": "r", "config": {"n": 3, "opts": {"k": 1}},
       "inputs": [], "outputs": [], "start": None, "end": None, "status": "CANCELED",
       "exit_code": None, "error": None}


def metadata(run: dict, pipeline: dict | None = None) -> dict:
    return crate_metadata(run, pipeline, url_for=lambda p: f"http://h/files/{p}",
                          package_url="http://h/p/2/package", members={}, left_out={},
                          server_id="http://h/")


def test_debian_packages_and_config_values() -> None:
    for packages in ({"zlib1g": "1:1.3", "bash": "5.2"},
                     [{"name": "zlib1g", "version": "1:1.3"}, {"name": "bash", "version": "5.2"}]):
        graph = metadata(RUN, {"manifest": {"provenance": {"packages": packages}}})["@graph"]
        entities = {e["@id"]: e for e in graph}
        app = entities["http://h/p/2/package"]
        names = [entities[ref["@id"]]["name"] for ref in app["softwareRequirements"]]
        assert names == ["bash", "zlib1g"]
    values = {e["name"]: e["value"] for e in graph if e["@type"] == "PropertyValue"}
    assert values == {"n": 3, "opts": '{"k": 1}'}
    action = next(e for e in graph if e["@type"] == "CreateAction")
    assert action["actionStatus"] == STATUS_FAILED and action["error"] == "canceled"
    assert "softwareRequirements" not in {e["@id"]: e for e in metadata(RUN)["@graph"]}[
        "http://h/p/2/package"]


def test_output_names_that_leave_the_crate_are_not_copied(tmp_path: Path) -> None:
    assert crate_member("a/b.txt") == "outputs/a/b.txt"
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        assert crate_member(bad) is None
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_bytes(b"x")
    run = dict(RUN, status="DONE", outputs=[
        {"name": "../x", "path": "out/x", "size": 1, "sha256": "0" * 64, "file_id": 1}])
    spool = build_crate(run, None, tmp_path, data=True, url_for=lambda p: f"http://h/{p}",
                        package_url="http://h/p", server_id="http://h/")
    with spool, zipfile.ZipFile(spool) as archive:
        assert archive.namelist() == ["ro-crate-metadata.json"]
        assert b"leaves the outputs folder" in archive.read("ro-crate-metadata.json")


def test_agent_is_the_jupyter_user_unless_anonymous() -> None:
    hub = SimpleNamespace(username="alice", name="alice", display_name="Alice Martin")
    assert agent_of(hub) == {"id": "alice", "name": "Alice Martin"}
    anonymous = SimpleNamespace(username="b009ead6008f44e3a1771172f1a4f817",
                                name="Anonymous Pasiphae", display_name="Anonymous Pasiphae")
    agent = agent_of(anonymous)
    assert "Anonymous" not in agent["name"] and "@" in agent["id"]
    assert "account running the Jupyter server" in agent["name"]
