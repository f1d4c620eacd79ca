"""Regenerate icon.png: a read-length histogram over a rounded tile (see ../icon_tile.py).
Run from anywhere: ``python make_icon.py``; the output is deterministic."""

from __future__ import annotations

import sys
from pathlib import Path

# The shared helper lives one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from icon_tile import write_icon

# Palette: 0 transparent, 1 tile, 2 bars, 3 baseline.
PALETTE = [(0, 0, 0), (30, 110, 90), (250, 220, 120), (255, 255, 255)]
# Top row of each 3-pixel-wide bar, left to right: a skewed length distribution.
TOPS = [22, 19, 17, 18, 20, 21, 8]


def glyph(x: int, y: int) -> int | None:
    if y == 25 and 4 <= x <= 27:
        return 3
    bar, offset = divmod(x - 5, 3)
    if x >= 5 and bar < len(TOPS) and offset < 2 and TOPS[bar] <= y < 25:
        return 2
    return None


if __name__ == "__main__":
    write_icon(__file__, PALETTE, glyph)
