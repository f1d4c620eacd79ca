"""Nobody let in: authentication on every route of a real server (REST, websocket, TUS,
downloads), Jupyter's XSRF rule for cookie sessions, the per-run notify token, downloads that
never leave the runs and uploads folders, and a pipeline that attacks from inside its
container (writes to its read-only inputs, escapes its folders, reads host paths, plants
symlinks, calls the server through the notify proxy) on an unprivileged LXD instance.

tests/test_api.py checks every route of the handler table against the in-process server with
no and a wrong token; here the same routes meet a real server subprocess and more ways to be
wrong (a token in the query, a forged cookie, an empty header), a real websocket handshake,
and a cookie session.
"""

from __future__ import annotations

import http.client
import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pylxd
import pytest
import requests
import websocket
from conftest import FINAL, requires_lxd
from pkgbuild import build_pipeline, fastq
from server import ServerProcess
from test_api import enumerate_routes

pytestmark = [pytest.mark.lxd, requires_lxd]

# From inside its container: every forbidden thing it tries is recorded "<what> denied" or
# "<what> ALLOWED"; every HTTP call "<what> <status>". Then it plants symlinks and a FIFO for
# the server to trip over, reports "probed", and waits for a "release" file the test drops
# into its (host-side) inputs folder. (A log replaced by a symlink ends its run in ERROR:
# tests/test_untrusted_run_files.py.)
PROBE_SCRIPT = r"""#!/bin/sh
out="$PIRUS_OUTPUTS_DIR"
res="$out/probe.txt"
conf() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$PIRUS_CONFIG_FILE"; }
secret=$(conf secret)
private=$(conf private)
try() {
  what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "$what ALLOWED"; else echo "$what denied"; fi >> "$res"
}
try write-input sh -c "echo x >> '$PIRUS_INPUTS_DIR/a.fastq'"
try create-input sh -c "echo x > '$PIRUS_INPUTS_DIR/new.txt'"
try remove-input rm "$PIRUS_INPUTS_DIR/a.fastq"
try rename-input mv "$PIRUS_INPUTS_DIR/a.fastq" "$PIRUS_INPUTS_DIR/moved.fastq"
try chmod-input chmod 666 "$PIRUS_INPUTS_DIR/a.fastq"
try write-config sh -c "echo '{}' > '$PIRUS_CONFIG_FILE'"
try write-databases sh -c "echo x > '$PIRUS_DATABASES_DIR/new.txt'"
try remount-inputs mount -o remount,rw "$PIRUS_INPUTS_DIR"
try mount-proc-sys sh -c "echo 1 > /proc/sys/kernel/sysrq"
try read-host-secret cat "$secret"
try read-private-file cat "$private"
try list-host-folder ls "$(dirname "$secret")"
try hardlink-out ln /bin/busybox "$out/hard"
# the parent of a mount is the container's own filesystem: nothing must land on the host
echo x > "$out/../escaped.txt"
echo x > "$PIRUS_INPUTS_DIR/../escaped.txt"
cat /proc/self/uid_map > "$out/uid_map.txt"
ln -s "$secret" "$out/leak"
ln -s "$private" "$out/private-leak"
ln -s / "$out/rootlink"
mkdir -p "$out/sub" && echo ok > "$out/sub/ok.txt"
mkfifo "$out/fifo"
url="$PIRUS_NOTIFY_URL"
base=${url%%/pirus/*}
api=${url%%/runs/*}
token=${url##*token=}
http() {  # what wget-arguments...: "ok", or the HTTP status of the refusal
  what=$1; shift
  if said=$(wget -O /dev/null "$@" 2>&1); then
    code=ok
  else
    code=$(echo "$said" | sed -n 's/.*server returned error: HTTP\/1\.[01] \([0-9]*\).*/\1/p')
  fi
  echo "$what ${code:-none}" >> "$res"
}
json="--header=Content-Type: application/json"
http notify-own "$json" --post-data '{"progress": {"label": "probing"}}' "$url"
http notify-next-run "$json" --post-data '{}' \
  "$api/runs/$((PIRUS_RUN_ID + 1))/notify?token=$token"
http notify-previous-run "$json" --post-data '{}' \
  "$api/runs/$((PIRUS_RUN_ID - 1))/notify?token=$token"
http notify-no-token "$json" --post-data '{}' "$api/runs/$PIRUS_RUN_ID/notify"
http api-no-token "$api/runs"
http api-run-token-query "$api/runs?token=$token"
http api-run-token-header "--header=Authorization: token $token" "$api/runs"
http api-cancel-other "$json" --post-data '{}' "$api/runs/$((PIRUS_RUN_ID + 1))/cancel"
http jupyter-contents "$base/api/contents?token=$token"
http jupyter-new-kernel "$json" --post-data '{}' "$base/api/kernels"
printf '{"progress": {"label": "probed"}}\n' >> "$PIRUS_PROGRESS_FILE"
i=0
while [ ! -e "$PIRUS_INPUTS_DIR/release" ] && [ $i -lt 2400 ]; do i=$((i+1)); sleep 0.25; done
echo "released after $i" >&1
"""
PROBE_FORM = {"type": "object", "properties": {"secret": {"type": "string"},
                                               "private": {"type": "string"}}}
