"""Two runs compared and a run's lineage, as the notebook shows them.

``Lineage`` draws itself as a hand-made SVG (no graphviz): a displayed lineage is saved in the
notebook as a static image (``image/svg+xml`` and ``text/html``), readable without a kernel
and on GitHub. ``RunDiff`` is the server's answer with a table as its HTML.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client
    from .records import Run

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 190, 46, 70, 22, 12
STATUS_COLOURS = {"DONE": "#2e7d32", "ERROR": "#c62828", "CANCELED": "#757575"}


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


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

    def _layers(self) -> dict[int, int]:
        """Each run's column: the longest chain of runs feeding it."""
        layer = {n["id"]: 0 for n in self.nodes}
        for _ in range(len(self.nodes)):  # a DAG settles within as many rounds as runs
            changed = False
            for edge in self.edges:
                if layer[edge["to"]] < layer[edge["from"]] + 1:
                    layer[edge["to"]] = layer[edge["from"]] + 1
                    changed = True
            if not changed:
                break
        return layer

    def _repr_svg_(self) -> str:
        layer = self._layers()
        rows: dict[int, int] = {}
        place: dict[int, tuple[int, int]] = {}
        for node in sorted(self.nodes, key=lambda n: (layer[n["id"]], n["id"])):
            column = layer[node["id"]]
            row = rows.get(column, 0)
            rows[column] = row + 1
            place[node["id"]] = (PAD + column * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
        width = PAD * 2 + (max(layer.values(), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
        height = PAD * 2 + max(rows.values(), default=1) * (BOX_H + GAP_Y) - GAP_Y
        arrow = f"pirus-arrow-{self.run}-{id(self) % 100000}"
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
            f'<title>Lineage of run {self.run}</title>',
            f'<defs><marker id="{arrow}" viewBox="0 0 10 10" refX="10" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
        ]
        for edge in self.edges:
            (x1, y1), (x2, y2) = place[edge["from"]], place[edge["to"]]
            x1, y1, y2 = x1 + BOX_W, y1 + BOX_H // 2, y2 + BOX_H // 2
            middle = (x1 + x2) // 2
            files = html.escape(_cut(", ".join(edge["files"]), 24))
            parts.append(
                f'<path d="M {x1} {y1} C {middle} {y1}, {middle} {y2}, {x2} {y2}" fill="none" '
                f'stroke="#555" marker-end="url(#{arrow})"/>'
                f'<text x="{middle}" y="{(y1 + y2) // 2 - 4}" text-anchor="middle" '
                f'font-size="10" fill="#444">{files}</text>')
        for node in self.nodes:
            x, y = place[node["id"]]
            colour = STATUS_COLOURS.get(node["status"], "#1565c0")
            stroke = 3 if node["id"] == self.run else 1
            title = html.escape(_cut(f"#{node['id']} {node['name']}", 28))
            pipeline = f"{node.get('pipeline_name') or '?'} {node.get('pipeline_version') or ''}"
            detail = html.escape(_cut(f"{pipeline.strip()} · {node['status']}"
                                      + (f" · reused from #{node['reused_from']}"
                                         if node.get("reused_from") else ""), 34))
            parts.append(
                f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#fff" '
                f'stroke="{colour}" stroke-width="{stroke}"/>'
                f'<text x="{x + 8}" y="{y + 18}" font-weight="bold">{title}</text>'
                f'<text x="{x + 8}" y="{y + 36}" fill="{colour}">{detail}</text>')
        parts.append("</svg>")
        return "".join(parts)

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
