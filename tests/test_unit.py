"""Fast unit tests (no LXD, no server): state machine, forms, manifests, paths, events."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from pirus_jupyter.errors import Conflict, Forbidden, InvalidPackage, InvalidRequest, NotFound
from pirus_jupyter.events import EventBus
from pirus_jupyter.files import resolve_under, safe_filename
from pirus_jupyter.forms import normalize_form, validate_config
from pirus_jupyter.models import (
    ACTIVE_RUN_STATUSES,
    FINAL_RUN_STATUSES,
    RUN_TRANSITIONS,
    RunStatus,
    check_run_move,
)
from pirus_jupyter.packaging.inspect import normalize_manifest
from pirus_jupyter.runs.folder import tail_lines
from pirus_jupyter.runs.lifecycle import phase_durations
from pirus_jupyter.settings_doc import render

S = RunStatus


def test_state_machine_table() -> None:
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert {S.DONE, S.ERROR, S.CANCELED} == FINAL_RUN_STATUSES
    # the documented happy path and the user actions
    path = [S.WAITING, S.INITIALIZING, S.RUNNING, S.FINISHING, S.DONE]
    for a, b in itertools.pairwise(path):
        check_run_move(a, b)
    check_run_move(S.RUNNING, S.PAUSE)
    check_run_move(S.PAUSE, S.RUNNING)
    for status in (S.WAITING, S.INITIALIZING, S.RUNNING, S.PAUSE):
        check_run_move(status, S.CANCELED)
    # every non-final status can fail; nothing leaves a final status
    for status in set(RunStatus) - FINAL_RUN_STATUSES:
        check_run_move(status, S.ERROR)
    for final in FINAL_RUN_STATUSES:
        for target in RunStatus:
            with pytest.raises(Conflict):
                check_run_move(final, target)
    for illegal in [(S.WAITING, S.RUNNING), (S.WAITING, S.PAUSE), (S.DONE, S.CANCELED),
                    (S.PAUSE, S.FINISHING), (S.WAITING, S.DONE)]:
        with pytest.raises(Conflict) as info:
            check_run_move(*illegal)
        assert info.value.status == 409 and info.value.code == "illegal_transition"
    assert S.WAITING not in ACTIVE_RUN_STATUSES and S.PAUSE in ACTIVE_RUN_STATUSES


def test_draft03_form_is_normalised_with_placeholders() -> None:
    form = {
        "$schema": "http://json-schema.org/draft-03/schema#",
        "type": "object",
        "properties": {
            "sample": {"type": "string", "enum": ["__PIRUS_INPUT_FILES__"], "required": True},
            "refs": {"type": "array", "items": {"type": "string", "enum": ["__PIRUS_DB_REFS__"]}},
            "genome": {"type": "string", "enum": ["__PIRUS_DB_REF__"], "required": False},
            "other": {"type": "string", "default": "__PIRUS_SOMETHING_NEW__"},
            "opts": {"type": "object", "properties": {"k": {"type": "integer",
                                                             "required": True}}},
        },
    }
    schema = normalize_form(form, ["a.fastq", "b.fastq"], ["hg19", "hg38"])
    assert schema["$schema"].startswith("http://json-schema.org/draft-07")
    assert schema["required"] == ["sample"]
    assert schema["properties"]["sample"]["enum"] == ["a.fastq", "b.fastq"]
    assert schema["properties"]["refs"]["items"]["enum"] == ["hg19", "hg38"]
    assert schema["properties"]["genome"]["enum"] == ["hg19", "hg38"]
    assert schema["properties"]["other"]["default"] == "__PIRUS_SOMETHING_NEW__"
    assert schema["properties"]["opts"]["required"] == ["k"]
    assert "required" not in schema["properties"]["genome"]
    config = validate_config(schema, {"sample": "a.fastq", "opts": {"k": 1}})
    assert config["other"] == "__PIRUS_SOMETHING_NEW__"
    with pytest.raises(InvalidRequest) as info:
        validate_config(schema, {"sample": "c.fastq", "opts": {}})
    fields = {d["field"] for d in info.value.details}
    assert fields == {"sample", "opts.k"}


def test_empty_and_invalid_forms() -> None:
    assert normalize_form(None)["properties"] == {}
    with pytest.raises(InvalidRequest):
        normalize_form({"type": "object", "properties": {"x": {"type": 12}}})
    with pytest.raises(InvalidRequest):
        validate_config(normalize_form(None), ["not", "an", "object"])


def test_manifest_defaults_and_aliases() -> None:
    manifest = normalize_manifest({"pirus": {"name": "n", "job": "/pipeline/job/run.sh",
                                             "developers": "Ikit", "version": 2}})
    assert manifest["run"] == "/pipeline/job/run.sh"
    assert manifest["inputs"] == "/pipeline/inputs"
    assert manifest["outputs"] == "/pipeline/outputs"
    assert manifest["logs"] == "/pipeline/logs"
    assert manifest["databases"] == "/pipeline/databases"
    assert manifest["developers"] == ["Ikit"] and manifest["version"] == "2"
    for bad in ({"pirus": {"run": "x"}}, {"pirus": {"name": "n"}}, {"other": 1}, [],
                {"pirus": {"name": "n", "run": "x", "outputs": "relative"}},
                {"pirus": {"name": "n", "run": "x", "inputs": "/a/../../etc"}},
                {"pirus": {"name": "n", "run": "x", "limits": {"gpu": 1}}}):
        with pytest.raises(InvalidPackage):
            normalize_manifest(bad)


def test_paths_never_escape_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("a")
    (tmp_path / "secret").write_text("s")
    (root / "link").symlink_to(tmp_path / "secret")
    assert resolve_under(root, "data/a.txt") == (root / "data" / "a.txt").resolve()
    assert resolve_under(root, "/data/a.txt") == (root / "data" / "a.txt").resolve()
    for bad in ("../secret", "data/../../secret", "link"):
        with pytest.raises(Forbidden):
            resolve_under(root, bad)
    with pytest.raises(NotFound):
        resolve_under(root, "nope")
    for bad in ("", "   ", "a\x00b"):
        with pytest.raises(InvalidRequest):
            resolve_under(root, bad)
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("..") == "file"
    assert safe_filename("a\\b\\c.fastq") == "c.fastq"
    assert safe_filename("x\x00\ny.txt") == "xy.txt"


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    assert tail_lines(log, 5) == ""
    log.write_text("".join(f"line {i}\n" for i in range(100000)))
    assert tail_lines(log, 2) == "line 99998\nline 99999\n"
    assert tail_lines(log, 0) == ""


def test_phase_durations_add_up_repeated_statuses() -> None:
    timings = [["WAITING", "2026-01-01T00:00:00+00:00"],
               ["INITIALIZING", "2026-01-01T00:00:01+00:00"],
               ["RUNNING", "2026-01-01T00:00:02+00:00"],
               ["PAUSE", "2026-01-01T00:00:05+00:00"],
               ["RUNNING", "2026-01-01T00:00:15+00:00"],
               ["FINISHING", "2026-01-01T00:00:17+00:00"],
               ["DONE", "2026-01-01T00:00:18+00:00"]]
    assert phase_durations(timings) == {"WAITING": 1.0, "INITIALIZING": 1.0, "RUNNING": 5.0,
                                        "PAUSE": 10.0, "FINISHING": 1.0}


def test_event_bus_cuts_off_slow_subscribers() -> None:
    async def scenario() -> None:
        bus = EventBus(queue_size=3)
        fast, slow = bus.subscribe(), bus.subscribe()
        for i in range(3):
            bus.publish("run.updated", {"id": i})
            await fast.get()
        bus.publish("run.updated", {"id": 3})
        assert slow.overflowed and not fast.overflowed
        assert bus.subscriber_count == 1
        messages = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
        assert messages[-1]["type"] == "subscription.overflow"
        assert (await fast.get())["data"] == {"id": 3}

    asyncio.run(scenario())


def test_configuration_doc_is_current() -> None:
    doc = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == render(), "regenerate: python -m pirus_jupyter.settings_doc"


def test_builder_offers_the_notify_url_only_to_packages_that_name_it(tmp_path: Path) -> None:
    from pirus_jupyter.packaging.build import names_notify_url

    script = tmp_path / "bin" / "report.sh"
    script.parent.mkdir()
    script.write_text('wget --post-data "$1" "$PIRUS_NOTIFY_URL"\n')
    assert names_notify_url('curl -d {} "$PIRUS_NOTIFY_URL"', [])
    assert names_notify_url("/pipeline/run.sh", [b"x", b"echo $PIRUS_NOTIFY_URL"])
    assert names_notify_url("/pipeline/run.sh", [tmp_path])  # a host folder, walked
    script.write_text('echo "{}" >>"$PIRUS_PROGRESS_FILE"\n')
    assert not names_notify_url("/pipeline/run.sh", [tmp_path, b"echo hi"])
