"""Two runs compared (``diff``), and the runs linked through their files (``lineage``).

Lineage: an input of run R comes from run P when its path is one of P's outputs, or else when
its sha256 equals an output's of a run made before R (the latest such run: a reused run and
its source hold the same bytes, and the input came from one of them, most likely the newest).
Only DONE runs have outputs (file records with ``run_id``). The graph is followed both ways
from the run asked about, up to ``LINEAGE_MAX`` runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..models import public_run
from .core import RunsCore

LINEAGE_MAX = 200
METRIC_KEYS = ("wall_seconds", "cpu_seconds", "memory_peak_bytes")


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested objects by dotted key (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    if not isinstance(config, dict) or (prefix and not config):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _values(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key, ...) != b.get(key, ...):
            change: dict[str, Any] = {"key": key}
            if key in a:
                change["a"] = a[key]
            if key in b:
                change["b"] = b[key]
            out.append(change)
    return out


def _files(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    left = {f["name"]: f.get("sha256") for f in a}
    right = {f["name"]: f.get("sha256") for f in b}
    return [{"name": n, "a": left.get(n), "b": right.get(n)}
            for n in sorted(left.keys() | right.keys()) if left.get(n) != right.get(n)]


def _change(a: Any, b: Any) -> dict[str, Any] | None:
    return None if a == b else {"key": "", "a": a, "b": b}


def duration(run: dict[str, Any]) -> float | None:
    if not run.get("start") or not run.get("end"):
        return None
    seconds = (datetime.fromisoformat(run["end"]) - datetime.fromisoformat(run["start"]))
    return round(max(seconds.total_seconds(), 0.0), 3)


def diff_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What differs between two run records (public fields)."""
    image = _change(a["pipeline_fingerprint"], b["pipeline_fingerprint"])
    pipeline = _change(f"{a['pipeline_name']} {a['pipeline_version'] or ''}".strip(),
                       f"{b['pipeline_name']} {b['pipeline_version'] or ''}".strip())
    for change, key in ((image, "image"), (pipeline, "pipeline")):
        if change is not None:
            change["key"] = key
    metrics_a = {k: (a.get("metrics") or {}).get(k) for k in METRIC_KEYS}
    metrics_b = {k: (b.get("metrics") or {}).get(k) for k in METRIC_KEYS}
    status = _change(a["status"], b["status"])
    if status is not None:
        status["key"] = "status"
    out = {
        "a": a["id"], "b": b["id"], "image": image, "pipeline": pipeline,
        "config": _values(_flat(a["config"]), _flat(b["config"])),
        "inputs": _files(a["inputs"], b["inputs"]),
        "outputs": _files(a["outputs"], b["outputs"]),
        "metrics": _values(metrics_a, metrics_b), "status": status,
        "duration": {"a": duration(a), "b": duration(b)},
    }
    out["same"] = not (image or out["config"] or out["inputs"] or out["outputs"])
    return out


class Compare(RunsCore):
    async def diff(self, run_a: int, run_b: int) -> dict[str, Any]:
        a = public_run(await self.store.get("runs", run_a))
        b = public_run(await self.store.get("runs", run_b))
        return diff_runs(a, b)

    async def _producers(self, run: dict[str, Any]) -> dict[int, list[str]]:
        """The runs this run's inputs came from: run id -> input names."""
        found: dict[int, list[str]] = {}
        for item in run.get("inputs") or []:
            rows = await self.store.select("files", "run_id IS NOT NULL AND run_id != ? AND "
                                           "path = ?", [run["id"], item["path"]],
                                           order_by="run_id desc", limit=1)
            if not rows and item.get("sha256"):
                rows = await self.store.select(
                    "files", "run_id IS NOT NULL AND run_id < ? AND sha256 = ?",
                    [run["id"], item["sha256"]], order_by="run_id desc", limit=1)
            if rows:
                found.setdefault(int(rows[0]["run_id"]), []).append(item["name"])
        return found

    async def _consumers(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        """Later runs with an input among this run's outputs (by path or sha256)."""
        outputs = run.get("outputs") or []
        if not outputs:
            return []
        paths = [o["path"] for o in outputs]
        hashes = [o["sha256"] for o in outputs]
        marks = ",".join("?" * len(outputs))
        return await self.store.select(
            "runs", "id != ? AND id IN (SELECT r.id FROM runs r, json_each(r.inputs) i WHERE "
            f"json_extract(i.value, '$.path') IN ({marks}) OR "
            f"json_extract(i.value, '$.sha256') IN ({marks}))",
            [run["id"], *paths, *hashes], order_by="id")

    async def lineage(self, run_id: int) -> dict[str, Any]:
        start = await self.store.get("runs", run_id)
        rows: dict[int, dict[str, Any]] = {run_id: start}
        edges: dict[tuple[int, int], list[str]] = {}
        todo, truncated = [run_id], False
        while todo:
            row = rows[todo.pop(0)]
            linked: list[dict[str, Any]] = []
            for producer, names in (await self._producers(row)).items():
                edges[(producer, row["id"])] = names
                if producer not in rows:
                    linked.append(await self.store.get("runs", producer))
            for consumer in await self._consumers(row):
                # Only if this run is where the consumer's input came from (the latest maker).
                names = (await self._producers(consumer)).get(row["id"])
                if names:
                    edges[(row["id"], consumer["id"])] = names
                    if consumer["id"] not in rows:
                        linked.append(consumer)
            for other in linked:
                if other["id"] in rows:
                    continue
                if len(rows) >= LINEAGE_MAX:
                    truncated = True
                    break
                rows[other["id"]] = other
                todo.append(other["id"])
        nodes = [{k: rows[i].get(k) for k in ("id", "name", "pipeline_name", "pipeline_version",
                                              "status", "created", "reused_from")}
                 for i in sorted(rows)]
        return {"run": run_id, "nodes": nodes, "truncated": truncated,
                "edges": [{"from": a, "to": b, "files": sorted(names)}
                          for (a, b), names in sorted(edges.items())
                          if a in rows and b in rows]}
