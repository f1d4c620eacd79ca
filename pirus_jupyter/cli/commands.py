"""``jupyter pirus``: build and check pipeline packages offline, drive a Pirus server headlessly.

Offline::

    jupyter pirus build examples/pipelines/fastq-count -o fastq-count.tar.gz
    jupyter pirus validate fastq-count.tar.gz          # or a source folder

Against a running server (found like the kernel client finds it: ``--url``/``--token``, else
``$PIRUS_SERVER_URL``/``$PIRUS_SERVER_TOKEN``, else the running Jupyter servers whose root
folder contains the current directory)::

    jupyter pirus install fastq-count.tar.gz
    jupyter pirus list
    jupyter pirus run fastq-count --input data/reads.fastq --config min_length=5 --wait
    jupyter pirus runs --status DONE
    jupyter pirus uninstall fastq-count

Exit codes: 0 success, 1 failure (invalid package, refused request, run not DONE), 2 usage
error, 3 no Pirus server reachable, 130 interrupted. Results go to stdout, progress and
errors to stderr. See ``docs/cli.md``.

Every server call goes through :mod:`pirus_jupyter.kernel`; this module only runs the commands
the parser (:mod:`.parser`) recognised: it calls the client or the builder and formats what they
return.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..hashing import sha256_file
from ..kernel.discovery import connect
from ..kernel.errors import PirusAPIError, PirusConnectionError
from ..kernel.progress import human_size
from ..kernel.records import pipelines_named
from ..packaging.validate import validate_folder, validate_package
from .parser import PROG, build_parser, parse_config_pairs

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

class CommandError(Exception):
    """A failure reported to the user as ``error: <message>`` with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# -- output helpers ------------------------------------------------------------------------
