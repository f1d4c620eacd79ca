"""A container backend for the API-at-scale benchmark: every container it is asked about is
Running and does nothing. The server, its store, its run monitors, its HTTP handlers and its
event bus are the real ones; only LXD is left out, so that 100 "running" runs cost the machine
nothing but what Pirus itself spends on them (and the shared LXD is not touched).
Plugged with ``--PirusApp.backend_class=benchmarks.idle_backend.IdleBackend``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pirus_jupyter.backend import Backend, ContainerSpec, ContainerState


class IdleBackend(Backend):
    def info(self) -> dict[str, Any]:
        return {"connected": True, "endpoint": "idle benchmark backend", "project": self.project,
                "server_version": None, "storage": None, "clustered": False}

    def import_image(self, tarball: Path, alias: str, fingerprint: str) -> str:
        return fingerprint

    def delete_image(self, alias: str) -> None:
        return None

    def create_container(self, spec: ContainerSpec) -> tuple[int, int]:
        return 0, 0

    def start(self, name: str) -> None:
        return None

    def exec_detached(self, name: str, command: list[str], environment: dict[str, str]) -> None:
        return None

    def freeze(self, name: str) -> None:
        return None

    def unfreeze(self, name: str) -> None:
        return None

    def state(self, name: str) -> ContainerState | None:
        return ContainerState("Running", cpu_seconds=1.0, memory_peak=64 * 1024 * 1024)

    def delete_container(self, name: str) -> None:
        return None

    def list_containers(self, prefix: str) -> list[str]:
        return []
