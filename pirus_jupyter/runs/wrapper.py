"""The shell wrapper a run's command is started in, and the files it leaves in the container.

The command runs detached (``/bin/sh -c`` through LXD's exec API, no websocket), so the run
survives this server. The wrapper records its pid, keeps a heartbeat in the state folder,
redirects the command's output to the logs folder and writes the exit code last (atomically,
through a rename): the monitor only reads those files. Everything here is text; nothing runs.
"""

from __future__ import annotations

import shlex
from typing import Any

STATE_DIR = "/.pirus"
PROGRESS_FILE = f"{STATE_DIR}/progress.jsonl"
EXIT_FILE = f"{STATE_DIR}/exit_code"
HEARTBEAT_FILE = f"{STATE_DIR}/heartbeat"
MANIFEST_FILE = f"{STATE_DIR}/outputs.sha256"
HEARTBEAT_INTERVAL = 5.0
LOG_NAMES = ("out", "err")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def touch_heartbeat() -> str:
    """The heartbeat of a run whose state folder is mounted: the file's mtime is the beat."""
    return (f"( while kill -0 $$ 2>/dev/null; do touch {HEARTBEAT_FILE}; "
            f"sleep {HEARTBEAT_INTERVAL:g}; done ) </dev/null >/dev/null 2>&1 &\n")


def counting_heartbeat(logs: str) -> str:
    """The heartbeat of a pushed run: a counter (a change is a beat, whatever the clocks of this
    host and the member say) and the sizes of both logs (the log cap is checked from it,
    without reading the logs over the API)."""
    tmp = f"{HEARTBEAT_FILE}.tmp"
    return (f"( n=0; while kill -0 $$ 2>/dev/null; do n=$((n+1)); "
            f"echo \"$n $(wc -c <{logs}/out.log) $(wc -c <{logs}/err.log)\" >{tmp} && "
            f"mv -f {tmp} {HEARTBEAT_FILE}; sleep {HEARTBEAT_INTERVAL:g}; done ) "
            f"</dev/null >/dev/null 2>&1 &\n")


def output_manifest(outputs: str) -> str:
    """sha256 of every output, computed inside the container once the command has ended, so
    that the copies pulled to this host can be checked (skipped if the image has no
    sha256sum)."""
    tmp = f"{MANIFEST_FILE}.tmp"
    return (f"( cd {outputs} && find . -type f -exec sha256sum {{}} \\; ) >{tmp} 2>/dev/null; "
            f"mv -f {tmp} {MANIFEST_FILE}\n")


def shell(pipeline: dict[str, Any]) -> str:
    """The shell the wrapper is started with: the manifest's (an OCI image without /bin/sh
    gets Pirus's busybox), or /bin/sh."""
    named = (pipeline.get("manifest") or {}).get("shell")
    return named if isinstance(named, str) and named.startswith("/") else "/bin/sh"


def wrapper_script(pipeline: dict[str, Any], *, loopback: bool, heartbeat: str,
                   before_exit: str) -> str:
    """The script around the pipeline's command. ``heartbeat`` and ``before_exit`` come from
    the run's data (data.py): how the beat is kept and what is done before the exit code."""
    # Manifest paths are absolute and free of '..', but may hold spaces: quote them.
    logs = shlex.quote(pipeline["lxd_logs_path"])
    outputs = shlex.quote(pipeline["lxd_outputs_path"])
    # Containers have no network but loopback, which nothing brings up without an init
    # system: the notify proxy listens there. A minimal Debian base has neither ip nor
    # ifconfig, only the busybox binary that is its init.
    script = ("ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null || "
              "busybox ip link set lo up 2>/dev/null\n") if loopback else ""
    # A heartbeat beside the command: if this wrapper dies without writing an exit code (its
    # LXD exec helper killed, say), the heartbeat stops and the run is ended in ERROR instead
    # of waiting forever on a container that stays up.
    script += f"echo $$ >{STATE_DIR}/pid\n{heartbeat}"
    # The command starts in the outputs folder, or where the manifest says (an OCI image's
    # WorkingDir).
    workdir = (pipeline.get("manifest") or {}).get("workdir")
    start = shlex.quote(workdir) if isinstance(workdir, str) else outputs
    script += (f"cd {start} || exit 125\n"
               f"{{ {pipeline['lxd_run_cmd']}\n}} >>{logs}/out.log 2>>{logs}/err.log "
               f"</dev/null\n")
    return (f"{script}code=$?\n{before_exit}"
            f"echo $code >{EXIT_FILE}.tmp && mv {EXIT_FILE}.tmp {EXIT_FILE}\n")


def environment(run_id: int, pipeline: dict[str, Any], notify_url: str | None
                ) -> dict[str, str]:
    """What the command finds in its environment: the manifest's ``env`` (an OCI image's
    Env) over Pirus's HOME and PATH, then where its files are and how to report."""
    extra = (pipeline.get("manifest") or {}).get("env")
    env = {"HOME": "/root", "PATH": PATH}
    if isinstance(extra, dict):
        env.update({str(k): str(v) for k, v in extra.items() if not str(k).startswith("PIRUS_")})
    env |= {
        "PIRUS_RUN_ID": str(run_id),
        "PIRUS_CONFIG_FILE": f"{pipeline['lxd_inputs_path']}/config.json",
        "PIRUS_PROGRESS_FILE": PROGRESS_FILE,
        "PIRUS_INPUTS_DIR": pipeline["lxd_inputs_path"],
        "PIRUS_OUTPUTS_DIR": pipeline["lxd_outputs_path"],
        "PIRUS_LOGS_DIR": pipeline["lxd_logs_path"],
        "PIRUS_DATABASES_DIR": pipeline["lxd_db_path"],
    }
    if notify_url:
        env["PIRUS_NOTIFY_URL"] = notify_url
    return env
