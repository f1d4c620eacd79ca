"""Kernel-side uploads to Pirus over TUS (tuspy), resumable across kernel restarts.

>>> from pirus_jupyter.kernel.uploader import upload
>>> record = upload("http://127.0.0.1:8888/", token, "reads.fastq.gz")
>>> record["file"]["path"]          # for kind="input"
'pirus-uploads/reads.fastq.gz'

What it does
    * Chunked PATCHes of ``chunk_size`` bytes (8 MiB by default; tuspy holds one chunk in
      memory), each carrying ``Upload-Checksum: sha1 ...`` (tuspy's ``upload_checksum``) so a
      corrupted chunk is refused with 460 and sent again instead of being stored.
    * Resumable across processes: the upload URL is kept in a tuspy ``FileStorage`` file (by
      default ``<jupyter data dir>/pirus/tus-urls.json``) under the file's fingerprint; calling
      :func:`upload` again for the same file (after a crash, a kernel restart, a lost network)
      asks the server for the offset and sends only the rest.
    * End-to-end verification: the server's SHA-256 of the assembled file must equal the one
      computed here, otherwise :class:`UploadError` is raised.

Why the fingerprint is the SHA-256 of the whole file
    tuspy's default fingerprint is the MD5 of the first 64 KiB plus the size: two different files
    that share a header and a size (FASTQ/BAM files of one run, a file rewritten in place) would
    resume into each other and silently produce a corrupt upload. ``path + size + mtime + inode``
    is cheap but not sound either: mtimes are coarse on some filesystems and preserved by
    ``cp -p``/``rsync -a``, inodes are reused after delete-and-recreate, and NFS makes both
    unreliable. A content hash is the only key that cannot resume the wrong bytes. Reading the
    file once more costs seconds per GiB (far less than sending it), and the digest is not wasted:
    it is compared with the server's SHA-256 at the end, which catches a file modified during the
    upload and any corruption on the way. The key also holds the server URL, the kind and the
    file name, so the same bytes sent to another server or as another kind never share an upload.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError
from tusclient.fingerprint.interface import Fingerprint
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader import Uploader

from ..hashing import sha256_file

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
UPLOADS_PATH = "pirus/api/v1/uploads"

#: ``progress(bytes_on_server, total_bytes)``: called once the offset is known (0, or where a
#: resumed upload stands) and after every chunk.
ProgressCallback = Callable[[int, int], None]


class UploadError(RuntimeError):
    """The upload could not be completed (the message says why)."""


def default_url_storage_path() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "pirus" / "tus-urls.json"


class ContentFingerprint(Fingerprint):
    """A tuspy fingerprint computed up front from the whole content (see the module docstring).

    tuspy asks for the fingerprint several times per upload; it is computed once, here.
    """

    def __init__(self, endpoint: str, kind: str, filename: str, size: int, sha256: str) -> None:
        self.sha256 = sha256
        self.key = f"pirus|{endpoint}|{kind}|{filename}|size:{size}|sha256:{sha256}"

    def get_fingerprint(self, fs: IO[bytes]) -> str:
        return self.key


class PirusUploader(Uploader):
    """tuspy's uploader with a progress hook and a fingerprint that never re-reads the file."""

    def __init__(self, *args: Any, progress: ProgressCallback | None = None, **kwargs: Any
                 ) -> None:
        # Set before tuspy's __init__, which already asks for the fingerprint and the offset.
        self._progress = progress
        super().__init__(*args, **kwargs)

    def _get_fingerprint(self) -> str:
        # tuspy's version opens the stream in a ``with`` block, which would close the file
        # stream handed to us; our fingerprint does not need the stream at all.
        return self.fingerprinter.get_fingerprint(None)  # type: ignore[arg-type]

    def report(self) -> None:
        if self._progress is not None:
            self._progress(int(self.offset), int(self.stop_at))

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
    size = source.stat().st_size
    fingerprint = ContentFingerprint(endpoint, kind, source.name, size, sha256_file(source))
    storage_path = Path(url_storage_path) if url_storage_path else default_url_storage_path()
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = FileStorage(str(storage_path))
    fields = {**(metadata or {}), "filename": source.name, "kind": kind}
    client = TusClient(endpoint, headers=headers)
    try:
        return _run(source, client, endpoint, headers, storage, fingerprint, fields,
                    chunk_size=chunk_size, progress=progress, retries=retries,
                    retry_delay=retry_delay, verify_tls=verify_tls)
    finally:
        storage.close()


def _run(source: Path, client: TusClient, endpoint: str, headers: dict[str, str],
         storage: FileStorage, fingerprint: ContentFingerprint, fields: dict[str, str], *,
         chunk_size: int, progress: ProgressCallback | None, retries: int, retry_delay: int,
         verify_tls: bool) -> dict[str, Any]:
    try:
        with open(source, "rb") as stream:
            def make() -> PirusUploader:
                return PirusUploader(
                    file_stream=stream, client=client, chunk_size=chunk_size, metadata=fields,
                    retries=retries, retry_delay=retry_delay, verify_tls_cert=verify_tls,
                    store_url=True, url_storage=storage, fingerprinter=fingerprint,
                    upload_checksum=True, progress=progress)

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
    except TusCommunicationError as e:
        content = e.response_content or b""
        detail = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        raise UploadError(f"upload of {source.name} failed: {e} {detail[:500]}".strip()) from e

    response = requests.get(url, headers={**headers, "Accept": "application/json"}, timeout=60,
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
    if record.get("sha256") and record["sha256"] != fingerprint.sha256:
        raise UploadError(f"{source.name} changed during the upload: the server received "
                          f"sha256 {record['sha256']}, the file now has {fingerprint.sha256}")
    return record
