"""The notebook API's HTTP side: :class:`Client`, one connection to a Pirus server (the ``pirus``
jupyter-server extension), and the calls of its REST API.

>>> import pirus_jupyter as pirus
>>> client = pirus.connect()                 # zero-config inside a kernel started by the server
>>> fastq_count = client.pipeline("fastq-count")
>>> run = fastq_count.run(config={"min_length": 10}, inputs=["data/reads.fastq"])
>>> run.wait()                               # pushed over the events websocket
>>> [(o["name"], o["sha256"]) for o in run.outputs]

Finding the server is :mod:`.discovery` (:func:`~.discovery.connect`); the records it returns
are :mod:`.records`; the events websocket is :mod:`.events`; uploads are :mod:`.uploader`.
Errors answered by the server become :class:`~.errors.PirusAPIError` carrying the server's
status, code, message and details; an unreachable server is a
:class:`~.errors.PirusConnectionError`. Nothing here imports ipywidgets at import time.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from ..hashing import sha256_file
from .errors import PirusAPIError, PirusConnectionError, api_error
from .events import EventSubscriber
from .lineage import Lineage, RunDiff
from .progress import progress_reporter
from .records import File, Pipeline, Run, pipelines_named
from .servers import root_for, with_slash

log = logging.getLogger(__name__)

API_PATH = "pirus/api/v1/"
#: Packages larger than this are not downloaded to compute their image fingerprint.
FINGERPRINT_MAX_BYTES = 4 * 1024**3
#: Inputs larger than this are not hashed through the Contents API (no local access).
REMOTE_HASH_MAX_BYTES = 64 * 1024**2

# PirusAPIError, PirusConnectionError and Run are imported from here by existing code.
__all__ = ["Client", "PirusAPIError", "PirusConnectionError", "Run"]


class Client:
    """A connection to one Pirus server. Create it with :func:`connect`.

    ``base_url`` is the Jupyter server's URL (with its base path), ``api_url`` the Pirus API
    under it, ``root_dir`` the server's root folder when it is visible from this machine (then
    local paths are turned into root-relative ones and inputs are hashed locally).
    """

    def __init__(self, url: str, token: str = "", *, root_dir: str | os.PathLike[str] | None
                 = None, timeout: float = 30.0) -> None:
        self.base_url = with_slash(url)
        self.api_url = self.base_url + API_PATH
        self.token = token or ""
        self.timeout = timeout
        self.session = requests.Session()
        if self.token:
            self.session.headers["Authorization"] = f"token {self.token}"
        root = Path(root_dir) if root_dir else root_for(self.base_url)
        self.root_dir: Path | None = root.resolve() if root else None
        self.fingerprint_max_bytes = FINGERPRINT_MAX_BYTES
        self._events: EventSubscriber | None = None
        self._fingerprints: dict[tuple[Any, ...], str | None] = {}

    def __repr__(self) -> str:
        return f"<pirus Client {self.base_url}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the events websocket and the HTTP session."""
        if self._events is not None:
            self._events.close()
            self._events = None
        self.session.close()

    @property
    def events(self) -> EventSubscriber:
        """The shared events subscriber (one websocket for every widget and wait)."""
        if self._events is None:
            self._events = EventSubscriber(self)
        return self._events

    # -- HTTP ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, raw: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        url = self.api_url + path.lstrip("/")
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.ConnectionError as e:
            raise PirusConnectionError(f"cannot reach {self.base_url}: {e}") from e
        except requests.Timeout as e:
            raise PirusConnectionError(f"{self.base_url} did not answer in time: {e}") from e
        if response.status_code >= 400:
            raise api_error(response)
        if raw:
            return response
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def info(self) -> dict[str, Any]:
        """Server version, API version, LXD connection state, limits and active run count."""
        return self._request("GET", "")

    # -- pipelines ----------------------------------------------------------------------
    def pipelines(self, status: str | None = None) -> list[Pipeline]:
        """Installed pipelines (all, or those in ``status``, e.g. ``"READY"``)."""
        body = self._request("GET", "pipelines", params={"status": status} if status else None)
        return [Pipeline(self, item) for item in body["items"]]

    def pipeline(self, name_or_id: int | str, version: str | None = None) -> Pipeline:
        """A pipeline by id, or by name (the READY one; the newest install when several
        versions are, unless ``version`` picks one)."""
        if isinstance(name_or_id, int) or (isinstance(name_or_id, str) and name_or_id.isdigit()):
            return Pipeline(self, self._request("GET", f"pipelines/{int(name_or_id)}"))
        every = self.pipelines()
        named = pipelines_named(every, str(name_or_id), version)
        if named:
            return named[0]
        names = ", ".join(sorted({f"{p.name} {p.version or ''}".strip() for p in every}))
        wanted = f"{name_or_id} {version}" if version else name_or_id
        raise PirusAPIError(404, "not_found", f"no pipeline named {wanted!r} is installed "
                            f"(installed: {names or 'none'})")

    def install(self, package: str | os.PathLike[str], *, wait: bool = True,
                timeout: float | None = 600, progress: bool = True) -> Pipeline:
        """Install a pipeline package. A package under the Jupyter root is installed in place;
        any other file is uploaded first (TUS). Waits until it is READY unless ``wait`` is
        False; a failed install raises :class:`PirusAPIError`. A package with the very bytes
        of an installed pipeline gives that pipeline back (the server adds no record)."""
        relative = self.root_relative(package)
        if relative is not None:
            pipeline = Pipeline(self, self._request("POST", "pipelines",
                                                    json={"path": relative}))
        elif self.root_dir is None and not Path(package).exists():
            pipeline = Pipeline(self, self._request("POST", "pipelines",
                                                    json={"path": str(package)}))
        else:
            record = self.upload(package, kind="pipeline", progress=progress)
            if not isinstance(record, Pipeline):  # pragma: no cover - server contract
                raise PirusAPIError(500, "install_failed", "the upload made no pipeline")
            pipeline = record
        return pipeline.wait_ready(timeout) if wait else pipeline

    def clear_failed(self) -> list[int]:
        """Remove every pipeline whose install failed (status ERROR); their ids."""
        return list(self._request("DELETE", "pipelines", params={"status": "ERROR"})["removed"])

    # -- runs ---------------------------------------------------------------------------
    def runs(self, status: str | Iterable[str] | None = None,
             pipeline: Pipeline | int | str | None = None, limit: int = 50,
             offset: int = 0, after: Run | int | None = None) -> list[Run]:
        """Runs, newest first; ``status`` one status or several (``"RUNNING"``,
        ``["DONE", "ERROR"]``), ``pipeline`` a :class:`Pipeline`, id or name; ``after`` the
        last run of the previous page (the runs older than it: the next page, as fast as
        the first however deep)."""
        params: dict[str, Any] = {"limit": str(limit), "offset": str(offset)}
        if after is not None:
            params["after"] = str(after.id if isinstance(after, Run) else int(after))
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if pipeline is not None:
            if isinstance(pipeline, Pipeline):
                pipeline_id = pipeline.id
            elif isinstance(pipeline, int) or str(pipeline).isdigit():
                pipeline_id = int(pipeline)
            else:
                pipeline_id = self.pipeline(str(pipeline)).id
            params["pipeline_id"] = str(pipeline_id)
        body = self._request("GET", "runs", params=params)
        return [Run(self, item) for item in body["items"]]

    def run(self, run_id: int) -> Run:
        """One run by id."""
        return Run(self, self._request("GET", f"runs/{int(run_id)}"))

    # -- files --------------------------------------------------------------------------
    def diff(self, run_a: Run | int, run_b: Run | int) -> RunDiff:
        """What differs between two runs: image, pipeline, config keys, inputs and outputs (by
        name and sha256), metrics, status, duration."""
        a, b = (r if isinstance(r, int) else r.id for r in (run_a, run_b))
        return RunDiff(self._request("GET", f"runs/{a}/diff/{b}"))

    def lineage(self, run: Run | int) -> Lineage:
        """The runs whose outputs fed ``run`` and those it fed; displayed, an SVG graph."""
        run_id = run if isinstance(run, int) else run.id
        return Lineage(self._request("GET", f"runs/{run_id}/lineage"))

    def files(self, run: Run | int | None = None, limit: int = 1000, *,
              source: str | None = None, newest_first: bool = False,
              after: File | int | None = None) -> list[File]:
        """File records, oldest first unless ``newest_first``: uploaded inputs and run
        outputs (only those of ``run`` when given; ``source``: "upload" or "run" only);
        ``after`` the last file of the previous page."""
        params: dict[str, Any] = {"limit": str(limit)}
        if run is not None:
            params["run_id"] = str(run.id if isinstance(run, Run) else int(run))
        if source is not None:
            params["source"] = source
        if newest_first:
            params["order"] = "desc"
        if after is not None:
            params["after"] = str(after.id if isinstance(after, File) else int(after))
        body = self._request("GET", "files", params=params)
        return [File(self, item) for item in body["items"]]

    def file(self, file_id: int) -> File:
        """One file record by id."""
        return File(self, self._request("GET", f"files/{int(file_id)}"))

    def databases(self) -> list[dict[str, Any]]:
        """The reference databases mounted read-only in every run (``name``, ``size``)."""
        return self._request("GET", "databases")["items"]

    def upload(self, path: str | os.PathLike[str], kind: str = "input", *,
               progress: bool | Callable[[int, int], None] = True, chunk_size: int | None = None,
               metadata: Mapping[str, str] | None = None) -> File | Pipeline:
        """Upload a local file over TUS (resumable: calling again after an interruption sends
        only the rest) and return the resulting :class:`File` (``kind="input"``) or the
        :class:`Pipeline` being installed (``kind="pipeline"``).

        ``progress``: True shows an ipywidgets progress bar inside a kernel with a frontend
        comm and a text line on stderr elsewhere; False shows nothing; a callable is called
        with ``(bytes_sent, total_bytes)``."""
        from . import uploader

        source = Path(path)
        reporter = progress_reporter(source.name, progress)
        kwargs: dict[str, Any] = {"kind": kind, "metadata": metadata, "progress": reporter}
        if chunk_size:
            kwargs["chunk_size"] = chunk_size
        try:
            record = uploader.upload(self.base_url, self.token, source, **kwargs)
        except uploader.UploadError as e:
            raise PirusAPIError(400, "upload_failed", str(e)) from e
        except requests.ConnectionError as e:
            raise PirusConnectionError(f"cannot reach {self.base_url}: {e}") from e
        finally:
            closer = getattr(reporter, "close", None)
            if closer is not None:
                closer()
        if kind == "pipeline":
            return self.pipeline(int(record["pipeline_id"]))
        return File(self, record["file"])

    # -- paths and hashes ------------------------------------------------------------------
    def root_relative(self, path: str | os.PathLike[str]) -> str | None:
        """``path`` (absolute or relative to the current directory) as a path relative to the
        Jupyter root, when the root is known and the file exists locally under it."""
        if self.root_dir is None:
            return None
        local = Path(path).expanduser()
        if not local.is_absolute():
            local = Path.cwd() / local
        if not local.exists():
            return None
        try:
            return local.resolve().relative_to(self.root_dir).as_posix()
        except ValueError:
            return None

    def _input_paths(self, inputs: Iterable[Any]) -> list[str]:
        """Root-relative paths (or names) of inputs, for form placeholders."""
        out = []
        for item in inputs:
            ref = self._input_ref(item)
            if isinstance(ref, int):
                out.append(self.file(ref).path)
            else:
                out.append(str(ref))
        return out

    def _input_refs(self, inputs: Iterable[Any]) -> list[Any]:
        return [self._input_ref(item) for item in inputs]

    def _input_ref(self, item: Any) -> Any:
        """What the server accepts for one input: a file id or a root-relative path."""
        if isinstance(item, File):
            return int(item.id)
        if isinstance(item, Mapping):
            if isinstance(item.get("file"), Mapping):  # an upload record
                return int(item["file"]["id"])
            if item.get("file_id") is not None:
                return int(item["file_id"])
            if item.get("path"):
                return self._input_ref(item["path"])
            if item.get("id") is not None:
                return int(item["id"])
            raise ValueError(f"cannot tell which file {item!r} is")
        if isinstance(item, bool):
            raise TypeError("an input is a path, a file id or a File")
        if isinstance(item, int):
            return item
        if isinstance(item, (str, os.PathLike)):
            relative = self.root_relative(item)
            return relative if relative is not None else Path(item).as_posix()
        raise TypeError(f"an input is a path, a file id or a File, not {type(item).__name__}")

    def sha256(self, path: str, size: int | None = None) -> str | None:
        """SHA-256 of a file under the Jupyter root (``path`` relative to it): hashed locally
        when the root is visible here, else read through the Jupyter Contents API when it is
        at most 64 MiB; None if it cannot be read."""
        if self.root_dir is not None:
            local = (self.root_dir / path).resolve()
            try:
                local.relative_to(self.root_dir)
            except ValueError:
                return None
            if local.is_file():
                return sha256_file(local)
            return None
        if size is not None and size > REMOTE_HASH_MAX_BYTES:
            return None
        try:
            response = self.session.get(
                f"{self.base_url}api/contents/{quote(path)}",
                params={"content": "1", "format": "base64", "type": "file"},
                timeout=self.timeout)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        content = response.json().get("content") or ""
        return hashlib.sha256(base64.b64decode(content)).hexdigest()

    def list_dir(self, path: str = "") -> list[dict[str, Any]]:
        """Entries (``name``, ``path``, ``type`` = ``directory``/``file``/``notebook``, ``size``)
        of a folder of the Jupyter root, through the Jupyter Contents API."""
        response = self.session.get(f"{self.base_url}api/contents/{quote(path.strip('/'))}",
                                    params={"content": "1", "type": "directory"},
                                    timeout=self.timeout)
        if response.status_code >= 400:
            raise api_error(response)
        entries = response.json().get("content") or []
        return [{k: e.get(k) for k in ("name", "path", "type", "size")} for e in entries]

    def _package_fingerprint(self, pipeline: Pipeline) -> str | None:
        key = (pipeline.id, pipeline._data.get("created"), pipeline._data.get("size"))
        if key in self._fingerprints:
            return self._fingerprints[key]
        fingerprint = None
        size = pipeline._data.get("size") or 0
        if pipeline._data.get("status") == "READY" and size <= self.fingerprint_max_bytes:
            digest = hashlib.sha256()
            try:
                response = self._request("GET", f"pipelines/{pipeline.id}/package", raw=True,
                                         stream=True, timeout=max(self.timeout, 300))
                for chunk in response.iter_content(4 * 1024 * 1024):
                    digest.update(chunk)
                fingerprint = digest.hexdigest()
            except (PirusAPIError, PirusConnectionError, requests.RequestException) as e:
                log.debug("pirus: no fingerprint for pipeline %s: %s", pipeline.id, e)
        self._fingerprints[key] = fingerprint
        return fingerprint

