"""Event loop lag: how late the server's asyncio loop wakes up from a short sleep.

Anything that blocks the loop (a synchronous call in a handler, a CPU-heavy step) delays
every request and websocket of the server by as much. A task sleeps ``interval`` seconds
again and again and records how much later than asked it woke up; ``GET /pirus/api/v1``
reports the maximum since start and the maximum and 99th percentile over the last
``window`` seconds, so a load test or an operator can see stalls as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from typing import Any


class LoopLagMonitor:
    def __init__(self, interval: float = 0.05, window: float = 60.0) -> None:
        self.interval = interval
        self.window = window
        # (monotonic time, lag in seconds) of the samples within the window.
        self._recent: deque[tuple[float, float]] = deque()
        self.samples = 0
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sample(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.record(max(0.0, now - asked - self.interval), now)

    def record(self, lag: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.samples += 1
        self.max_lag = max(self.max_lag, lag)
        self._recent.append((now, lag))
        while self._recent and self._recent[0][0] < now - self.window:
            self._recent.popleft()

    def stats(self) -> dict[str, Any]:
        """Milliseconds, rounded to 0.1."""
        lags = sorted(lag for _, lag in self._recent)
        p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)] if lags else 0.0
        return {
            "interval_ms": round(self.interval * 1000, 1),
            "window_seconds": self.window,
            "samples": self.samples,
            "max_ms": round(self.max_lag * 1000, 1),
            "window_max_ms": round(lags[-1] * 1000, 1) if lags else 0.0,
            "window_p99_ms": round(p99 * 1000, 1),
        }
