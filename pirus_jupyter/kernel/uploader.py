"""Kernel-side uploads to Pirus over TUS (tuspy), resumable across kernel restarts.

>>> from pirus_jupyter.kernel.uploader import upload
>>> record = upload("http://127.0.0.1:8888/", token, "reads.fastq.gz")
>>> record["file"]["path"]          # for kind="input"
'pirus-uploads/reads.fastq.gz'

What it does
    * Chunked PATCHes of ``chunk_size`` bytes (8 MiB by default; up to three chunks in memory:
      the one being sent, the next one read ahead, one the hash has not finished) on one
      keep-alive connection; a failed PATCH is retried from the server's offset (``retries``).
    * Resumable across processes: the upload URL is kept in a tuspy ``FileStorage`` file (by
      default ``<jupyter data dir>/pirus/tus-urls.json``) under the file's fingerprint; calling
      :func:`upload` again for the same file (after a crash, a kernel restart, a lost network)
      asks the server for the offset and sends only the rest.
    * End-to-end verification: the SHA-256 of the file, computed from the very chunks being sent
      (in a thread, overlapped with sending; the prefix of a resumed upload is read from the file
      meanwhile), must equal the server's SHA-256 of what it assembled, otherwise
      :class:`UploadError` is raised. Every byte is read and hashed once.

Why the fingerprint is the file's identity and not its content
    The fingerprint picks which remembered upload to resume. tuspy's default (MD5 of the first
    64 KiB plus the size) lets two files sharing a header and a size (FASTQ/BAM files of one run,
    a file rewritten in place) resume into each other. A content hash of the whole file cannot,
    but it costs one more read of the file before the first byte is sent. The key here is the
    file's identity and state: real path, device, inode, size, ``mtime_ns`` and ``ctime_ns``.
    ``ctime`` is what makes it sound: it moves on every write and on every ``utime`` (so
    ``cp -p``/``rsync -a``/``touch -d`` restoring an old mtime still change it) and cannot be set
    back by a user; a file deleted and recreated under a reused inode gets a new one. What is left
    (a rewrite of the same size within the timestamp granularity of a coarse filesystem) is
    caught by the SHA-256 comparison at the end: never a silent corrupt upload. The key also
    holds the server URL, the kind and the file name, so the same file sent to another server or
    as another kind never shares an upload.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.fingerprint.interface import Fingerprint
from tusclient.request import TusRequest
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader import Uploader

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
UPLOADS_PATH = "pirus/api/v1/uploads"
READ_BLOCK = 4 * 1024 * 1024

#: ``progress(bytes_on_server, total_bytes)``: called once the offset is known (0, or where a
#: resumed upload stands) and after every chunk.
ProgressCallback = Callable[[int, int], None]


class UploadError(RuntimeError):
    """The upload could not be completed (the message says why)."""


def default_url_storage_path() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "pirus" / "tus-urls.json"


class FileFingerprint(Fingerprint):
    """A tuspy fingerprint from the file's identity and state (see the module docstring)."""

    def __init__(self, endpoint: str, kind: str, path: Path) -> None:
        info = path.stat()
        self.size = info.st_size
        self.key = (f"pirus|{endpoint}|{kind}|{path.name}|{path.resolve()}|"
                    f"{info.st_dev}:{info.st_ino}|size:{info.st_size}|"
                    f"mtime:{info.st_mtime_ns}|ctime:{info.st_ctime_ns}")

    def get_fingerprint(self, fs: IO[bytes]) -> str:
        return self.key


