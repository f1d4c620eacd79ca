"""Run records: what a run was, rendered so that a saved notebook keeps it, and :func:`rerun`.

A :class:`RunRecord` is plain JSON (no widget, no kernel needed to show it). Displayed, it
leaves three representations in the cell output:

* ``text/html``: a static table (pipeline, image fingerprint, status, times, config, inputs and
  outputs with sha256, metrics), self-contained inline HTML that nbconvert and notebook viewers
  render without a kernel or a server;
* ``text/plain``: the same, as text;
* ``application/vnd.pirus.run+json``: the record itself, which :meth:`RunRecord.from_notebook`
  reads back from a saved ``.ipynb`` and :func:`rerun` turns into a new run.

This module does not import ipywidgets.
"""

from __future__ import annotations

import copy
import html
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..kernel.discovery import connect
from ..kernel.progress import human_size
from ..kernel.records import Run

if TYPE_CHECKING:
    from ..kernel.client import Client

RECORD_MIME = "application/vnd.pirus.run+json"
RECORD_FORMAT = "pirus.run-record"
RECORD_VERSION = 1

__all__ = ["RECORD_MIME", "STATUS_COLOURS", "OutputComparison", "RunRecord"]


def _short(sha: str | None, n: int = 12) -> str:
    return sha[:n] if sha else "unknown"


def _size(size: Any) -> str:
    return human_size(size) if isinstance(size, (int, float)) else ""


#: The colour of each run status, in the record and in the live widget.
STATUS_COLOURS = {"WAITING": "#57606a", "INITIALIZING": "#0969da", "RUNNING": "#0969da",
                  "PAUSE": "#9a6700", "FINISHING": "#0969da", "DONE": "#1a7f37",
                  "ERROR": "#cf222e", "CANCELED": "#6e7781"}



def _reuse_text(run: Mapping[str, Any]) -> str:
    """"reused from run N" or why an asked reuse missed; "" when reuse played no part."""
    if run.get("reused_from") is not None:
        return f"reused from run {run['reused_from']} (no container ran)"
    miss = run.get("reuse_miss") or {}
    return f"not reused: {miss['message']}" if miss.get("message") else ""

