"""Uploads: the TUS 1.0.0 protocol and the store of partial and finished uploads.

``protocol`` (the wire format) · ``parts`` (bytes on disk) · ``writer`` (one request body) ·
``records`` (the uploads table, locks) · ``finish`` (what finished bytes become) ·
``service`` (:class:`UploadService`, the operations the handlers call).
"""

from .protocol import (
    EXPOSED_HEADERS,
    MAX_CONCAT_PARTS,
    TUS_EXTENSIONS,
    TUS_VERSION,
    UPLOAD_ID_RE,
    check_version,
    options_headers,
    response_headers,
)
from .service import UploadService
from .writer import CHECKPOINT_BYTES, ChunkWriter

__all__ = [
    "CHECKPOINT_BYTES", "EXPOSED_HEADERS", "MAX_CONCAT_PARTS", "TUS_EXTENSIONS", "TUS_VERSION",
    "UPLOAD_ID_RE", "ChunkWriter", "UploadService", "check_version", "options_headers",
    "response_headers",
]
