"""The handler table: every Pirus route, relative to the server's base URL."""

from __future__ import annotations

from typing import Any

from . import databases, events, files, info, pipelines, runs, tes


def build_handlers() -> list[tuple[Any, ...]]:
    from .uploads import handlers as upload_handlers

    return [
        *info.handlers, *pipelines.handlers, *runs.handlers, *files.handlers,
        *databases.handlers, *events.handlers, *upload_handlers, *tes.handlers,
    ]
