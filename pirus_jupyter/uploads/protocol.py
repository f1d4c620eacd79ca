"""The TUS 1.0.0 wire format: constants, errors, header parsing and the headers of responses.

Pure functions of request headers and upload rows: no I/O, no state. Every header a client sends
is validated here before anything else looks at it (anything malformed is a 400), so nothing
unvalidated is ever echoed back in a header.

Extensions: creation, creation-with-upload, creation-defer-length, checksum (sha1, md5, sha256),
termination, expiration and concatenation (of finished partial uploads).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlparse

from ..errors import InvalidRequest, PayloadTooLarge, PirusError, UnsupportedMediaType

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = (
    "creation", "creation-with-upload", "creation-defer-length", "termination", "checksum",
    "expiration", "concatenation",
)
CHECKSUM_ALGORITHMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256,
}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# Headers a browser client (tus-js-client) must be able to read on cross-origin responses.
EXPOSED_HEADERS = (
    "Location, Upload-Offset, Upload-Length, Upload-Defer-Length, Upload-Metadata, "
    "Upload-Expires, Upload-Concat, Tus-Resumable, Tus-Version, Tus-Extension, "
    "Tus-Max-Size, Tus-Checksum-Algorithm")
# Metadata ``kind``: what a finished upload becomes (a Pirus file, or an installed pipeline).
KINDS = ("input", "pipeline")

# Header values are integers in bytes; anything longer is not a plausible size.
_INT_RE = re.compile(r"[0-9]{1,19}")
UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_URL_ID_RE = re.compile(r"/uploads/([A-Za-z0-9_-]{1,64})/?$")
_METADATA_KEY_RE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII, no space, no comma
# Most partial uploads one concatenation may join (each is a database read and an open file).
MAX_CONCAT_PARTS = 1000


# -- errors ------------------------------------------------------------------------------------
class UnsupportedVersion(PirusError):
    status = 412
    code = "unsupported_version"


class Locked(PirusError):
    """Another request is writing to (or finishing, or removing) this upload right now."""

    status = 423
    code = "locked"


class ChecksumMismatch(PirusError):
    status = 460
    code = "checksum_mismatch"


class StorageError(PirusError):
    status = 500
    code = "storage_error"


class InsufficientStorage(StorageError):
    """The upload store is full (ENOSPC, EDQUOT): the client resumes once space is freed."""

    status = 507
    code = "insufficient_storage"


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(e: OSError) -> bool:
    """Whether a failed write means "no room" (space is freed later) rather than a fault."""
    return e.errno in _FULL_ERRNOS


def storage_error(e: OSError, kept: int | None = None) -> StorageError:
    """The error a client gets when bytes could not be stored: 507 for a full disk, saying
    where to resume, 500 otherwise."""
    if is_disk_full(e):
        where = f"; {kept} bytes are stored: resume at Upload-Offset {kept} once space is " \
                "freed" if kept is not None else ""
        return InsufficientStorage(f"the upload store is full ({os.strerror(e.errno)}){where}")
    return StorageError(f"cannot store the uploaded bytes: {e}")


def with_headers(error: PirusError, headers: Mapping[str, str]) -> PirusError:
    """Attach response headers to an error; the upload handlers' ``write_error`` sends them."""
    error.headers = dict(headers)  # type: ignore[attr-defined]
    return error


