"""Regenerate icon.png: a 32x32 palette PNG (an exclamation mark over a rounded tile),
stdlib only. Run from anywhere: ``python make_icon.py``; the output is deterministic."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIZE = 32
# Palette: 0 transparent, 1 tile, 2 mark.
PALETTE = [(0, 0, 0), (190, 40, 40), (255, 255, 255)]
ALPHA = [0, 255, 255]


def pixel(x: int, y: int) -> int:
    # A tile with rounded corners (radius 5) covering the whole icon.
    corner_x = min(x, SIZE - 1 - x)
    corner_y = min(y, SIZE - 1 - y)
    if corner_x < 5 and corner_y < 5 and (5 - corner_x) ** 2 + (5 - corner_y) ** 2 > 25:
        return 0
    # An exclamation mark: a bar from row 6 to 19, a dot at rows 22-25, 4 pixels wide.
    if 14 <= x < 18 and (6 <= y < 20 or 22 <= y < 26):
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
