"""Upload throughput: a 1 GiB file sent with TUS in 8 MiB and 64 MiB PATCHes, side by side in
one run, to a running Pirus server and to @tus/server (the official Node server with its
@tus/file-store, started beside it on loopback, storing on the same disk).

Clients: ``curl`` (the same invocation for both servers: one ``curl -X PATCH`` process per chunk,
the chunk cut by ``dd``, as a shell script would do it), raw PATCHes from Python to Pirus (one
keep-alive connection, no checksum) and the kernel uploader (tuspy path) to Pirus. Baseline: the
disk's own write speed (``dd conv=fsync`` of the same file into the same folder), measured in
every round. Each figure is the median of ``--rounds`` rounds. Also the Pirus server's RSS when
idle and its peak during the uploads (sampled every 20 ms).

@tus/server is installed from npm into ``~/.cache/pirus-bench/tus-node`` the first time (that
baseline is skipped, with the reason printed, when node or npm is missing or the install fails).
Note that @tus/file-store never fsyncs: it answers once the bytes are in the page cache, while
Pirus fsyncs every PATCH before it reports the new offset.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks import tus_node
from benchmarks.common import MiB, RssSampler, Server, median, report
from pirus_jupyter.kernel.uploader import upload

TUS = {"Tus-Resumable": "1.0.0"}


def make_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)


def dd_seconds(source: Path, folder: Path) -> float:
    """Seconds for dd to write the file into ``folder`` with a final fsync."""
    target = folder / "dd-copy"
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={source}", f"of={target}", "bs=8M", "conv=fsync"],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    target.unlink()
    return seconds


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


def create_upload(server: Server, size: int, name: str) -> str:
    """POST /uploads (TUS creation); the upload's path."""
    meta = f"filename {base64.b64encode(name.encode()).decode()}"
    response = server.session.post(server.api("uploads"), headers={
        **TUS, "Upload-Length": str(size), "Upload-Metadata": meta})
    assert response.status_code == 201, response.text
    return urlsplit(response.headers["Location"]).path


def raw_upload(server: Server, path: Path, chunk: int) -> float:
    """Seconds to upload ``path`` with plain PATCH requests of ``chunk`` bytes."""
    size = path.stat().st_size
    parts = urlsplit(server.url)
    auth = {"Authorization": f"token {server.token}", **TUS}
    t0 = time.perf_counter()
    location = create_upload(server, size, "raw.bin")
    # 1 MiB socket writes (http.client's default, 8 KiB, costs the client more than the server).
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600, blocksize=MiB)
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


def curl_patches(url: str, token: str, path: Path, chunk: int) -> None:
    """Upload ``path`` to the TUS upload ``url`` with one ``curl -X PATCH`` per chunk, as a
    shell script would: dd cuts the chunk, curl streams it (no chunked encoding, no Expect).
    The same invocation for every server (the token is ignored by @tus/server)."""
    size = path.stat().st_size
    offset = 0
    while offset < size:
        length = min(chunk, size - offset)
        dd = subprocess.Popen(["dd", f"if={path}", "bs=1M", f"skip={offset // MiB}",
                               f"count={-(-length // MiB)}", "status=none"],
                              stdout=subprocess.PIPE)
        done = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %header{upload-offset}",
             "-X", "PATCH", "-T", "-", "-H", f"Authorization: token {token}",
             "-H", "Tus-Resumable: 1.0.0", "-H", f"Upload-Offset: {offset}",
             "-H", "Content-Type: application/offset+octet-stream",
             "-H", f"Content-Length: {length}", "-H", "Transfer-Encoding:", "-H", "Expect:",
             url], stdin=dd.stdout, capture_output=True, text=True, check=True)
        assert dd.stdout
        dd.stdout.close()
        dd.wait()
        status, new_offset = done.stdout.split()
        assert status == "204", done.stdout + done.stderr
        offset = int(new_offset)


