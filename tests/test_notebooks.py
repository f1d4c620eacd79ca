"""The notebooks of ``notebooks/`` executed headlessly, top to bottom, in kernels started BY a real
Jupyter server running the extension, on real LXD.

How the kernel is started, and why
    A kernel is created through the server's own REST API (``POST /api/kernels`` with the
    notebook's folder as ``path``), exactly as JupyterLab does when a user opens the notebook.
    So the kernel is a child of the server process, inherits the environment the extension
    published at start-up (``PIRUS_SERVER_URL``/``PIRUS_SERVER_TOKEN``) and runs in the
    notebook's folder under the server's root: the notebooks' bare ``pirus.connect()`` is the
    real zero-config path, not a simulation with variables copied by the test.

    nbclient then drives that kernel through the connection file the server wrote to the
    runtime folder (``kernel-<id>.json``, ZeroMQ on the same machine), with a kernel manager
    that only *attaches* (it never starts or stops the kernel; the test deletes it through the
    REST API afterwards). This keeps nbclient's own cell execution, output capture and widget
    state handling, which re-implementing the kernel websocket protocol would not.

The executed quickstart is saved next to ``reproduce.ipynb``, which reads the run record back
from that saved file, as a user sharing notebooks would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import requires_lxd
from jupyter_client import AsyncKernelManager
from nbclient import NotebookClient
from server import ServerProcess

from pirus_jupyter.widgets.record import RECORD_MIME

pytestmark = [pytest.mark.lxd, requires_lxd]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


class AttachedKernelManager(AsyncKernelManager):
    """A kernel manager for a kernel someone else started: it reads the connection file,
    claims the kernel exists (so nbclient connects instead of launching one) and does not own
    it (so nothing here shuts it down)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(owns_kernel=False, **kwargs)

    @property
    def has_kernel(self) -> bool:
        return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("nbserver")
    root = base / "root"
    (root / "notebooks").mkdir(parents=True)
    for name in ("quickstart.ipynb", "reproduce.ipynb"):
        shutil.copyfile(NOTEBOOKS / name, root / "notebooks" / name)
    # The quickstart builds the demo pipeline from examples/ next to the notebooks folder.
    shutil.copytree(REPO / "examples" / "pipelines" / "fastq-count",
                    root / "examples" / "pipelines" / "fastq-count")
    with pytest.MonkeyPatch.context() as mp:
        # The server (and its kernels) write their runtime files here: the test finds the
        # kernels' connection files, and running-server discovery sees only this server.
        mp.setenv("JUPYTER_RUNTIME_DIR", str(base / "runtime"))
        mp.delenv("PIRUS_SERVER_URL", raising=False)
        mp.delenv("PIRUS_SERVER_TOKEN", raising=False)
        process = ServerProcess(root, base / "data", max_parallel_runs=2, poll_interval=0.1)
        process.start()
        try:
            yield process
        finally:
            _cleanup(process)
            process.stop()


def _cleanup(server: ServerProcess) -> None:
    with contextlib.suppress(Exception):
        for pipeline in server.session.get(server.api("pipelines"), timeout=10).json()["items"]:
            server.session.delete(server.api(f"pipelines/{pipeline['id']}"), timeout=60)


def execute_in_server_kernel(server: ServerProcess, nb: Any, folder: str,
                             timeout: int = 600) -> Any:
    """Run every cell of ``nb`` in a kernel the server starts in ``folder`` (root-relative)."""
    from jupyter_core.paths import jupyter_runtime_dir

    response = server.session.post(server.url + "api/kernels",
                                   json={"name": "python3", "path": folder}, timeout=60)
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    connection = Path(jupyter_runtime_dir()) / f"kernel-{kernel_id}.json"
    deadline = time.monotonic() + 30
    while not connection.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    km = AttachedKernelManager(connection_file=str(connection))
    km.load_connection_file()
    client = NotebookClient(nb, km=km, timeout=timeout, startup_timeout=60,
                            store_widget_state=True)
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        server.session.delete(server.url + f"api/kernels/{kernel_id}", timeout=30)
    return nb


def texts(nb: Any) -> str:
    """Every text the outputs show: streams, text/plain and text/html, joined."""
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                out.append(output["text"])
            for mime in ("text/plain", "text/html"):
                value = output.get("data", {}).get(mime)
                if value:
                    out.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(out)


def records_in(nb: Any) -> list[dict[str, Any]]:
    return [output["data"][RECORD_MIME] for cell in nb.cells for output in
            cell.get("outputs", []) if RECORD_MIME in output.get("data", {})]


def run_named(server: ServerProcess, name: str) -> dict[str, Any]:
    runs = server.session.get(server.api("runs"), timeout=10).json()["items"]
    matching = [r for r in runs if r["name"] == name]
    assert matching, [r["name"] for r in runs]
    return matching[0]


