"""A run that ended, as a Workflow Run RO-Crate of the Process Run Crate profile (0.5).

The JSON-LD is written here directly (no runtime dependency on ``rocrate``; the tests read
the crates back with it and validate them with ``roc-validator``). What goes in:

- the root Dataset, conforming to https://w3id.org/ro/wfrun/process/0.5, mentioning the run;
- the run as a ``CreateAction``: ``instrument`` the pipeline (a ``SoftwareApplication`` with
  name, version, the image fingerprint and, when the manifest lists them under
  ``provenance.packages``, its Debian packages as ``softwareRequirements``), ``object`` its
  inputs (``File``) and its configuration (one ``PropertyValue`` per key), ``result`` its
  outputs (``File``), ``startTime``/``endTime``, ``actionStatus`` (Completed, or Failed with
  ``error``) and ``agent`` (the Jupyter user, when known);
- the output files' bytes under ``outputs/`` (unless metadata only was asked), hashed as
  they are copied. An output that is gone is referenced by its URL on the server, with a
  note saying why; one whose bytes no longer match the sha256 recorded at the end of the run
  stays the run's result that way, and the bytes found are in the zip as a file that says
  they changed.

Inputs are never copied (they may be large and live under the Jupyter root): they are
referenced by their URL on the Jupyter server, with the sha256 the run recorded.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import socket
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import quote

from .errors import Conflict, NotFound
from .files import open_beneath
from .models import FINAL_RUN_STATUSES, public_run
from .store import Store, now_iso

PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
RO_CRATE_1_1 = "https://w3id.org/ro/crate/1.1"
CONTEXT = "https://w3id.org/ro/crate/1.1/context"
METADATA_NAME = "ro-crate-metadata.json"
OUTPUTS_FOLDER = "outputs"
CHUNK = 1024 * 1024
STATUS_COMPLETED = "http://schema.org/CompletedActionStatus"
STATUS_FAILED = "http://schema.org/FailedActionStatus"

LICENSE_ID = "#license-not-specified"
_ANONYMOUS_ID = re.compile(r"[0-9a-f]{32}")

UrlFor = Callable[[str], str]


def _ref(entity_id: str) -> dict[str, str]:
    return {"@id": entity_id}


def _one(values: list[Any]) -> Any:
    # RO-Crate 1.1's JSON-LD form: a single value is written alone, not as a list of one.
    return values[0] if len(values) == 1 else values


def crate_member(name: str) -> str | None:
    """The zip member of an output named ``name`` (relative to the run's outputs folder), or
    None for a name that could leave the crate's folder."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(p in ("", ".", "..") for p in path.parts):
        return None
    return f"{OUTPUTS_FOLDER}/{path}"


def agent_of(user: Any) -> dict[str, str]:
    """Who ran the runs, for the crate's agent: the Jupyter user when Jupyter knows them (a
    JupyterHub or a configured identity), else the account running this single-user server
    (the anonymous "Anonymous Io" jupyter_server makes up for a token login names nobody)."""
    username = str(getattr(user, "username", None) or "")
    name = str(getattr(user, "display_name", None) or getattr(user, "name", None) or "")
    if username and not (_ANONYMOUS_ID.fullmatch(username) and name.startswith("Anonymous ")):
        return {"id": username, "name": name or username}
    account = f"{getpass.getuser()}@{socket.gethostname()}"
    return {"id": account, "name": f"{account} (the account running the Jupyter server)"}


def _packages(manifest: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """``provenance.packages`` of a manifest, as a mapping or a list of {name, version}."""
    provenance = (manifest or {}).get("provenance") or {}
    packages = provenance.get("packages") if isinstance(provenance, Mapping) else None
    if isinstance(packages, Mapping):
        items = [{"name": str(k), "version": str(v)} for k, v in packages.items()]
    elif isinstance(packages, list):
        items = [{"name": str(p["name"]), "version": str(p.get("version", ""))}
                 for p in packages if isinstance(p, Mapping) and p.get("name")]
    else:
        return []
    return sorted(items, key=lambda p: p["name"])


def _value(value: Any) -> Any:
    # schema:value takes text, numbers or booleans; anything structured is kept as JSON text.
    if isinstance(value, (str, bool, int, float)):
        return value
    return json.dumps(value, sort_keys=True)


def crate_metadata(run: Mapping[str, Any], pipeline: Mapping[str, Any] | None, *,
                   url_for: UrlFor, package_url: str, members: Mapping[str, str],
                   left_out: Mapping[str, str], server_id: str,
                   agent: Mapping[str, Any] | None = None,
                   found: Mapping[str, tuple[str, str, int]] | None = None,
                   generator: str = "Pirus for Jupyter") -> dict[str, Any]:
    """The ``ro-crate-metadata.json`` of ``run``. ``members``: output name → its path in the
    crate; ``left_out``: output name → why its bytes are not in the crate; ``url_for``: a
    Jupyter-root path → its URL; ``package_url``: where the pipeline's package is served;
    ``server_id``: the server's URL (the crate's publisher); ``found``: output name → (path
    in the crate, sha256, size) of bytes that changed since the run."""
    run_id = run["id"]
    action_id = f"#run-{run_id}"
    instrument_id = package_url  # the profile wants an absolute URI for the application
    graph: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []

    fingerprint = run.get("pipeline_fingerprint")
    instrument: dict[str, Any] = {
        "@id": instrument_id, "@type": "SoftwareApplication",
        "name": run.get("pipeline_name") or (pipeline or {}).get("name") or "pipeline",
        "url": package_url,
    }
    published = now_iso()
    if run.get("pipeline_version"):
        instrument["version"] = str(run["pipeline_version"])
    if fingerprint:
        instrument["identifier"] = f"sha256:{fingerprint}"
        instrument["description"] = ("A Pirus pipeline: an LXD image package, identified by "
                                     "the sha256 of the package (its image fingerprint).")
    if pipeline and pipeline.get("description"):
        instrument["abstract"] = str(pipeline["description"])
    requirements = []
    for package in _packages((pipeline or {}).get("manifest")):
        entity_id = f"#deb-{quote(package['name'], safe='')}-{quote(package['version'], safe='')}"
        requirements.append(_ref(entity_id))
        graph.append({"@id": entity_id, "@type": "SoftwareApplication",
                      "name": package["name"], "version": package["version"],
                      "applicationCategory": "Debian package"})
    if requirements:
        instrument["softwareRequirements"] = _one(requirements)

    objects: list[dict[str, str]] = []
    for index, item in enumerate(run.get("inputs") or []):
        if any(ref["@id"] == url_for(str(item["path"])) for ref in objects):
            continue  # one file given twice (renamed in the container): one entity
        entity = {"@id": url_for(str(item["path"])), "@type": "File",
                  "name": item.get("name") or PurePosixPath(item["path"]).name,
                  "alternateName": str(item["path"]), "contentSize": item.get("size")}
        if item.get("sha256"):
            entity["sha256"] = item["sha256"]
        entity["description"] = f"input {index + 1} of the run, not included in the crate"
        entity["sdDatePublished"] = published
        files.append(entity)
        objects.append(_ref(entity["@id"]))
    for key, value in sorted((run.get("config") or {}).items()):
        entity_id = f"#config-{quote(str(key), safe='')}"
        graph.append({"@id": entity_id, "@type": "PropertyValue", "name": str(key),
                      "value": _value(value)})
        objects.append(_ref(entity_id))

    results: list[dict[str, str]] = []
    for item in run.get("outputs") or []:
        name = str(item["name"])
        member = members.get(name)
        entity: dict[str, Any] = {
            "@id": member if member else url_for(str(item["path"])), "@type": "File",
            "name": name, "contentSize": item.get("size"), "sha256": item.get("sha256")}
        if not member:
            entity["description"] = f"not included in the crate: {left_out.get(name, '?')}"
            entity["alternateName"] = str(item["path"])
            entity["sdDatePublished"] = published
        files.append(entity)
        results.append(_ref(entity["@id"]))
        if name in (found or {}):
            member, digest, size = (found or {})[name]
            files.append({"@id": member, "@type": "File", "name": name, "sha256": digest,
                          "contentSize": size,
                          "description": f"the output {name} as found when the crate was "
                                         f"made: changed since the run, which recorded "
                                         f"sha256 {item.get('sha256')}"})

    status = str(run.get("status"))
    action: dict[str, Any] = {
        "@id": action_id, "@type": "CreateAction",
        "name": f"Run {run_id} of {instrument['name']}: {run.get('name') or ''}".rstrip(": "),
        "description": f"Pirus run {run_id}, {status}"
                       + (f", exit code {run['exit_code']}" if run.get("exit_code")
                          is not None else ""),
        "instrument": _ref(instrument_id), "object": _one(objects), "result": _one(results),
        "actionStatus": STATUS_COMPLETED if status == "DONE" else STATUS_FAILED,
    }
    if status != "DONE":
        action["error"] = str(run.get("error") or ("canceled" if status == "CANCELED"
                                                   else f"the run ended {status}"))
    for key, field in (("startTime", "start"), ("endTime", "end")):
        if run.get(field):
            action[key] = run[field]
    agent_id = None
    if agent and agent.get("id"):
        agent_id = f"#user-{quote(str(agent['id']), safe='')}"
        action["agent"] = _ref(agent_id)
        graph.append({"@id": agent_id, "@type": "Person",
                      "name": str(agent.get("name") or agent["id"])})

    # Every File, in the crate or on the server, is a data entity: RO-Crate 1.1 wants each
    # reachable from the root through hasPart.
    parts = [_ref(entity["@id"]) for entity in files]
    root = {
        "@id": "./", "@type": "Dataset",
        "name": f"Pirus run {run_id}: {run.get('name') or ''}".rstrip(": "),
        "description": f"The record of Pirus run {run_id} ({instrument['name']} "
                       f"{instrument.get('version', '')}".rstrip() + f", {status}): "
                       "a Workflow Run RO-Crate, Process Run Crate profile.",
        "datePublished": published,
        "conformsTo": _ref(PROCESS_RUN_CRATE),
        "license": _ref(LICENSE_ID),
        "publisher": _ref(server_id),
        "hasPart": _one(parts),
        "mentions": _ref(action_id),
    }
    if agent_id:
        root["author"] = _ref(agent_id)
    descriptor = {"@id": METADATA_NAME, "@type": "CreativeWork",
                  "conformsTo": _ref(RO_CRATE_1_1), "about": _ref("./")}
    profile = {"@id": PROCESS_RUN_CRATE, "@type": "CreativeWork",
               "name": "Process Run Crate", "version": "0.5"}
    # The run's data carries no license Pirus could know: say so, for the owner to set.
    license_entity = {"@id": LICENSE_ID, "@type": "CreativeWork", "name": "Not specified",
                      "description": "The terms under which this run's data may be used were "
                                     "not recorded by Pirus."}
    publisher = {"@id": server_id, "@type": "Organization",
                 "name": f"{generator} server at {server_id}", "url": server_id}
    return {"@context": CONTEXT,
            "@graph": [descriptor, root, profile, action, instrument, *files, *graph,
                       license_entity, publisher]}


def _copy_hashed(source: IO[bytes], target: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        target.write(chunk)
    return digest.hexdigest()


def write_crate(sink: Any, run: Mapping[str, Any], pipeline: Mapping[str, Any] | None,
                root_dir: Path, *, data: bool, url_for: UrlFor, package_url: str,
                server_id: str, agent: Mapping[str, Any] | None = None) -> None:
    """Write the crate as a zip on ``sink`` (anything with ``write``; it need not seek: the
    zip is streamed, with data descriptors). Blocking: call it in a thread.

    Each output is hashed as it is copied, and the metadata is written last, so it says
    what was really copied: an output whose bytes differ from the sha256 the run recorded
    (edited since) stays the run's result with its recorded sha256, referenced on the
    server, and the bytes found are in the crate as a separate file that says so."""
    members: dict[str, str] = {}
    left_out: dict[str, str] = {}
    found: dict[str, tuple[str, str, int]] = {}  # name -> (member, sha256, size) if changed
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for item in run.get("outputs") or []:
            name = str(item["name"])
            member = crate_member(name)
            if not data:
                left_out[name] = "metadata only was asked"
                continue
            if member is None:
                left_out[name] = "its name leaves the outputs folder"
                continue
            try:
                handle = open_beneath(root_dir, str(item["path"]))
            except NotFound:  # deleted, or replaced by something not a regular file
                left_out[name] = "the file is no longer on the server"
                continue
            with handle, archive.open(member, "w", force_zip64=True) as target:
                digest = _copy_hashed(handle, target)
                size = handle.tell()
            if digest == item.get("sha256"):
                members[name] = member
            else:
                left_out[name] = (f"its bytes changed since the run; the file as found when "
                                  f"the crate was made is {member}")
                found[name] = (member, digest, size)
        metadata = crate_metadata(run, pipeline, url_for=url_for, package_url=package_url,
                                  members=members, left_out=left_out, server_id=server_id,
                                  agent=agent, found=found)
        archive.writestr(METADATA_NAME, json.dumps(metadata, indent=2, ensure_ascii=False))


class CrateService:
    """``GET /runs/{id}/crate``: the crate of a run that ended, written by a thread as it is
    sent (handlers/streaming.py's ``send_produced``)."""

    def __init__(self, store: Store, root_dir: Path) -> None:
        self.store = store
        self.root_dir = root_dir

    async def crate(self, run_id: int, *, data: bool, url_for: UrlFor,
                    package_url: Callable[[int], str], server_id: str,
                    agent: Mapping[str, Any] | None = None
                    ) -> tuple[Callable[[Any], None], str]:
        """What writes the crate on a sink (blocking: run it in a thread) and its file name.
        Checked now, so that a run still active is a 409, not a broken download."""
        row = await self.store.get("runs", run_id)
        if row["status"] not in FINAL_RUN_STATUSES:
            raise Conflict(f"run {run_id} is {row['status']}: a crate records a run that "
                           "ended", code="run_active")
        try:
            pipeline: dict[str, Any] | None = await self.store.get("pipelines",
                                                                   row["pipeline_id"])
        except NotFound:  # removed since: the run's own record still names it
            pipeline = None
        run = public_run(row)
        package = package_url(int(row["pipeline_id"]))

        def produce(sink: Any) -> None:
            write_crate(sink, run, pipeline, self.root_dir, data=data, url_for=url_for,
                        package_url=package, server_id=server_id, agent=agent)

        return produce, f"run-{run_id}-crate.zip"