class StreamHash:
    """SHA-256 of a file, fed in order with the chunks being sent, hashed in one worker thread
    (hashlib releases the GIL) so that hashing overlaps with sending.

    Bytes already hashed are never hashed again (a chunk re-sent after a retry); bytes that were
    not sent by this process (the prefix of a resumed upload) are read from the file, in the same
    thread, in order. At most two chunks wait for the thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.size = 0  # bytes handed to the thread so far
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pirus-upload-hash")
        self._pending: deque[Future[None]] = deque()

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        while len(self._pending) >= 2:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(fn, *args))

    def _hash_file(self, start: int, end: int) -> None:
        with open(self.path, "rb", buffering=0) as f:
            f.seek(start)
            left = end - start
            while left:
                block = f.read(min(READ_BLOCK, left))
                if not block:
                    raise UploadError(f"{self.path.name} became shorter during the upload")
                self.digest.update(block)
                left -= len(block)

    def feed(self, offset: int, chunk: bytes) -> None:
        """``chunk`` is the file's bytes from ``offset``, about to be sent."""
        if offset > self.size:  # bytes this process did not send: read them
            self._submit(self._hash_file, self.size, offset)
            self.size = offset
        end = offset + len(chunk)
        if end > self.size:
            self._submit(self.digest.update, memoryview(chunk)[self.size - offset:])
            self.size = end

    def hexdigest(self, size: int) -> str:
        """The SHA-256 of the first ``size`` bytes (all of them fed or read by now)."""
        if size > self.size:
            self._submit(self._hash_file, self.size, size)
            self.size = size
        while self._pending:
            self._pending.popleft().result()
        return self.digest.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ChunkReader:
    """The file's chunks, the next one read ahead in a thread while the current one is sent
    (so sending never waits for the disk when the server takes the chunks in order)."""

    def __init__(self, path: Path, size: int) -> None:
        self.size = size
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pirus-upload-read")
        self._ahead: tuple[int, int, Future[bytes]] | None = None

    def _pread(self, offset: int, length: int) -> bytes:
        pieces = []
        while length:
            piece = os.pread(self.fd, length, offset)
            if not piece:
                break  # the file shrank: the server then gets fewer bytes and says so
            pieces.append(piece)
            offset += len(piece)
            length -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; reads the next chunk ahead."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:2] == (offset, length):
            chunk = ahead[2].result()
        else:  # a retry from another offset: the chunk read ahead is not the one
            if ahead is not None:
                ahead[2].cancel()
            chunk = self._pread(offset, length)
        following = offset + len(chunk)
        if len(chunk) == length and following < self.size:
            n = min(length, self.size - following)
            self._ahead = (following, n, self._pool.submit(self._pread, following, n))
        return chunk

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        os.close(self.fd)


class _ChunkRequest(TusRequest):
    """tuspy's PATCH, on the uploader's keep-alive session, the chunk (read ahead) fed to the
    hash first."""

    def __init__(self, uploader: PirusUploader) -> None:
        super().__init__(uploader)
        self._uploader = uploader

    def perform(self) -> None:
        uploader = self._uploader
        chunk = uploader.reader.read(uploader.offset, self._content_length)
        uploader.hash.feed(uploader.offset, chunk)
        try:
            resp = uploader.session.patch(self._url, data=chunk, headers=self._request_headers,
                                          verify=self.verify_tls_cert, cert=self.client_cert)
        except requests.exceptions.RequestException as error:
            raise TusUploadFailed(error) from error
        self.status_code = resp.status_code
        self.response_content = resp.content
        self.response_headers = {k.lower(): v for k, v in resp.headers.items()}


class PirusUploader(Uploader):
    """tuspy's uploader with a progress hook, a keep-alive session, the file's SHA-256 computed
    from the chunks as they are sent, and a fingerprint that never reads the file."""

    def __init__(self, *args: Any, session: requests.Session, stream_hash: StreamHash,
                 reader: ChunkReader, progress: ProgressCallback | None = None, **kwargs: Any
                 ) -> None:
        # Set before tuspy's __init__, which already asks for the fingerprint and the offset.
        self._progress = progress
        self.session = session
        self.hash = stream_hash
        self.reader = reader
        super().__init__(*args, **kwargs)

    def _get_fingerprint(self) -> str:
        # tuspy's version opens the stream in a ``with`` block, which would close the file
        # stream handed to us; our fingerprint does not need the stream at all.
        return self.fingerprinter.get_fingerprint(None)  # type: ignore[arg-type]

    def report(self) -> None:
        if self._progress is not None:
            self._progress(int(self.offset), int(self.stop_at))

    def _do_request(self) -> None:
        self.request = _ChunkRequest(self)
        try:
            self.request.perform()
            if not 200 <= int(self.request.status_code or 0) < 300:
                raise TusUploadFailed("", self.request.status_code,
                                      self.request.response_content)
        except TusUploadFailed as error:
            self._retry_or_cry(error)

    def upload_chunk(self) -> None:
        super().upload_chunk()
        self.report()


def _endpoint(client_base_url: str) -> str:
    base = client_base_url if client_base_url.endswith("/") else client_base_url + "/"
    return base + UPLOADS_PATH


