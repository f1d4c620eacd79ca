"""A TES 1.1 task document as a client sends it, checked: every field's type, the paths, the
URLs Pirus can read and write, the resources. Pure functions; nothing here touches a disk.

What passes is a plain dict holding only the fields of the spec (``tesTask`` minus the ones the
server sets), so what is stored and answered later is what the client sent, normalised.
"""

from __future__ import annotations

import posixpath
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import InvalidRequest

VIEWS = ("MINIMAL", "BASIC", "FULL")
STATES = ("UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "COMPLETE",
          "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED", "CANCELING")
FILE_TYPES = ("FILE", "DIRECTORY")
TASK_FIELDS = ("name", "description", "inputs", "outputs", "resources", "executors",
               "volumes", "tags")
EXECUTOR_FIELDS = ("image", "command", "workdir", "stdin", "stdout", "stderr", "env",
                   "ignore_error")
INPUT_FIELDS = ("name", "description", "url", "path", "type", "content", "streamable")
OUTPUT_FIELDS = ("name", "description", "url", "path", "path_prefix", "type")
RESOURCE_FIELDS = ("cpu_cores", "preemptible", "ram_gb", "disk_gb", "zones",
                   "backend_parameters", "backend_parameters_strict")
# Inline input content travels inside the wrapper's single /bin/sh -c argument, which Linux
# caps at 128 KiB (MAX_ARG_STRLEN): the task's inline contents together stay well below it.
MAX_INLINE_BYTES = 64 * 1024
MAX_EXECUTORS = 100
MAX_FILES = 1000
DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047  # the spec: "must be less than 2048"


class TesInvalid(InvalidRequest):
    code = "invalid_task"


def _fail(where: str, message: str) -> TesInvalid:
    return TesInvalid(f"{where}: {message}")


