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

Every server call goes through :mod:`pirus_jupyter.kernel.client`; this module only parses
arguments, calls the client or the builder, and formats what they return.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..hashing import sha256_file
from ..packaging.validate import validate_folder, validate_package

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

RUN_STATUSES = ("WAITING", "PAUSE", "INITIALIZING", "RUNNING", "FINISHING", "ERROR", "DONE",
                "CANCELED")
PROG = "jupyter pirus"

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


# -- config values --------------------------------------------------------------------------
def parse_config_value(text: str) -> Any:
    """A ``--config`` value: JSON when it parses (``5``, ``true``, ``[1, 2]``, ``"05"``),
    else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_config_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` to a dict; raises ValueError for an item without ``=`` or key."""
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config {pair!r}: expected KEY=VALUE")
        config[key.strip()] = parse_config_value(value)
    return config


# -- commands: offline --------------------------------------------------------------------
def cmd_build(args: argparse.Namespace) -> int:
    from ..packaging.build import BuildError, build_package

    source = Path(args.dir)
    output = Path(args.output) if args.output else Path(f"{source.resolve().name}.tar.gz")
    if not args.quiet:
        _err(f"Building {source} -> {output} ...")
    started = time.monotonic()
    try:
        build_package(source, output, compression=args.compression)
    except (BuildError, ValueError) as e:
        raise CommandError(f"cannot build {source}: {e}") from e
    digest = sha256_file(output)
    if not args.quiet:
        from ..kernel.client import human_size
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
    from ..kernel.client import connect

    return connect(url=getattr(args, "url", None), token=getattr(args, "token", None),
                   timeout=args.http_timeout)


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
    from ..kernel.client import PirusAPIError

    package = Path(args.package)
    if not package.is_file():
        raise CommandError(f"{package}: no such file")
    with _connect(args) as client:
        if not args.quiet:
            from ..kernel.client import human_size
            _err(f"Installing {package} ({human_size(package.stat().st_size)}) on "
                 f"{client.base_url}")
        pipeline = client.install(package, wait=False, progress=not args.quiet)
        if not args.quiet:
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
    named = [p for p in client.pipelines()
             if p.name == name_or_id and (version is None or p.version == version)]
    if not named:
        wanted = f"{name_or_id} {version}" if version else name_or_id
        raise CommandError(f"no pipeline {wanted!r} is installed (see: {PROG} list)")
    if len(named) > 1:
        listed = ", ".join(f"{p.id} ({p.version or 'no version'}, {p.status})" for p in named)
        raise CommandError(f"several pipelines are named {name_or_id!r}: {listed}; give an id "
                           "or --version")
    return named[0]


def cmd_uninstall(args: argparse.Namespace) -> int:
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
        if local.is_file():
            under_root = None
            if client.root_dir is not None:
                with contextlib.suppress(ValueError):
                    under_root = local.resolve().relative_to(client.root_dir).as_posix()
            if under_root is None:
                refs.append(client.upload(local, kind="input", progress=not quiet))
                continue
            refs.append(under_root)
        else:
            refs.append(item)  # a path relative to the server's root folder
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
        run = pipeline.run(config=config, inputs=inputs, name=args.name)
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


# -- the parser -----------------------------------------------------------------------------
_EPILOG = """\
exit codes:
  0    success
  1    failure: invalid package or folder, request refused by the server, run not DONE
  2    usage error (bad arguments)
  3    no Pirus server reachable
  130  interrupted (Ctrl-C); a started run goes on on the server

server: --url/--token, else $PIRUS_SERVER_URL/$PIRUS_SERVER_TOKEN, else the running Jupyter
server whose root folder contains the current directory (jupyter server list).
"""


class _Formatter(argparse.HelpFormatter):
    """Wrapped descriptions, the exit-code epilog kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text == _EPILOG:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _server_options(default: Any) -> argparse.ArgumentParser:
    """--url/--token/--timeout, accepted before and after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server")
    group.add_argument("--url", default=default,
                       help="the Jupyter server's URL, e.g. http://127.0.0.1:8888/ "
                            "(default: $PIRUS_SERVER_URL, else a running server found locally)")
    group.add_argument("--token", default=default,
                       help="its token (default: $PIRUS_SERVER_TOKEN, or the token of the "
                            "running server at --url)")
    group.add_argument("--http-timeout", type=float, default=default, metavar="SECONDS",
                       help="timeout of each HTTP request (default: 30)")
    return parent


