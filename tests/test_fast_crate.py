"""The crate's metadata from a run record, without a server: Debian packages from the
manifest's ``provenance.packages``, output names that would leave the crate, a canceled run."""

from __future__ import annotations

import asyncio
import io
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pirus_jupyter.crate import (
    STATUS_FAILED,
    agent_of,
    crate_member,
    crate_metadata,
    write_crate,
)
from pirus_jupyter.handlers.streaming import CHUNK, send_produced

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


class Unseekable:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)

    def flush(self) -> None:
        return


def test_one_file_given_twice_is_one_entity() -> None:
    inputs = [{"name": "a.fastq", "path": "d/a.fastq", "size": 1, "sha256": "1" * 64},
              {"name": "a-2.fastq", "path": "d/a.fastq", "size": 1, "sha256": "1" * 64}]
    graph = metadata(dict(RUN, inputs=inputs))["@graph"]
    ids = [e["@id"] for e in graph]
    assert len(ids) == len(set(ids)) and ids.count("http://h/files/d/a.fastq") == 1


def test_output_names_that_leave_the_crate_are_not_copied(tmp_path: Path) -> None:
    assert crate_member("a/b.txt") == "outputs/a/b.txt"
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        assert crate_member(bad) is None
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_bytes(b"x")
    run = dict(RUN, status="DONE", outputs=[
        {"name": "../x", "path": "out/x", "size": 1, "sha256": "0" * 64, "file_id": 1}])
    sink = Unseekable()  # the zip is streamed: it never seeks back
    write_crate(sink, run, None, tmp_path, data=True, url_for=lambda p: f"http://h/{p}",
                package_url="http://h/p", server_id="http://h/")
    with zipfile.ZipFile(io.BytesIO(bytes(sink.data))) as archive:
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


class FakeHandler:
    """The tornado calls send_produced makes; ``flush`` fails at ``fail_at`` (a client that
    went away)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.flushes = 0
        self.finished = False
        self.fail_at = fail_at

    def set_header(self, name: str, value: str) -> None:
        self.headers[name] = value

    def write(self, chunk: bytes) -> None:
        self.body += chunk

    async def flush(self) -> None:
        self.flushes += 1
        if self.flushes == self.fail_at:
            raise ConnectionResetError("client gone")

    def finish(self) -> None:
        self.finished = True


def test_a_produced_body_is_sent_in_order_and_a_client_leaving_stops_the_producer() -> None:
    chunk = b"x" * CHUNK

    def produce(sink) -> None:
        for i in range(12):
            sink.write(bytes([i]) + chunk[1:])

    handler = FakeHandler()
    asyncio.run(send_produced(handler, produce, "application/zip", "a.zip"))
    assert handler.finished and handler.headers["Content-Type"] == "application/zip"
    assert bytes(handler.body) == b"".join(bytes([i]) + chunk[1:] for i in range(12))

    stopped = threading.Event()
    outcome: list[BaseException] = []

    def endless(sink) -> None:
        try:
            while True:
                sink.write(chunk)
        except BaseException as e:
            outcome.append(e)
            raise
        finally:
            stopped.set()

    handler = FakeHandler(fail_at=2)
    with pytest.raises(ConnectionResetError):
        asyncio.run(send_produced(handler, endless, "application/zip"))
    assert stopped.wait(60)  # bounded wait, not a timing assertion: it must end at all
    assert isinstance(outcome[0], BrokenPipeError) and not handler.finished
