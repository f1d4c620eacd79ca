"""Regenerate icon.png: a 32x32 palette PNG (a read-length histogram over a rounded tile),
stdlib only. Run from anywhere: ``python make_icon.py``; the output is deterministic."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIZE = 32
# Palette: 0 transparent, 1 tile, 2 bars, 3 baseline.
PALETTE = [(0, 0, 0), (30, 110, 90), (250, 220, 120), (255, 255, 255)]
ALPHA = [0, 255, 255, 255]
# Top row of each 3-pixel-wide bar, left to right: a skewed length distribution.
TOPS = [22, 19, 17, 18, 20, 21, 8]


def pixel(x: int, y: int) -> int:
    # A tile with rounded corners (radius 5) covering the whole icon.
    corner_x = min(x, SIZE - 1 - x)
    corner_y = min(y, SIZE - 1 - y)
    if corner_x < 5 and corner_y < 5 and (5 - corner_x) ** 2 + (5 - corner_y) ** 2 > 25:
        return 0
    if y == 25 and 4 <= x <= 27:
        return 3
    bar, offset = divmod(x - 5, 3)
    if x >= 5 and bar < len(TOPS) and offset < 2 and TOPS[bar] <= y < 25:
        return 2
    return 1


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png() -> bytes:
    rows = b"".join(b"\x00" + bytes(pixel(x, y) for x in range(SIZE)) for y in range(SIZE))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", SIZE, SIZE, 8, 3, 0, 0, 0))
        + chunk(b"PLTE", b"".join(bytes(rgb) for rgb in PALETTE))
        + chunk(b"tRNS", bytes(ALPHA))
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


if __name__ == "__main__":
    target = Path(__file__).with_name("icon.png")
    target.write_bytes(png())
    print(f"wrote {target} ({target.stat().st_size} bytes)")