def test_quickstart_then_reproduce(server: ServerProcess) -> None:
    folder = server.root_dir / "notebooks"
    quickstart = nbformat.read(folder / "quickstart.ipynb", as_version=4)
    execute_in_server_kernel(server, quickstart, "notebooks")
    nbformat.write(quickstart, folder / "quickstart.ipynb")  # saved, as a user would
    shown = texts(quickstart)
    # zero-config: the kernel found this very server by itself
    assert f"at {server.url}" in shown
    run = run_named(server, "quickstart")
    assert run["status"] == "DONE", run
    (counts,) = run["outputs"]
    on_disk = server.root_dir / counts["path"]
    digest = hashlib.sha256(on_disk.read_bytes()).hexdigest()
    assert counts["sha256"] == digest
    assert "status: DONE" in shown and digest in shown
    assert f"counts.tsv  {counts['size']} bytes  sha256 {digest}" in shown
    assert "reads.fastq" in on_disk.read_text()
    # the record is in the saved file, with the output hash and the uploaded input's hash
    records = records_in(nbformat.read(folder / "quickstart.ipynb", as_version=4))
    assert records and records[-1]["run"]["id"] == run["id"]
    assert records[-1]["run"]["status"] == "DONE"
    assert records[-1]["outputs"][0]["sha256"] == digest
    uploaded = server.root_dir / records[-1]["inputs"][0]["path"]
    assert records[-1]["inputs"][0]["sha256"] == hashlib.sha256(
        uploaded.read_bytes()).hexdigest()
    assert records[-1]["pipeline"]["fingerprint"]
    assert json.loads((folder / "quickstart-record.json").read_text()) == records[-1]
    widget_views = [o for c in quickstart.cells for o in c.get("outputs", [])
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widget_views) >= 3  # upload progress, the form, the live run widget
    # The live widget was updated by pushed events while `run.wait()` ran in another cell.
    state = quickstart.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
    values = [str(m["state"].get("value")) for m in state["state"].values()]
    assert any(">DONE<" in v for v in values), values
    assert any(f"{digest}" in v for v in values)  # outputs shown in the widget

    rendered_without_a_kernel(nbformat.read(folder / "quickstart.ipynb", as_version=4), run)

    reproduce = nbformat.read(folder / "reproduce.ipynb", as_version=4)
    execute_in_server_kernel(server, reproduce, "notebooks")
    shown = texts(reproduce)
    assert f"record of run {run['id']} read from quickstart.ipynb" in shown
    again = run_named(server, "reproduce quickstart")
    assert again["status"] == "DONE" and again["id"] != run["id"]
    assert again["outputs"][0]["sha256"] == digest
    assert "reproduced: True | status: DONE" in shown
    assert f"counts.tsv  sha256 {digest}" in shown
    variant = run_named(server, "all reads")
    assert variant["status"] == "DONE" and variant["outputs"][0]["sha256"] != digest
    assert "outputs DIFFER" in shown


RAW_REPRS = ("ConfigForm(", "RunWidget(", "VBox(children", "HBox(children", "FilePicker(",
             "FloatProgress(")


def rendered_without_a_kernel(saved: Any, run: dict[str, Any]) -> None:
    """The saved quickstart through nbconvert, as a reader without a kernel sees it: HTML with
    the widget state nbclient saved, HTML and Markdown without it (JupyterLab's default save):
    no raw widget repr anywhere, and the run widget's picture is its last state, DONE."""
    from nbconvert import HTMLExporter, MarkdownExporter

    with_state, _ = HTMLExporter().from_notebook_node(saved)
    bare = nbformat.from_dict(json.loads(json.dumps(saved)))
    bare.metadata.pop("widgets", None)
    without_state, _ = HTMLExporter().from_notebook_node(bare)
    markdown, _ = MarkdownExporter().from_notebook_node(bare)
    for document in (with_state, without_state, markdown):
        for raw in RAW_REPRS:
            assert raw not in document, raw
    # nbclient saved the state: the page embeds it, and the widget shows its last state
    assert "application/vnd.jupyter.widget-state+json" in with_state
    for document in (without_state, markdown):
        pictures = re.findall(r"<div class=.pirus-run-widget.>.*?</table></div>", document,
                              re.DOTALL)
        assert len(pictures) == 1, document[:2000]
        (picture,) = pictures
        assert ">DONE<" in picture and "0/100" not in picture and "WAITING" not in picture
        assert run["outputs"][0]["sha256"] in picture
        # the form as it was when the run started: the value set from code
        form = re.search(r"<div class=.pirus-config-form.>.*?</div></div>", document,
                         re.DOTALL)
        assert form and "min_length" in form.group(0) and ">30<" in form.group(0)
        assert "reads.fastq" in form.group(0)
        assert "Upload of reads.fastq" in document and "(complete)" in document
    text = texts(bare)  # text/plain too: no repr, the last state
    for raw in RAW_REPRS:
        assert raw not in text, raw
    assert f"Run {run['id']}: quickstart" in text and "status: DONE" in text


def test_connect_from_a_kernel_without_the_variables(server: ServerProcess) -> None:
    """Without the published variables a kernel still finds its server: the running-server
    list, by the root folder that contains the kernel's working directory."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os\n"
        "os.environ.pop('PIRUS_SERVER_URL', None); os.environ.pop('PIRUS_SERVER_TOKEN', None)\n"
        "import pirus_jupyter as pirus\n"
        "client = pirus.connect()\n"
        "print('found', client.base_url, client.info()['api_version'])")])
    execute_in_server_kernel(server, nb, "notebooks", timeout=120)
    assert f"found {server.url} 1" in texts(nb)
