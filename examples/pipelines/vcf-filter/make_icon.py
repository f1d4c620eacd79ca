"""Regenerate icon.png: a funnel over a rounded tile (see ../icon_tile.py).
Run from anywhere: ``python make_icon.py``; the output is deterministic."""

from __future__ import annotations

import sys
from pathlib import Path

# The shared helper lives one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from icon_tile import write_icon

# Palette: 0 transparent, 1 tile, 2 funnel, 3 drops (the variants that pass).
PALETTE = [(0, 0, 0), (60, 60, 120), (140, 220, 250), (255, 255, 255)]


def glyph(x: int, y: int) -> int | None:
    # A funnel: a cone from row 6 to 17 narrowing towards the middle, then a spout to row 22.
    half = abs(2 * x - 31)  # distance from the vertical axis, in half pixels
    if 6 <= y < 18 and half <= 2 * (11 - (y - 6)) + 1:
        return 2
    if 18 <= y < 23 and half <= 3:
        return 2
    if y in (25, 27) and half <= 1:  # what comes out
        return 3
    return None


if __name__ == "__main__":
    write_icon(__file__, PALETTE, glyph)
