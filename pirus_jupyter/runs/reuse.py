"""Reuse of identical runs: a run asked for with ``reuse`` whose image, config, input contents
and reference databases equal those of an earlier DONE run is not run again. It is recorded at
once as DONE with ``reused_from`` and that run's outputs (hard links, else copies, each checked
against its recorded sha256); no container is made.

The key of a run is the sha256 of its *basis*, sorted-key JSON of:

- ``image``: the pipeline's image fingerprint (the package's sha256);
- ``config``: the validated config, form defaults filled in;
- ``inputs``: input name -> sha256. By name, not by the order given: a pipeline sees its inputs
  as files of one folder, under these names (a renamed input is a different input);
- ``databases``: reference database name -> digest (``databases.database_digests``).

Every run records its key and basis once its inputs are hashed (``record_key``, when its
folder is prepared), so any DONE run can be reused. A miss records why (``reuse_miss``),
against the nearest earlier DONE run of the same pipeline name: the one with fewest
differences; among equals, one that ran rather than reused, then the newest.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from ..databases import database_digests
from ..errors import InvalidRequest, PirusError
from ..files import is_within, resolve_under, to_api_path
from ..hashing import recorded_sha256, sha256_file
from ..models import RunStatus, public_run
from ..store import now_iso
from .core import RunsCore
from .folder import RunPaths, run_folder_name
from .wrapper import LOG_NAMES

S = RunStatus
NEAREST_CANDIDATES = 200  # earlier DONE runs of the pipeline compared on a miss
SAME_KEY_TRIED = 5  # identical runs tried, newest first, until one's outputs are intact
STAGING_PREFIX = ".reuse-"  # in the runs folder, while a reused run's outputs are linked


def reuse_key(basis: dict[str, Any]) -> str:
    text = json.dumps(basis, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def make_basis(fingerprint: str | None, config: dict[str, Any], inputs: list[dict[str, Any]],
               databases: dict[str, str] | None) -> dict[str, Any]:
    return {"image": fingerprint, "config": config,
            "inputs": {i["name"]: i.get("sha256") for i in inputs}, "databases": databases}


def basis_of(row: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded basis; for runs older than reuse, what its record tells (no databases)."""
    return row.get("reuse_basis") or make_basis(row.get("pipeline_fingerprint"), row["config"],
                                                row.get("inputs") or [], None)


