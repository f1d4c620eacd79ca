"""A TES task and a Pirus run, one in terms of the other: the shell script that plays a task's
executors in the run's container, the TES state of a run, and a run as a TES task in each view.

Pure functions: no disk, no database. The script is POSIX sh (busybox is enough: mkdir, cp,
cat, date) and runs inside the wrapper (runs/wrapper.py) in a subshell of its own, so its
``exit`` ends the task's script, not the wrapper that writes the exit code.
"""

from __future__ import annotations

import shlex
from typing import Any

# Inside the run's outputs folder: what the script leaves for the server.
TES_DIR = ".tes"  # per executor: <i>.out, <i>.err, <i>.exit, <i>.start, <i>.end; system_error
OUTPUTS_DIR = "tes-outputs"  # per task output <k>/: what the container path held
SYSTEM_EXIT = 125  # the script's own failure (an input not placed, an output missing)
# How much of each executor's stdout/stderr a task's FULL view carries.
LOG_TAIL_BYTES = 10 * 1024

q = shlex.quote


def input_name(index: int, part: int, basename: str) -> str:
    """The name of a task input's file in the run's inputs folder (flat: directories are
    expanded file by file)."""
    return f"tes{index}_{part}_{basename}"[:200]


def _glob(path: str) -> str:
    """``path`` for the shell with its wildcards (* ? [ ]) live and everything else quoted."""
    return "".join(c if c.isalnum() or c in "*?[]/._-" else "\\" + c for c in path)


def _system_error(message: str) -> str:
    return (f"{{ echo {q('pirus-tes: ' + message)} >&2; echo {q(message)} "
            f">\"$T/system_error\"; exit {SYSTEM_EXIT}; }}")


def task_script(task: dict[str, Any], placed: list[tuple[str, str]]) -> str:
    """The script that runs ``task``: inputs placed (``placed``: (name in the inputs folder,
    path in the container)), inline contents written, volumes made, executors run in order,
    then each output copied into the run's outputs folder for the server to write back."""
    lines = [
        'T="$PIRUS_OUTPUTS_DIR/' + TES_DIR + '"',
        'O="$PIRUS_OUTPUTS_DIR/' + OUTPUTS_DIR + '"',
        f'mkdir -p "$T" "$O" || exit {SYSTEM_EXIT}',
        "stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }",
        'put() { mkdir -p "$(dirname "$2")" && cp -R "$1" "$2"; }',
    ]
    for name, path in placed:
        lines.append(f'put "$PIRUS_INPUTS_DIR/"{q(name)} {q(path)} || '
                     + _system_error(f"input {path} could not be placed"))
    for item in task.get("inputs", []):
        if "content" in item:
            path = item["path"]
            lines.append(f'mkdir -p "$(dirname {q(path)})" && printf %s {q(item["content"])} '
                         f">{q(path)} || " + _system_error(f"input {path} could not be written"))
        elif item.get("type") == "DIRECTORY":
            lines.append(f"mkdir -p {q(item['path'])}")  # an empty folder is a folder too
    for volume in task.get("volumes", []):
        lines.append(f"mkdir -p {q(volume)}")
    # Each output's folder exists before the executors run, as in Funnel (which mounts them).
    for out in task.get("outputs", []):
        folder = out.get("path_prefix") or out["path"].rsplit("/", 1)[0] or "/"
        if "*" not in folder and "?" not in folder and "[" not in folder:
            lines.append(f"mkdir -p {q(folder)}")
    for i, ex in enumerate(task["executors"]):
        workdir = ex.get("workdir") or "/"
        inner = [f"mkdir -p {q(workdir)} && cd {q(workdir)} || exit {SYSTEM_EXIT}"]
        inner += [f"export {key}={q(value)}" for key, value in ex.get("env", {}).items()]
        inner.append("exec " + shlex.join(ex["command"]))
        stdin = q(ex["stdin"]) if ex.get("stdin") else "/dev/null"
        lines += [
            f'stamp >"$T/{i}.start"',
            f"( {'; '.join(inner)} ) <{stdin} >\"$T/{i}.out\" 2>\"$T/{i}.err\"",
            "c=$?",
            f'echo $c >"$T/{i}.exit"; stamp >"$T/{i}.end"',
            f'cat "$T/{i}.out"; cat "$T/{i}.err" >&2',
        ]
        for stream in ("stdout", "stderr"):
            if ex.get(stream):
                lines.append(f'put "$T/{i}.{stream[3:]}" {q(ex[stream])}')
        if not ex.get("ignore_error"):
            lines.append('[ "$c" -eq 0 ] || exit "$c"')
    for k, out in enumerate(task.get("outputs", [])):
        path, prefix = out["path"], out.get("path_prefix")
        if prefix:
            # every match of the pattern, kept at its path below the prefix
            lines.append(
                f"for f in {_glob(path)}; do [ -e \"$f\" ] || continue; "
                f"r=${{f#{q(prefix)}}}; put \"$f\" \"$O/{k}/$r\" || "
                + _system_error(f"output {path} could not be collected") + "; done")
        else:
            kind = "-d" if out.get("type") == "DIRECTORY" else "-f"
            lines.append(f"[ {kind} {q(path)} ] && put {q(path)} \"$O/{k}/item\" || "
                         + _system_error(f"output {path} is missing"))
    return "(\n" + "\n".join(lines) + "\n)"


