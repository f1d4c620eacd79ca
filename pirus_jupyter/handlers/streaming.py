"""Send a file in chunks without holding it in memory or blocking the loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024


async def send_file(handler: Any, path: Path, content_type: str, filename: str | None = None
                    ) -> None:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        handler.set_header("Content-Length", str(size))
        if filename:
            handler.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            handler.write(chunk)
            await handler.flush()
    finally:
        handle.close()
    handler.finish(set_content_type=content_type)
