"""The ``jupyter pirus`` argument parser: commands, their options and help, and the parsing of
``--config KEY=VALUE`` values. Which function runs a command is :mod:`.commands`'s business."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from ..models import PipelineStatus, RunStatus

PROG = "jupyter pirus"
RUN_STATUSES = tuple(status.value for status in RunStatus)
PIPELINE_STATUSES = tuple(status.value for status in PipelineStatus)

__all__ = ["PROG", "RUN_STATUSES", "build_parser", "parse_config_pairs", "parse_config_value"]


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

    def add(name: str, help_text: str, description: str, *, online: bool
            ) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=description,
                                 parents=[common, server] if online else [common],
                                 epilog=_EPILOG, formatter_class=_Formatter)
        command.set_defaults(parser=command)  # for parser.error() inside the command
        return command

    p = add("build", "build a package from a pipeline folder",
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

    p = add("validate", "check a package or a pipeline folder",
            "List every problem of a package (PKG) or of a pipeline folder (DIR): manifest "
            "fields, form.json (JSON, and the draft-07 JSON Schema the server derives from "
            "it), run script (present, executable, interpreter present), icon (PNG/SVG/JPEG), "
            "documents. Exits 1 when anything is wrong. Offline.", online=False)
    p.add_argument("path", metavar="PKG|DIR", help="a package file or a folder with pirus.yaml")
    p.add_argument("--no-build", action="store_true",
                   help="for a folder: skip the trial build (static checks only)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("install", "install a package on the server",
            "Install a package: one under the server's root folder is installed in place, any "
            "other file is uploaded (resumable TUS upload). Waits until the pipeline is READY; "
            "exits 1 if it ends in ERROR.", online=True)
    p.add_argument("package", metavar="PKG", help="the package file")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up waiting after this long (default: 600)")
    p.add_argument("--json", action="store_true", help="print the pipeline record as JSON")

    p = add("list", "list installed pipelines", "List the installed pipelines.",
            online=True)
    p.add_argument("--status", choices=PIPELINE_STATUSES,
                   help="only pipelines in this status")
    p.add_argument("--json", action="store_true", help="print the records as JSON")

    p = add("uninstall", "uninstall a pipeline",
            "Uninstall a pipeline by name or id (refused while it has active runs), or with "
            "--failed every pipeline whose install failed.", online=True)
    p.add_argument("pipeline", metavar="NAME|ID", nargs="?")
    p.add_argument("--failed", action="store_true",
                   help="remove every pipeline in ERROR (failed installs) instead")
    p.add_argument("--version", help="which version, when several are installed")

    p = add("runs", "list runs", "List runs, newest first.", online=True)
    p.add_argument("--status", action="append", metavar="STATUS", type=_status_list,
                   help="only runs in this status (repeat or comma-separate: "
                        f"{', '.join(RUN_STATUSES)})")
    p.add_argument("--pipeline", metavar="NAME|ID", help="only runs of this pipeline")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default: 50)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")

    p = add("run", "start a run (and wait for it)",
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
    p.add_argument("--reuse", action=argparse.BooleanOptionalAction, default=None,
                   help="take an identical earlier DONE run's outputs instead of running "
                   "(default: the server's, or on for a deterministic pipeline)")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --wait: give up after this long (the run goes on)")
    p.add_argument("--json", action="store_true", help="print the run record as JSON")

    p = add("crate", "save a run as an RO-Crate",
            "Save run RUN_ID (it must have ended) as a Workflow Run RO-Crate of the Process "
            "Run Crate profile: a zip with ro-crate-metadata.json and the output files "
            "(docs/crate.md). Prints the file written.", online=True)
    p.add_argument("run_id", metavar="RUN_ID", type=int, help="the run's id")
    p.add_argument("-o", "--output", metavar="ZIP",
                   help="file to write (default: run-<RUN_ID>-crate.zip here)")
    p.add_argument("--no-data", action="store_true",
                   help="the metadata only, without the output files' bytes")
    return parser


def _status_list(text: str) -> str:
    bad = [s for s in text.split(",") if s and s not in RUN_STATUSES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown status {bad[0]!r} (use "
                                         f"{', '.join(RUN_STATUSES)})")
    return text
