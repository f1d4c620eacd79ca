"""A run's lineage drawn as an SVG: the one drawing the panel
(``GET /runs/{id}/lineage?format=svg``) and the notebook (``Run.lineage()``, kept as a static
image in the saved notebook) both show.
Hand-made (no graphviz): columns by generation, boxes coloured by status."""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 190, 46, 70, 22, 12
STATUS_COLOURS = {"DONE": "#2e7d32", "ERROR": "#c62828", "CANCELED": "#757575"}


_drawings = itertools.count(1)


def cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _layers(nodes: list[Mapping[str, Any]], edges: list[Mapping[str, Any]]) -> dict[int, int]:
    """Each run's column: the longest chain of runs feeding it."""
    layer = {n["id"]: 0 for n in nodes}
    for _ in range(len(nodes)):  # a DAG settles within as many rounds as runs
        changed = False
        for edge in edges:
            if layer[edge["to"]] < layer[edge["from"]] + 1:
                layer[edge["to"]] = layer[edge["from"]] + 1
                changed = True
        if not changed:
            break
    return layer


def lineage_svg(data: Mapping[str, Any]) -> str:
    """The lineage (``{run, nodes, edges}``, as ``GET /runs/{id}/lineage`` answers) drawn as
    an SVG: one column per generation, the run itself outlined thicker. Every text escaped."""
    run, nodes, edges = data["run"], list(data["nodes"]), list(data["edges"])
    layer = _layers(nodes, edges)
    rows: dict[int, int] = {}
    place: dict[int, tuple[int, int]] = {}
    for node in sorted(nodes, key=lambda n: (layer[n["id"]], n["id"])):
        column = layer[node["id"]]
        row = rows.get(column, 0)
        rows[column] = row + 1
        place[node["id"]] = (PAD + column * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(layer.values(), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (BOX_H + GAP_Y) - GAP_Y
    # Unique per drawing: several inline SVGs in one notebook or page share one id space.
    arrow = f"pirus-arrow-{run}-{next(_drawings)}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<title>Lineage of run {run}</title>',
        f'<defs><marker id="{arrow}" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    for edge in edges:
        (x1, y1), (x2, y2) = place[edge["from"]], place[edge["to"]]
        x1, y1, y2 = x1 + BOX_W, y1 + BOX_H // 2, y2 + BOX_H // 2
        middle = (x1 + x2) // 2
        files = html.escape(cut(", ".join(edge["files"]), 24))
        parts.append(
            f'<path d="M {x1} {y1} C {middle} {y1}, {middle} {y2}, {x2} {y2}" fill="none" '
            f'stroke="#555" marker-end="url(#{arrow})"/>'
            f'<text x="{middle}" y="{(y1 + y2) // 2 - 4}" text-anchor="middle" '
            f'font-size="10" fill="#444">{files}</text>')
    for node in nodes:
        x, y = place[node["id"]]
        colour = STATUS_COLOURS.get(node["status"], "#1565c0")
        stroke = 3 if node["id"] == run else 1
        title = html.escape(cut(f"#{node['id']} {node['name']}", 28))
        pipeline = f"{node.get('pipeline_name') or '?'} {node.get('pipeline_version') or ''}"
        detail = html.escape(cut(f"{pipeline.strip()} · {node['status']}"
                                  + (f" · reused from #{node['reused_from']}"
                                     if node.get("reused_from") else ""), 34))
        parts.append(
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#fff" '
            f'stroke="{colour}" stroke-width="{stroke}"/>'
            f'<text x="{x + 8}" y="{y + 18}" font-weight="bold">{title}</text>'
            f'<text x="{x + 8}" y="{y + 36}" fill="{colour}">{detail}</text>')
    parts.append("</svg>")
    return "".join(parts)
