"""The Jupyter servers running on this machine, as ``jupyter_server`` lists them: which one
serves a URL, and which ones contain a folder. Used by :func:`~.discovery.connect` to find a
server and its token, and by :class:`~.client.Client` to find its root folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["root_for", "running_servers", "same_server", "servers_containing", "with_slash"]


def with_slash(url: str) -> str:
    """``url`` ending in ``/`` (API paths are joined to it)."""
    return url if url.endswith("/") else url + "/"


def same_server(a: str, b: str) -> bool:
    """Whether two server URLs name the same server (``localhost`` and loopback addresses
    are interchangeable)."""
    loopback = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
    pa, pb = urlparse(with_slash(a)), urlparse(with_slash(b))
    host_a, host_b = pa.hostname or "", pb.hostname or ""
    same_host = host_a == host_b or (host_a in loopback and host_b in loopback)
    return same_host and pa.port == pb.port and pa.path == pb.path and pa.scheme == pb.scheme


def running_servers() -> list[dict[str, Any]]:
    """The servers listed in the Jupyter runtime folder (none when it cannot be read)."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:  # pragma: no cover - jupyter_server is a dependency
        return []
    try:
        return list(list_running_servers())
    except OSError:
        return []


def root_for(url: str) -> Path | None:
    """The root folder of the running server at ``url``, if it is listed locally."""
    for info in running_servers():
        if info.get("url") and same_server(info["url"], url) and info.get("root_dir"):
            return Path(info["root_dir"])
    return None


def servers_containing(cwd: Path) -> list[dict[str, Any]]:
    """Running servers whose root folder contains ``cwd``, the deepest root first."""
    found = []
    for info in running_servers():
        root = info.get("root_dir") or info.get("notebook_dir")
        if not root or not info.get("url"):
            continue
        try:
            cwd.relative_to(Path(root).resolve())
        except ValueError:
            continue
        found.append(info)
    return sorted(found, key=lambda i: len(Path(i["root_dir"]).resolve().parts), reverse=True)
