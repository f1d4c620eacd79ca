"""Send a file in chunks without holding it in memory or blocking the loop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

CHUNK = 1024 * 1024


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name (RFC 5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                       for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def send_file(handler: Any, source: Path | BinaryIO, content_type: str,
                    filename: str | None = None) -> None:
    """Stream a file, given by path or already open (then closed here)."""
    handle = await asyncio.to_thread(open, source, "rb") if isinstance(source, Path) else source
    try:
        size = await asyncio.to_thread(lambda: os.fstat(handle.fileno()).st_size)
        handler.set_header("Content-Type", content_type)  # before the first flush sends headers
        handler.set_header("Content-Length", str(size))
        if filename:
            handler.set_header("Content-Disposition", content_disposition(filename))
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            handler.write(chunk)
            await handler.flush()
    finally:
        handle.close()
    handler.finish(set_content_type=content_type)