class RunRecord:
    """The reproducible record of one run.

    Fields (also in :meth:`to_json`): ``pipeline`` (``id``, ``name``, ``version``,
    ``fingerprint``: the LXD image fingerprint, i.e. the package's SHA-256), ``run`` (``id``,
    ``name``, ``status``, ``exit_code``, ``error``, ``created``, ``start``, ``end``),
    ``config``, ``inputs`` (``name``, ``path``, ``size``, ``sha256`` when known), ``outputs``
    (``name``, ``path``, ``size``, ``sha256``), ``metrics`` (wall/cpu seconds, peak memory,
    seconds per phase), ``server`` (URL and version) and ``recorded`` (when it was made).
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        data = dict(copy.deepcopy(data))
        if data.get("format") != RECORD_FORMAT:
            raise ValueError("not a Pirus run record (format must be "
                             f"{RECORD_FORMAT!r}, got {data.get('format')!r})")
        for key in ("pipeline", "run"):
            if not isinstance(data.get(key), Mapping):
                raise ValueError(f"a run record needs a {key!r} object")
        data.setdefault("config", {})
        data.setdefault("inputs", [])
        data.setdefault("outputs", [])
        data.setdefault("metrics", None)
        self._data = data

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run: Run) -> RunRecord:
        """The record of a run as the server has it now (pipeline fingerprint and input
        hashes are looked up through the run's client)."""
        from .. import __version__

        client = run.client
        data = run.data
        pipeline: dict[str, Any] = {"id": data.get("pipeline_id"),
                                    "name": data.get("pipeline_name"),
                                    "version": data.get("pipeline_version"),
                                    "fingerprint": data.get("pipeline_fingerprint")}
        if not pipeline["fingerprint"]:  # a server that does not record it with the run
            try:
                installed = client.pipeline(int(data["pipeline_id"]))
            except Exception:  # removed since: the record keeps what the run says
                installed = None
            if installed is not None and installed.name == pipeline["name"] and \
                    installed.version == pipeline["version"]:
                pipeline["fingerprint"] = installed.fingerprint
        server_version = None
        try:
            server_version = client.info().get("version")
        except Exception:
            server_version = None
        return cls({
            "format": RECORD_FORMAT,
            "format_version": RECORD_VERSION,
            "pipeline": pipeline,
            "run": {k: data.get(k) for k in ("id", "name", "status", "exit_code", "error",
                                             "created", "start", "end", "location", "origin",
                                             "reused_from", "reuse_miss")},
            "config": data.get("config") or {},
            "inputs": _inputs_with_hashes(client, data),
            "outputs": [{k: o.get(k) for k in ("name", "path", "size", "sha256")}
                        for o in data.get("outputs") or []],
            "progress": data.get("progress"),
            "metrics": data.get("metrics"),
            "server": {"url": client.base_url, "version": server_version},
            "client": {"pirus_jupyter": __version__},
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })

    @classmethod
    def from_json(cls, source: Mapping[str, Any] | str | os.PathLike[str]) -> RunRecord:
        """A record from its JSON payload: a dict, JSON text, or a ``.json`` file path."""
        if isinstance(source, Mapping):
            return cls(source)
        text = str(source)
        if isinstance(source, os.PathLike) or not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        return cls(json.loads(text))

    @classmethod
    def load(cls, source: Any, client: Client | None = None) -> RunRecord:
        """A record from anything that names one: a :class:`RunRecord`, a
        :class:`~pirus_jupyter.kernel.records.Run`, a run id (read through ``client``), a JSON
        dict or text, or a ``.json``/``.ipynb`` file (the last record in a notebook)."""
        if isinstance(source, RunRecord):
            return source
        if isinstance(source, Run):
            return source.record()
        if isinstance(source, int) and not isinstance(source, bool):
            if client is None:
                client = connect()
            return client.run(source).record()
        if isinstance(source, (str, os.PathLike)) and str(source).endswith(".ipynb"):
            records = cls.from_notebook(source)
            if not records:
                raise ValueError(f"{source} holds no Pirus run record in its outputs")
            return records[-1]
        return cls.from_json(source)

    @classmethod
    def from_notebook(cls, notebook: str | os.PathLike[str] | Mapping[str, Any]
                      ) -> list[RunRecord]:
        """Every run record left in the outputs of a saved notebook (a path or a notebook
        dict), in cell order; the same run displayed twice counts once (its latest state)."""
        if isinstance(notebook, Mapping):
            nb = notebook
        else:
            nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
        found: dict[Any, RunRecord] = {}
        for cell in nb.get("cells", []):
            for output in cell.get("outputs", []) or []:
                payload = (output.get("data") or {}).get(RECORD_MIME)
                if payload is None:
                    continue
                if isinstance(payload, str):
                    payload = json.loads(payload)
                try:
                    record = cls(payload)
                except ValueError:
                    continue
                key = (record.server.get("url"), record.run.get("id"))
                found.pop(key, None)
                found[key] = record
        return list(found.values())

    # -- reading ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-serialisable dict (a copy)."""
        return copy.deepcopy(self._data)

    def to_json_text(self, indent: int | None = 2) -> str:
        """The record as JSON text."""
        return json.dumps(self._data, indent=indent, sort_keys=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as a JSON file; returns its path."""
        target = Path(path)
        target.write_text(self.to_json_text() + "\n", encoding="utf-8")
        return target

    @property
    def pipeline(self) -> dict[str, Any]:
        """``id``, ``name``, ``version`` and ``fingerprint`` of the pipeline."""
        return dict(self._data["pipeline"])

    @property
    def run(self) -> dict[str, Any]:
        """``id``, ``name``, ``status``, ``exit_code``, ``error``, ``created``, ``start``,
        ``end`` of the run."""
        return dict(self._data["run"])

    @property
    def server(self) -> dict[str, Any]:
        """The server the run ran on (``url``, ``version``)."""
        return dict(self._data.get("server") or {})

    @property
    def config(self) -> dict[str, Any]:
        """The run's configuration (with the defaults the server filled in)."""
        return copy.deepcopy(self._data["config"])

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """``name``, ``path``, ``size``, ``sha256`` (None when unknown) of each input."""
        return copy.deepcopy(self._data["inputs"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """``name``, ``path``, ``size``, ``sha256`` of each output."""
        return copy.deepcopy(self._data["outputs"])

    @property
    def metrics(self) -> dict[str, Any] | None:
        """Wall and CPU seconds, peak memory and seconds per phase (when the run ran)."""
        return copy.deepcopy(self._data.get("metrics"))

    @property
    def status(self) -> str | None:
        """The run's status when the record was made."""
        return self._data["run"].get("status")

    @property
    def output_hashes(self) -> dict[str, str | None]:
        """``{output name: sha256}``."""
        return {o.get("name") or o.get("path"): o.get("sha256") for o in self._data["outputs"]}

    def compare(self, other: RunRecord | Run) -> OutputComparison:
        """Compare this record's outputs (names and sha256) with another run's."""
        other_record = other if isinstance(other, RunRecord) else RunRecord.load(other)
        return OutputComparison(self, other_record)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunRecord) and other._data == self._data

    def __repr__(self) -> str:
        p, r = self._data["pipeline"], self._data["run"]
        return (f"<RunRecord run {r.get('id')} {r.get('status')} {p.get('name')} "
                f"{p.get('version') or ''}>")

    # -- rendering ------------------------------------------------------------------------
    def _duration(self) -> str:
        wall = (self._data.get("metrics") or {}).get("wall_seconds")
        return f"{wall:.1f} s" if isinstance(wall, (int, float)) else ""

    def to_text(self) -> str:
        """A plain-text rendering (the ``text/plain`` of the bundle)."""
        p, r = self._data["pipeline"], self._data["run"]
        lines = [
            f"Pirus run {r.get('id')} {r.get('name')!r}: {r.get('status')}"
            + (f" (exit code {r['exit_code']})" if r.get("exit_code") is not None else ""),
            f"  pipeline: {p.get('name')} {p.get('version') or ''} (id {p.get('id')}, image "
            f"{_short(p.get('fingerprint'), 64)})",
            f"  started: {r.get('start') or '-'}   ended: {r.get('end') or '-'}"
            + (f"   wall: {self._duration()}" if self._duration() else ""),
        ]
        if r.get("error"):
            lines.append(f"  error: {r['error']}")
        reuse = _reuse_text(r)
        if reuse:
            lines.append(f"  reuse: {reuse}")
        lines.append(f"  config: {json.dumps(self._data['config'], sort_keys=True)}")
        lines.append("  inputs:" if self._data["inputs"] else "  inputs: none")
        for item in self._data["inputs"]:
            lines.append(f"    {item.get('path')}  {item.get('size')} bytes  sha256 "
                         f"{item.get('sha256') or 'unknown'}")
        lines.append("  outputs:" if self._data["outputs"] else "  outputs: none")
        for item in self._data["outputs"]:
            lines.append(f"    {item.get('name')}  {item.get('size')} bytes  sha256 "
                         f"{item.get('sha256') or 'unknown'}")
        metrics = self._data.get("metrics") or {}
        if metrics:
            lines.append("  metrics: " + json.dumps(metrics, sort_keys=True))
        return "\n".join(lines)

    def to_html(self) -> str:
        """A static, self-contained HTML rendering (the ``text/html`` of the bundle)."""
        e = html.escape
        p, r = self._data["pipeline"], self._data["run"]
        status = str(r.get("status"))
        colour = STATUS_COLOURS.get(status, "#57606a")
        td = "padding:2px 8px;text-align:left;vertical-align:top;border:none"
        mono = "font-family:monospace;font-size:90%"

        def row(label: str, value: str) -> str:
            return (f'<tr><th style="{td};font-weight:600;white-space:nowrap">{e(label)}</th>'
                    f'<td style="{td}">{value}</td></tr>')

        def files(items: list[dict[str, Any]], key: str) -> str:
            if not items:
                return "<i>none</i>"
            body = "".join(
                f'<tr><td style="{td};{mono}">{e(str(i.get(key) or i.get("path")))}</td>'
                f'<td style="{td}">{e(_size(i.get("size")))}</td>'
                f'<td style="{td};{mono}" title="{e(str(i.get("sha256") or ""))}">'
                f'{e(str(i.get("sha256") or "unknown"))}</td></tr>' for i in items)
            head = (f'<tr><th style="{td}">{"path" if key == "path" else "name"}</th>'
                    f'<th style="{td}">size</th><th style="{td}">sha256</th></tr>')
            return f'<table style="border-collapse:collapse">{head}{body}</table>'

        metrics = self._data.get("metrics") or {}
        metric_bits = []
        if isinstance(metrics.get("wall_seconds"), (int, float)):
            metric_bits.append(f"wall {metrics['wall_seconds']:.2f} s")
        if isinstance(metrics.get("cpu_seconds"), (int, float)):
            metric_bits.append(f"cpu {metrics['cpu_seconds']:.2f} s")
        if isinstance(metrics.get("memory_peak_bytes"), (int, float)):
            metric_bits.append(f"peak memory {_size(metrics['memory_peak_bytes'])}")
        phases = metrics.get("phases") or {}
        if phases:
            metric_bits.append("phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in
                                                      phases.items()
                                                      if isinstance(v, (int, float))))
        exit_code = r.get("exit_code")
        rows = [
            row("Pipeline", f"{e(str(p.get('name')))} {e(str(p.get('version') or ''))} "
                            f"<span style=\"color:#57606a\">(id {e(str(p.get('id')))})</span>"),
            row("Image fingerprint",
                f'<span style="{mono}">{e(str(p.get("fingerprint") or "unknown"))}</span>'),
            row("Status", f'<b style="color:{colour}">{e(status)}</b>'
                          + (f" (exit code {e(str(exit_code))})" if exit_code is not None
                             else "")),
            row("Started / ended", f"{e(str(r.get('start') or '-'))} → "
                                   f"{e(str(r.get('end') or '-'))}"),
        ]
        if r.get("location"):
            rows.append(row("Cluster member", e(str(r["location"]))))
        if r.get("origin") == "tes":
            rows.append(row("Made by", "a GA4GH TES client (its executors replaced the "
                                       "pipeline's command)"))
        if r.get("error"):
            rows.append(row("Error", f'<pre style="margin:0;white-space:pre-wrap">'
                                     f'{e(str(r["error"]))}</pre>'))
        if _reuse_text(r):
            rows.append(row("Reuse", e(_reuse_text(r))))
        rows += [
            row("Config", f'<pre style="margin:0;{mono}">'
                          f'{e(json.dumps(self._data["config"], indent=2, sort_keys=True))}'
                          "</pre>"),
            row("Inputs", files(self._data["inputs"], "path")),
            row("Outputs", files(self._data["outputs"], "name")),
        ]
        if metric_bits:
            rows.append(row("Metrics", e("; ".join(metric_bits))))
        server = self._data.get("server") or {}
        rows.append(row("Recorded", f"{e(str(self._data.get('recorded') or ''))} "
                                    f"<span style=\"color:#57606a\">from "
                                    f"{e(str(server.get('url') or '?'))}</span>"))
        title = (f"Pirus run {e(str(r.get('id')))}: {e(str(r.get('name') or ''))}")
        return (f'<div class="pirus-run-record" style="border:1px solid #d0d7de;'
                f'border-left:4px solid {colour};border-radius:4px;padding:6px 10px;margin:4px 0">'
                f'<div style="font-weight:600;margin-bottom:4px">{title}</div>'
                f'<table style="border-collapse:collapse">{"".join(rows)}</table></div>')

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> dict[str, Any]:
        bundle = {"text/plain": self.to_text(), "text/html": self.to_html(),
                  RECORD_MIME: self.to_json()}
        if include:
            bundle = {k: v for k, v in bundle.items() if k in include}
        if exclude:
            bundle = {k: v for k, v in bundle.items() if k not in exclude}
        return bundle


class OutputComparison:
    """Outputs of two runs side by side: ``rows`` of ``{"name", "expected", "actual",
    "same"}`` and ``identical`` (every output present in both with the same sha256)."""

    def __init__(self, expected: RunRecord, actual: RunRecord) -> None:
        self.expected = expected
        self.actual = actual
        a, b = expected.output_hashes, actual.output_hashes
        self.rows = [{"name": name, "expected": a.get(name), "actual": b.get(name),
                      "same": a.get(name) is not None and a.get(name) == b.get(name)}
                     for name in sorted(set(a) | set(b))]

    @property
    def identical(self) -> bool:
        """True when both runs produced the same files with the same content."""
        return bool(self.rows) and all(r["same"] for r in self.rows)

    def __bool__(self) -> bool:
        return self.identical

    def __repr__(self) -> str:
        return self._text()

    def _text(self) -> str:
        head = (f"run {self.expected.run.get('id')} vs run {self.actual.run.get('id')}: "
                + ("identical outputs" if self.identical else "outputs DIFFER"))
        lines = [head]
        for r in self.rows:
            mark = "same" if r["same"] else "DIFFERENT"
            lines.append(f"  {r['name']}: {mark}  {r['expected'] or '-'}  {r['actual'] or '-'}")
        return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> dict[str, Any]:
        e = html.escape
        td = "padding:2px 8px;text-align:left;border:none;font-family:monospace"
        rows = "".join(
            f'<tr><td style="{td}">{e(str(r["name"]))}</td>'
            f'<td style="{td};color:{"#1a7f37" if r["same"] else "#cf222e"}">'
            f'{"✓ same" if r["same"] else "✗ different"}</td>'
            f'<td style="{td}">{e(str(r["expected"] or "-"))}</td>'
            f'<td style="{td}">{e(str(r["actual"] or "-"))}</td></tr>' for r in self.rows)
        head = (f'<tr><th style="{td}">output</th><th style="{td}"></th>'
                f'<th style="{td}">run {e(str(self.expected.run.get("id")))}</th>'
                f'<th style="{td}">run {e(str(self.actual.run.get("id")))}</th></tr>')
        verdict = "identical outputs" if self.identical else "outputs differ"
        return {"text/plain": self._text(),
                "text/html": f"<div><b>{e(verdict)}</b><table>{head}{rows}</table></div>"}


# -- input hashes ---------------------------------------------------------------------------
def _inputs_with_hashes(client: Client, run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's inputs with their sha256 when known. In order: the hash the server recorded
    with the run, the server's hash of an uploaded file (file records), the copy in the run's
    own ``inputs/`` folder (the exact bytes the run read; found next to its outputs), the file
    at its path now."""
    inputs = [{k: i.get(k) for k in ("name", "path", "size", "sha256")}
              for i in run.get("inputs") or []]
    if all(item["sha256"] for item in inputs):
        return inputs  # the server hashed them when it prepared the run
    try:
        recorded = {f.path: f.sha256 for f in client.files() if f.sha256}
    except Exception:
        recorded = {}
    run_dir = None
    for output in run.get("outputs") or []:
        path = str(output.get("path") or "")
        if "/outputs/" in path:
            run_dir = path.split("/outputs/", 1)[0]
            break
    for item in inputs:
        if item["sha256"]:
            continue
        sha = recorded.get(item["path"])
        if sha is None and run_dir is not None:
            sha = client.sha256(f"{run_dir}/inputs/{item['name']}", item.get("size"))
        if sha is None:
            sha = client.sha256(str(item["path"]), item.get("size"))
        item["sha256"] = sha
    return inputs