def _str(value: Any, where: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise _fail(where, "is required")
        return None
    if not isinstance(value, str):
        raise _fail(where, "must be a string")
    if "\x00" in value:
        raise _fail(where, "must not hold a NUL character")
    return value


def _abs_path(value: Any, where: str, *, required: bool = True) -> str | None:
    path = _str(value, where, required=required)
    if path is None:
        return None
    if not path.startswith("/") or "\n" in path:
        raise _fail(where, f"{path!r} must be an absolute path in the container")
    normal = posixpath.normpath(path)
    if normal == "/" or normal.split("/")[1] in ("proc", "sys", "dev", ".pirus"):
        raise _fail(where, f"{path!r} is a path Pirus keeps for itself")
    return normal if not normal.startswith("//") else "/" + normal.lstrip("/")


def _object(value: Any, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "must be an object")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise _fail(where, f"unknown field(s) {', '.join(unknown)}")
    return value


def _list(value: Any, where: str, most: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, "must be an array")
    if len(value) > most:
        raise _fail(where, f"at most {most} items")
    return value


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _fail(where, "must be an object of strings")
    return dict(value)


def file_url_path(url: str, where: str) -> str:
    """The path of a ``file://`` URL (``file:///a/b`` or ``file:/a/b``; a host other than
    localhost is refused)."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise _fail(where, f"{url!r}: only file:// URLs inside the Jupyter root are possible "
                           "here")
    if parts.netloc not in ("", "localhost"):
        raise _fail(where, f"{url!r} names another host")
    if parts.query or parts.fragment:
        raise _fail(where, f"{url!r} has a query or fragment")
    return unquote(parts.path)


def _executor(value: Any, where: str) -> dict[str, Any]:
    ex = _object(value, where, EXECUTOR_FIELDS)
    image = _str(ex.get("image"), f"{where}.image", required=True)
    if not image or not image.strip():
        raise _fail(f"{where}.image", "must not be empty")
    command = _list(ex.get("command"), f"{where}.command", 10000)
    if not command or not all(isinstance(c, str) and "\x00" not in c for c in command):
        raise _fail(f"{where}.command", "must be a non-empty array of strings")
    env = _str_map(ex.get("env"), f"{where}.env")
    for key in env:
        if not key or not (key[0].isalpha() or key[0] == "_") or \
                not all(c.isalnum() or c == "_" for c in key) or not key.isascii():
            raise _fail(f"{where}.env", f"{key!r} is not a variable name")
    ignore = ex.get("ignore_error", False)
    if not isinstance(ignore, bool):
        raise _fail(f"{where}.ignore_error", "must be a boolean")
    return {
        "image": image.strip(), "command": list(command),
        "workdir": _abs_path(ex.get("workdir"), f"{where}.workdir", required=False),
        "stdin": _abs_path(ex.get("stdin"), f"{where}.stdin", required=False),
        "stdout": _abs_path(ex.get("stdout"), f"{where}.stdout", required=False),
        "stderr": _abs_path(ex.get("stderr"), f"{where}.stderr", required=False),
        "env": env, "ignore_error": ignore,
    }


def _file_type(value: Any, where: str) -> str:
    kind = value if value is not None else "FILE"
    if kind not in FILE_TYPES:
        raise _fail(where, f"must be one of {', '.join(FILE_TYPES)}")
    return str(kind)


def _input(value: Any, where: str) -> dict[str, Any]:
    item = _object(value, where, INPUT_FIELDS)
    url = _str(item.get("url"), f"{where}.url")
    content = _str(item.get("content"), f"{where}.content")
    kind = _file_type(item.get("type"), f"{where}.type")
    if (url is None) == (content is None):
        raise _fail(where, "needs exactly one of url and content")
    if content is not None and kind == "DIRECTORY":
        raise _fail(where, "inline content cannot be a DIRECTORY")
    if url is not None and urlsplit(url).scheme not in ("file", "http", "https"):
        raise _fail(f"{where}.url", f"{url!r}: Pirus reads file:// URLs inside the Jupyter "
                                    "root only")
    streamable = item.get("streamable")
    if streamable is not None and not isinstance(streamable, bool):
        raise _fail(f"{where}.streamable", "must be a boolean")
    out = {"name": _str(item.get("name"), f"{where}.name"),
           "description": _str(item.get("description"), f"{where}.description"),
           "url": url, "path": _abs_path(item.get("path"), f"{where}.path"), "type": kind,
           "content": content, "streamable": streamable}
    return {k: v for k, v in out.items() if v is not None}


def _output(value: Any, where: str) -> dict[str, Any]:
    item = _object(value, where, OUTPUT_FIELDS)
    url = _str(item.get("url"), f"{where}.url", required=True) or ""
    file_url_path(url, f"{where}.url")  # the scheme: anything else cannot be written
    path = _abs_path(item.get("path"), f"{where}.path")
    prefix = _abs_path(item.get("path_prefix"), f"{where}.path_prefix", required=False)
    if prefix is not None and not (path or "").startswith(prefix):
        raise _fail(f"{where}.path_prefix", "must be a prefix of path")
    out = {"name": _str(item.get("name"), f"{where}.name"),
           "description": _str(item.get("description"), f"{where}.description"),
           "url": url, "path": path, "path_prefix": prefix,
           "type": _file_type(item.get("type"), f"{where}.type")}
    return {k: v for k, v in out.items() if v is not None}


def _number(value: Any, where: str, *, integer: bool = False) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _fail(where, "must be a number")
    if integer and not float(value).is_integer():
        raise _fail(where, "must be an integer")
    if value <= 0:
        raise _fail(where, "must be positive")
    return int(value) if integer else value


def _resources(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    res = _object(value, "resources", RESOURCE_FIELDS)
    out: dict[str, Any] = {
        "cpu_cores": _number(res.get("cpu_cores"), "resources.cpu_cores", integer=True),
        "ram_gb": _number(res.get("ram_gb"), "resources.ram_gb"),
        "disk_gb": _number(res.get("disk_gb"), "resources.disk_gb"),
    }
    for flag in ("preemptible", "backend_parameters_strict"):
        if res.get(flag) is not None and not isinstance(res[flag], bool):
            raise _fail(f"resources.{flag}", "must be a boolean")
        out[flag] = res.get(flag)
    zones = _list(res.get("zones"), "resources.zones", 100)
    if not all(isinstance(z, str) for z in zones):
        raise _fail("resources.zones", "must be an array of strings")
    out["zones"] = zones or None
    params = _str_map(res.get("backend_parameters"), "resources.backend_parameters")
    # Pirus supports no backend parameter: strict tasks with any fail, others drop them
    # (the spec: "backends shall not store or return unsupported keys").
    if params and res.get("backend_parameters_strict"):
        raise _fail("resources.backend_parameters",
                    f"unsupported key(s) {', '.join(sorted(params))} (strict)")
    return {k: v for k, v in out.items() if v is not None}


def validate_task(body: Any) -> dict[str, Any]:
    """The task a client posted, checked and normalised; TesInvalid (400) says what is
    wrong. Read-only fields (id, state, logs, creation_time) are ignored, as the spec says."""
    if not isinstance(body, dict):
        raise TesInvalid("the task must be a JSON object")
    unknown = sorted(set(body) - set(TASK_FIELDS) - {"id", "state", "logs", "creation_time"})
    if unknown:
        raise TesInvalid(f"unknown task field(s) {', '.join(unknown)}")
    executors = _list(body.get("executors"), "executors", MAX_EXECUTORS)
    if not executors:
        raise TesInvalid("executors: at least one executor is required")
    task: dict[str, Any] = {
        "name": _str(body.get("name"), "name"),
        "description": _str(body.get("description"), "description"),
        "executors": [_executor(e, f"executors[{i}]") for i, e in enumerate(executors)],
        "inputs": [_input(x, f"inputs[{i}]")
                   for i, x in enumerate(_list(body.get("inputs"), "inputs", MAX_FILES))],
        "outputs": [_output(x, f"outputs[{i}]")
                    for i, x in enumerate(_list(body.get("outputs"), "outputs", MAX_FILES))],
        "resources": _resources(body.get("resources")),
        "volumes": [_abs_path(v, f"volumes[{i}]")
                    for i, v in enumerate(_list(body.get("volumes"), "volumes", MAX_FILES))],
        "tags": _str_map(body.get("tags"), "tags"),
    }
    inline = sum(len(x.get("content", "").encode()) for x in task["inputs"])
    if inline > MAX_INLINE_BYTES:
        raise TesInvalid(f"inputs: inline content of {inline} bytes; at most "
                         f"{MAX_INLINE_BYTES} in all (use file:// URLs for more)")
    return {k: v for k, v in task.items() if v not in (None, [], {})}


def check_view(raw: str | None) -> str:
    view = raw or "MINIMAL"
    if view not in VIEWS:
        raise TesInvalid(f"view must be one of {', '.join(VIEWS)}, not {view!r}")
    return view
