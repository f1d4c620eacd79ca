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


def _beating(beat: str) -> str:
    """``beat`` every HEARTBEAT_INTERVAL in the background while the wrapper lives, as
    ``$hb``. Its sleep is a child it kills when told to stop (TERM): once the wrapper has
    stopped it (stop_heartbeat), only what the pipeline left behind runs in the container."""
    return (f"( trap 'kill $s 2>/dev/null; exit 0' TERM; while kill -0 $$ 2>/dev/null; do "
            f"{beat}; sleep {HEARTBEAT_INTERVAL:g} & s=$!; wait $s; done ) "
            f"</dev/null >/dev/null 2>&1 &\nhb=$!\n")


def stop_heartbeat() -> str:
    return "kill $hb 2>/dev/null; wait $hb 2>/dev/null\n"


def touch_heartbeat() -> str:
    """The heartbeat of a run whose state folder is mounted: the file's mtime is the beat."""
    return _beating(f"touch {HEARTBEAT_FILE}")


def counting_heartbeat(logs: str) -> str:
    """The heartbeat of a pushed run: a counter (a change is a beat, whatever the clocks of this
    host and the member say) and the sizes of both logs (the log cap is checked from it,
    without reading the logs over the API)."""
    tmp = f"{HEARTBEAT_FILE}.tmp"
    return "n=0\n" + _beating(
        f"n=$((n+1)); echo \"$n $(wc -c <{logs}/out.log) $(wc -c <{logs}/err.log)\" >{tmp} "
        f"&& mv -f {tmp} {HEARTBEAT_FILE}")


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


def wait_for_listener(port: int, tries: int = 500) -> str:
    """Wait (about 10 s at most) until something listens on 127.0.0.1:``port`` in the
    container: the notify proxy, plugged in while the wrapper starts. Plain sh reading
    /proc/net/tcp (local address, remote address, state 0A = LISTEN), so any image will do."""
    listening = f"0100007F:{port:04X} 00000000:0000 0A"
    return (f"i=0; while [ $i -lt {tries} ] && [ -r /proc/net/tcp ]; do "
            f"while read -r _ l r s _; do [ \"$l $r $s\" = '{listening}' ] && break 2; "
            f"done </proc/net/tcp; i=$((i+1)); sleep 0.02; done\n")


def wrapper_script(pipeline: dict[str, Any], *, loopback: bool, heartbeat: str,
                   before_exit: str, proxy_port: int | None = None) -> str:
    """The script around the pipeline's command. ``heartbeat`` and ``before_exit`` come from
    the run's data (data.py): how the beat is kept and what is done before the exit code.
    With ``proxy_port`` the command starts once the notify proxy listens."""
    # Manifest paths are absolute and free of '..', but may hold spaces: quote them.
    logs = shlex.quote(pipeline["lxd_logs_path"])
    outputs = shlex.quote(pipeline["lxd_outputs_path"])
    # Containers have no network but loopback, which nothing brings up without an init
    # system: the notify proxy listens there. A minimal Debian base has neither ip nor
    # ifconfig, only the busybox binary that is its init.
    script = ("ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null || "
              "busybox ip link set lo up 2>/dev/null\n") if loopback else ""
    if proxy_port:
        script += wait_for_listener(proxy_port)
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
    # The heartbeat stops before the exit code is written: a container left with its init
    # alone then needs no freeze before its outputs are hashed (lifecycle._finish).
    return (f"{script}code=$?\n{before_exit}{stop_heartbeat()}"
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
