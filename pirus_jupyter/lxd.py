"""The LXD backend: the only module that imports pylxd.

Every method blocks (HTTP to the LXD daemon); services run them in threads.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pylxd
import requests
from pylxd.exceptions import ClientConnectionFailed, LXDAPIException, NotFound

from .backend import Backend, ContainerSpec, ContainerState
from .errors import BackendError, BackendUnavailable

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_ROOT_ID = 100000


def _lxd_error(action: str, exc: Exception) -> BackendError:
    return BackendError(f"LXD failed to {action}: {exc}")


def _reachable(method: F) -> F:
    """Turn a lost connection to LXD into BackendUnavailable (and reconnect next time)."""

    @functools.wraps(method)
    def wrapper(self: LXDBackend, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (requests.RequestException, ClientConnectionFailed, ConnectionError) as e:
            with self._lock:
                self._client = None
            raise BackendUnavailable(f"LXD is unreachable: {e}") from e

    return wrapper  # type: ignore[return-value]


class LXDBackend(Backend):
    def __init__(self, endpoint: str | None = None, cert: tuple[str, str] | None = None,
                 verify: bool | str = True, project: str = "default") -> None:
        super().__init__(endpoint, cert, verify, project)
        self._client: pylxd.Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> pylxd.Client:
        """Connect lazily so a server starts (and reports the problem) when LXD is down."""
        with self._lock:
            if self._client is None:
                try:
                    self._client = pylxd.Client(
                        endpoint=self.endpoint, cert=self.cert, verify=self.verify,
                        project=self.project if self.project != "default" else None,
                    )
                except Exception as e:  # pylxd raises ClientConnectionFailed and friends
                    raise BackendUnavailable(f"LXD is unreachable: {e}") from e
            return self._client

    def info(self) -> dict[str, Any]:
        try:
            client = self.client
            env = client.host_info.get("environment", {})
            return {
                "connected": True,
                "endpoint": self.endpoint or "unix socket",
                "project": self.project,
                "server_version": env.get("server_version"),
                "storage": env.get("storage"),
                "clustered": bool(env.get("server_clustered")),
            }
        except Exception as e:
            with self._lock:
                self._client = None  # reconnect next time
            return {"connected": False, "endpoint": self.endpoint or "unix socket",
                    "project": self.project, "error": str(e)}

    # -- images -----------------------------------------------------------------------
    @_reachable
    def import_image(self, tarball: Path, alias: str, fingerprint: str) -> str:
        client = self.client
        try:
            if client.images.exists(fingerprint):
                image = client.images.get(fingerprint)
            else:
                with open(tarball, "rb") as stream:  # requests streams a file object
                    image = client.images.create(stream)
            if alias not in {a["name"] for a in image.aliases}:
                image.add_alias(alias, "Pirus pipeline")
            return str(image.fingerprint)
        except LXDAPIException as e:
            raise _lxd_error("import the image", e) from e

    @_reachable
    def delete_image(self, alias: str) -> None:
        client = self.client
        try:
            image = client.images.get_by_alias(alias)
        except NotFound:
            return
        try:
            image.delete_alias(alias)
            image = client.images.get(image.fingerprint)
            if not image.aliases:
                image.delete(wait=True)
        except NotFound:
            return
        except LXDAPIException as e:
            raise _lxd_error("delete the image", e) from e

    # -- containers -------------------------------------------------------------------
    @_reachable
    def create_container(self, spec: ContainerSpec) -> tuple[int, int]:
        devices: dict[str, dict[str, str]] = {
            name: {"type": "disk", "source": str(m.source), "path": m.path,
                   "readonly": "true" if m.readonly else "false"}
            for name, m in spec.mounts.items()
        }
        if spec.proxy_port:
            devices["pirus-notify"] = {
                "type": "proxy", "bind": "instance",
                "listen": f"tcp:127.0.0.1:{spec.proxy_port}",
                "connect": f"tcp:127.0.0.1:{spec.proxy_port}",
            }
        config = {f"limits.{k}": str(v) for k, v in spec.limits.items() if v not in ("", None)}
        config["security.privileged"] = "false"
        config["security.nesting"] = "false"
        try:
            instance = self.client.instances.create(
                {"name": spec.name, "source": {"type": "image", "alias": spec.image_alias},
                 "config": config, "devices": devices, "profiles": ["default"],
                 "type": "container"},
                wait=True,
            )
        except LXDAPIException as e:
            raise _lxd_error(f"create container {spec.name}", e) from e
        return self._root_ids(instance)

    @staticmethod
    def _root_ids(instance: Any) -> tuple[int, int]:
        """Host uid/gid of the container's root, from LXD's idmap for it."""
        raw = instance.config.get("volatile.idmap.next") or instance.config.get(
            "volatile.last_state.idmap") or "[]"
        uid = gid = DEFAULT_ROOT_ID
        for entry in json.loads(raw):
            if entry.get("Nsid") == 0:
                if entry.get("Isuid"):
                    uid = int(entry["Hostid"])
                if entry.get("Isgid"):
                    gid = int(entry["Hostid"])
        return uid, gid

    def _instance(self, name: str) -> Any:
        try:
            return self.client.instances.get(name)
        except NotFound as e:
            raise BackendError(f"container {name} does not exist") from e

    @_reachable
    def start(self, name: str) -> None:
        try:
            self._instance(name).start(wait=True)
        except LXDAPIException as e:
            raise _lxd_error(f"start container {name}", e) from e

    @_reachable
    def exec_detached(self, name: str, command: list[str], environment: dict[str, str]) -> None:
        # No websocket: LXD runs the command on its own, so it outlives this server process.
        try:
            response = self.client.api.instances[name].exec.post(json={
                "command": command, "environment": environment, "wait-for-websocket": False,
                "interactive": False, "record-output": False,
            })
            operation = response.json().get("operation")
        except LXDAPIException as e:
            raise _lxd_error(f"execute in container {name}", e) from e
        if not operation:
            raise BackendError(f"LXD did not start the command in {name}")

    @_reachable
    def freeze(self, name: str) -> None:
        try:
            self._instance(name).freeze(wait=True)
        except LXDAPIException as e:
            raise _lxd_error(f"freeze container {name}", e) from e

    @_reachable
    def unfreeze(self, name: str) -> None:
        try:
            self._instance(name).unfreeze(wait=True)
        except LXDAPIException as e:
            raise _lxd_error(f"unfreeze container {name}", e) from e

    @_reachable
    def state(self, name: str) -> ContainerState | None:
        try:
            instance = self.client.instances.get(name)
            state = instance.state()
        except NotFound:
            return None
        except LXDAPIException as e:
            raise _lxd_error(f"read the state of {name}", e) from e
        cpu = (state.cpu or {}).get("usage")
        memory = (state.memory or {}).get("usage_peak")
        return ContainerState(
            status=str(state.status), cpu_seconds=cpu / 1e9 if cpu else None,
            memory_peak=int(memory) if memory else None,
        )

    @_reachable
    def delete_container(self, name: str) -> None:
        try:
            instance = self.client.instances.get(name)
        except NotFound:
            return
        try:
            if instance.status != "Stopped":
                instance.stop(force=True, wait=True)
            instance.delete(wait=True)
        except NotFound:
            return
        except LXDAPIException as e:
            raise _lxd_error(f"delete container {name}", e) from e

    @_reachable
    def list_containers(self, prefix: str) -> list[str]:
        try:
            names = [i.name for i in self.client.instances.all()]
        except LXDAPIException as e:
            raise _lxd_error("list containers", e) from e
        return sorted(n for n in names if n.startswith(prefix))
