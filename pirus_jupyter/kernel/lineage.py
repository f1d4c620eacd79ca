"""Two runs compared and a run's lineage, as the notebook shows them.

``Lineage`` draws itself as the panel shows it (``lineage_svg``: a hand-made SVG, no
graphviz): a displayed lineage is saved in the notebook as a static image
(``image/svg+xml`` and ``text/html``), readable without a kernel and on GitHub. ``RunDiff``
is the server's answer with a table as its HTML.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..lineage_svg import cut as _cut
from ..lineage_svg import lineage_svg

if TYPE_CHECKING:
    from .client import Client
    from .records import Run

class Lineage:
    """The runs linked to ``run`` through their files: ``nodes`` (run records: id, name,
    pipeline_name, pipeline_version, status, created, reused_from), ``edges`` (``{"from",
    "to", "files"}``: the inputs of ``to`` that are outputs of ``from``) and ``truncated``."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.run: int = data["run"]
        self.nodes: list[dict[str, Any]] = list(data["nodes"])
        self.edges: list[dict[str, Any]] = list(data["edges"])
        self.truncated: bool = bool(data.get("truncated"))

    def __repr__(self) -> str:
        links = ", ".join(f"{e['from']}->{e['to']}" for e in self.edges) or "no links"
        return f"<Lineage of run {self.run}: {len(self.nodes)} runs, {links}>"

    def ancestors(self) -> list[int]:
        return self._reach("to", "from")

    def descendants(self) -> list[int]:
        return self._reach("from", "to")

    def _reach(self, here: str, there: str) -> list[int]:
        seen: set[int] = set()
        todo = [self.run]
        while todo:
            current = todo.pop()
            for edge in self.edges:
                if edge[here] == current and edge[there] not in seen:
                    seen.add(edge[there])
                    todo.append(edge[there])
        return sorted(seen)

    def _repr_svg_(self) -> str:
        return lineage_svg({"run": self.run, "nodes": self.nodes, "edges": self.edges})

    def _repr_html_(self) -> str:
        note = " (more runs are linked than shown)" if self.truncated else ""
        return f"<div>{self._repr_svg_()}</div><div><small>{html.escape(repr(self))}" \
            f"{note}</small></div>"


class RunDiff(dict):  # type: ignore[type-arg]
    """What differs between two runs (the server's answer, a dict), shown as a table."""

    def __repr__(self) -> str:
        return f"<RunDiff {self['a']} vs {self['b']}: " + (
            "same" if self["same"] else ", ".join(self._kinds()) or "metrics only") + ">"

    def _kinds(self) -> list[str]:
        return [k for k in ("image", "pipeline", "config", "inputs", "outputs", "status")
                if self.get(k)]

    def _rows(self) -> list[tuple[str, str, Any, Any]]:
        rows: list[tuple[str, str, Any, Any]] = []
        for key in ("image", "pipeline", "status"):
            if self.get(key):
                rows.append((key, "", self[key].get("a"), self[key].get("b")))
        for key in ("config", "metrics"):
            rows += [(key, c["key"], c.get("a", "—"), c.get("b", "—")) for c in self[key]]
        for key in ("inputs", "outputs"):
            rows += [(key, f["name"], f["a"] or "—", f["b"] or "—") for f in self[key]]
        duration = self["duration"]
        rows.append(("duration (s)", "", duration["a"], duration["b"]))
        return rows

    def _repr_html_(self) -> str:
        def cell(value: Any) -> str:
            text = value if isinstance(value, str) else json.dumps(value)
            return f"<td><code>{html.escape(_cut(text, 70))}</code></td>"

        body = "".join(f"<tr><th>{html.escape(kind)}</th><td>{html.escape(key)}</td>"
                       f"{cell(a)}{cell(b)}</tr>" for kind, key, a, b in self._rows())
        verdict = "same image, config, inputs and outputs" if self["same"] else "they differ"
        return (f"<table><thead><tr><th></th><th></th><th>run {self['a']}</th>"
                f"<th>run {self['b']}</th></tr></thead><tbody>{body}</tbody></table>"
                f"<p><small>{verdict}</small></p>")


def _run_id(run: Run | int) -> int:
    return int(run if isinstance(run, int) else run.id)


def diff(run_a: Run | int, run_b: Run | int, client: Client | None = None) -> RunDiff:
    """``pirus.diff(run_a, run_b)``: what differs between two runs (Run records or ids; with
    ids only, the client of ``connect()``)."""
    if client is None:
        holder = next((r for r in (run_a, run_b) if not isinstance(r, int)), None)
        if holder is not None:
            client = holder.client
        else:
            from .discovery import connect

            client = connect()
    return client.diff(run_a, run_b)