def _changed(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    a, b = a or {}, b or {}
    return sorted(k for k in a.keys() | b.keys() if a.get(k, ...) != b.get(k, ...))


def differences(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """What differs between two bases: image (bool), config keys, input and database names."""
    return {
        "image": new["image"] != old["image"],
        "config": _changed(new["config"], old["config"]),
        "inputs": _changed(new["inputs"], old["inputs"]),
        # Unknown on one side (a run older than reuse): not counted as a difference.
        "databases": [] if new["databases"] is None or old["databases"] is None
        else _changed(new["databases"], old["databases"]),
    }


def _weight(diff: dict[str, Any]) -> int:
    return int(diff["image"]) + sum(len(diff[k]) for k in ("config", "inputs", "databases"))


def miss_message(miss: dict[str, Any], pipeline: str) -> str:
    if miss["against"] is None:
        return f"no earlier DONE run of pipeline {pipeline!r} to reuse"
    parts = []
    if miss["image"]:
        parts.append("the image (another pipeline version or build)")
    for label, key in (("config key", "config"), ("input", "inputs"),
                       ("reference database", "databases")):
        names = miss[key]
        if names:
            parts.append(f"{label}{'s' if len(names) > 1 else ''} "
                         + ", ".join(repr(n) for n in names))
    if miss["outputs"]:
        return (f"run {miss['against']} was identical but its outputs changed or are gone: "
                + ", ".join(repr(n) for n in miss["outputs"]))
    if not parts:  # identical, yet not reusable: no key recorded (an interrupted record)
        return f"run {miss['against']} looks identical but has no reuse key"
    return f"differs from run {miss['against']} in " + "; ".join(parts)


def hash_inputs(inputs: list[dict[str, Any]], root: Path,
                known: dict[str, tuple[str, int, str]]) -> list[dict[str, Any]]:
    """The inputs with their sha256 as they are now (a file record's while it holds,
    ``hashing.recorded_sha256``). In a thread."""
    out = []
    for item in inputs:
        path = resolve_under(root, item["path"])
        info = path.stat()
        digest = recorded_sha256(known.get(item["path"]), info) or sha256_file(path)
        out.append(dict(item, size=info.st_size, sha256=digest))
    return out


def stage_outputs(source: dict[str, Any], root: Path, staging: Path) -> list[str]:
    """Link (else copy) ``source``'s outputs and logs into ``staging``, each output checked
    against its recorded size and sha256. Returns the outputs that changed or are gone (then
    nothing is kept). In a thread."""
    bad: list[str] = []
    source_root = Path(source["root_path"]).resolve()
    # Outputs were hashed before the run's end was recorded; cut to the millisecond.
    ended = datetime.fromisoformat(source["end"]).timestamp() + 0.001 if source.get("end") \
        else 0.0
    (staging / "outputs").mkdir(parents=True)
    (staging / "logs").mkdir()
    for output in source["outputs"]:
        try:
            path = resolve_under(root, output["path"])
        except PirusError:  # a folder on the way replaced by a link out of the root
            bad.append(output["name"])
            continue
        if not is_within(path, source_root) or path.is_symlink() or not path.is_file() \
                or path.stat().st_size != output["size"]:
            bad.append(output["name"])
            continue
        before = path.stat()
        target = staging / "outputs" / output["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copyfile(path, target, follow_symlinks=False)
        after = path.stat()
        # Untouched since the run hashed it (a write moves the modification time): the
        # recorded sha256 holds. Otherwise hashed again: an output edited in place may keep
        # its size but not its bytes.
        untouched = before.st_mtime < ended and (after.st_mtime_ns, after.st_size,
                                                  after.st_ino) == \
            (before.st_mtime_ns, before.st_size, before.st_ino)
        if not untouched and sha256_file(target) != output["sha256"]:
            bad.append(output["name"])
    source_paths = RunPaths.of(source)
    for name in LOG_NAMES:
        log = source_paths.log(name)
        with contextlib.suppress(OSError):
            # Small (capped) and the pipeline's own words: copied, never linked.
            if log.is_file() and not log.is_symlink():
                shutil.copyfile(log, staging / "logs" / log.name, follow_symlinks=False)
    if bad:
        shutil.rmtree(staging, ignore_errors=True)
    return bad


class Reuse(RunsCore):
    async def known_hashes(self, paths: list[str]) -> dict[str, tuple[str, int, str]]:
        """The file records of these paths: path -> (sha256, size, created)."""
        if not paths:
            return {}
        records = await self.store.select(
            "files", f"path IN ({','.join('?' * len(paths))}) AND sha256 IS NOT NULL", paths)
        return {r["path"]: (r["sha256"], r["size"], r["created"]) for r in records}

    async def reuse_wanted(self, reuse: Any, pipeline: dict[str, Any]) -> bool:
        if reuse is None:
            manifest = pipeline.get("manifest") or {}
            return bool(manifest.get("deterministic") is True or self.reuse_default)
        if not isinstance(reuse, bool):
            raise InvalidRequest("reuse must be true or false")
        return reuse

    async def basis_now(self, pipeline: dict[str, Any], config: dict[str, Any],
                        inputs: list[dict[str, Any]]) -> tuple[dict[str, Any],
                                                               list[dict[str, Any]]]:
        """The basis of a run of these values now, and the inputs with their sha256."""
        known = await self.known_hashes([i["path"] for i in inputs])
        hashed = await asyncio.to_thread(hash_inputs, inputs, self.root_dir, known)
        databases = await asyncio.to_thread(database_digests, self.databases_dir)
        return make_basis(pipeline.get("fingerprint"), config, hashed, databases), hashed

    async def record_key(self, row: dict[str, Any]) -> dict[str, Any]:
        """Record the key of what this run computes, its inputs hashed (folder prepared).
        A run whose command replaced the pipeline's (a TES task) computes something its
        basis does not say: it gets no key, so it is never reused."""
        if row.get("command"):
            return row
        databases = await asyncio.to_thread(database_digests, self.databases_dir)
        basis = make_basis(row.get("pipeline_fingerprint"), row["config"], row["inputs"],
                           databases)
        return await self._save(row["id"], {"reuse_key": reuse_key(basis),
                                            "reuse_basis": basis})

    async def find_reusable(self, pipeline: dict[str, Any], basis: dict[str, Any],
                            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(DONE runs with this basis's key, newest first; the miss, when there is none)."""
        key = reuse_key(basis)
        same = await self.store.select("runs", "reuse_key = ? AND status = ?",
                                       [key, S.DONE.value], order_by="id desc",
                                       limit=SAME_KEY_TRIED)
        if same:
            return same, {}
        earlier = await self.store.select(
            "runs", "pipeline_name = ? AND status = ? AND command IS NULL",
            [pipeline["name"], S.DONE.value],
            order_by="id desc", limit=NEAREST_CANDIDATES)
        miss: dict[str, Any] = {"against": None, "image": False, "config": [], "inputs": [],
                                "databases": [], "outputs": []}
        best = None
        for row in earlier:  # newest first
            diff = differences(basis, basis_of(row))
            # Among equals, a run that ran rather than one that reused it.
            rank = (_weight(diff), row.get("reused_from") is not None)
            if best is None or rank < best[0]:
                best = (rank, row["id"], diff)
        if best is not None:
            miss.update(best[2], against=best[1])
        miss["message"] = miss_message(miss, pipeline["name"])
        return [], miss

    async def reuse_run(self, source: dict[str, Any], name: str, basis: dict[str, Any],
                        inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """A new DONE run with ``source``'s outputs; or, if they changed, the miss saying so
        (as ``{"miss": ...}``)."""
        staging = self.runs_dir / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
        try:
            bad = await asyncio.to_thread(stage_outputs, source, self.root_dir, staging)
        except OSError as e:  # no room for copies...: the run goes ahead instead
            await asyncio.to_thread(shutil.rmtree, staging, True)
            miss = {"against": source["id"], "image": False, "config": [], "inputs": [],
                    "databases": [], "outputs": [],
                    "message": f"run {source['id']} was identical but its outputs could not "
                               f"be copied: {e.strerror or e}"}
            return {"miss": miss}
        if bad:
            miss = {"against": source["id"], "image": False, "config": [], "inputs": [],
                    "databases": [], "outputs": bad}
            miss["message"] = miss_message(miss, source["pipeline_name"] or "")
            return {"miss": miss}
        now = now_iso()
        progress = dict(source.get("progress") or {})
        progress["value"] = progress.get("max", 100)
        values = {
            "pipeline_id": source["pipeline_id"], "pipeline_name": source["pipeline_name"],
            "pipeline_version": source["pipeline_version"],
            "pipeline_fingerprint": source["pipeline_fingerprint"], "name": name,
            "config": basis["config"], "inputs": inputs, "outputs": [],
            "status": S.DONE.value, "progress": progress, "exit_code": 0,
            "created": now, "start": now, "end": now,
            "timings": [[S.WAITING.value, now], [S.DONE.value, now]],
            "reuse_key": reuse_key(basis), "reuse_basis": basis, "reused_from": source["id"],
        }

        def folder(new: dict[str, Any]) -> dict[str, Any]:
            return {"root_path": str(self.runs_dir / run_folder_name(new["id"], new["name"]))}

        def files(new: dict[str, Any]) -> list[dict[str, Any]]:
            prefix = to_api_path(self.root_dir, self.runs_dir) + \
                f"/{Path(new['root_path']).name}/outputs"
            return [{"name": o["name"], "path": f"{prefix}/{o['name']}", "size": o["size"],
                     "sha256": o["sha256"], "source": "run", "run_id": new["id"],
                     "created": now} for o in source["outputs"]]

        try:
            row = await self.store.insert_run_with_outputs(values, folder, files)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise
        try:
            await asyncio.to_thread(_place, staging, Path(row["root_path"]))
        except BaseException:
            await self.store.delete_run(row["id"])
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise
        self.events.publish("run.created", public_run(row))
        for record in await self.store.select("files", "run_id = ?", [row["id"]]):
            self.events.publish("file.created", {k: record[k] for k in (
                "id", "name", "path", "size", "sha256", "source", "run_id", "created")})
        return row


def remove_staging(runs_dir: Path) -> None:
    """Staging folders left by a server stopped while it made a reused run (at start-up)."""
    if not runs_dir.is_dir():
        return
    # scandir, names first: the folder holds one folder per run (100,000 listed through
    # pathlib took 0.4-0.7 s of every start-up; 0.15 s so).
    with os.scandir(runs_dir) as entries:
        staging = [entry.path for entry in entries if entry.name.startswith(STAGING_PREFIX)
                   and entry.is_dir(follow_symlinks=False)]
    for path in staging:
        shutil.rmtree(path, ignore_errors=True)


def _place(staging: Path, root: Path) -> None:
    for folder in ("inputs", "state"):
        (staging / folder).mkdir(exist_ok=True)
    staging.chmod(0o700)  # as a run folder made by a run (folder.prepare_folder)
    os.rename(staging, root)
