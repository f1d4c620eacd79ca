"""Widgets without a frontend (ipywidgets' dummy comm) and without a server: the config form
generated from draft-07 and draft-03 schemas, live validation, value round trips, the file
picker, the live run widget driven by pushed events, and the run record's static bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import nbformat
import pytest
from IPython.core.formatters import DisplayFormatter

from pirus_jupyter.forms import apply_defaults, field_errors, normalize_form
from pirus_jupyter.kernel.client import Client
from pirus_jupyter.kernel.errors import PirusAPIError
from pirus_jupyter.kernel.records import Run
from pirus_jupyter.widgets.fields import ArrayField, JSONField, MultiSelectField
from pirus_jupyter.widgets.form import ConfigForm
from pirus_jupyter.widgets.picker import FilePicker, local_lister
from pirus_jupyter.widgets.record import RECORD_MIME, RunRecord
from pirus_jupyter.widgets.run import RunWidget, format_elapsed

DRAFT7 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Everything",
    "description": "One field of each kind.",
    "type": "object",
    "required": ["sample_name", "threads"],
    "properties": {
        "sample_name": {"type": "string", "title": "Sample", "pattern": "^[A-Za-z0-9_]+$",
                        "description": "Letters, digits and underscores."},
        "mode": {"type": "string", "enum": ["fast", "sensitive"], "default": "fast"},
        "email": {"type": "string", "format": "email"},
        "day": {"type": "string", "format": "date", "default": "2024-01-31"},
        "threads": {"type": "integer", "minimum": 1, "maximum": 64, "default": 4},
        "seed": {"type": "integer"},
        "ratio": {"type": "number", "minimum": 0, "default": 0.5},
        "scale": {"type": "number"},
        "paired": {"type": "boolean", "default": True},
        "adapters": {"type": "array", "items": {"type": "string", "minLength": 3},
                     "default": ["AGATCGG"], "maxItems": 3},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["qc", "trim", "dedup"]},
                 "uniqueItems": True},
        "advanced": {"type": "object", "title": "Advanced",
                     "properties": {"kmer": {"type": "integer", "default": 31,
                                             "exclusiveMinimum": 0},
                                    "note": {"type": "string"}},
                     "required": ["kmer"]},
        "extra": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    },
    "additionalProperties": False,
}

DRAFT3 = {
    "$schema": "http://json-schema.org/draft-03/schema#",
    "type": "object",
    "properties": {
        "sample": {"type": "string", "enum": ["__PIRUS_INPUT_FILES__"], "required": True,
                   "description": "the FASTQ to analyse"},
        "genome": {"type": "string", "enum": ["__PIRUS_DB_REF__"], "required": True},
        "refs": {"type": "array", "items": {"type": "string", "enum": ["__PIRUS_DB_REFS__"]}},
        "everything": {"type": "string", "enum": ["__PIRUS_DB_ALL__"]},
        "other": {"type": "string", "default": "__PIRUS_SOMETHING_NEW__"},
        "opts": {"type": "object", "properties": {"k": {"type": "integer", "required": True,
                                                         "default": 3}}},
    },
}


def control(form: ConfigForm, key: str) -> Any:
    return form.field(key).control


# -- generation ----------------------------------------------------------------------------
def test_every_type_gets_its_widget_with_defaults_and_help() -> None:
    form = ConfigForm(DRAFT7)
    assert isinstance(control(form, "sample_name"), widgets.Text)
    assert control(form, "sample_name").placeholder == "pattern: ^[A-Za-z0-9_]+$"
    assert control(form, "sample_name").description == "Sample *"  # required marked
    assert "Letters, digits" in form.field("sample_name").help.value  # help text
    assert control(form, "sample_name").tooltip == "Letters, digits and underscores."
    mode = control(form, "mode")
    assert isinstance(mode, widgets.Dropdown) and list(mode.options) == ["fast", "sensitive"]
    assert control(form, "email").placeholder == "email"
    assert isinstance(control(form, "day"), widgets.DatePicker)
    threads = control(form, "threads")
    assert isinstance(threads, widgets.BoundedIntText)
    assert (threads.min, threads.max, threads.value) == (1, 64, 4)
    assert type(control(form, "seed")) is widgets.IntText
    assert isinstance(control(form, "ratio"), widgets.BoundedFloatText)
    assert type(control(form, "scale")) is widgets.FloatText
    assert isinstance(control(form, "paired"), widgets.Checkbox)
    assert isinstance(form.field("adapters"), ArrayField)
    assert isinstance(form.field("tags"), MultiSelectField)
    assert list(control(form, "tags").options) == ["qc", "trim", "dedup"]
    assert isinstance(control(form, "advanced.kmer"), widgets.BoundedIntText)
    assert control(form, "advanced.kmer").min == 1  # exclusiveMinimum 0 for an integer
    assert isinstance(form.field("extra"), JSONField)
    assert "Everything" in form.title.value and "One field of each kind." in form.title.value
    # Defaults are the initial value; optional fields without a default stay out.
    assert form.value == {"mode": "fast", "day": "2024-01-31", "threads": 4, "ratio": 0.5,
                          "paired": True, "adapters": ["AGATCGG"], "advanced": {"kmer": 31}}
    assert form.errors == [{"field": "sample_name", "message": "sample_name is required"}]
    assert form.field("sample_name").messages == ["sample_name is required"]


def test_live_validation_messages_per_field() -> None:
    form = ConfigForm(DRAFT7)
    control(form, "sample_name").value = "bad name!"
    assert form.field("sample_name").messages == ["'bad name!' does not match "
                                                   "'^[A-Za-z0-9_]+$'"]
    assert "does not match" in form.field("sample_name").error.value
    assert not form.valid and "1 problem" in form.status.value
    control(form, "sample_name").value = "S1"
    assert form.valid and form.field("sample_name").messages == []
    assert "valid" in form.status.value
    # a nested array item too short: the message lands under the item
    form.field("adapters").items[0].control.value = "AG"
    assert form.field("adapters.0").messages == ["'AG' is too short"]
    # JSON fallback: not JSON, then the wrong type for oneOf
    control(form, "extra").value = "{nope"
    assert any("not valid JSON" in m for m in form.field("extra").messages)
    control(form, "extra").value = "[1]"
    assert form.field("extra").messages  # matches neither string nor integer
    control(form, "extra").value = "7"
    control(form, "adapters.0").value = "AGATC"
    assert form.valid, form.errors
    # The messages are exactly the server's (same function, same schema, defaults applied).
    control(form, "sample_name").value = ""
    expected = field_errors(form.schema, apply_defaults(form.schema, form.value))
    assert form.errors == expected


def test_array_rows_add_and_remove() -> None:
    form = ConfigForm(DRAFT7)
    adapters = form.field("adapters")
    assert isinstance(adapters, ArrayField)
    adapters.add_button.click()
    adapters.items[1].control.value = "CTGTCTC"
    assert form.value["adapters"] == ["AGATCGG", "CTGTCTC"]
    adapters.add_button.click()
    assert adapters.add_button.disabled  # maxItems 3
    adapters.items[2].control.value = "TTTTT"
    remove_first = adapters.rows.children[0].children[1]
    remove_first.click()
    assert form.value["adapters"] == ["CTGTCTC", "TTTTT"]
    assert not adapters.add_button.disabled
    # keys follow the new positions: an error on the (new) first item lands there
    adapters.items[0].control.value = "A"
    assert form.field("adapters.0").messages == ["'A' is too short"]
    assert "adapters.2" not in form.fields_by_key


def test_value_round_trip() -> None:
    config = {"sample_name": "S_2", "mode": "sensitive", "email": "a@b.org",
              "day": "2025-06-01", "threads": 8, "seed": 42, "ratio": 0.25, "scale": 1.5,
              "paired": False, "adapters": ["AAAA", "CCCC"], "tags": ["trim", "qc"],
              "advanced": {"kmer": 21, "note": "hello"}, "extra": 5}
    form = ConfigForm(DRAFT7)
    form.value = config
    assert form.value == config
    assert form.valid, form.errors
    again = ConfigForm(DRAFT7)
    again.value = form.value
    assert again.value == config
    assert control(again, "tags").value == ("trim", "qc")
    with pytest.raises(ValueError):
        form.value = {"mode": "not-an-option"}


def test_draft03_with_placeholders_and_input_changes() -> None:
    form = ConfigForm(DRAFT3, inputs=["data/a.fastq", "data/b.fastq"],
                      databases=["hg19", "hg38"])
    assert form.schema == normalize_form(DRAFT3, ["a.fastq", "b.fastq"], ["hg19", "hg38"])
    sample = control(form, "sample")
    assert isinstance(sample, widgets.Dropdown)
    assert list(sample.options) == ["a.fastq", "b.fastq"] and sample.description == "sample *"
    assert list(control(form, "genome").options) == ["hg19", "hg38"]
    assert list(control(form, "everything").options) == ["hg19", "hg38"]
    assert list(control(form, "refs").options) == ["hg19", "hg38"]
    assert control(form, "other").value == "__PIRUS_SOMETHING_NEW__"  # unknown: tolerated
    assert control(form, "opts.k").description == "k *"
    assert {e["field"] for e in form.errors} == {"sample", "genome"}
    sample.value = "b.fastq"
    control(form, "genome").value = "hg38"
    control(form, "refs").value = ("hg19",)
    assert form.valid, form.errors
    assert form.value == {"sample": "b.fastq", "genome": "hg38", "refs": ["hg19"],
                          "other": "__PIRUS_SOMETHING_NEW__", "opts": {"k": 3}}
    # New inputs: the placeholder enum follows, a choice still offered is kept...
    form.inputs = ["data/b.fastq", "data/c.fastq"]
    assert list(control(form, "sample").options) == ["b.fastq", "c.fastq"]
    assert form.value["sample"] == "b.fastq" and form.value["genome"] == "hg38"
    # ... one no longer offered is dropped, and validation says so.
    form.inputs = ["data/d.fastq"]
    assert "sample" not in form.value
    assert form.field("sample").messages == ["sample is required"]


def test_file_picker_browses_the_root(tmp_path: Path) -> None:
    (tmp_path / "data" / "run1").mkdir(parents=True)
    (tmp_path / "data" / "a.fastq").write_text("@r\nA\n+\nI\n")
    (tmp_path / "data" / "run1" / "b.fastq").write_text("@r\nA\n+\nI\n")
    (tmp_path / ".hidden").write_text("")
    (tmp_path / "top.txt").write_text("")
    changes: list[list[str]] = []
    picker = FilePicker(local_lister(tmp_path), on_change=changes.append)
    labels = [label for label, _ in picker.browser.options]
    assert labels == ["data/", "top.txt"]  # folders first, hidden files left out
    picker.browser.value = 0  # open data/
    assert picker.cwd == "data"
    labels = [label for label, _ in picker.browser.options]
    assert labels == ["..", "run1/", "a.fastq"]
    picker.browser.value = 2
    assert not picker.add_button.disabled
    picker.add_button.click()
    picker.browser.value = 1  # into run1/
    picker.browser.value = 1  # b.fastq
    picker.add_button.click()
    picker.add_button.click()  # twice: listed once
    assert picker.value == ["data/a.fastq", "data/run1/b.fastq"]
    picker.browser.value = 0  # ..
    assert picker.cwd == "data"
    picker.chosen.value = ("data/a.fastq",)
    picker.remove_button.click()
    assert picker.value == ["data/run1/b.fastq"]
    assert changes[-1] == ["data/run1/b.fastq"] and len(changes) == 3
    # In a form, picking files fills the input placeholder.
    form = ConfigForm(DRAFT3, root_dir=tmp_path, databases=["hg19"])
    assert form.picker is not None
    form.picker.add("data/a.fastq")
    assert list(control(form, "sample").options) == ["a.fastq"]
    assert form.inputs == ["data/a.fastq"]


# -- submitting ----------------------------------------------------------------------------
class FakeClient:
    def __init__(self, root: Path) -> None:
        self.list_dir = local_lister(root)

    def _input_paths(self, inputs: list[Any]) -> list[str]:
        return [str(i) for i in inputs]


class FakePipeline:
    name = "fake"

    def __init__(self, root: Path, refuse: PirusAPIError | None = None) -> None:
        self.client = FakeClient(root)
        self.calls: list[dict[str, Any]] = []
        self.refuse = refuse

    def schema(self, inputs: list[str]) -> dict[str, Any]:
        return normalize_form(DRAFT3, inputs, ["hg19"])

    def run(self, **kwargs: Any) -> Any:
        if self.refuse:
            raise self.refuse
        self.calls.append(kwargs)
        return None


def test_run_button_submits_only_a_valid_config(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a.fastq").write_text("@r\nA\n+\nI\n")
    pipeline = FakePipeline(tmp_path)
    form = ConfigForm(pipeline=pipeline, inputs=["a.fastq"])  # type: ignore[arg-type]
    assert form.run_button.disabled  # "genome" is required and unset
    assert form.submit() is None and pipeline.calls == []
    control(form, "sample").value = "a.fastq"
    control(form, "genome").value = "hg19"
    assert not form.run_button.disabled
    shown: list[Any] = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    fake_run = type("R", (), {"id": 7, "widget": lambda self: "widget"})()
    monkeypatch.setattr(pipeline, "run", lambda **kw: (pipeline.calls.append(kw), fake_run)[1])
    form.name_text.value = "  my run "
    assert form.submit() is fake_run
    assert pipeline.calls == [{"config": {"sample": "a.fastq", "genome": "hg19",
                                          "other": "__PIRUS_SOMETHING_NEW__",
                                          "opts": {"k": 3}},
                               "inputs": ["a.fastq"], "name": "my run"}]
    assert shown == ["widget"] and form.last_run is fake_run


def test_server_refusal_is_shown_under_the_fields(tmp_path: Path) -> None:
    refusal = PirusAPIError(400, "invalid_config", "invalid config: sample: no",
                            [{"field": "sample", "message": "'x' is not one of ['a']"}])
    pipeline = FakePipeline(tmp_path, refuse=refusal)
    form = ConfigForm(pipeline=pipeline, inputs=["a.fastq"])  # type: ignore[arg-type]
    form.value = {"sample": "a.fastq", "genome": "hg19"}
    assert form.submit() is None
    assert form.field("sample").messages == ["'x' is not one of ['a']"]
    pipeline.refuse = PirusAPIError(409, "pipeline_not_ready", "pipeline 1 is INSTALLING")
    assert form.submit() is None
    assert "pipeline 1 is INSTALLING" in form.form_errors.value


# -- the live run widget ---------------------------------------------------------------------
class FakeSubscriber:
    def __init__(self) -> None:
        self.listeners: list[tuple[Any, int | None]] = []
        self.closed = 0

    def subscribe(self, callback: Any, run_id: int | None = None) -> Any:
        entry = (callback, run_id)
        self.listeners.append(entry)
        owner = self

        class Handle:
            def close(self) -> None:
                if entry in owner.listeners:
                    owner.listeners.remove(entry)
                    owner.closed += 1

        return Handle()

    def push(self, event_type: str, data: dict[str, Any]) -> None:
        for callback, run_id in list(self.listeners):
            if run_id is None or data.get("id") == run_id:
                callback({"type": event_type, "data": data})


def run_data(**values: Any) -> dict[str, Any]:
    data = {"id": 3, "name": "demo", "pipeline_id": 1, "pipeline_name": "fastq-count",
            "pipeline_version": "1.0.0", "status": "WAITING", "config": {}, "inputs": [],
            "outputs": [], "progress": {"value": 0, "min": 0, "max": 100, "label": None},
            "start": None, "end": None, "exit_code": None, "error": None, "metrics": None,
            "created": "2026-01-01T00:00:00+00:00"}
    data.update(values)
    return data


def test_run_widget_is_updated_by_pushed_events(monkeypatch) -> None:
    client = Client("http://127.0.0.1:9/", "t")
    events = FakeSubscriber()
    client._events = events  # type: ignore[assignment]
    run = Run(client, run_data())
    actions: list[str] = []
    monkeypatch.setattr(run, "logs", lambda which="out", tail=None: f"{which} line\n")
    monkeypatch.setattr(run, "pause", lambda: actions.append("pause"))
    widget = RunWidget(run)
    assert "WAITING" in widget.status_label.value
    assert widget.pause_button.disabled and not widget.cancel_button.disabled
    events.push("run.updated", run_data(id=99, status="RUNNING"))  # another run: ignored
    assert "WAITING" in widget.status_label.value
    # INITIALIZING as the panel shows it: said, with a busy bar, before any progress
    events.push("run.updated", run_data(status="INITIALIZING", progress=None))
    assert "INITIALIZING" in widget.status_label.value
    assert widget.progress_label.value.startswith("initializing")
    assert widget.progress.value == widget.progress.max and widget.progress.bar_style == "info"
    events.push("run.updated", run_data(status="RUNNING", start="2026-01-01T00:00:00+00:00",
                                        progress={"value": 1, "min": 0, "max": 4,
                                                  "label": "a.fastq"}))
    assert "RUNNING" in widget.status_label.value
    assert (widget.progress.max, widget.progress.value) == (4, 1)
    assert widget.progress_label.value == "a.fastq — 1/4 (25%)"
    assert not widget.pause_button.disabled and widget.resume_button.disabled
    widget.pause_button.click()
    assert actions == ["pause"]
    widget._tick()  # the clock: elapsed time and the log tail after an event
    assert "out line" in widget.logs.value and "err line" in widget.logs.value
    assert widget.elapsed_label.value not in ("", "-")
    events.push("run.updated", run_data(status="PAUSE", start="2026-01-01T00:00:00+00:00",
                                        paused_seconds=10.0,
                                        paused_since="2026-01-01T00:00:50+00:00"))
    assert widget.pause_button.disabled and not widget.resume_button.disabled
    # the clock stopped when the pause began: 50 s minus an earlier 10 s pause
    assert widget.elapsed_label.value == "0:40"
    widget._tick()
    assert widget.elapsed_label.value == "0:40"
    # a label that says its percentage is not followed by it again
    events.push("run.updated", run_data(status="RUNNING", start="2026-01-01T00:00:00+00:00",
                                        progress={"value": 4, "min": 0, "max": 4,
                                                  "label": "x.fastq.gz 100%"}))
    assert widget.progress_label.value == "x.fastq.gz 100% — 4/4"
    outputs = [{"name": "counts.tsv", "path": "pirus-runs/3-demo/outputs/counts.tsv",
                "size": 12, "sha256": "ab" * 32, "file_id": 5}]
    events.push("run.updated", run_data(status="DONE", start="2026-01-01T00:00:00+00:00",
                                        end="2026-01-01T00:01:05+00:00", outputs=outputs,
                                        exit_code=0,
                                        progress={"value": 4, "min": 0, "max": 4,
                                                  "label": "b.fastq"}))
    assert "DONE" in widget.status_label.value and widget.progress.bar_style == "success"
    assert "ab" * 32 in widget.outputs.value
    assert widget.elapsed_label.value == "1:05"
    assert widget.cancel_button.disabled and widget.pause_button.disabled
    assert events.listeners == [] and events.closed == 1  # lets go of the websocket
    assert run.status == "DONE"
    # a late, older answer cannot move a finished run back
    run._update(run_data(status="RUNNING"))
    assert run.status == "DONE"
    bundle = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "DONE" in bundle["text/html"]


def test_two_run_widgets_share_one_subscriber() -> None:
    client = Client("http://127.0.0.1:9/", "t")
    events = FakeSubscriber()
    client._events = events  # type: ignore[assignment]
    first = RunWidget(Run(client, run_data(id=1)), log_lines=0)
    second = RunWidget(Run(client, run_data(id=2)), log_lines=0)
    events.push("run.updated", run_data(id=2, status="RUNNING"))
    assert "WAITING" in first.status_label.value and "RUNNING" in second.status_label.value
    events.push("run.updated", run_data(id=1, status="CANCELED"))
    assert "CANCELED" in first.status_label.value and len(events.listeners) == 1
    second.close()
    assert events.listeners == []


def test_format_elapsed() -> None:
    assert format_elapsed(None) == "-"
    assert format_elapsed(5.9) == "0:05"
    assert format_elapsed(3725) == "1:02:05"


# -- the run record, with no server at all -----------------------------------------------------
RECORD = {
    "format": "pirus.run-record", "format_version": 1,
    "pipeline": {"id": 1, "name": "fastq-count", "version": "1.0.0",
                 "fingerprint": "f" * 64},
    "run": {"id": 12, "name": "<script>alert(1)</script>", "status": "DONE", "exit_code": 0,
            "error": None, "created": "2026-01-01T00:00:00+00:00",
            "start": "2026-01-01T00:00:01+00:00", "end": "2026-01-01T00:00:04+00:00"},
    "config": {"min_length": 10},
    "inputs": [{"name": "reads.fastq", "path": "data/reads.fastq", "size": 60,
                "sha256": "1" * 64}],
    "outputs": [{"name": "counts.tsv", "path": "pirus-runs/12-x/outputs/counts.tsv",
                 "size": 29, "sha256": "2" * 64}],
    "metrics": {"wall_seconds": 3.0, "cpu_seconds": 0.02, "memory_peak_bytes": 2000000,
                "phases": {"RUNNING": 1.5}},
    "server": {"url": "http://127.0.0.1:8888/", "version": "0.1.0"},
    "recorded": "2026-01-01T00:00:05+00:00",
}


def test_record_bundle_html_text_and_json() -> None:
    record = RunRecord.from_json(json.dumps(RECORD))
    bundle = record._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", RECORD_MIME}
    assert bundle[RECORD_MIME] == RECORD
    page = bundle["text/html"]
    for expected in ("fastq-count", "1.0.0", "f" * 64, "DONE", "1" * 64, "2" * 64,
                     "data/reads.fastq", "counts.tsv", "&quot;min_length&quot;: 10",
                     "exit code 0", "wall 3.00 s"):
        assert expected in page, expected
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<script" not in page.lower()  # static: renders with no kernel and no JS
    text = bundle["text/plain"]
    assert "2" * 64 in text and "fastq-count 1.0.0" in text and "DONE" in text
    assert RunRecord.from_json(record.to_json()) == record
    with pytest.raises(ValueError):
        RunRecord({"format": "something else"})
    # Display formatting picks the bundle up as IPython would.
    data, _ = DisplayFormatter().format(record)
    assert RECORD_MIME in data and "text/html" in data


def test_record_survives_a_saved_notebook(tmp_path: Path) -> None:
    record = RunRecord(RECORD)
    data, metadata = DisplayFormatter().format(record)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run.record()")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data, metadata=metadata)]
    nb.cells = [nbformat.v4.new_markdown_cell("# results"), cell]
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    nbformat.validate(nbformat.read(path, as_version=4))
    (found,) = RunRecord.from_notebook(path)
    assert found == record
    assert RunRecord.load(str(path)) == record
    # nbconvert renders the static HTML from the file alone: no kernel, no server.
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(path))
    assert "2" * 64 in body and "pirus-run-record" in body
    saved = record.save(tmp_path / "record.json")
    assert RunRecord.from_json(saved) == record
    assert RunRecord.load(str(saved)) == record


def test_output_comparison() -> None:
    first = RunRecord(RECORD)
    same = RunRecord({**RECORD, "run": {**RECORD["run"], "id": 13}})
    other = RunRecord({**RECORD, "outputs": [{**RECORD["outputs"][0], "sha256": "3" * 64}]})
    assert first.compare(same).identical and bool(first.compare(same))
    diff = first.compare(other)
    assert not diff.identical and diff.rows[0]["same"] is False
    assert "DIFFER" in repr(diff) and "different" in diff._repr_mimebundle_()["text/html"]


def test_importing_the_package_does_not_import_ipywidgets() -> None:
    code = ("import sys, pirus_jupyter, pirus_jupyter.kernel.client, pirus_jupyter.widgets.record;"
            "pirus_jupyter.connect; pirus_jupyter.rerun; pirus_jupyter.RunRecord;"
            "assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'")
    subprocess.run([sys.executable, "-c", code], check=True)



def _imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """Every module a file imports (absolute names, ``from x import y`` counted as both ``x``
    and ``x.y``), anywhere in it, plus the string given to ``import_module``/``__import__``."""
    import ast

    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                node.func, "attr", None)) in ("import_module", "__import__"):
            found += [(node.lineno, str(arg.value)) for arg in node.args
                      if isinstance(arg, ast.Constant)]
    return found


def test_kernel_never_imports_widgets() -> None:
    """widgets/ builds on kernel/, never the reverse: no module under kernel/ imports
    pirus_jupyter.widgets (nor pirus_jupyter.notebook, which wires both), not even inside a
    function or under TYPE_CHECKING."""
    import pirus_jupyter.kernel

    kernel_dir = Path(pirus_jupyter.kernel.__file__).parent
    offenders = [
        f"{path.name}:{line}: {name}"
        for path in sorted(kernel_dir.glob("*.py"))
        for line, name in _imported_modules(path, "pirus_jupyter.kernel")
        if name.startswith(("pirus_jupyter.widgets", "pirus_jupyter.notebook", ".widgets",
                            "..widgets"))
    ]
    assert not offenders, "kernel/ imports widgets: " + ", ".join(offenders)
    # the check sees an import: widgets/ itself imports kernel/
    assert any(name.startswith("pirus_jupyter.kernel") for _, name in _imported_modules(
        kernel_dir.parent / "widgets" / "record.py", "pirus_jupyter.widgets"))


# -- static pictures for readers without a kernel ------------------------------------------------
RAW_REPRS = ("ConfigForm(", "FilePicker(", "VBox(children", "HBox(children", "HTML(value")


def test_form_and_picker_carry_their_values_as_html_and_text(tmp_path: Path) -> None:
    (tmp_path / "a.fastq").write_text("@r\nACGT\n+\nIIII\n")
    form = ConfigForm(DRAFT7, inputs=["a.fastq"], root_dir=tmp_path)
    form.value = {"sample_name": "S1", "threads": 8, "advanced": {"kmer": 21}}
    bundle = form._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    for mime in ("text/plain", "text/html"):
        assert not any(raw in bundle[mime] for raw in RAW_REPRS), bundle[mime]
        assert "S1" in bundle[mime] and "a.fastq" in bundle[mime]
    assert "  threads: 8" in bundle["text/plain"]
    assert '{"kmer": 21}' in bundle["text/plain"]
    assert "valid" in bundle["text/html"]
    form.value = {"sample_name": "bad name!"}
    assert "does not match" in form._repr_mimebundle_()["text/plain"]
    assert form.picker._repr_mimebundle_()["text/plain"] == "chosen files: a.fastq"


def test_run_watchers_see_each_change_in_the_updating_thread() -> None:
    run = Run(Client("http://127.0.0.1:9/", "t"), run_data())
    seen: list[str] = []
    stop = run.watch(lambda r: seen.append(r.status))
    assert run._update(run_data(status="RUNNING"))
    assert not run._update(run_data(status="RUNNING"))  # unchanged: nobody called
    run._update(run_data(status="DONE"))
    run._update(run_data(status="RUNNING"))  # refused: a final status stays
    assert seen == ["RUNNING", "DONE"]
    stop()
    run._update(run_data(status="DONE", exit_code=0))
    assert seen == ["RUNNING", "DONE"]


def test_run_widget_drawn_by_a_change_made_elsewhere() -> None:
    """run.wait() or refresh() in another cell changes the record: the widget follows at once,
    without an event of its own."""
    client = Client("http://127.0.0.1:9/", "t")
    events = FakeSubscriber()
    client._events = events  # type: ignore[assignment]
    run = Run(client, run_data())
    widget = RunWidget(run, log_lines=0)
    run._update(run_data(status="DONE", end="2026-01-01T00:00:05+00:00",
                         start="2026-01-01T00:00:00+00:00"))
    text = widget._repr_mimebundle_()["text/plain"]
    assert "status: DONE" in text and "WAITING" not in text
    assert events.listeners == []  # finished: let go of the websocket