def curl_upload(server: Server, path: Path, chunk: int) -> float:
    """Seconds to upload ``path`` to Pirus with :func:`curl_patches`."""
    t0 = time.perf_counter()
    url = server.url.rstrip("/") + create_upload(server, path.stat().st_size, "curl.bin")
    curl_patches(url, server.token, path, chunk)
    return time.perf_counter() - t0


def curl_node_upload(node: tus_node.TusNode, path: Path, chunk: int) -> float:
    """Seconds to upload ``path`` to @tus/server with :func:`curl_patches`."""
    t0 = time.perf_counter()
    curl_patches(node.create(path.stat().st_size), "none", path, chunk)
    return time.perf_counter() - t0


def tuspy_upload(server: Server, path: Path, chunk: int) -> float:
    t0 = time.perf_counter()
    upload(server.url, server.token, path, chunk_size=chunk,
           url_storage_path=server.tmp / f"urls-{time.monotonic_ns()}.json")
    return time.perf_counter() - t0


def clean_uploads(server: Server) -> None:
    for record in server.session.get(server.api("uploads")).json()["items"]:
        server.session.delete(server.api(f"uploads/{record['id']}"), headers=TUS)
    for f in (server.root / "pirus-uploads").glob("*"):
        f.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3, help="median of N rounds (default 3)")
    args = parser.parse_args()
    has_curl = shutil.which("curl") is not None
    node_folder, why = tus_node.install() if has_curl else (None, "curl is not installed")
    if not has_curl:
        print("# curl not installed: no curl figures")
    if node_folder is None:
        print(f"# no @tus/server baseline: {why}")
    with Server() as server, contextlib.ExitStack() as stack:
        source = server.tmp / "source.bin"
        make_file(source, args.size_mib * MiB)
        node = stack.enter_context(tus_node.TusNode(node_folder, server.tmp / "tus-node")) \
            if node_folder else None
        clients: dict[str, Callable[[Path, int], float]] = {
            "raw_patch": partial(raw_upload, server)}
        if has_curl:
            clients["curl"] = partial(curl_upload, server)
        if node is not None:
            clients["tus_node_curl"] = partial(curl_node_upload, node)
        clients["tuspy"] = partial(tuspy_upload, server)
        parts_dir = Path(server.settings["data_dir"]) / "uploads"
        parts_dir.mkdir(parents=True, exist_ok=True)
        server.session.get(server.api("uploads"))  # the upload handlers' first use
        rss_idle = server.rss_bytes()
        sampler = RssSampler(server)
        sampler.start()
        for chunk_mib in (8, 64):
            seconds: dict[str, list[float]] = {"disk": [], **{c: [] for c in clients}}
            for _ in range(args.rounds):
                # dd in every round, next to the uploads: the disk's speed drifts.
                seconds["disk"].append(dd_seconds(source, parts_dir))
                for client, send in clients.items():
                    seconds[client].append(send(source, chunk_mib * MiB))
                    clean_uploads(server)
                    if node is not None:
                        node.clean()
            speed = {k: args.size_mib / median(v) for k, v in seconds.items()}
            label = f"upload[{chunk_mib}MiB]"
            report(f"{label}.disk_dd_fsync_mib_s", f"{speed['disk']:.0f}")
            for client in clients:
                report(f"{label}.{client}_mib_s", f"{speed[client]:.0f}")
                report(f"{label}.{client}_ratio_to_disk", f"{speed[client] / speed['disk']:.2f}")
            if "tus_node_curl" in speed:
                report(f"{label}.curl_ratio_to_tus_node",
                       f"{speed['curl'] / speed['tus_node_curl']:.2f}")
            report(f"{label}.tuspy_ratio_to_raw_patch",
                   f"{speed['tuspy'] / speed['raw_patch']:.2f}")
        peak = sampler.stop()
        report("upload.server_peak_rss_growth_mib", f"{(peak - rss_idle) / MiB:.0f}")
        report("memory.idle_mib", f"{rss_idle / MiB:.0f}")
        report("memory.upload_peak_mib", f"{peak / MiB:.0f}")


if __name__ == "__main__":
    main()
