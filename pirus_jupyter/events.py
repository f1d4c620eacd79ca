"""Publish/subscribe of change events, fanned out to websocket subscribers.

Each subscriber owns a bounded queue. A subscriber that falls too far behind is cut off (its
``overflowed`` flag is set, its queued events are dropped and the websocket closes) instead of
slowing the publisher or growing memory without bound; clients reconnect and re-read state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EVENT_TYPES = (
    "run.created", "run.updated", "run.deleted",
    "pipeline.created", "pipeline.updated", "pipeline.deleted",
    "file.created", "file.deleted",
    "upload.created", "upload.updated", "upload.deleted",
)


class Event(dict):  # type: ignore[type-arg]
    """A published ``{"type", "data"}`` message. Its JSON text and its websocket frame are
    made once, however many websockets send it (not once per subscriber)."""

    _text: str | None = None
    _frame: bytes | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = json.dumps(self)
        return self._text

    @property
    def frame(self) -> bytes:
        """The text as one websocket frame from a server (RFC 6455 5.2: final, text, not
        masked, no extension)."""
        if self._frame is None:
            payload = self.text.encode()
            size = len(payload)
            if size < 126:
                header = struct.pack("!BB", 0x81, size)
            elif size <= 0xFFFF:
                header = struct.pack("!BBH", 0x81, 126, size)
            else:
                header = struct.pack("!BBQ", 0x81, 127, size)
            self._frame = header + payload
        return self._frame


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(1000))
    overflowed: bool = False
    # Called (soon, on the event loop) once the subscriber is cut off: a consumer that reads
    # nothing is stuck in a write and would never see the overflow marker in its queue.
    on_overflow: Callable[[], None] | None = None

    async def get(self) -> dict[str, Any]:
        return await self.queue.get()


class EventBus:
    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: set[Subscription] = set()
        self.queue_size = queue_size

    def subscribe(self) -> Subscription:
        sub = Subscription(queue=asyncio.Queue(self.queue_size))
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, event_type: str, data: dict[str, Any]) -> None:
        """Deliver ``{"type", "data"}`` to every subscriber without ever awaiting."""
        message = Event(type=event_type, data=data)
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                self._cut_off(sub)

    def _cut_off(self, sub: Subscription) -> None:
        sub.overflowed = True
        self._subscribers.discard(sub)
        # Its backlog is useless now (the client must re-read state): free it at once, and
        # leave only the marker that tells a reading consumer it was cut off.
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait({"type": "subscription.overflow", "data": {}})
        if sub.on_overflow is not None:
            callback = sub.on_overflow
            try:
                asyncio.get_running_loop().call_soon(callback)
            except RuntimeError:  # published outside the loop (scripts, tests)
                with contextlib.suppress(Exception):
                    callback()
