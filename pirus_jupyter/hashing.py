"""File hashing shared by the server and the kernel side (no server imports here)."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path

BLOCK = 4 * 1024 * 1024


def sha256_file(path: Path | str) -> str:
    """SHA-256 of a file, read in 4 MiB blocks into one buffer (never whole in memory)."""
    digest = hashlib.sha256()
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def recorded_sha256(record: tuple[str, int, str] | None, info: os.stat_result) -> str | None:
    """A file record's ``(sha256, size, created)`` sha256 if it still describes the file
    ``info`` is of: the same size, and not modified after the record was made (a write, even
    one keeping the size, moves the modification time). None: hash the file."""
    if record is None:
        return None
    digest, size, created = record
    made = datetime.fromisoformat(created).timestamp() + 0.001  # ``created`` is cut to the ms
    return digest if info.st_size == size and info.st_mtime < made else None
