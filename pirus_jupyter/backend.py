"""The container backend interface. Services talk to this; only ``lxd.py`` knows pylxd.

All methods are blocking; services call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DiskMount:
    source: Path
    path: str
    readonly: bool


@dataclass
class ContainerSpec:
    name: str
    image_alias: str
    mounts: dict[str, DiskMount]
    limits: dict[str, str] = field(default_factory=dict)
    # Host TCP port exposed inside the container on 127.0.0.1:<port> (for $PIRUS_NOTIFY_URL).
    proxy_port: int | None = None


@dataclass
class ContainerState:
    status: str  # LXD status: Running, Frozen, Stopped, ...
    cpu_seconds: float | None = None
    memory_peak: int | None = None


class Backend:
    """Abstract container backend."""

    def __init__(self, endpoint: str | None = None, cert: tuple[str, str] | None = None,
                 verify: bool | str = True, project: str = "default") -> None:
        self.endpoint = endpoint
        self.cert = cert
        self.verify = verify
        self.project = project

    def info(self) -> dict[str, Any]:
        """Connection state for ``GET /pirus/api/v1``: never raises."""
        raise NotImplementedError

    def import_image(self, tarball: Path, alias: str, fingerprint: str) -> str:
        """Import a unified image tarball (streamed) under ``alias``; reuse an identical image."""
        raise NotImplementedError

    def delete_image(self, alias: str) -> None:
        """Remove ``alias``, and the image when no other alias points at it. Missing is fine."""
        raise NotImplementedError

    def create_container(self, spec: ContainerSpec) -> tuple[int, int]:
        """Create (not start) an unprivileged container; return the host (uid, gid) of its root."""
        raise NotImplementedError

    def start(self, name: str) -> None:
        raise NotImplementedError

    def exec_detached(self, name: str, command: list[str], environment: dict[str, str]) -> None:
        """Start ``command`` in the container and return at once; it outlives this process."""
        raise NotImplementedError

    def freeze(self, name: str) -> None:
        raise NotImplementedError

    def unfreeze(self, name: str) -> None:
        raise NotImplementedError

    def state(self, name: str) -> ContainerState | None:
        """The container's state, or None if it does not exist."""
        raise NotImplementedError

    def delete_container(self, name: str) -> None:
        """Stop (forcefully) and delete; a missing container is fine."""
        raise NotImplementedError

    def list_containers(self, prefix: str) -> list[str]:
        raise NotImplementedError
