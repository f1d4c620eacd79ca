"""Send a file, or what a producer writes, in chunks without holding it in memory or blocking
the loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable
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


class _QueueSink:
    """The writable end a producer thread writes into: whole chunks go to the event loop's
    queue, waiting for room (so a slow client slows the producer, nothing piles up). Without
    ``tell``/``seek``, so that zipfile streams (data descriptors) instead of seeking back."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any],
                 stop: threading.Event) -> None:
        self._loop = loop
        self._queue = queue
        self._stop = stop
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        return  # chunks leave when full, and at the end

    def finish(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()

    def _put(self, item: Any) -> None:
        if self._stop.is_set():
            raise BrokenPipeError("the client went away")
        put = self._queue.put(item)
        try:
            future = asyncio.run_coroutine_threadsafe(put, self._loop)
        except RuntimeError:  # the loop has closed (the server stopping): nobody reads
            put.close()
            raise BrokenPipeError("the server is stopping") from None
        while True:
            if self._stop.is_set():  # the client left: stop producing
                future.cancel()
                raise BrokenPipeError("the client went away")
            try:
                future.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                continue


_END = object()


async def send_produced(handler: Any, produce: Callable[[Any], None], content_type: str,
                        filename: str | None = None) -> None:
    """Send what ``produce(sink)`` writes, as it writes it (chunked: no length known), with
    ``produce`` run in a thread of its own: a large body needs neither memory, nor a
    temporary file, nor an executor thread held for its whole length."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
    stop = threading.Event()
    sink = _QueueSink(loop, queue, stop)
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        try:
            produce(sink)
            sink.finish()
            sink._put(_END)
            done.set_result(None)
        except BaseException as e:  # handed to the loop, which decides
            done.set_exception(e)
            with contextlib.suppress(BaseException):
                sink._put(_END)

    handler.set_header("Content-Type", content_type)
    if filename:
        handler.set_header("Content-Disposition", content_disposition(filename))
    threading.Thread(target=run, name="pirus-send-produced", daemon=True).start()
    try:
        while (chunk := await queue.get()) is not _END:
            handler.write(chunk)
            await handler.flush()
    except BaseException:
        stop.set()  # the client left: the producer's next write raises and it ends
        while not queue.empty():  # room for a put it may be waiting on
            queue.get_nowait()
        raise
    await asyncio.wrap_future(done)  # a producer's error: the connection closes unfinished
    handler.finish()