def _common_options(default: Any) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress output on stderr (errors are still printed)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``jupyter pirus`` argument parser."""
    common = _common_options(argparse.SUPPRESS)
    server = _server_options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[_common_options(False), _server_options(None)],
        description="Build and check Pirus pipeline packages, and drive a Pirus server "
                    "(install, list, run, follow runs) from the command line.",
        epilog=_EPILOG, formatter_class=_Formatter)
    parser.set_defaults(http_timeout=30.0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
            description: str, *, online: bool) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=description,
                                 parents=[common, server] if online else [common],
                                 epilog=_EPILOG, formatter_class=_Formatter)
        command.set_defaults(func=func, parser=command)
        return command

    p = add("build", cmd_build, "build a package from a pipeline folder",
            "Build a reproducible pipeline package (an LXD image tarball with a pirus manifest) "
            "from a folder holding pirus.yaml, run.sh, form.json, icon.png... Prints "
            "'<sha256>  <package>'; the sha256 is the LXD image fingerprint. Offline.",
            online=False)
    p.add_argument("dir", metavar="DIR", help="folder holding pirus.yaml")
    p.add_argument("-o", "--output", metavar="PKG",
                   help="package to write: .tar, .tar.gz/.tgz or .tar.xz "
                        "(default: <DIR name>.tar.gz in the current folder)")
    p.add_argument("--compression", choices=["gzip", "xz", "none"],
                   help="override the compression chosen from the output name")

    p = add("validate", cmd_validate, "check a package or a pipeline folder",
            "List every problem of a package (PKG) or of a pipeline folder (DIR): manifest "
            "fields, form.json (JSON, and the draft-07 JSON Schema the server derives from "
            "it), run script (present, executable, interpreter present), icon (PNG/SVG/JPEG), "
            "documents. Exits 1 when anything is wrong. Offline.", online=False)
    p.add_argument("path", metavar="PKG|DIR", help="a package file or a folder with pirus.yaml")
    p.add_argument("--no-build", action="store_true",
                   help="for a folder: skip the trial build (static checks only)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("install", cmd_install, "install a package on the server",
            "Install a package: one under the server's root folder is installed in place, any "
            "other file is uploaded (resumable TUS upload). Waits until the pipeline is READY; "
            "exits 1 if it ends in ERROR.", online=True)
    p.add_argument("package", metavar="PKG", help="the package file")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up waiting after this long (default: 600)")
    p.add_argument("--json", action="store_true", help="print the pipeline record as JSON")

    p = add("list", cmd_list, "list installed pipelines", "List the installed pipelines.",
            online=True)
    p.add_argument("--status", choices=["UPLOADING", "INSTALLING", "READY", "ERROR", "PAUSE"],
                   help="only pipelines in this status")
    p.add_argument("--json", action="store_true", help="print the records as JSON")

    p = add("uninstall", cmd_uninstall, "uninstall a pipeline",
            "Uninstall a pipeline by name or id (refused while it has active runs).",
            online=True)
    p.add_argument("pipeline", metavar="NAME|ID")
    p.add_argument("--version", help="which version, when several are installed")

    p = add("runs", cmd_runs, "list runs", "List runs, newest first.", online=True)
    p.add_argument("--status", action="append", metavar="STATUS", type=_status_list,
                   help="only runs in this status (repeat or comma-separate: "
                        f"{', '.join(RUN_STATUSES)})")
    p.add_argument("--pipeline", metavar="NAME|ID", help="only runs of this pipeline")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default: 50)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")

    p = add("run", cmd_run, "start a run (and wait for it)",
            "Start a run of PIPELINE (a name or an id). Inputs are paths relative to the "
            "server's root folder, or local files (uploaded first when the server cannot see "
            "them). Config values are parsed as JSON when they can be (5, true, [1,2], "
            "\"05\"), else taken as strings; --config overrides --config-file. Without --wait "
            "prints the run id; with --wait prints progress on stderr and each output as "
            "'<sha256>  <path>', and exits 1 unless the run ends DONE.", online=True)
    p.add_argument("pipeline", metavar="PIPELINE", help="pipeline name or id")
    p.add_argument("--input", "-i", action="extend", nargs="+", metavar="PATH",
                   help="input file(s); repeatable")
    p.add_argument("--config", "-c", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="form value(s); repeatable")
    p.add_argument("--config-file", metavar="FILE", help="a JSON object of form values")
    p.add_argument("--name", help="the run's name")
    p.add_argument("--version", help="which version of PIPELINE, when several are installed")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --wait: give up after this long (the run goes on)")
    p.add_argument("--json", action="store_true", help="print the run record as JSON")
    return parser


def _status_list(text: str) -> str:
    bad = [s for s in text.split(",") if s and s not in RUN_STATUSES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown status {bad[0]!r} (use "
                                         f"{', '.join(RUN_STATUSES)})")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``jupyter pirus`` (``jupyter-pirus``); returns the exit code."""
    from ..kernel.client import PirusAPIError, PirusConnectionError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        return int(args.func(args))
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

