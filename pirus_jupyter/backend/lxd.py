"""The LXD backend: with lxd_session.py (its HTTP sessions), the only module importing pylxd.

Every method blocks (HTTP to the LXD daemon); services run them in threads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import pylxd
import requests
from pylxd.exceptions import ClientConnectionFailed, LXDAPIException, NotFound

from ..errors import BackendError, BackendUnavailable, MemberUnavailable
from . import lxd_session
from .base import Backend, ContainerSpec, ContainerState, FileEntry, Member, bounded_bytes

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_ROOT_ID = 100000
CHUNK = 1024 * 1024
# What LXD says when the member holding an instance (or asked to hold one) cannot be reached:
# the cluster works, that one member does not.
MEMBER_UNREACHABLE = ("unable to connect", "missing event connection", "connection refused",
                      "no route to host", "i/o timeout", "member is offline",
                      "connection reset", "context deadline exceeded", "cluster member is")


PROXY_DEVICE = "pirus-notify"


def proxy_device(port: int) -> dict[str, str]:
    """An LXD proxy device listening in the container, connecting to this host's ``port``."""
    return {"type": "proxy", "bind": "instance", "listen": f"tcp:127.0.0.1:{port}",
            "connect": f"tcp:127.0.0.1:{port}"}


def _member_unreachable(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in MEMBER_UNREACHABLE)


def _lxd_error(action: str, exc: Exception) -> BackendError:
    if _member_unreachable(exc):
        return MemberUnavailable(f"LXD failed to {action}: a cluster member is unreachable: "
                                 f"{exc}")
    return BackendError(f"LXD failed to {action}: {exc}")


