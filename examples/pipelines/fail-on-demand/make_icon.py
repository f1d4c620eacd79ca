"""Regenerate icon.png: an exclamation mark over a rounded tile (see ../icon_tile.py).
Run from anywhere: ``python make_icon.py``; the output is deterministic."""

from __future__ import annotations

import sys
from pathlib import Path

# The shared helper lives one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from icon_tile import write_icon

# Palette: 0 transparent, 1 tile, 2 mark.
PALETTE = [(0, 0, 0), (190, 40, 40), (255, 255, 255)]


def glyph(x: int, y: int) -> int | None:
    # An exclamation mark: a bar from row 6 to 19, a dot at rows 22-25, 4 pixels wide.
    if 14 <= x < 18 and (6 <= y < 20 or 22 <= y < 26):
        return 2
    return None


if __name__ == "__main__":
    write_icon(__file__, PALETTE, glyph)