DENIED = ["write-input", "create-input", "remove-input", "rename-input", "chmod-input",
          "write-config", "write-databases", "remount-inputs", "mount-proc-sys",
          "read-host-secret", "read-private-file", "list-host-folder", "hardlink-out"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    """A real server; a secret on the host outside the Jupyter root and a private file inside
    the root but outside the runs and uploads folders."""
    base = tmp_path_factory.mktemp("security")
    root = base / "root"
    (root / "data").mkdir(parents=True)
    (root / "private").mkdir()
    (root / "data" / "a.fastq").write_bytes(fastq(3))
    secret = base / "host" / "secret.txt"
    secret.parent.mkdir()
    marker = f"TOP-SECRET-{secrets.token_hex(8)}"
    secret.write_text(marker + "\n")
    private = root / "private" / "notes.txt"
    private_marker = f"PRIVATE-{secrets.token_hex(8)}"
    private.write_text(private_marker + "\n")
    build_pipeline(root / "probe.tar.gz", name="probe", script=PROBE_SCRIPT, form=PROBE_FORM)
    server = ServerProcess(root, base / "data", max_parallel_runs=3, poll_interval=0.1).start()
    try:
        yield {"server": server, "root": root, "secret": secret, "marker": marker,
               "private": private, "private_marker": private_marker, "base": base}
    finally:
        server.cancel_runs_and_stop()


def db_row(server: ServerProcess, table: str, row_id: int) -> dict[str, Any]:
    """A row as the server stored it (internal fields included), read-only."""
    with sqlite3.connect(f"file:{server.data_dir / 'pirus.db'}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute(f"SELECT * FROM {table} WHERE id = ?", [row_id]).fetchone())


def raw_get(server: ServerProcess, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of '..' or '%2F')."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": f"token {server.token}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- authentication ------------------------------------------------------------------------------
WRONG = {
    "no credentials": ({}, {}),
    "wrong token": ({"Authorization": "token not-the-token"}, {}),
    "wrong token in the query": ({}, {"token": "not-the-token"}),
    "empty Authorization": ({"Authorization": "token"}, {}),
    "forged cookie": ({"Cookie": "username-127-0-0-1-1=2|1:0|10:1|x|y|0000"}, {}),
}


def test_every_route_refuses_wrong_credentials(world):
    server = world["server"]
    routes = [*enumerate_routes(), ("OPTIONS", "/pirus/api/v1/uploads", None),
              ("OPTIONS", "/pirus/api/v1/uploads/abc123", None)]
    assert len(routes) > 30
    for label, (headers, params) in WRONG.items():
        for method, url, _ in routes:
            extra = {"Tus-Resumable": "1.0.0"} if "/uploads" in url else {}
            body = b"{}" if method in ("POST", "PATCH", "PUT") else None
            if method in ("POST", "PATCH") and "/uploads" in url:  # bytes a TUS server would store
                extra.update({"Content-Type": "application/offset+octet-stream",
                              "Upload-Length": "3", "Upload-Offset": "0"})
                body = b"abc"
            reply = requests.request(method, server.url.rstrip("/") + url, data=body,
                                     headers={**headers, **extra}, params=params, timeout=30)
            assert reply.status_code == 403, (label, method, url, reply.status_code,
                                              reply.text[:200])
    # nothing was created by any of them
    session = server.session
    for collection in ("pipelines", "runs", "files", "uploads"):
        assert session.get(server.api(collection), timeout=30).json()["total"] == 0, collection
    assert not list((world["root"] / "pirus-uploads").glob("*"))


def test_websocket_handshake_needs_the_token(world):
    server = world["server"]
    url = f"ws://127.0.0.1:{server.port}/pirus/api/v1/events"
    for headers, query in [([], ""), (["Authorization: token wrong"], ""), ([], "?token=wrong"),
                           (["Cookie: username-127-0-0-1-1=forged"], "")]:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url + query, header=headers, timeout=10)
        assert refused.value.status_code == 403, (headers, query)
    # the right token opens it (so the refusals above are about the credentials)
    connection = websocket.create_connection(url, timeout=10,
                                             header=[f"Authorization: token {server.token}"])
    connection.send("ping")
    assert json.loads(connection.recv()) == {"type": "pong", "data": {}}
    connection.close()


# -- XSRF -----------------------------------------------------------------------------------------
def test_cookie_sessions_need_the_xsrf_token_like_jupyter(world):
    """Logged in through the token login flow (a browser's session cookie), a state-changing
    request without ``_xsrf``/``X-XSRFToken`` is refused on every Pirus route exactly as
    Jupyter refuses it on its own API; with the header it goes through."""
    server = world["server"]
    browser = requests.Session()
    browser.get(f"{server.url}?token={server.token}", timeout=30).raise_for_status()
    cookies = browser.cookies.get_dict()
    assert any(name.startswith("username-") for name in cookies) and "_xsrf" in cookies
    assert browser.get(server.api("runs"), timeout=30).status_code == 200  # the cookie works
    jupyter = browser.post(f"{server.url}api/contents", json={"type": "file"}, timeout=30)
    assert jupyter.status_code == 403
    expected = jupyter.json()["message"]
    changing = [(m, u) for m, u, _ in enumerate_routes() if m in ("POST", "PUT", "PATCH",
                                                                  "DELETE")]
    assert len(changing) >= 10
    for method, url in changing:
        extra = {"Tus-Resumable": "1.0.0"} if "/uploads" in url else {}
        if method == "POST" and url.endswith("/uploads"):
            extra["Upload-Length"] = "3"
        reply = browser.request(method, server.url.rstrip("/") + url, headers=extra,
                                data=b"{}" if method != "DELETE" and "/uploads" not in url
                                else None, timeout=30)
        assert reply.status_code == 403, (method, url, reply.text[:200])
        if url.endswith("/notify"):  # no Jupyter session involved: the run token decides
            assert "notify token" in reply.json()["error"]["message"]
            continue
        assert reply.json()["error"]["message"] == expected, (method, url)
        passed = browser.request(method, server.url.rstrip("/") + url, timeout=30,
                                 data=b"{}" if method != "DELETE" and "/uploads" not in url
                                 else None,
                                 headers={**extra, "X-XSRFToken": cookies["_xsrf"]})
        assert passed.status_code != 403, (method, url, passed.text[:200])
    # the one upload created with the XSRF header goes again
    for upload in server.session.get(server.api("uploads"), timeout=30).json()["items"]:
        server.session.delete(server.api(f"uploads/{upload['id']}"), timeout=30,
                              headers={"Tus-Resumable": "1.0.0"})


# -- downloads ------------------------------------------------------------------------------------
TRAVERSALS = [
    "/pirus/api/v1/files/..%2f..%2fprivate%2fnotes.txt/content",
    "/pirus/api/v1/files/%2e%2e/content",
    "/pirus/api/v1/files/1/content/../../../../private/notes.txt",
    "/pirus/api/v1/files/1%2f..%2f..%2f..%2fprivate%2fnotes.txt/content",
    "/pirus/api/v1/pipelines/1/documents/..%2F..%2F..%2Fetc%2Fpasswd",
    "/pirus/api/v1/pipelines/1/documents/%2e%2e",
    "/pirus/api/v1/pipelines/1/documents/..",
    "/pirus/api/v1/runs/1/logs/..%2f..%2f..%2f..%2fprivate%2fnotes.txt",
    "/pirus/api/v1/runs/1/logs/%2e%2e%2fout",
    "/pirus/api/v1/uploads/..%2f..%2fprivate%2fnotes.txt",
    "/pirus/api/v1/pipelines/..%2f..%2fetc/package",
]


def test_download_urls_never_leave_their_folders(world, probe_runs):
    server = world["server"]
    for path in TRAVERSALS:
        status, body = raw_get(server, path)
        assert status != 200 or b"PRIVATE-" not in body, (path, status)
        assert world["private_marker"].encode() not in body, path
        assert b"root:x:0:0" not in body, path
        assert status in (301, 400, 403, 404), (path, status, body[:200])


# -- the probe pipeline, from inside its container ------------------------------------------------
@pytest.fixture(scope="module")
def probe_runs(world) -> dict[str, Any]:
    """Two probe runs, both past their attacks and holding (RUNNING)."""
    server, session = world["server"], world["server"].session
    reply = session.post(server.api("pipelines"), json={"path": "probe.tar.gz"}, timeout=60)
    assert reply.status_code == 202, reply.text
    pipeline = server.wait_for(f"pipelines/{reply.json()['id']}",
                               lambda b: b["status"] != "INSTALLING", 300)
    assert pipeline["status"] == "READY", pipeline
    config = {"secret": str(world["secret"]), "private": str(world["private"])}
    runs = []
    for _ in range(2):
        reply = session.post(server.api("runs"), timeout=60, json={
            "pipeline_id": pipeline["id"], "config": config, "inputs": ["data/a.fastq"]})
        assert reply.status_code == 201, reply.text
        runs.append(reply.json())
    held = [server.wait_for(f"runs/{run['id']}", lambda b: b["status"] in FINAL or
                            b["progress"]["label"] == "probed", 300) for run in runs]
    for run in held:
        assert run["status"] == "RUNNING", run
    return {"pipeline": pipeline, "a": held[0], "b": held[1]}


def probe_results(world: dict[str, Any], run: dict[str, Any]) -> dict[str, str]:
    row = db_row(world["server"], "runs", run["id"])
    text = (Path(row["root_path"]) / "outputs" / "probe.txt").read_text()
    return dict(line.rsplit(" ", 1) for line in text.splitlines())


def test_container_is_unprivileged_with_read_only_inputs(world, probe_runs):
    """The real LXD instance, read through pylxd while the probe runs."""
    server = world["server"]
    row = db_row(server, "runs", probe_runs["a"]["id"])
    instance = pylxd.Client().instances.get(row["lxd_container"])
    config = instance.expanded_config
    assert config.get("security.privileged", "false") == "false"
    assert config.get("security.nesting", "false") == "false"
    assert not [k for k in config if k.startswith(("raw.", "security.syscalls.intercept"))]
    devices = instance.expanded_devices
    disks = {name: d for name, d in devices.items() if d["type"] == "disk" and d["path"] != "/"}
    assert disks["pirus-inputs"]["readonly"] == "true"
    assert disks["pirus-databases"]["readonly"] == "true"
    run_folder = Path(row["root_path"]).resolve()
    for name, disk in disks.items():  # nothing of the host but the run folder and databases
        source = Path(disk["source"]).resolve()
        assert source.is_relative_to(run_folder) or name == "pirus-databases", (name, source)
    assert {d["type"] for d in devices.values()} <= {"disk", "proxy"}  # no network, no devices
    # inside, root is not the host's root
    uid_map = (run_folder / "outputs" / "uid_map.txt").read_text().split()
    assert uid_map[0] == "0" and uid_map[1] != "0", uid_map


def test_pipeline_cannot_write_inputs_escape_or_read_the_host(world, probe_runs):
    for run in (probe_runs["a"], probe_runs["b"]):
        results = probe_results(world, run)
        assert {what: results.get(what) for what in DENIED} == dict.fromkeys(DENIED, "denied")
        row = db_row(world["server"], "runs", run["id"])
        inputs = Path(row["root_path"]) / "inputs"
        assert sorted(p.name for p in inputs.iterdir()) == ["a.fastq", "config.json"]
        assert (inputs / "a.fastq").read_bytes() == fastq(3)
    # the source the input was linked from is untouched, nothing escaped anywhere on the host
    assert (world["root"] / "data" / "a.fastq").read_bytes() == fastq(3)
    assert not [p for p in world["base"].rglob("escaped.txt")]
    assert world["secret"].read_text() == world["marker"] + "\n"


def test_from_inside_the_notify_token_opens_only_its_own_notify(world, probe_runs):
    """The notify proxy exposes the server's port in the container: the run's token works for
    its own notify URL and for nothing else, and no Jupyter API answers without the token."""
    for run in (probe_runs["a"], probe_runs["b"]):
        results = probe_results(world, run)
        assert results["notify-own"] == "ok"
        for what in ("notify-next-run", "notify-previous-run", "notify-no-token",
                     "api-no-token", "api-run-token-query", "api-run-token-header",
                     "api-cancel-other", "jupyter-contents", "jupyter-new-kernel"):
            assert results[what] == "403", (what, results[what])


def test_notify_token_only_for_its_own_run_and_only_while_it_runs(world, probe_runs):
    server = world["server"]
    a, b = probe_runs["a"], probe_runs["b"]
    token_a = db_row(server, "runs", a["id"])["notify_token"]
    token_b = db_row(server, "runs", b["id"])["notify_token"]
    assert token_a != token_b

    def notify(run_id: int, token: str | None, **kwargs: Any) -> int:
        return requests.post(server.api(f"runs/{run_id}/notify"), timeout=30,
                             params={"token": token} if token is not None else None,
                             json={"progress": {"label": "from the test"}}, **kwargs).status_code

    assert notify(a["id"], token_a) == 200
    assert notify(b["id"], token_b) == 200
    assert notify(a["id"], token_b) == 403
    assert notify(b["id"], token_a) == 403
    assert notify(a["id"], None) == 403
    assert notify(a["id"], token_a.upper()) == 403
    assert notify(a["id"], token_a[:-1]) == 403
    # the Jupyter token is no run token, and a run token is no Jupyter token
    assert notify(a["id"], server.token) == 403
    assert notify(a["id"], None, headers={"Authorization": f"token {server.token}"}) == 403
    for token in (token_a, token_b):
        assert requests.get(server.api("runs"), params={"token": token},
                            timeout=30).status_code == 403
    # when A ends its token stops working; B's still does
    cancel = server.session.post(server.api(f"runs/{a['id']}/cancel"), timeout=60)
    assert cancel.status_code == 200 and cancel.json()["status"] == "CANCELED"
    assert notify(a["id"], token_a) == 403
    assert notify(b["id"], token_b) == 200
    row = db_row(server, "runs", b["id"])
    (Path(row["root_path"]) / "inputs" / "release").write_text("")
    done = server.wait_for(f"runs/{b['id']}", lambda r: r["status"] in FINAL, 120)
    assert done["status"] == "DONE", done
    assert notify(b["id"], token_b) == 403


def test_symlinks_planted_by_a_pipeline_are_never_followed(world, probe_runs):
    """Run B has ended DONE (previous test): what it planted in outputs is not an output, the
    log it replaced by a symlink reads empty, and a download whose file is swapped for a
    symlink afterwards (into the host or the Jupyter root) is refused."""
    server, session = world["server"], world["server"].session
    b = session.get(server.api(f"runs/{probe_runs['b']['id']}"), timeout=30).json()
    assert b["status"] == "DONE", b
    names = {o["name"] for o in b["outputs"]}
    assert names == {"probe.txt", "uid_map.txt", "sub/ok.txt"}, names
    run_folder = Path(db_row(server, "runs", b["id"])["root_path"])
    outputs = run_folder / "outputs"
    assert not [p for p in outputs.rglob("*") if p.is_symlink()]
    for which in ("err", "out"):
        for params in (None, {"tail": "5"}):
            log = session.get(server.api(f"runs/{b['id']}/logs/{which}"), params=params,
                              timeout=30)
            assert log.status_code == 200 and world["marker"] not in log.text, (which, params)
    contents = {}
    for output in b["outputs"]:
        reply = session.get(server.api(f"files/{output['file_id']}/content"), timeout=30)
        assert reply.status_code == 200
        contents[output["name"]] = reply.content
    assert contents["sub/ok.txt"] == b"ok\n"
    by_name = {o["name"]: o["file_id"] for o in b["outputs"]}
    # an output file swapped for a symlink (to the host, to the Jupyter root): not served
    for target in (world["secret"], world["private"]):
        (outputs / "probe.txt").unlink()
        (outputs / "probe.txt").symlink_to(target)
        reply = session.get(server.api(f"files/{by_name['probe.txt']}/content"), timeout=30)
        assert reply.status_code in (403, 404), reply.status_code
        assert b"SECRET" not in reply.content and b"PRIVATE" not in reply.content
    # a folder on the way swapped for a symlink to a folder holding a file of the same name
    (outputs / "sub" / "ok.txt").unlink()
    (outputs / "sub").rmdir()
    decoy = world["root"] / "decoy"  # inside the Jupyter root, outside the runs folder
    decoy.mkdir()
    (decoy / "ok.txt").write_text(world["marker"])
    (outputs / "sub").symlink_to(decoy)
    reply = session.get(server.api(f"files/{by_name['sub/ok.txt']}/content"), timeout=30)
    assert reply.status_code in (403, 404) and world["marker"].encode() not in reply.content
    # deleting that record removes nothing through the symlink
    assert session.delete(server.api(f"files/{by_name['sub/ok.txt']}"),
                          timeout=30).status_code == 204
    assert (decoy / "ok.txt").read_text() == world["marker"]


def test_logs_replaced_by_symlinks_leak_nothing(world, probe_runs):
    """Run B has ended DONE: its err.log replaced by a symlink to the host secret afterwards
    reads empty through the API (whole or tail), never the secret. (While a run is active,
    the pipeline doing it ends the run in ERROR: tests/test_untrusted_run_files.py.)"""
    server, session = world["server"], world["server"].session
    b = probe_runs["b"]
    err = Path(db_row(server, "runs", b["id"])["root_path"]) / "logs" / "err.log"
    err.unlink()
    err.symlink_to(world["secret"])
    for params in (None, {"tail": "10"}):
        log = session.get(server.api(f"runs/{b['id']}/logs/err"), params=params, timeout=30)
        assert log.status_code == 200 and world["marker"] not in log.text


def test_no_traceback_in_the_server_log(world, probe_runs):
    """Last: everything above went through without an unhandled exception."""
    log = world["server"].log_path.read_text(errors="replace")
    assert "Traceback (most recent call last)" not in log, log[-3000:]
