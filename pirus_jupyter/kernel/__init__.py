"""The kernel-side toolkit: talk to a Pirus server from Python (a notebook kernel or the CLI).

* :mod:`.discovery`: :func:`connect`, finding the server and its token;
* :mod:`.servers`: the Jupyter servers running on this machine;
* :mod:`.client`: :class:`Client`, the REST calls;
* :mod:`.records`: :class:`File`, :class:`Pipeline`, :class:`Run` and the pipeline-by-name
  resolver;
* :mod:`.events`: the shared events websocket;
* :mod:`.uploader`: resumable TUS uploads; :mod:`.progress`: their progress, ``human_size``;
* :mod:`.errors`: :class:`PirusAPIError`, :class:`PirusConnectionError`;
* :mod:`.views`: where the notebook views (widgets) of records are registered.

kernel/ never imports :mod:`pirus_jupyter.widgets`: the widgets build on it and register their
views in :mod:`.views`. Names are imported lazily (never ipywidgets at import time).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "connect": ".discovery",
    "Client": ".client",
    "EventSubscriber": ".events",
    "File": ".records",
    "Pipeline": ".records",
    "Run": ".records",
    "PirusAPIError": ".errors",
    "PirusConnectionError": ".errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
