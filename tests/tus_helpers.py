"""Helpers for the TUS tests: deterministic generated content, metadata encoding, and a raw
HTTP/1.1 client (asyncio streams) that can stream huge bodies, stop half-way, or hold a request
open — things a regular HTTP client will not do."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
import socket
from collections.abc import Iterator

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {"Content-Type": "application/offset+octet-stream"}
MiB = 1024 * 1024

_BLOCK = 1 * MiB
_BASE = random.Random(1234).randbytes(_BLOCK)


def metadata(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def _block(index: int) -> bytes:
    # Every 1 MiB block starts with its own index: a lost, repeated or shifted block changes
    # the hash of the stream.
    return index.to_bytes(8, "little") + _BASE[8:]


def pattern(start: int, end: int, piece: int = 8 * MiB) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of an endless deterministic stream, in pieces of at most ``piece``
    bytes (generated on the fly: a 1 GiB stream never exists in memory)."""
    position = start
    while position < end:
        stop = min(end, position + piece)
        out = bytearray()
        while position < stop:
            index, within = divmod(position, _BLOCK)
            take = min(_BLOCK - within, stop - position)
            out += _block(index)[within:within + take]
            position += take
        yield bytes(out)


def pattern_bytes(start: int, end: int) -> bytes:
    return b"".join(pattern(start, end))


def pattern_sha256(end: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern(0, end):
        digest.update(piece)
    return digest.hexdigest()


# -- raw HTTP/1.1 --------------------------------------------------------------------------------
def _head_bytes(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in
                                                                headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.body[:200]!r}>"


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> RawResponse:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    length = int(headers.get("content-length", "0"))
    if method != "HEAD" and status not in (204, 304) and length:
        body = await reader.readexactly(length)
    return RawResponse(status, headers, body)


class RawRequest:
    """One request on its own connection, body sent piece by piece under test control."""

    def __init__(self, port: int, method: str, path: str, headers: dict[str, str]) -> None:
        self.port = port
        self.method = method
        self.path = path
        self.headers = headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def start(self) -> RawRequest:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(_head_bytes(self.method, self.path, self.headers))
        await self.writer.drain()
        return self

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 60) -> RawResponse:
        assert self.reader is not None
        return await asyncio.wait_for(read_response(self.reader, self.method), timeout)

    def abort(self) -> None:
        """Drop the connection abruptly (RST), like a killed client."""
        assert self.writer is not None
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # on, 0 s: RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.writer.close()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()


def blocking_request(port: int, method: str, path: str, headers: dict[str, str],
                     body: Iterator[bytes] | bytes = b"", *, stop_after: int | None = None
                     ) -> socket.socket:
    """Blocking variant for tests against a server subprocess: sends the headers and the body
    (or its first ``stop_after`` bytes) and returns the open socket without reading."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_head_bytes(method, path, headers))
    sent = 0
    pieces = [body] if isinstance(body, bytes) else body
    for piece in pieces:
        if stop_after is not None and sent + len(piece) > stop_after:
            piece = piece[: stop_after - sent]
        sock.sendall(piece)
        sent += len(piece)
        if stop_after is not None and sent >= stop_after:
            break
    return sock


def blocking_response(sock: socket.socket, method: str = "GET") -> RawResponse:
    async def read() -> RawResponse:
        reader = asyncio.StreamReader()
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if method == "HEAD" or len(rest) >= length:
                    break
        reader.feed_data(data)
        reader.feed_eof()
        return await read_response(reader, method)

    return asyncio.run(read())
