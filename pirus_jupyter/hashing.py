"""File hashing shared by the server and the kernel side (no server imports here)."""

from __future__ import annotations

import hashlib
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
