"""Upload throughput: a 1 GiB file sent to a running Pirus server with TUS, in 8 MiB and 64 MiB
chunks, by a raw HTTP client (one PATCH per chunk, no checksum) and by the kernel uploader
(tuspy, sha1 per chunk, whole-file sha256 fingerprint), next to the disk's own write speed
(`dd conv=fsync` of the same file into the same folder) measured in the same run. Also the
server's peak RSS growth during the uploads (sampled every 20 ms)."""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.common import Server, report
from pirus_jupyter.uploader import upload

MiB = 1024 * 1024


class RssSampler(threading.Thread):
    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.server.rss_bytes())
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak


def make_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)


def dd_speed(source: Path, folder: Path) -> float:
    """MiB/s of dd writing the file into ``folder`` with a final fsync."""
    target = folder / "dd-copy"
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={source}", f"of={target}", "bs=8M", "conv=fsync"],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    target.unlink()
    return source.stat().st_size / MiB / seconds


class _Slice:
    """``length`` bytes of a file from ``offset``, read in 1 MiB pieces by http.client."""

    def __init__(self, handle, offset: int, length: int) -> None:  # type: ignore[no-untyped-def]
        handle.seek(offset)
        self.handle, self.left = handle, length

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.handle.read(min(size, MiB))
        self.left -= len(data)
        return data


def raw_upload(server: Server, path: Path, chunk: int) -> float:
    """Seconds to upload ``path`` with plain PATCH requests of ``chunk`` bytes."""
    size = path.stat().st_size
    parts = urlsplit(server.url)
    auth = {"Authorization": f"token {server.token}", "Tus-Resumable": "1.0.0"}
    meta = f"filename {base64.b64encode(b'raw.bin').decode()}"
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    conn.request("POST", "/pirus/api/v1/uploads", headers={
        **auth, "Upload-Length": str(size), "Upload-Metadata": meta, "Content-Length": "0"})
    response = conn.getresponse()
    response.read()
    assert response.status == 201, response.status
    location = response.getheader("Location")
    offset = 0
    with open(path, "rb") as f:
        while offset < size:
            length = min(chunk, size - offset)
            conn.request("PATCH", location, body=_Slice(f, offset, length), headers={
                **auth, "Upload-Offset": str(offset), "Content-Length": str(length),
                "Content-Type": "application/offset+octet-stream"})
            response = conn.getresponse()
            response.read()
            assert response.status == 204, response.status
            offset = int(response.getheader("Upload-Offset"))
    conn.close()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    with Server() as server:
        source = server.tmp / "source.bin"
        make_file(source, args.size_mib * MiB)
        parts_dir = Path(server.settings["data_dir"]) / "uploads"
        parts_dir.mkdir(parents=True, exist_ok=True)
        rss_idle = server.rss_bytes()
        sampler = RssSampler(server)
        sampler.start()
        for chunk_mib in (8, 64):
            disk = dd_speed(source, parts_dir)
            raw = args.size_mib / raw_upload(server, source, chunk_mib * MiB)
            t0 = time.perf_counter()
            upload(server.url, server.token, source, chunk_size=chunk_mib * MiB,
                   url_storage_path=server.tmp / f"urls-{chunk_mib}.json")
            tus = args.size_mib / (time.perf_counter() - t0)
            label = f"upload[{chunk_mib}MiB]"
            report(f"{label}.disk_dd_fsync_mib_s", f"{disk:.0f}")
            report(f"{label}.raw_patch_mib_s", f"{raw:.0f}")
            report(f"{label}.raw_patch_ratio_to_disk", f"{raw / disk:.2f}")
            report(f"{label}.tuspy_mib_s", f"{tus:.0f}")
            report(f"{label}.tuspy_ratio_to_disk", f"{tus / disk:.2f}")
            for record in server.session.get(server.api("uploads")).json()["items"]:
                server.session.delete(server.api(f"uploads/{record['id']}"),
                                      headers={"Tus-Resumable": "1.0.0"})
            for f in (server.root / "pirus-uploads").glob("*"):
                f.unlink()
        peak = sampler.stop()
        report("upload.server_rss_idle_mib", f"{rss_idle / MiB:.0f}")
        report("upload.server_peak_rss_growth_mib", f"{(peak - rss_idle) / MiB:.0f}")


if __name__ == "__main__":
    main()
