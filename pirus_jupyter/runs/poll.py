"""One poll of an active run's state files, read in one thread hop.

The monitor (lifecycle.py) polls every ``poll_interval``: the new progress lines, and while
the command runs, the logs' size (each log still the file made with the run folder) and the
exit code. Read in three thread hops, 100 idle runs polled 10 times a second took 18 % of a
core; in one hop, 10 to 14 % (docs/benchmarks.md). A read's error is kept rather than raised, so
the monitor handles each in the order it always did (the progress first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .data import RunData
from .folder import check_log_identity

T = TypeVar("T")


@dataclass
class Poll:
    progress: bytes
    log_size: int | Exception | None = None  # None: not read (the command is not running)
    exit_code: int | Exception | None = None


def checked_log_size(row: dict[str, Any], data: RunData) -> int:
    """The larger log's size; RuleBroken if a log is not the file made with the folder."""
    # Mounted logs only: a pushed run's host copies are replaced by each pull.
    if data.on_this_host and row.get("log_identity"):
        check_log_identity(data.paths, row["log_identity"])
    return data.log_size()


def _kept(read: Callable[[], T]) -> T | Exception:
    try:
        return read()
    except Exception as e:  # handed to the monitor, which raises it in its turn
        return e


def read_poll(row: dict[str, Any], data: RunData, offset: int, running: bool) -> Poll:
    """Blocking: the progress file from ``offset``; if ``running``, the logs' size and the
    exit code too."""
    progress = data.progress(offset)
    if not running:
        return Poll(progress)
    return Poll(progress, _kept(lambda: checked_log_size(row, data)), _kept(data.exit_code))
