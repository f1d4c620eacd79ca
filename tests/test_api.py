"""The REST API's contract without running pipelines: authentication on every route, error
bodies, package validation, input and config validation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import requires_lxd
from pkgbuild import BAD_PACKAGES, bad_package, build_pipeline, fastq
from tornado.web import RequestHandler

from pirus_jupyter.handlers import build_handlers
from pirus_jupyter.models import PIPELINE_PUBLIC, RUN_PUBLIC

SAMPLE_ARGS = {"pipeline_id": "1", "run_id": "1", "file_id": "1", "action": "pause",
               "which": "out", "name": "help.html", "upload_id": "abc123", "task_id": "1",
               "other_id": "2"}
# Jupyter's APIHandler answers CORS pre-flight OPTIONS without authentication, by design.
UNAUTHENTICATED_BY_DESIGN = {"OPTIONS"}


def enumerate_routes() -> list[tuple[str, str, type]]:
    """Every (method, concrete url, handler) the extension serves, from the handler table."""
    routes = []
    for pattern, handler, *_ in build_handlers():
        url = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: SAMPLE_ARGS[m.group(1)], pattern)
        url = url.replace("/?", "").rstrip("$")
        for method in handler.SUPPORTED_METHODS:
            impl = getattr(handler, method.lower(), None)
            if impl is None or impl is getattr(RequestHandler, method.lower(), None):
                continue
            if method in UNAUTHENTICATED_BY_DESIGN:
                continue
            routes.append((method, url, handler))
    return routes


def test_route_table_is_not_empty() -> None:
    routes = enumerate_routes()
    methods = {(m, u) for m, u, _ in routes}
    assert ("GET", "/pirus/api/v1/runs") in methods
    assert ("POST", "/pirus/api/v1/runs/1/pause") in methods
    assert ("GET", "/pirus/api/v1/events") in methods
    assert len(routes) >= 20


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_every_route_refuses_unauthenticated_requests(http_server_client, jp_base_url,
                                                            token, pirus):
    base = jp_base_url.rstrip("/")
    for method, url, _handler in enumerate_routes():
        headers = {"Authorization": f"token {token}"} if token else {}
        body = b"{}" if method in ("POST", "PUT", "PATCH") else None
        response = await http_server_client.fetch(
            base + url, method=method, headers=headers, body=body,
            allow_nonstandard_methods=True, raise_error=False)
        assert response.code == 403, (method, url, response.code, response.body[:200])
    # nothing was created by any of those requests
    assert await pirus.store.count("pipelines") == 0
    assert await pirus.store.count("runs") == 0


async def test_browser_style_post_without_xsrf_is_refused(jp_serverapp, http_server_client,
                                                          jp_base_url):
    """A cookie-authenticated request without the XSRF token is refused like Jupyter does."""
    client = http_server_client
    base = jp_base_url
    token = jp_serverapp.identity_provider.token
    login = await client.fetch(f"{base}api/status?token={token}", raise_error=False,
                               follow_redirects=False)
    cookies = "; ".join(c.split(";")[0] for c in login.headers.get_list("Set-Cookie"))
    assert "username" in cookies or cookies, login.headers
    response = await client.fetch(
        f"{base}pirus/api/v1/runs", method="POST", body=json.dumps({"pipeline_id": 1}),
        headers={"Cookie": cookies}, raise_error=False)
    assert response.code == 403


async def test_info(api):
    code, body = await api("GET", "")
    assert code == 200
    assert body["api_version"] == "1"
    assert set(body["limits"]) >= {"max_parallel_runs", "default_limits"}
    assert body["limits"]["max_parallel_runs"] == 2
    assert "connected" in body["lxd"]


async def test_unknown_ids_are_404_with_json_error(api):
    for path in (("pipelines", 999), ("runs", 999), ("files", 999), ("runs", 999, "logs", "out"),
                 ("pipelines", 999, "form")):
        code, body = await api("GET", *path)
        assert code == 404, path
        assert body["error"]["code"] == "not_found" and "999" in body["error"]["message"]
    code, body = await api("POST", "runs", 999, "cancel")
    assert code == 404
    code, body = await api("DELETE", "runs", 999)
    assert code == 404


async def test_bad_request_bodies(api):
    code, body = await api("POST", "runs", body="{not json")
    assert code == 400 and body["error"]["code"] == "invalid_request"
    code, body = await api("POST", "runs", body="[1, 2]")
    assert code == 400
    code, body = await api("POST", "runs", body={"pipeline_id": "one"})
    assert code == 400 and "pipeline_id" in body["error"]["message"]
    code, body = await api("POST", "runs", body={"pipeline_id": 1, "bogus": 1})
    assert code == 400 and "bogus" in body["error"]["message"]
    code, body = await api("POST", "pipelines", body={})
    assert code == 400
    code, body = await api("GET", "runs", params={"status": "SLEEPING"})
    assert code == 400
    code, body = await api("GET", "runs", params={"limit": "0"})
    assert code == 400
    code, body = await api("GET", "runs", params={"limit": "abc"})
    assert code == 400


async def test_package_path_outside_root_is_refused(api, jp_root_dir, tmp_path, pirus):
    outside = tmp_path / "outside.tar.gz"
    outside.write_bytes(b"x")
    (Path(jp_root_dir) / "link.tar.gz").symlink_to(outside)
    for path in ("../outside.tar.gz", "/../outside.tar.gz", "link.tar.gz", "a/../../x"):
        code, body = await api("POST", "pipelines", body={"path": path})
        assert code == 403, (path, body)
        assert body["error"]["code"] == "forbidden"
    code, body = await api("POST", "pipelines", body={"path": "missing.tar.gz"})
    assert code == 404
    assert await pirus.store.count("pipelines") == 0


@pytest.mark.parametrize("case", sorted(BAD_PACKAGES))
async def test_bad_packages_end_in_error_and_write_nothing(api, install, case, tmp_path,
                                                           jp_root_dir, pirus):
    package = bad_package(tmp_path / f"{case}.tar.gz", case)
    def listing() -> set[str]:  # the (empty) runs folder is made at start-up: ignore it
        return {p.as_posix() for p in Path(jp_root_dir).rglob("*") if p.name != "pirus-runs"}

    root_before = listing()
    pipeline = await install(package, expect="ERROR")
    assert pipeline["error"], pipeline
    expected_words = {
        "missing_manifest": "pirus", "missing_metadata_file": "metadata.yaml",
        "missing_run": "run", "bad_yaml": "YAML", "path_traversal": "traversal",
        "absolute_path": "absolute", "symlink_escape": "escapes", "hardlink_escape": "traversal",
        "device_node": "device", "form_missing": "form", "not_a_tar": "tar",
    }
    assert expected_words[case].lower() in pipeline["error"].lower(), pipeline["error"]
    # nothing written outside: the root only gained the package we copied in
    assert listing() - root_before == {str(Path(jp_root_dir) / package.name)}
    assert not (tmp_path.parent / "escaped.txt").exists()
    # no image left behind in LXD
    row = await pirus.store.get("pipelines", pipeline["id"])
    if row.get("lxd_alias"):
        import subprocess

        out = subprocess.run(["lxc", "image", "list", "--format", "csv", "-c", "l"],
                             capture_output=True, text=True).stdout
        assert row["lxd_alias"] not in out
    code, body = await api("DELETE", "pipelines", pipeline["id"])
    assert code == 204


async def test_failed_installs_are_cleared_at_once(api, install, tmp_path, pirus):
    failed = [await install(bad_package(tmp_path / f"{case}.tar.gz", case), expect="ERROR")
              for case in ("not_a_tar", "missing_manifest")]
    roots = [(await pirus.store.get("pipelines", p["id"]))["root_path"] for p in failed]
    # only ERROR is cleared at once: no status, or another one, is refused with nothing removed
    for params in (None, {"status": "READY"}, {"status": "error"}):
        code, body = await api("DELETE", "pipelines", params=params)
        assert code == 400 and body["error"]["code"] == "invalid_request", (params, body)
    assert await pirus.store.count("pipelines") == 2
    code, body = await api("DELETE", "pipelines", params={"status": "ERROR"})
    assert code == 200 and sorted(body["removed"]) == sorted(p["id"] for p in failed)
    assert await pirus.store.count("pipelines") == 0
    assert not any(Path(root).exists() for root in roots)
    code, body = await api("DELETE", "pipelines", params={"status": "ERROR"})
    assert code == 200 and body == {"removed": []}


async def test_oversized_package_is_refused(api, install, tmp_path, pirus):
    pirus.pipelines.max_package_size = 1000
    package = build_pipeline(tmp_path / "big.tar.gz", name="big")
    code, body = await api("POST", "pipelines", body={"path": "nowhere"})
    shutil.copyfile(package, Path(pirus.root_dir) / "big.tar.gz")
    code, body = await api("POST", "pipelines", body={"path": "big.tar.gz"})
    assert code == 400 and body["error"]["code"] == "package_too_large"
    assert await pirus.store.count("pipelines") == 0


@requires_lxd
@pytest.mark.lxd
async def test_install_good_package_and_uninstall(api, install, count_package, pirus):
    pipeline = await install(count_package)
    assert pipeline["name"] == "count" and pipeline["version"] == "1.0"
    assert pipeline["developers"] == ["Pirus tests"]
    assert set(pipeline) == set(PIPELINE_PUBLIC)
    code, form = await api("GET", "pipelines", pipeline["id"], "form")
    assert code == 200 and form["properties"]["min_length"]["minimum"] == 0
    response = await api("GET", "pipelines", pipeline["id"], "package", raw=True)
    assert response.code == 200 and response.body == count_package.read_bytes()
    code, body = await api("GET", "pipelines", pipeline["id"], "icon")
    assert code == 404 and not pipeline["has_icon"]  # this package has no icon
    # the same package again answers with the installed pipeline (200), no new row
    shutil.copyfile(count_package, Path(pirus.root_dir) / "again.tar.gz")
    code, again = await api("POST", "pipelines", body={"path": "again.tar.gz"})
    assert code == 200 and again == pipeline
    assert [p["id"] for p in (await api("GET", "pipelines"))[1]["items"]] == [pipeline["id"]]
    assert not list(Path(pirus.pipelines.packages_dir).glob(".incoming-*"))
    row = await pirus.store.get("pipelines", pipeline["id"])
    code, _ = await api("DELETE", "pipelines", pipeline["id"])
    assert code == 204
    assert not Path(row["root_path"]).exists()
    import subprocess

    images = subprocess.run(["lxc", "image", "list", "--format", "csv", "-c", "l"],
                            capture_output=True, text=True).stdout
    assert row["lxd_alias"] not in images


@requires_lxd
@pytest.mark.lxd
async def test_run_creation_validation(api, install, count_package, jp_root_dir, tmp_path):
    pipeline = await install(count_package)
    root = Path(jp_root_dir)
    (root / "a.fastq").write_bytes(fastq(2))
    outside = tmp_path / "secret.fastq"
    outside.write_bytes(b"secret")
    (root / "sneaky.fastq").symlink_to(outside)
    cases = [
        ({"inputs": ["../secret.fastq"]}, 403),
        ({"inputs": ["sneaky.fastq"]}, 403),
        ({"inputs": ["/etc/passwd"]}, 404),
        ({"inputs": ["missing.fastq"]}, 404),
        ({"inputs": [12345]}, 404),
        ({"inputs": "a.fastq"}, 400),
        ({"inputs": [{"nope": 1}]}, 400),
        ({"config": {"min_length": -1}}, 400),
        ({"config": {"min_length": "long"}}, 400),
        ({"config": []}, 400),
    ]
    for extra, status in cases:
        code, body = await api("POST", "runs", body={"pipeline_id": pipeline["id"], **extra})
        assert code == status, (extra, body)
        assert set(body) == {"error"}
    code, body = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                "config": {"min_length": -1, "label": 3}})
    fields = {d["field"] for d in body["error"]["details"]}
    assert fields == {"min_length", "label"}
    code, body = await api("GET", "runs")
    assert body["total"] == 0  # nothing half-created
    code, body = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                "inputs": ["a.fastq", "a.fastq"]})
    assert code == 201
    assert [i["name"] for i in body["inputs"]] == ["a.fastq", "a-2.fastq"]
    assert set(body) == set(RUN_PUBLIC)
    for secret in ("notify_token", "lxd_container", "root_path", "timings"):
        assert secret not in json.dumps(body)
