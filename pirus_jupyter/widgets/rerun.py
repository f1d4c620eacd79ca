"""``pirus.rerun(record)``: start a new run from a run record (same pipeline, config and inputs),
refusing when the installed image or an input's bytes are not the recorded ones."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from ..kernel.discovery import connect
from ..kernel.records import Run, pipelines_named
from .record import RunRecord

if TYPE_CHECKING:
    from ..kernel.client import Client
    from ..kernel.records import Pipeline

__all__ = ["RerunError", "rerun"]


class RerunError(RuntimeError):
    """A record cannot be re-run as asked (a different image, changed inputs, no pipeline)."""


def _current_hash(client: Client, path: str, size: Any) -> str | None:
    """The input's sha256 now: its bytes when readable, else the server's file record."""
    now = client.sha256(path, size if isinstance(size, int) else None)
    if now is not None:
        return now
    try:
        return next((f.sha256 for f in client.files() if f.path == path and f.sha256), None)
    except Exception:
        return None


_CHANGES = ("config", "inputs", "name")


def _pick_pipeline(client: Client, record: RunRecord, allow_image_change: bool) -> Pipeline:
    wanted = record.pipeline
    name, version = wanted.get("name"), wanted.get("version")
    same = pipelines_named(client.pipelines(), str(name), ready=True)
    exact = [p for p in same if p.version == version]
    by_id = [p for p in exact if p.id == wanted.get("id")]
    if by_id:
        return by_id[0]
    if exact:
        return exact[0]
    if same and allow_image_change:
        return same[0]
    installed = ", ".join(f"{p.name} {p.version or ''}".strip() for p in same)
    raise RerunError(
        f"pipeline {name} {version or ''} is not installed".replace("  ", " ")
        + (f" (installed: {installed}; pass allow_image_change=True to use it)" if same
           else ""))


def rerun(record_or_json: Any, client: Client | None = None, *,
          allow_image_change: bool = False, verify_inputs: bool = True, wait: bool = False,
          timeout: float | None = None, **changes: Any) -> Run:
    """Start a new run from a run record, with the same pipeline, config and inputs.

    ``record_or_json``: a :class:`RunRecord`, a :class:`~pirus_jupyter.kernel.records.Run`, a
    run id, the record's JSON (dict or text), or a ``.json``/``.ipynb`` file holding one.
    ``changes`` may replace ``inputs`` and ``name`` and update ``config`` (merged over the
    recorded one).

    Refuses (:class:`RerunError`) when the installed pipeline's image fingerprint differs from
    the recorded one, unless ``allow_image_change``; and when an input's sha256 now differs
    from the recorded one (or the input is gone), unless ``verify_inputs`` is False. With
    ``wait`` the new run is waited for. Returns the new :class:`~pirus_jupyter.kernel.records.Run`.
    """
    unknown = set(changes) - set(_CHANGES)
    if unknown:
        raise TypeError(f"rerun() got unexpected change(s): {', '.join(sorted(unknown))} "
                        f"(allowed: {', '.join(_CHANGES)})")
    if client is None:
        client = record_or_json.client if isinstance(record_or_json, Run) else connect()
    record = RunRecord.load(record_or_json, client)
    pipeline = _pick_pipeline(client, record, allow_image_change)
    recorded_fp = record.pipeline.get("fingerprint")
    if recorded_fp:
        current = pipeline.fingerprint
        if current is None:
            warnings.warn(f"cannot check the image of {pipeline.name}: its fingerprint is "
                          "unknown", stacklevel=2)
        elif current != recorded_fp and not allow_image_change:
            raise RerunError(
                f"the installed image of {pipeline.name} {pipeline.version or ''} (pipeline "
                f"{pipeline.id}, fingerprint {current[:12]}) differs from the recorded one "
                f"({recorded_fp[:12]}); pass allow_image_change=True to run it anyway")
    if changes.get("inputs") is not None:
        inputs: list[Any] = list(changes["inputs"])
    else:
        inputs = [item["path"] for item in record.inputs]
        if verify_inputs:
            problems = []
            for item in record.inputs:
                if not item.get("sha256"):
                    continue
                now = _current_hash(client, item["path"], item.get("size"))
                if now is None:
                    problems.append(f"{item['path']} cannot be read any more")
                elif now != item["sha256"]:
                    problems.append(f"{item['path']} changed (sha256 {now[:12]}, recorded "
                                    f"{item['sha256'][:12]})")
            if problems:
                raise RerunError("inputs differ from the record: " + "; ".join(problems)
                                 + ". Pass verify_inputs=False to run anyway.")
    config = record.config
    if changes.get("config"):
        config.update(changes["config"])
    name = changes.get("name") or f"rerun of run {record.run.get('id')}: {record.run.get('name')}"
    run = pipeline.run(config=config, inputs=inputs, name=name)
    if wait:
        run.wait(timeout)
    return run
