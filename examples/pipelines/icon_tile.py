"""The shared part of the demo pipelines' ``make_icon.py`` scripts: a 32x32 palette PNG of a
glyph over a rounded tile, written deterministically with the standard library only."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

SIZE = 32
TRANSPARENT, TILE = 0, 1  # palette indexes every icon shares; glyphs use 2 and up


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _in_rounded_tile(x: int, y: int, radius: int = 5) -> bool:
    corner_x = min(x, SIZE - 1 - x)
    corner_y = min(y, SIZE - 1 - y)
    return not (corner_x < radius and corner_y < radius
                and (radius - corner_x) ** 2 + (radius - corner_y) ** 2 > radius ** 2)


def tile_png(palette: list[tuple[int, int, int]], glyph: Callable[[int, int], int | None]) -> bytes:
    """``glyph(x, y)`` returns a palette index for the pixel, or None for the tile colour."""

    def pixel(x: int, y: int) -> int:
        if not _in_rounded_tile(x, y):
            return TRANSPARENT
        value = glyph(x, y)
        return TILE if value is None else value

    rows = b"".join(b"\x00" + bytes(pixel(x, y) for x in range(SIZE)) for y in range(SIZE))
    alpha = [0] + [255] * (len(palette) - 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", SIZE, SIZE, 8, 3, 0, 0, 0))
        + _chunk(b"PLTE", b"".join(bytes(rgb) for rgb in palette))
        + _chunk(b"tRNS", bytes(alpha))
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )


def write_icon(script: str, palette: list[tuple[int, int, int]],
               glyph: Callable[[int, int], int | None]) -> None:
    """Write icon.png beside the calling ``make_icon.py``."""
    target = Path(script).with_name("icon.png")
    target.write_bytes(tile_png(palette, glyph))
    print(f"wrote {target} ({target.stat().st_size} bytes)")
