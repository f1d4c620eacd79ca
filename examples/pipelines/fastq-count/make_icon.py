"""Regenerate icon.png: a bar chart over a rounded tile (see ../icon_tile.py).
Run from anywhere: ``python make_icon.py``; the output is deterministic."""

from __future__ import annotations

import sys
from pathlib import Path

# The shared helper lives one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from icon_tile import write_icon

# Palette: 0 transparent, 1 tile, 2 bars, 3 baseline.
PALETTE = [(0, 0, 0), (33, 97, 140), (245, 176, 65), (255, 255, 255)]
BARS = [(7, 12, 18), (13, 18, 10), (19, 24, 22)]  # (x0, x1, top row) of each bar


def glyph(x: int, y: int) -> int | None:
    if y == 25 and 5 <= x <= 26:
        return 3
    for x0, x1, top in BARS:
        if x0 <= x < x1 and top <= y < 25:
            return 2
    return None


if __name__ == "__main__":
    write_icon(__file__, PALETTE, glyph)
