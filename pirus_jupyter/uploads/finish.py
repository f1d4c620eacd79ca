"""Finishing an upload: what its bytes become once all are recorded.

An input becomes a Pirus file: its part file is hard-linked (or copied, across filesystems)
into ``uploads_dir`` under a unique name and registered with :class:`FileService`. A pipeline
upload hands its part file to :meth:`PipelineService.install_file`; its pipeline record hears of
the upload's progress and failure through :meth:`UploadFinisher.tell_pipeline`. A partial upload
stays as it is, waiting to be concatenated.

No room to place the file (``uploads_dir`` on another, full filesystem: the copy fails with
ENOSPC/EDQUOT) loses nothing: the half copy is removed, the part file and the upload stay
(``uploading``, every byte recorded, ``error`` saying why, no expiry), and finishing is tried
again — see :meth:`UploadFinisher.is_waiting` and ``UploadService.retry_finish``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Forbidden, PirusError
from ..files import FileService, is_within, to_api_path
from ..store import Store
from .identical import identical_file, wants_copy
from .parts import PartStore
from .protocol import decode_metadata, is_disk_full, is_partial
from .records import COMPLETE, ERROR, UPLOADING, UploadRecords

if TYPE_CHECKING:
    from ..pipelines import PipelineService


class UploadFinisher:
    """Turns uploads whose bytes are all recorded into files or pipelines."""

    def __init__(self, store: Store, records: UploadRecords, parts: PartStore,
                 files: FileService, pipelines: PipelineService, *, uploads_dir: Path,
                 log: logging.Logger) -> None:
        self.store = store
        self.records = records
        self.parts = parts
        self.files = files
        self.pipelines = pipelines
        self.uploads_dir = uploads_dir
        self.log = log

    async def tell_pipeline(self, row: Mapping[str, Any],
                             call: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Pass news of a pipeline upload on to its pipeline record (which may be gone:
        the upload goes on regardless)."""
        if row.get("pipeline_id") is None:
            return
        try:
            await call(row["pipeline_id"], *args)
        except PirusError as e:
            self.log.warning("pirus: upload %s: pipeline %s: %s", row["id"],
                             row["pipeline_id"], e.message)

    async def report_offset(self, row: Mapping[str, Any]) -> None:
        await self.tell_pipeline(row, self.pipelines.set_upload_offset, row["offset"])

    async def finish_if_complete(self, row: dict[str, Any]) -> dict[str, Any]:
        """Finish the upload if all its bytes are recorded; the caller holds its lock."""
        if row["status"] != UPLOADING or row["length"] is None or row["offset"] != row["length"]:
            return row
        if is_partial(row):
            # A partial upload waits, untouched, to be concatenated (and expires otherwise).
            row = await self.records.update(row["id"], {"status": COMPLETE})
            await self.records.publish("upload.updated", row)
            return row
        try:
            digest = await self.parts.sha256(row["id"], row["length"])
            if row["kind"] == "pipeline":
                pipeline_id = await self.pipelines.install_file(
                    row["pipeline_id"], self.parts.path(row["id"]), sha256=digest)
                # An identical pipeline already installed: the upload points at it.
                values: dict[str, Any] = {"pipeline_id": pipeline_id}
            else:
                values = await self._place_input(row, digest)
        except OSError as e:
            if is_disk_full(e):
                return await self._wait_for_space(row, e)
            return await self.fail(row, str(e))
        except PirusError as e:
            return await self.fail(row, e.message)
        row = await self.records.update(row["id"], {**values, "status": COMPLETE,
                                                    "expires": None, "sha256_state": digest,
                                                    "error": None})
        self.parts.forget(row["id"])
        await self.records.publish("upload.updated", row)
        self.log.info("pirus: upload %s complete (%s bytes, sha256 %s)", row["id"],
                      row["length"], digest)
        return row

    @staticmethod
    def is_waiting(row: Mapping[str, Any]) -> bool:
        """Every byte is recorded but the upload is not finished (after a finish attempt: there
        was no room to place its file)."""
        return (row["status"] == UPLOADING and row["length"] is not None
                and row["offset"] == row["length"] and not is_partial(row))

    async def _wait_for_space(self, row: dict[str, Any], e: OSError) -> dict[str, Any]:
        """Keep everything and say why the upload is not finished; it no longer expires (all
        its bytes arrived, like a finished upload)."""
        message = (f"all {row['length']} bytes are stored, but there is no room to place the "
                   f"file ({os.strerror(e.errno or 0)}): it is finished once space is freed")
        self.log.warning("pirus: upload %s: %s", row["id"], message)
        row = await self.records.update(row["id"], {"error": message, "expires": None})
        await self.records.publish("upload.updated", row)
        return row

    async def _place_input(self, row: Mapping[str, Any], digest: str) -> dict[str, Any]:
        """The file the upload becomes: an identical existing one (identical.py), else its
        own bytes placed in the uploads folder."""
        root = self.files.root_dir.resolve()
        if not wants_copy(decode_metadata(row.get("metadata") or {})):
            same = await identical_file(self.store, root, digest, row["length"])
            if same is not None:
                await self.parts.delete(row["id"])
                return {"file_id": same, "deduplicated": 1}
        return {"file_id": await self._new_input(row, digest, root), "deduplicated": 0}

    async def _new_input(self, row: Mapping[str, Any], digest: str, root: Path) -> int:
        folder = self.uploads_dir
        if not is_within(folder.resolve(), root):
            raise Forbidden(f"uploads_dir {folder} is outside the Jupyter root")
        target = await self.parts.place(row["id"], folder, row["filename"])
        # A finish retried after a crash may find its file already registered: reuse it.
        api_path = to_api_path(root, target)
        for existing in await self.store.select("files", "path = ? AND source = ?",
                                                [api_path, "upload"]):
            if existing["sha256"] == digest and existing["size"] == row["length"]:
                return int(existing["id"])
        record = await self.files.register(target, source="upload", sha256=digest)
        return int(record["id"])

    async def fail(self, row: dict[str, Any], message: str) -> dict[str, Any]:
        """Mark the upload (and its pipeline) failed; the client may remove it, else it
        expires."""
        self.log.error("pirus: upload %s failed: %s", row["id"], message)
        row = await self.records.update(row["id"], {"status": ERROR, "error": message,
                                                    "expires": self.records.expiry()})
        await self.tell_pipeline(row, self.pipelines.fail, message)
        await self.records.publish("upload.updated", row)
        return row
