"""One server per data dir (issue 19): a second Jupyter server of the same user on the same
``<data dir>/pirus`` would take the first one's queued runs and list its pipelines. It refuses
to load Pirus, naming the owner's pid and URL, and Jupyter itself keeps running; once the owner
has stopped, a server on that folder loads Pirus again."""

from __future__ import annotations

from conftest import FAKE_BACKEND
from server import ServerProcess


class JupyterOnly(ServerProcess):
    """Ready when Jupyter answers, whether or not Pirus loaded."""

    def api(self, path: str) -> str:
        return f"{self.url}api/status" if path == "" else super().api(path)


def test_a_second_server_on_one_data_dir_runs_without_pirus(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    data = tmp_path / "pirus"
    owner = ServerProcess(root, data, backend_class=FAKE_BACKEND).start()
    second = JupyterOnly(root, data, backend_class=FAKE_BACKEND)
    try:
        assert owner.session.get(owner.api("runs"), timeout=30).status_code == 200
        second.start()
        # Jupyter runs, Pirus is not there: its routes are Jupyter's 404
        assert second.session.get(f"{second.url}api/status", timeout=30).status_code == 200
        assert second.session.get(f"{second.url}pirus/api/v1/runs",
                                  timeout=30).status_code == 404
        log = second.log_path.read_text()
        assert f"belongs to another running server (pid {owner.proc.pid}," in log, log[-3000:]
        assert owner.url in log
        # the owner is untouched
        assert owner.session.get(owner.api("runs"), timeout=30).status_code == 200
    finally:
        second.stop()
        owner.stop()
    # the owner gone (its lock went with its process), a server on that folder owns it
    third = ServerProcess(root, data, backend_class=FAKE_BACKEND)
    try:
        third.start()
        assert third.session.get(third.api("runs"), timeout=30).status_code == 200
    finally:
        third.stop()