def upload(client_base_url: str, token: str, path: str | os.PathLike[str], kind: str = "input",
           chunk_size: int = DEFAULT_CHUNK_SIZE, metadata: Mapping[str, str] | None = None,
           progress: ProgressCallback | None = None,
           url_storage_path: str | os.PathLike[str] | None = None, *, retries: int = 5,
           retry_delay: int = 1, verify_tls: bool = True) -> dict[str, Any]:
    """Upload ``path`` to the Pirus server at ``client_base_url`` (the Jupyter server's base
    URL, e.g. ``http://127.0.0.1:8888/``) and return the server's upload record.

    ``kind`` is ``"input"`` (the record's ``file`` is the registered Pirus file) or
    ``"pipeline"`` (the record's ``pipeline_id`` is the pipeline being installed). ``metadata``
    adds TUS metadata. ``progress(sent, total)`` is called as bytes are acknowledged. An
    interrupted upload (exception, killed kernel) is resumed by calling this again with the same
    file and ``url_storage_path``. Raises :class:`UploadError` if the server refuses the file or
    its SHA-256 differs from the local one.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no file at {source}")
    if kind not in ("input", "pipeline"):
        raise ValueError("kind must be 'input' or 'pipeline'")
    endpoint = _endpoint(client_base_url)
    headers = {"Authorization": f"token {token}"}
    fingerprint = FileFingerprint(endpoint, kind, source)
    storage_path = Path(url_storage_path) if url_storage_path else default_url_storage_path()
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = FileStorage(str(storage_path))
    fields = {**(metadata or {}), "filename": source.name, "kind": kind}
    client = TusClient(endpoint, headers=headers)
    stream_hash = StreamHash(source)
    reader = ChunkReader(source, fingerprint.size)
    try:
        with requests.Session() as session:
            session.headers.update(headers)
            return _run(source, client, session, stream_hash, reader, storage, fingerprint, fields,
                        chunk_size=chunk_size, progress=progress, retries=retries,
                        retry_delay=retry_delay, verify_tls=verify_tls)
    finally:
        stream_hash.close()
        reader.close()
        storage.close()


def _run(source: Path, client: TusClient, session: requests.Session, stream_hash: StreamHash,
         reader: ChunkReader, storage: FileStorage, fingerprint: FileFingerprint,
         fields: dict[str, str], *,
         chunk_size: int, progress: ProgressCallback | None, retries: int, retry_delay: int,
         verify_tls: bool) -> dict[str, Any]:
    try:
        with open(source, "rb") as stream:
            def make() -> PirusUploader:
                return PirusUploader(
                    file_stream=stream, client=client, chunk_size=chunk_size, metadata=fields,
                    retries=retries, retry_delay=retry_delay, verify_tls_cert=verify_tls,
                    store_url=True, url_storage=storage, fingerprinter=fingerprint,
                    session=session, stream_hash=stream_hash, reader=reader, progress=progress)

            try:
                uploader = make()
            except TusCommunicationError as e:
                if e.status_code not in (404, 410):
                    raise
                # The remembered upload is gone (expired or terminated): forget it, start over.
                storage.remove_item(fingerprint.key)
                uploader = make()
            uploader.report()
            uploader.upload()
            url = str(uploader.url)
            sha256 = stream_hash.hexdigest(fingerprint.size)
    except TusCommunicationError as e:
        content = e.response_content or b""
        detail = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        raise UploadError(f"upload of {source.name} failed: {e} {detail[:500]}".strip()) from e

    response = session.get(url, headers={"Accept": "application/json"}, timeout=60,
                           verify=verify_tls)
    if response.status_code != 200:
        raise UploadError(f"cannot read the upload record ({response.status_code}): "
                          f"{response.text[:500]}")
    record: dict[str, Any] = response.json()
    # Finished one way or the other: a later call must not resume this upload.
    storage.remove_item(fingerprint.key)
    if record.get("status") == "error":
        raise UploadError(f"the server could not use {source.name}: {record.get('error')}")
    if record.get("status") != "complete":
        raise UploadError(f"upload of {source.name} ended in state {record.get('status')}")
    if record.get("sha256") and record["sha256"] != sha256:
        file_id = (record.get("file") or {}).get("id")
        raise UploadError(f"{source.name} does not match what the server received (the file "
                          "changed during the upload, or since the interrupted upload this "
                          f"one resumed): sha256 {record['sha256']} on the server (upload "
                          f"{record.get('id')}, file {file_id}), {sha256} here; call upload() "
                          "again to send it afresh")
    return record