def _reachable(method: F) -> F:
    """Turn a lost connection to LXD into BackendUnavailable (and reconnect next time, to
    another cluster member if this one is gone)."""

    @functools.wraps(method)
    def wrapper(self: LXDBackend, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (requests.RequestException, ClientConnectionFailed, ConnectionError) as e:
            self._disconnect()
            raise BackendUnavailable(f"LXD is unreachable: {e}") from e

    return wrapper  # type: ignore[return-value]


class LXDBackend(Backend):
    def __init__(self, endpoint: str | None = None, cert: tuple[str, str] | None = None,
                 verify: bool | str = True, project: str = "default") -> None:
        super().__init__(endpoint, cert, verify, project)
        self._client: pylxd.Client | None = None
        self._lock = threading.Lock()
        # Cluster members' addresses, learnt from the cluster: when the member in use is lost,
        # the next connection goes to another one. The configured endpoint comes first.
        self._endpoints: list[str] = [endpoint] if endpoint else []
        self._current = 0
        self._resources: dict[str, tuple[int | None, int | None]] = {}
        self._addresses: dict[str, str] = {}  # host:port -> member name

    @property
    def client(self) -> pylxd.Client:
        """Connect lazily so a server starts (and reports the problem) when LXD is down."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> pylxd.Client:
        project = self.project if self.project != "default" else None
        if not self.remote:
            try:  # a timeout on the unix socket too: a hung LXD is an unreachable one
                return pylxd.Client(endpoint=self.endpoint, cert=self.cert, verify=self.verify,
                                    project=project, timeout=lxd_session.LOCAL_TIMEOUT,
                                    session=lxd_session.local_session())
            except Exception as e:  # pylxd raises ClientConnectionFailed and friends
                raise BackendUnavailable(f"LXD is unreachable: {e}") from e
        errors = []
        for step in range(len(self._endpoints)):
            index = (self._current + step) % len(self._endpoints)
            endpoint = self._endpoints[index]
            try:
                client = pylxd.Client(
                    endpoint=endpoint, cert=self.cert, project=project,
                    timeout=lxd_session.HTTPS_TIMEOUT,
                    session=lxd_session.remote_session(endpoint, self.cert, self.verify))
            except Exception as e:
                errors.append(f"{endpoint}: {e}")
                continue
            self._current = index
            self._learn_endpoints(client)
            return client
        raise BackendUnavailable(f"LXD is unreachable: {'; '.join(errors)}")

    def _learn_endpoints(self, client: pylxd.Client) -> None:
        """Every member's address, read at once when connecting: if the member in use is lost
        before anything else asked for the members (a leader killed right after start-up),
        the next connection still has somewhere to go."""
        if not client.host_info.get("environment", {}).get("server_clustered"):
            return
        try:
            rows = client.api.cluster.members.get(params={"recursion": "1"}).json()["metadata"]
        except (LXDAPIException, requests.RequestException, ValueError, KeyError):
            return  # learnt later, by members()
        for row in rows:  # the caller (the client property) holds self._lock
            url = row.get("url") or ""
            if url and url not in self._endpoints:
                self._endpoints.append(url)

    def _disconnect(self) -> None:
        """Forget the connection; the next one starts with the next known member."""
        with self._lock:
            self._client = None
            if len(self._endpoints) > 1:
                self._current = (self._current + 1) % len(self._endpoints)

    @property
    def connected_endpoint(self) -> str:
        if not self.remote:
            return self.endpoint or "unix socket"
        return self._endpoints[self._current]

    def info(self) -> dict[str, Any]:
        try:
            client = self.client
            env = client.host_info.get("environment", {})
            out = {
                "connected": True,
                "endpoint": self.endpoint or "unix socket",
                "project": self.project,
                "server_version": env.get("server_version"),
                "storage": env.get("storage"),
                "clustered": bool(env.get("server_clustered")),
            }
            if out["clustered"]:
                out["connected_to"] = self.connected_endpoint
            return out
        except Exception as e:
            self._disconnect()  # reconnect next time
            return {"connected": False, "endpoint": self.endpoint or "unix socket",
                    "project": self.project, "error": str(e)}

    # -- cluster ------------------------------------------------------------------------
    @_reachable
    def members(self) -> list[Member]:
        client = self.client
        if not client.host_info.get("environment", {}).get("server_clustered"):
            return []
        try:
            rows = client.api.cluster.members.get(params={"recursion": "1"}).json()["metadata"]
        except LXDAPIException as e:
            raise _lxd_error("list the cluster members", e) from e
        members = []
        for row in rows:
            member = Member(name=row["server_name"], status=str(row.get("status")),
                            message=str(row.get("message") or ""), url=row.get("url") or "",
                            roles=list(row.get("roles") or []))
            if member.url:
                self._addresses[urlsplit(member.url).netloc] = member.name
                if self.remote and member.url not in self._endpoints:
                    with self._lock:
                        self._endpoints.append(member.url)
            if member.online and member.name not in self._resources:
                self._resources[member.name] = self._member_resources(client, member.name)
            member.cpu, member.memory = self._resources.get(member.name, (None, None))
            members.append(member)
        return members

    @staticmethod
    def _member_resources(client: pylxd.Client, name: str) -> tuple[int | None, int | None]:
        """CPU threads and memory of a member (read once: hardware rarely changes)."""
        try:
            res = client.api.resources.get(params={"target": name}).json()["metadata"]
            return int(res["cpu"]["total"]), int(res["memory"]["total"])
        except (LXDAPIException, KeyError, TypeError, ValueError):
            return None, None

    @_reachable
    def container_locations(self, prefix: str) -> dict[str, ContainerState]:
        # recursion=1 is answered from the cluster database: an instance on an unreachable
        # member shows as "Error" at once, where asking for it alone stalls ~10 s.
        try:
            rows = self.client.api.instances.get(params={"recursion": "1"}).json()["metadata"]
        except LXDAPIException as e:
            raise _lxd_error("list containers", e) from e
        return {row["name"]: ContainerState(status=str(row.get("status")),
                                            location=row.get("location"))
                for row in rows if row["name"].startswith(prefix)}

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
            devices[PROXY_DEVICE] = proxy_device(spec.proxy_port)
        config = {f"limits.{k}": str(v) for k, v in spec.limits.items() if v not in ("", None)}
        config["security.privileged"] = "false"
        config["security.nesting"] = "false"
        try:
            instance = self.client.instances.create(
                {"name": spec.name, "source": {"type": "image", "alias": spec.image_alias},
                 "config": config, "devices": devices, "profiles": ["default"],
                 "type": "container"},
                wait=True, target=spec.target,
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
        except LXDAPIException as e:
            raise _lxd_error(f"find container {name}", e) from e

    def _change_state(self, name: str, action: str) -> None:
        """``start``, ``freeze`` or ``unfreeze`` a container and wait for LXD to finish."""
        try:
            getattr(self._instance(name), action)(wait=True)
        except LXDAPIException as e:
            raise _lxd_error(f"{action} container {name}", e) from e

    @_reachable
    def start(self, name: str) -> None:
        self._change_state(name, "start")

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
    def add_proxy(self, name: str, port: int) -> None:
        # PATCH merges devices by name: the disks stay. LXD answers once it has polled the
        # proxy process's start (about a second), though it listens much sooner.
        try:
            self.client.api.instances[name].patch(
                json={"devices": {PROXY_DEVICE: proxy_device(port)}})
        except LXDAPIException as e:
            raise _lxd_error(f"add the notify proxy to {name}", e) from e

    @_reachable
    def freeze(self, name: str) -> None:
        self._change_state(name, "freeze")

    @_reachable
    def unfreeze(self, name: str) -> None:
        self._change_state(name, "unfreeze")

    @_reachable
    def state(self, name: str) -> ContainerState | None:
        try:  # one request (an instance's state alone) instead of the instance, then its state
            state = self.client.api.instances[name].state.get().json()["metadata"]
        except NotFound:
            return None
        except LXDAPIException as e:
            raise _lxd_error(f"read the state of {name}", e) from e
        cpu = (state.get("cpu") or {}).get("usage")
        memory = (state.get("memory") or {}).get("usage_peak")
        processes = state.get("processes")
        return ContainerState(
            status=str(state.get("status")), cpu_seconds=cpu / 1e9 if cpu else None,
            memory_peak=int(memory) if memory else None,
            processes=processes if isinstance(processes, int) and processes > 0 else None,
        )

    @_reachable
    def delete_container(self, name: str) -> None:
        try:
            instance = self.client.instances.get(name)
        except NotFound:
            return
        except LXDAPIException as e:
            raise _lxd_error(f"find container {name}", e) from e
        try:
            if instance.status != "Stopped":
                try:
                    instance.stop(force=True, wait=True)
                except LXDAPIException as e:
                    # A member back from a loss may report a stale status.
                    if "already stopped" not in str(e).lower():
                        raise
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

    # -- files inside a container --------------------------------------------------------
    def _files(self, name: str) -> Any:
        return self.client.api.instances[name].files

    @_reachable
    def make_dir(self, name: str, path: str, mode: int = 0o755) -> None:
        # Each missing parent too (the file API makes one level at a time); an existing
        # folder is fine.
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            folder = "/" + "/".join(parts[:depth])
            try:
                self._files(name).post(params={"path": folder}, headers={
                    "X-LXD-type": "directory", "X-LXD-mode": f"0{mode:o}",
                    "X-LXD-uid": "0", "X-LXD-gid": "0"})
            except LXDAPIException as e:
                raise _lxd_error(f"create {folder} in {name}", e) from e

    @_reachable
    def push_file(self, name: str, path: str, source: Path | bytes | BinaryIO,
                  mode: int = 0o644) -> None:
        headers = {"X-LXD-type": "file", "X-LXD-mode": f"0{mode:o}", "X-LXD-uid": "0",
                   "X-LXD-gid": "0", "X-LXD-write": "overwrite"}
        try:
            if isinstance(source, Path):
                with open(source, "rb") as stream:  # requests streams a file object
                    self._files(name).post(params={"path": path}, data=stream, headers=headers)
            else:
                self._files(name).post(params={"path": path}, data=source, headers=headers)
        except LXDAPIException as e:
            raise _lxd_error(f"write {path} in {name}", e) from e

    @_reachable
    def read_file(self, name: str, path: str, max_bytes: int | None = None,
                  offset: int = 0) -> bytes | None:
        try:
            response = self._files(name).get(params={"path": path}, is_api=False, stream=True)
        except NotFound:
            return None
        except LXDAPIException as e:
            if "not found" in str(e).lower() or "no such file" in str(e).lower():
                return None
            raise _lxd_error(f"read {path} in {name}", e) from e
        with response:
            if response.headers.get("X-LXD-type", "file") != "file":
                return None  # a link (LXD answers its target) or a folder: not a file's bytes
            # Streamed and bounded: the file is the pipeline's, of any size.
            return bounded_bytes(response.iter_content(CHUNK), offset, max_bytes)

    @_reachable
    def pull_file(self, name: str, path: str, target: Path,
                  max_bytes: int | None = None) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        try:
            response = self._files(name).get(params={"path": path}, is_api=False, stream=True)
        except LXDAPIException as e:
            raise _lxd_error(f"read {path} in {name}", e) from e
        with response, open(target, "wb") as out:
            for chunk in response.iter_content(CHUNK):
                if max_bytes is not None:
                    chunk = chunk[:max_bytes - size]
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                if max_bytes is not None and size >= max_bytes:
                    return size, digest.hexdigest()  # the rest is left in the container
        expected = response.headers.get("Content-Length")
        if expected is not None and int(expected) != size:
            raise BackendError(f"{path} in {name} arrived truncated: {size} of {expected} bytes")
        return size, digest.hexdigest()

    @_reachable
    def walk_files(self, name: str, root: str) -> list[FileEntry]:
        found: list[FileEntry] = []
        pending = [""]
        while pending:
            relative = pending.pop()
            folder = posixpath.join(root, relative) if relative else root
            try:
                response = self._files(name).get(params={"path": folder}, is_api=False)
            except LXDAPIException as e:
                raise _lxd_error(f"list {folder} in {name}", e) from e
            if response.headers.get("X-LXD-type") != "directory":
                continue
            for entry in sorted(response.json().get("metadata") or []):
                child = posixpath.join(relative, entry) if relative else entry
                kind = self._file_type(name, posixpath.join(root, child))
                if kind == "directory":
                    pending.append(child)
                elif kind == "file":  # symlinks are never followed
                    found.append(FileEntry(child))
        return sorted(found, key=lambda f: f.path)

    def _file_type(self, name: str, path: str) -> str | None:
        node = self._files(name)
        params = {"path": path}
        if self.project != "default":
            params["project"] = self.project
        response = node.session.head(node._api_endpoint, params=params,
                                     timeout=node._timeout)
        if response.status_code != 200:
            return None
        return response.headers.get("X-LXD-type")