# -- header values -----------------------------------------------------------------------------
def parse_size(value: str | None, name: str) -> int | None:
    """A non-negative integer header (``Upload-Length``, ``Upload-Offset``), or 400."""
    if value is None:
        return None
    value = value.strip()
    if not _INT_RE.fullmatch(value):
        raise InvalidRequest(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata`` as an ordered ``{key: base64 value}`` (``""`` for an empty value).

    Keys must be non-empty printable ASCII without spaces or commas and unique; values must be
    strict base64. Anything else is a 400, so nothing unvalidated is ever echoed in a header.
    """
    if header is None or header.strip() == "":
        return {}
    out: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2:
            raise InvalidRequest(f"Upload-Metadata pair {pair.strip()!r} is not 'key value'")
        key, value = parts[0], (parts[1] if len(parts) == 2 else "")
        if not _METADATA_KEY_RE.fullmatch(key):
            raise InvalidRequest(f"Upload-Metadata key {key!r} is empty or not printable ASCII")
        if key in out:
            raise InvalidRequest(f"Upload-Metadata key {key!r} is repeated")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidRequest(f"Upload-Metadata value of {key!r} is not base64") from e
        out[key] = value
    return out


def decode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata values as text (binary values are shown with replacement characters)."""
    return {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in metadata.items()}


def encode_metadata(metadata: Mapping[str, str]) -> str:
    return ",".join(f"{k} {v}" if v else k for k, v in metadata.items())


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; unknown algorithms are a 400."""
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise InvalidRequest("Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm, encoded = parts
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise InvalidRequest(
            f"checksum algorithm {algorithm!r} is not supported "
            f"(supported: {', '.join(CHECKSUM_ALGORITHMS)})", code="unsupported_checksum")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest("Upload-Checksum digest is not base64") from e
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]().digest_size:
        raise InvalidRequest(f"Upload-Checksum digest has the wrong length for {algorithm}")
    return algorithm, digest


def parse_concat(header: str) -> tuple[str, list[str]]:
    """``partial`` -> ("partial", []); ``final;<url> <url>`` -> ("final", [upload ids])."""
    value = header.strip()
    if value == "partial":
        return "partial", []
    if not value.startswith("final;"):
        raise InvalidRequest("Upload-Concat must be 'partial' or 'final;<upload URLs>'")
    urls = value[len("final;"):].split()
    if not urls:
        raise InvalidRequest("Upload-Concat: final lists no partial uploads")
    if len(urls) > MAX_CONCAT_PARTS:
        raise InvalidRequest(f"Upload-Concat: final lists {len(urls)} partial uploads; at most "
                             f"{MAX_CONCAT_PARTS} can be joined")
    ids: list[str] = []
    seen: set[str] = set()
    for url in urls:
        match = _URL_ID_RE.search(urlparse(url).path)
        if not match:
            raise InvalidRequest(f"{url!r} is not an upload URL")
        if match.group(1) in seen:
            # One part named N times would make a file N times its size from one upload.
            raise InvalidRequest(f"Upload-Concat: final names partial upload {match.group(1)} "
                                 "more than once; each part can be joined once")
        ids.append(match.group(1))
        seen.add(match.group(1))
    return "final", ids


def has_body(headers: Mapping[str, str]) -> bool:
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return True
    return (parse_size(headers.get("Content-Length"), "Content-Length") or 0) > 0


def http_date(iso: str) -> str:
    """An ISO timestamp from the store as an RFC 7231 date (``Upload-Expires``)."""
    return format_datetime(datetime.fromisoformat(iso).astimezone(timezone.utc), usegmt=True)


def _require_offset_content_type(headers: Mapping[str, str], what: str) -> None:
    if headers.get("Content-Type", "").split(";")[0].strip() != OFFSET_CONTENT_TYPE:
        raise UnsupportedMediaType(f"{what} must be {OFFSET_CONTENT_TYPE}")


# -- requests ----------------------------------------------------------------------------------
def check_version(method: str, headers: Mapping[str, str]) -> None:
    """412 unless a TUS request carries ``Tus-Resumable: 1.0.0``.

    OPTIONS ignores the header (as the protocol says) and GET is this API's JSON read, not a
    TUS request, so neither is checked.
    """
    if method in ("OPTIONS", "GET"):
        return
    version = headers.get("Tus-Resumable")
    if version != TUS_VERSION:
        raise with_headers(UnsupportedVersion(
            f"Tus-Resumable {version!r} is not supported; this server speaks {TUS_VERSION}"),
            {"Tus-Version": TUS_VERSION})


@dataclass
class Creation:
    """A creation POST's headers, validated (in the order a client learns of its mistakes)."""

    metadata: dict[str, str]  # as sent: base64 values
    values: dict[str, str]  # decoded
    kind: str
    body: bool
    concat: str = ""  # the Upload-Concat header as sent (stripped), or ""
    part_ids: list[str] = field(default_factory=list)  # of a final upload
    length: int | None = None
    checksum: tuple[str, bytes] | None = None
    room: int = 0  # how many body bytes the upload can take

    @property
    def final(self) -> bool:
        return self.part_ids != []

    @property
    def partial(self) -> bool:
        return self.concat == "partial"


def parse_creation(headers: Mapping[str, str], max_size: int) -> Creation:
    """400/413/415 for a creation that cannot be accepted, before any byte of its body."""
    metadata = parse_metadata(headers.get("Upload-Metadata"))
    values = decode_metadata(metadata)
    kind = values.get("kind") or "input"
    if kind not in KINDS:
        raise InvalidRequest(f"metadata kind must be one of {', '.join(KINDS)}, not {kind!r}")
    creation = Creation(metadata, values, kind, has_body(headers))
    concat_header = headers.get("Upload-Concat")
    if concat_header:
        concat_kind, creation.part_ids = parse_concat(concat_header)
        creation.concat = "partial" if concat_kind == "partial" else concat_header.strip()
    if creation.final:
        if headers.get("Upload-Length") is not None or (
                headers.get("Upload-Defer-Length") is not None):
            raise InvalidRequest("a final upload takes no Upload-Length: its length is the "
                                 "sum of its partial uploads")
        if creation.body:
            raise InvalidRequest("a final upload takes no body")
        return creation

    length = parse_size(headers.get("Upload-Length"), "Upload-Length")
    defer = headers.get("Upload-Defer-Length")
    if length is not None and defer is not None:
        raise InvalidRequest("give Upload-Length or Upload-Defer-Length, not both")
    if length is None:
        if defer is None:
            raise InvalidRequest("Upload-Length (or Upload-Defer-Length: 1) is required")
        if defer.strip() != "1":
            raise InvalidRequest("Upload-Defer-Length must be 1")
    elif length > max_size:
        raise PayloadTooLarge(f"Upload-Length {length} is over the {max_size} byte "
                              "limit (Tus-Max-Size)")
    creation.length = length
    content_length = parse_size(headers.get("Content-Length"), "Content-Length")
    if creation.body:
        _require_offset_content_type(headers, "a creation request with a body")
        creation.checksum = parse_checksum(headers.get("Upload-Checksum"))
        creation.room = length if length is not None else max_size
        if content_length is not None and content_length > creation.room:
            raise PayloadTooLarge(f"the body ({content_length} bytes) is longer than the "
                                  f"upload ({creation.room} bytes)")
    return creation


@dataclass
class Patch:
    """A PATCH's headers, validated."""

    offset: int
    checksum: tuple[str, bytes] | None
    new_length: int | None  # Upload-Length, to fix a deferred length
    content_length: int | None


def parse_patch(headers: Mapping[str, str]) -> Patch:
    """415 for a wrong content type, 400 for malformed headers."""
    _require_offset_content_type(headers, "PATCH bodies")
    offset = parse_size(headers.get("Upload-Offset"), "Upload-Offset")
    if offset is None:
        raise InvalidRequest("Upload-Offset is required")
    return Patch(offset, parse_checksum(headers.get("Upload-Checksum")),
                 parse_size(headers.get("Upload-Length"), "Upload-Length"),
                 parse_size(headers.get("Content-Length"), "Content-Length"))


# -- responses ---------------------------------------------------------------------------------
def is_final(row: Mapping[str, Any]) -> bool:
    """Whether an upload row is a final upload (one made by concatenation)."""
    return bool(row.get("concat")) and str(row["concat"]).startswith("final")


def is_partial(row: Mapping[str, Any]) -> bool:
    return row.get("concat") == "partial"


def options_headers(max_size: int) -> dict[str, str]:
    """The headers of an OPTIONS response (discovery)."""
    return {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(TUS_EXTENSIONS),
        "Tus-Max-Size": str(max_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


def head_headers(row: Mapping[str, Any]) -> dict[str, str]:
    """The headers of a HEAD response."""
    headers = {"Cache-Control": "no-store"}
    if not is_final(row) or row["offset"] == row["length"]:
        # A final upload shows its offset only once the concatenation finished.
        headers["Upload-Offset"] = str(row["offset"])
    if row["length"] is not None:
        headers["Upload-Length"] = str(row["length"])
    else:
        headers["Upload-Defer-Length"] = "1"
    if row["metadata"]:
        headers["Upload-Metadata"] = encode_metadata(row["metadata"])
    if row["concat"]:
        headers["Upload-Concat"] = row["concat"]
    if row["expires"]:
        headers["Upload-Expires"] = http_date(row["expires"])
    return headers


def response_headers(row: Mapping[str, Any]) -> dict[str, str]:
    """``Upload-Offset`` and ``Upload-Expires`` for PATCH and creation responses."""
    headers = {"Upload-Offset": str(row["offset"])}
    if row.get("expires"):
        headers["Upload-Expires"] = http_date(row["expires"])
    return headers
