"""Identical uploads: a finished input whose bytes equal an existing file's becomes that file.

Uploading ``reads.fastq`` a second time would otherwise make ``reads-1.fastq``: the same input
under a new name, which a pipeline printing its inputs' names turns into new output hashes
(and a run that could have been reused runs again). A user who wants a separate copy says so
with the ``copy`` metadata key (any value but ``false``, ``0`` or ``no``).

Candidates are file records of the same sha256 and size that no run owns (a run's outputs go
when the run is deleted). A record's hash is trusted only while its file is still a regular
file of that size whose modification time is not after the record was made: an edit in place
(through Jupyter or a shell) moves the time, and such a file is not a match.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import PirusError
from ..files import resolve_under
from ..hashing import recorded_sha256
from ..store import Store

CANDIDATES = 20
NO = frozenset({"false", "0", "no"})


def wants_copy(metadata: Mapping[str, str]) -> bool:
    """Whether the upload's (decoded) metadata asks for a new file whatever exists."""
    return "copy" in metadata and metadata["copy"].strip().lower() not in NO


def _unchanged(root: Path, record: Mapping[str, Any]) -> bool:
    try:
        path = resolve_under(root, record["path"])
        info = os.stat(path, follow_symlinks=False)
    except (OSError, PirusError):
        return False
    return stat.S_ISREG(info.st_mode) and recorded_sha256(
        (record["sha256"], record["size"], record["created"]), info) is not None


async def identical_file(store: Store, root: Path, digest: str, length: int) -> int | None:
    """The id of an unowned file record holding exactly these bytes, or None."""
    rows = await store.select("files", "sha256 = ? AND size = ? AND run_id IS NULL",
                              [digest, length], order_by="id desc", limit=CANDIDATES)
    for row in rows:
        if await asyncio.to_thread(_unchanged, root, row):
            return int(row["id"])
    return None