def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], out: IO[str]) -> None:
    cells = [[str(c) if c is not None else "" for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# -- commands: offline --------------------------------------------------------------------
def cmd_build(args: argparse.Namespace) -> int:
    from ..packaging.build import BuildError, build_package

    source = Path(args.dir)
    output = Path(args.output) if args.output else Path(f"{source.resolve().name}.tar.gz")
    if not args.quiet:
        _err(f"Building {source} -> {output} ...")
    started = time.monotonic()
    try:
        build_package(source, output, compression=args.compression,
                      progress=None if args.quiet else _err)
    except (BuildError, ValueError) as e:
        raise CommandError(f"cannot build {source}: {e}") from e
    digest = sha256_file(output)
    if not args.quiet:
        _err(f"Built {output} ({human_size(output.stat().st_size)}) in "
             f"{time.monotonic() - started:.1f} s")
    print(f"{digest}  {output}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.path)
    report = None if args.quiet or args.json else _err
    if path.is_dir():
        kind = "folder"
        problems = validate_folder(path, build=not args.no_build, progress=report)
    else:
        kind = "package"
        if report:
            report(f"Checking package {path} ...")
        problems = validate_package(path)
    if args.json:
        _print_json({"path": str(path), "kind": kind, "valid": not problems,
                     "problems": [{"where": p.where, "message": p.message} for p in problems]})
    else:
        for problem in problems:
            print(problem)
        if not problems:
            print(f"{path}: valid pipeline {kind}")
        elif not args.quiet:
            _err(f"{len(problems)} problem(s) in {path}")
    return EXIT_FAILURE if problems else EXIT_OK


# -- commands: server -----------------------------------------------------------------------
def _connect(args: argparse.Namespace) -> Any:
    # No notebook hint: main() gives the CLI's own after the error.
    return connect(url=getattr(args, "url", None), token=getattr(args, "token", None),
                   timeout=args.http_timeout, hint="")


def _pipeline_row(p: Any) -> list[Any]:
    note = p.error if p.status == "ERROR" else (p.description or "")
    note = " ".join(str(note).split())
    return [p.id, p.name, p.version or "", p.status, note[:60]]


def cmd_list(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        pipelines = client.pipelines(status=args.status)
        if args.json:
            _print_json([p.data for p in pipelines])
        elif pipelines:
            _table([_pipeline_row(p) for p in pipelines],
                   ["ID", "NAME", "VERSION", "STATUS", "DESCRIPTION"], sys.stdout)
        elif not args.quiet:
            _err("no pipeline installed")
    return EXIT_OK


def cmd_install(args: argparse.Namespace) -> int:
    package = Path(args.package)
    if not package.is_file():
        raise CommandError(f"{package}: no such file")
    with _connect(args) as client:
        if not args.quiet:
            _err(f"Installing {package} ({human_size(package.stat().st_size)}) on "
                 f"{client.base_url}")
        pipeline = client.install(package, wait=False, progress=not args.quiet)
        if pipeline.status == "READY":  # these very bytes were installed already
            if not args.quiet:
                _err(f"Already installed as pipeline {pipeline.id}")
        elif not args.quiet:
            _err(f"Installing as pipeline {pipeline.id} ...")
        try:
            pipeline.wait_ready(args.timeout)
        except PirusAPIError as e:
            raise CommandError(f"install of {package} failed: pipeline {pipeline.id} is "
                               f"{pipeline.status}: {pipeline.error}") from e
        except TimeoutError as e:
            raise CommandError(f"pipeline {pipeline.id} still {pipeline.status} after "
                               f"{args.timeout:g} s") from e
        if args.json:
            _print_json(pipeline.data)
        else:
            print(f"Installed pipeline {pipeline.id}: {pipeline.name} "
                  f"{pipeline.version or ''}".rstrip() + f" ({pipeline.status})")
    return EXIT_OK


def _find_pipeline(client: Any, name_or_id: str, version: str | None) -> Any:
    if name_or_id.isdigit():
        return client.pipeline(int(name_or_id))
    named = pipelines_named(client.pipelines(), name_or_id, version)
    if not named:
        wanted = f"{name_or_id} {version}" if version else name_or_id
        raise CommandError(f"no pipeline {wanted!r} is installed (see: {PROG} list)")
    if len(named) > 1:
        listed = ", ".join(f"{p.id} ({p.version or 'no version'}, {p.status})" for p in named)
        raise CommandError(f"several pipelines are named {name_or_id!r}: {listed}; give an id "
                           "or --version")
    return named[0]


def cmd_uninstall(args: argparse.Namespace) -> int:
    if bool(args.failed) == bool(args.pipeline):
        raise CommandError("give a pipeline NAME|ID, or --failed (not both)")
    if args.failed:
        with _connect(args) as client:
            removed = client.clear_failed()
        print(f"Removed {len(removed)} failed install(s)"
              + (f": pipeline(s) {', '.join(map(str, removed))}" if removed else ""))
        return EXIT_OK
    with _connect(args) as client:
        pipeline = _find_pipeline(client, args.pipeline, args.version)
        pipeline.remove()
        print(f"Uninstalled pipeline {pipeline.id}: {pipeline.name} "
              f"{pipeline.version or ''}".rstrip())
    return EXIT_OK


def _progress_text(data: Mapping[str, Any]) -> str:
    progress = data.get("progress") or {}
    if not progress:
        return ""
    value, top = progress.get("value"), progress.get("max")
    if not progress.get("label") and value == progress.get("min", 0):
        return ""  # nothing reported yet
    text = f"{value:g}/{top:g}" if isinstance(value, (int, float)) and isinstance(
        top, (int, float)) else ""
    if progress.get("label"):
        text = f"{text} {progress['label']}".strip()
    return text


def cmd_runs(args: argparse.Namespace) -> int:
    statuses = [s for arg in args.status or [] for s in arg.split(",") if s]
    with _connect(args) as client:
        runs = client.runs(status=statuses or None, pipeline=args.pipeline, limit=args.limit)
        if args.json:
            _print_json([r.data for r in runs])
        elif runs:
            rows = [[r.id, r.status, _progress_text(r.data), f"{r.pipeline_name} "
                     f"{r.pipeline_version or ''}".strip(), r.name, r.created]
                    for r in runs]
            _table(rows, ["ID", "STATUS", "PROGRESS", "PIPELINE", "NAME", "CREATED"],
                   sys.stdout)
        elif not args.quiet:
            _err("no run")
    return EXIT_OK


def _input_refs(client: Any, paths: Sequence[str], quiet: bool) -> list[Any]:
    """What to send for each ``--input``: a path under the server's root as is; a local file
    the server cannot see (outside its root, or on another machine) is uploaded first."""
    refs: list[Any] = []
    for item in paths:
        local = Path(item).expanduser()
        if not local.is_file():
            refs.append(item)  # a path relative to the server's root folder
            continue
        under_root = client.root_relative(local)
        refs.append(under_root if under_root is not None else
                    client.upload(local, kind="input", progress=not quiet))
    return refs


class _ProgressPrinter:
    """Prints a run's status and progress to stderr when either changes (from any thread)."""

    def __init__(self, run_id: int, quiet: bool) -> None:
        self.run_id = run_id
        self.quiet = quiet
        self.started = time.monotonic()
        self.last: tuple[Any, ...] | None = None
        self.lock = threading.Lock()

    def __call__(self, data: Mapping[str, Any]) -> None:
        progress = data.get("progress") or {}
        key = (data.get("status"), progress.get("value"), progress.get("max"),
               progress.get("label"))
        with self.lock:
            if key == self.last or self.quiet:
                return
            self.last = key
            elapsed = time.monotonic() - self.started
            line = f"[{elapsed:6.1f}s] run {self.run_id}: {data.get('status')}"
            text = _progress_text(data)
            _err(f"{line} {text}" if text else line)


def cmd_run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    config: dict[str, Any] = {}
    if args.config_file:
        try:
            loaded = json.loads(Path(args.config_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            parser.error(f"--config-file {args.config_file}: {e}")
        if not isinstance(loaded, dict):
            parser.error(f"--config-file {args.config_file}: must hold a JSON object")
        config.update(loaded)
    try:
        config.update(parse_config_pairs(args.config or []))
    except ValueError as e:
        parser.error(str(e))
    with _connect(args) as client:
        pipeline = client.pipeline(args.pipeline, args.version)
        inputs = _input_refs(client, args.input or [], args.quiet)
        run = pipeline.run(config=config, inputs=inputs, name=args.name, reuse=args.reuse)
        if not args.quiet and not args.json:
            if run.reused_from is not None:
                _err(f"Run {run.id} reused run {run.reused_from}: no container ran")
            elif run.reuse_miss:
                _err(f"Run {run.id} not reused: {run.reuse_miss['message']}")
        if not args.wait:
            if args.json:
                _print_json(run.data)
            else:
                print(run.id)
                if not args.quiet:
                    _err(f"Run {run.id} ({pipeline.name}) is {run.status}; follow it with "
                         f"'{PROG} runs' or wait with --wait")
            return EXIT_OK
        show = _ProgressPrinter(run.id, args.quiet)
        show(run.data)

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "run.updated" and isinstance(event.get("data"), dict):
                show(event["data"])

        subscription = client.events.subscribe(on_event, run_id=run.id)
        try:
            run.wait(args.timeout)
        except TimeoutError as e:
            raise CommandError(f"run {run.id} is still {run.status} after {args.timeout:g} s "
                               "(it goes on on the server)") from e
        finally:
            subscription.close()
        show(run.data)
        if args.json:
            _print_json(run.data)
        if run.status != "DONE":
            raise CommandError(f"run {run.id} ended {run.status}"
                               + (f": {run.error}" if run.error else ""))
        if not args.json:
            for output in run.outputs or []:
                print(f"{output['sha256']}  {output['path']}")
        if not args.quiet:
            _err(f"run {run.id} DONE: {len(run.outputs or [])} output(s)")
    return EXIT_OK




def cmd_crate(args: argparse.Namespace) -> int:
    target = Path(args.output or f"run-{args.run_id}-crate.zip")
    with _connect(args) as client:
        client.run(args.run_id).export_crate(target, data=not args.no_data)
    print(target)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cmd_build, "validate": cmd_validate, "install": cmd_install, "list": cmd_list,
    "uninstall": cmd_uninstall, "runs": cmd_runs, "run": cmd_run, "crate": cmd_crate,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``jupyter pirus`` (``jupyter-pirus``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        return int(COMMANDS[args.command](args))
    except SystemExit as e:  # parser.error() inside a command
        return int(e.code or 0)
    except PirusConnectionError as e:
        _err(f"error: cannot reach a Pirus server: {e}\n"
             "hint: pass --url and --token, or set PIRUS_SERVER_URL and PIRUS_SERVER_TOKEN")
        return EXIT_UNREACHABLE
    except PirusAPIError as e:
        _err(f"error: {e}")
        details = e.details if isinstance(e.details, list) else []
        for item in details:
            if isinstance(item, Mapping) and item.get("message") and \
                    str(item["message"]) not in e.message:
                _err(f"  {item.get('field') or '(config)'}: {item['message']}")
        if e.status in (401, 403):
            _err("hint: pass --token, or set PIRUS_SERVER_TOKEN")
        return EXIT_FAILURE
    except CommandError as e:
        _err(f"error: {e.message}")
        return e.code
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except OSError as e:
        _err(f"error: {e}")
        return EXIT_FAILURE