def tes_state(row: dict[str, Any]) -> str:
    """The TES state of a run. A run that has ended is RUNNING until the server has read its
    executors' results and written its outputs back ("finalised"): COMPLETE means the
    outputs are where the task said."""
    status = row["status"]
    final = ((row.get("task") or {}).get("pirus") or {}).get("state")
    if final:
        return str(final)
    return {"WAITING": "QUEUED", "INITIALIZING": "INITIALIZING", "RUNNING": "RUNNING",
            "FINISHING": "RUNNING", "PAUSE": "PAUSED", "CANCELED": "CANCELED",
            "DONE": "RUNNING", "ERROR": "RUNNING"}.get(status, "UNKNOWN")


def final_state(row: dict[str, Any], executors: list[dict[str, Any]],
                system_error: str | None) -> str:
    """What an ended run is as a task, once its executors' results are read."""
    if row["status"] == "CANCELED":
        return "CANCELED"
    if system_error:
        return "SYSTEM_ERROR"
    if row["status"] == "DONE":
        return "COMPLETE"
    failed = [e for e in executors if e.get("exit_code") not in (0, None)]
    if row.get("exit_code") not in (None, 0, SYSTEM_EXIT) and failed:
        return "EXECUTOR_ERROR"
    return "SYSTEM_ERROR"


def sql_for_state(state: str) -> tuple[str, list[Any]]:
    """The SQL condition on runs rows matching one TES state (see ``tes_state``)."""
    final = "json_extract(task, '$.pirus.state')"
    simple = {"QUEUED": "WAITING", "INITIALIZING": "INITIALIZING", "PAUSED": "PAUSE"}
    if state in simple:
        return f"status = ? AND {final} IS NULL", [simple[state]]
    if state == "RUNNING":
        return (f"{final} IS NULL AND status IN ('RUNNING', 'FINISHING', 'DONE', 'ERROR')", [])
    if state in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"):
        return f"{final} = ?", [state]
    if state == "CANCELED":
        return "status = 'CANCELED'", []
    return "0", []  # UNKNOWN, PREEMPTED, CANCELING: no run is ever in them


def task_view(row: dict[str, Any], view: str) -> dict[str, Any]:
    """A run as a ``tesTask`` in ``view`` (MINIMAL, BASIC or FULL)."""
    out: dict[str, Any] = {"id": str(row["id"]), "state": tes_state(row)}
    if view == "MINIMAL":
        return out
    task = row.get("task") or {}
    for key in ("name", "description", "resources", "executors", "volumes", "tags"):
        if task.get(key):
            out[key] = task[key]
    out["executors"] = [{k: v for k, v in ex.items() if v not in (None, {}, False)}
                        for ex in task.get("executors", [])]
    full = view == "FULL"
    if task.get("inputs"):
        out["inputs"] = [{k: v for k, v in item.items() if full or k != "content"}
                         for item in task["inputs"]]
    if task.get("outputs"):
        out["outputs"] = task["outputs"]
    out["creation_time"] = row["created"]
    pirus = task.get("pirus") or {}
    log: dict[str, Any] = {
        "logs": [{k: v for k, v in e.items() if full or k not in ("stdout", "stderr")}
                 for e in pirus.get("executor_logs", [])],
        "outputs": pirus.get("outputs_log", []),
        "metadata": {"pirus_run_id": str(row["id"]), "pirus_status": row["status"]},
    }
    if row.get("start"):
        log["start_time"] = row["start"]
    if row.get("end"):
        log["end_time"] = row["end"]
    if full:
        system = [m for m in (pirus.get("system_error"), row.get("error")) if m]
        if system:
            log["system_logs"] = list(dict.fromkeys(system))
    out["logs"] = [log]
    return out
