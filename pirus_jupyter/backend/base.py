"""The container backend interface. Services talk to this; only ``lxd.py`` knows pylxd.

All methods are blocking; services call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO


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
    # Cluster member to create the container on (LXD ``target=``); None: LXD decides.
    target: str | None = None


@dataclass
class ContainerState:
    status: str  # LXD status: Running, Frozen, Stopped, ...
    cpu_seconds: float | None = None
    memory_peak: int | None = None
    location: str | None = None  # cluster member holding the container
    processes: int | None = None  # processes in the container, its init included


@dataclass
class Member:
    """One LXD cluster member as the cluster sees it."""

    name: str
    status: str  # Online, Offline, Evacuated, Blocked
    message: str = ""
    url: str = ""
    roles: list[str] = field(default_factory=list)
    cpu: int | None = None  # CPU threads, from the member's resources
    memory: int | None = None  # bytes

    @property
    def online(self) -> bool:
        return self.status == "Online"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message,
                "url": self.url, "roles": self.roles, "cpu": self.cpu, "memory": self.memory}


@dataclass
class FileEntry:
    """A regular file inside a container, relative to the folder that was walked."""

    path: str
    size: int | None = None


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

    def add_proxy(self, name: str, port: int) -> None:
        """Expose this host's TCP ``port`` inside the running container on 127.0.0.1:``port``
        (what ``ContainerSpec.proxy_port`` does at creation, plugged in later)."""
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

    # -- clusters ---------------------------------------------------------------------
    # A backend that is not a cluster keeps these defaults: no members, no placement.
    @property
    def remote(self) -> bool:
        """True when containers may run on another machine than this server (an https
        endpoint): host paths cannot be bind-mounted, data goes through the file API."""
        return bool(self.endpoint and self.endpoint.startswith("https://"))

    def members(self) -> list[Member]:
        """Cluster members with their state and resources; [] when LXD is not clustered."""
        return []

    def container_locations(self, prefix: str) -> dict[str, ContainerState]:
        """Containers starting with ``prefix``: status and member, without asking each member
        (fast even while one is unreachable)."""
        return {name: ContainerState("Unknown") for name in self.list_containers(prefix)}

    # -- files inside a container (when host folders cannot be mounted) ---------------
    def make_dir(self, name: str, path: str, mode: int = 0o755) -> None:
        raise NotImplementedError

    def push_file(self, name: str, path: str, source: Path | bytes | BinaryIO,
                  mode: int = 0o644) -> None:
        """Write a file into the container (streamed from ``source``), owned by its root."""
        raise NotImplementedError

    def read_file(self, name: str, path: str, max_bytes: int | None = None,
                  offset: int = 0) -> bytes | None:
        """A file's content from ``offset``, at most ``max_bytes`` of it (the container's
        files are the pipeline's: bounded), or None if it does not exist or is no file."""
        raise NotImplementedError

    def pull_file(self, name: str, path: str, target: Path,
                  max_bytes: int | None = None) -> tuple[int, str]:
        """Stream a file out of the container into ``target``, at most ``max_bytes`` of it;
        return (size written, sha256 of what was written)."""
        raise NotImplementedError

    def walk_files(self, name: str, root: str) -> list[FileEntry]:
        """Regular files under ``root`` in the container (symlinks are not followed)."""
        raise NotImplementedError


def bounded_bytes(chunks: Iterable[bytes], offset: int, max_bytes: int | None) -> bytes:
    """The bytes from ``offset`` of a streamed body, at most ``max_bytes`` of them kept (those
    before ``offset`` are skipped as they stream by; reading stops once enough are kept)."""
    kept: list[bytes] = []
    seen = size = 0
    for chunk in chunks:
        start = max(0, offset - seen)
        seen += len(chunk)
        if start >= len(chunk):
            continue
        piece = chunk[start:] if max_bytes is None else chunk[start:start + max_bytes - size]
        kept.append(piece)
        size += len(piece)
        if max_bytes is not None and size >= max_bytes:
            break
    return b"".join(kept)
