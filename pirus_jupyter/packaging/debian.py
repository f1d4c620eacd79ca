"""Bases built from Debian packages: ``base: debian:<suite>`` with ``packages: [...]``.

The rootfs is made by mmdebstrap (``--variant=essential``: the Essential packages and the
requested ones, no apt) from the host's apt sources only — the entries of
``/etc/apt/sources.list.d/*.sources``, ``*.list`` and ``/etc/apt/sources.list`` that serve the
suite (``bookworm``, ``bookworm-updates``, ``bookworm-security``...). Documentation, man pages
and locales are never unpacked, apt's lists and caches and dpkg's logs are removed. The exact
versions installed (``dpkg-query`` on the finished rootfs) become the manifest's
``provenance.packages``.

Built rootfs tarballs are cached by (suite, package set, the sources used, the ``Date:`` of the
host's InRelease files for them): ``$PIRUS_BASE_CACHE`` or ``$XDG_CACHE_HOME/pirus/bases``.
A cache entry appears whole (built in a temporary folder, then renamed) or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .rootfs import BuildError, RootfsEntry, exists_as_file, put, resolve

#: A sources file (deb822 ``.sources`` or one-line ``.list``) used instead of the host's.
SOURCES_ENV = "PIRUS_APT_SOURCES"
#: The folder of cached bases.
CACHE_ENV = "PIRUS_BASE_CACHE"
#: Added to every package set: its static busybox is the container's init (LXD starts
#: /sbin/init; a Debian rootfs without an init system has none) when nothing else provides one.
INIT_PACKAGE = "busybox-static"

_SUITE = re.compile(r"^[a-z][a-z0-9.-]*$")
# Debian policy's package names, optionally pinned to a version (apt's name=version).
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
_EXCLUDED = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
             "/usr/share/locale/*", "/usr/share/lintian/*", "/usr/share/linda/*")
# Kept out of /usr/share/doc: the licences (copyright files) must ship with the binaries.
_INCLUDED = ("/usr/share/doc/*/copyright",)
# Run on the finished rootfs ($1): logs and backups that only describe this build.
_CLEANUP = ('rm -rf "$1"/var/log/* "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* '
            '"$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/var/cache/ldconfig/*')

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DebianBase:
    """A cached Debian rootfs: the tarball and the exact versions installed in it."""

    suite: str
    rootfs: Path
    packages: dict[str, str]


def parse_request(base: str, packages: object) -> tuple[str, list[str]]:
    """``(suite, sorted packages)`` of ``base: debian:<suite>`` and ``packages``; raises
    :class:`BuildError` naming what is wrong."""
    suite = base[len("debian:"):]
    if not _SUITE.match(suite):
        raise BuildError(f"base {base!r}: expected debian:<suite>, like debian:bookworm")
    problem = package_list_problem(packages)
    if problem:
        raise BuildError(problem)
    assert isinstance(packages, list)
    return suite, sorted(set(packages))


def package_list_problem(packages: object) -> str | None:
    """Why ``packages`` is not a list of Debian package names (None when it is)."""
    if packages is None:
        return None
    if not isinstance(packages, list):
        return "packages: must be a list of Debian package names"
    for name in packages:
        if not isinstance(name, str) or not _PACKAGE.match(name):
            return f"packages: {name!r} is not a Debian package name (like bcftools)"
    return None


# -- the host's apt sources ----------------------------------------------------------------
def host_source_files() -> list[Path]:
    """The apt sources files used: ``$PIRUS_APT_SOURCES``, else the host's."""
    if os.environ.get(SOURCES_ENV):
        return [Path(os.environ[SOURCES_ENV])]
    folder = Path("/etc/apt/sources.list.d")
    found = sorted(p for p in folder.glob("*") if p.suffix in (".sources", ".list"))
    main = Path("/etc/apt/sources.list")
    return ([main] if main.is_file() else []) + found


def _stanzas(path: Path) -> list[dict[str, str]]:
    """The sources of one file as deb822 fields (one-line ``deb`` entries converted)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BuildError(f"apt sources {path}: {exc.strerror}") from exc
    found: list[dict[str, str]] = []
    if path.suffix == ".sources":
        for block in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            last = ""
            for line in block.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and last:
                    fields[last] += "\n" + line
                    continue
                key, _, value = line.partition(":")
                last = key.strip()
                fields[last] = value.strip()
            if fields and fields.get("Enabled", "yes").lower() != "no":
                found.append(fields)
        return found
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        options = {}
        if words[1].startswith("["):
            end = next(i for i, w in enumerate(words) if w.endswith("]"))
            for option in " ".join(words[1:end + 1]).strip("[]").split():
                key, _, value = option.partition("=")
                options[{"signed-by": "Signed-By", "arch": "Architectures"}.get(key, key)] = value
            words = [words[0], *words[end + 1:]]
        if len(words) >= 3:
            found.append({"Types": "deb", "URIs": words[1], "Suites": words[2],
                          "Components": " ".join(words[3:]), **options})
    return found


def suite_sources(suite: str, files: Sequence[Path]) -> str:
    """A deb822 sources file of the ``deb`` entries serving ``suite`` and its companions
    (``-updates``, ``-security``...); raises :class:`BuildError` when no entry serves the suite
    itself (a bookworm-backports line alone does not make bookworm)."""
    stanzas = [f for path in files for f in _stanzas(path)
               if "deb" in f.get("Types", "").split()]
    served = {s for fields in stanzas for s in fields.get("Suites", "").split()}
    if suite not in served:
        raise BuildError(f"unknown suite {suite!r}: the apt sources ({', '.join(map(str, files))})"
                         f" serve {', '.join(sorted(served)) or 'nothing'}")
    kept: list[str] = []
    for fields in stanzas:
        mine = [s for s in fields.get("Suites", "").split()
                if s == suite or s.startswith(suite + "-")]
        if mine:
            stanza = {**fields, "Types": "deb", "Suites": " ".join(mine)}
            kept.append("".join(f"{k}: {v}\n" for k, v in stanza.items() if k != "Enabled"))
    return "\n".join(kept)


def _release_dates(sources: str) -> list[str]:
    """The ``Date:`` of the host's InRelease files for these sources (the mirror state the
    host last saw): a newer mirror snapshot, once the host updates, makes a new cache key."""
    lists = Path("/var/lib/apt/lists")
    dates = []
    for fields in re.split(r"\n\s*\n", sources):
        uri = re.search(r"^URIs: (.*)$", fields, re.M)
        suites = re.search(r"^Suites: (.*)$", fields, re.M)
        if not uri or not suites:
            continue
        for base_uri in uri.group(1).split():
            prefix = re.sub(r"^\w+://", "", base_uri).rstrip("/").replace("/", "_")
            for suite in suites.group(1).split():
                release = lists / f"{prefix}_dists_{suite}_InRelease"
                try:
                    head = release.read_text(encoding="utf-8", errors="replace")[:4096]
                except OSError:
                    continue
                date = re.search(r"^Date: (.*)$", head, re.M)
                dates.append(f"{release.name} {date.group(1) if date else ''}")
    return dates


# -- building and caching ----------------------------------------------------------------
def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "pirus" / "bases"


def cache_key(suite: str, packages: Sequence[str], sources: str) -> str:
    state = {"suite": suite, "packages": sorted(packages), "sources": sources,
             "releases": _release_dates(sources), "format": 1,
             "epoch": os.environ.get("SOURCE_DATE_EPOCH", "")}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def debian_base(base: str, packages: object, progress: Progress | None = None) -> DebianBase:
    """The rootfs of ``base: debian:<suite>`` with ``packages``: from the cache, or built
    with mmdebstrap (minutes) and cached. Raises :class:`BuildError` with one line naming the
    cause (unknown suite or package, unreachable source, missing mmdebstrap)."""
    suite, wanted = parse_request(base, packages)
    sources = suite_sources(suite, host_source_files())
    key = cache_key(suite, wanted, sources)
    entry = cache_dir() / key
    if (entry / "provenance.json").is_file():
        if progress:
            progress(f"Debian base {suite} [{', '.join(wanted)}]: cached ({entry})")
        return _load(suite, entry)
    unknown = _unknown_to_host_apt(wanted, sources)
    if unknown:
        raise BuildError(f"base debian:{suite}: unknown package {', '.join(unknown)} (not in "
                         "the apt sources for this suite, as of the host's last apt update)")
    if shutil.which("mmdebstrap") is None:
        raise BuildError("base debian:...: mmdebstrap not found (apt-get install mmdebstrap)")
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=entry.parent))
    try:
        (work / "debian.sources").write_text(sources, encoding="utf-8")
        _mmdebstrap(suite, [*wanted, INIT_PACKAGE], work, progress)
        try:
            os.rename(work, entry)
        except OSError:
            if not (entry / "provenance.json").is_file():  # not a concurrent build's
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _load(suite, entry)


def _unknown_to_host_apt(packages: Sequence[str], sources: str) -> list[str]:
    """The packages the host's apt has never heard of, from its package lists: a second's
    check instead of minutes of mmdebstrap. Empty (mmdebstrap will tell) unless the host's
    lists cover every source used: with $PIRUS_APT_SOURCES, without apt-cache or with a
    source the host never fetched, apt-cache cannot answer for these sources."""
    pairs = sum(len(re.findall(r"^URIs: (.*)$", f, re.M)[0].split()) *
                len(re.findall(r"^Suites: (.*)$", f, re.M)[0].split())
                for f in re.split(r"\n\s*\n", sources) if "URIs:" in f and "Suites:" in f)
    if (os.environ.get(SOURCES_ENV) or shutil.which("apt-cache") is None
            or len(_release_dates(sources)) != pairs):
        return []
    names = sorted({p.split("=", 1)[0] for p in packages})
    result = subprocess.run(["apt-cache", "policy", "--", *names], capture_output=True,
                            text=True, errors="replace")
    if result.returncode != 0:
        return []
    known = {line[:-1] for line in result.stdout.splitlines()
             if line.endswith(":") and not line.startswith(" ")}
    return [name for name in names if name not in known]


def _load(suite: str, entry: Path) -> DebianBase:
    packages = json.loads((entry / "provenance.json").read_text(encoding="utf-8"))
    return DebianBase(suite=suite, rootfs=entry / "rootfs.tar", packages=packages)


def _mmdebstrap(suite: str, packages: list[str], work: Path, progress: Progress | None) -> None:
    versions = work / "versions.tsv"
    command = [
        "mmdebstrap", "--variant=essential", "--format=tar", "--skip=output/dev",
        "--include=" + ",".join(packages),
        *[f"--dpkgopt=path-exclude={p}" for p in _EXCLUDED],
        *[f"--dpkgopt=path-include={p}" for p in _INCLUDED],
        # The versions installed, read by dpkg-query on the finished rootfs, then cleanup.
        "--customize-hook=dpkg-query --admindir=\"$1/var/lib/dpkg\" -W "
        f"-f '${{Package}}\\t${{Version}}\\n' > {_quote(versions)}",
        f"--customize-hook={_CLEANUP}",
        suite, str(work / "rootfs.tar"), str(work / "debian.sources"),
    ]
    if progress:
        progress(f"Debian base {suite} [{', '.join(packages)}]: building with mmdebstrap "
                 "(a few minutes; cached afterwards)")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        line = line.rstrip()
        lines.append(line)
        if progress and line.startswith("I: ") and ("..." in line or "success" in line):
            progress(f"  mmdebstrap: {line[3:]}")
    if proc.wait() != 0:
        raise BuildError(_failure(suite, lines))
    installed = {}
    for row in versions.read_text(encoding="utf-8").splitlines():
        name, _, version = row.partition("\t")
        if name and version:
            installed[name] = version
    (work / "provenance.json").write_text(json.dumps(installed, sort_keys=True),
                                          encoding="utf-8")
    versions.unlink()


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def _failure(suite: str, lines: list[str]) -> str:
    """One line naming why mmdebstrap failed, from apt's messages."""
    text = "\n".join(lines)
    unreachable = (re.search(r"Failed to fetch (\S+)", text) or
                   re.search(r"(?:Could not (?:resolve|connect to)|Temporary failure resolving"
                             r"|Unable to connect to) (\S+)", text))
    if unreachable or "Some index files failed to download" in text:
        where = unreachable.group(1).strip("'") if unreachable else "an apt source"
        return f"base debian:{suite}: apt source unreachable ({where})"
    # After the sources: an unreachable one also leaves its packages unknown.
    missing = re.findall(r"Unable to locate package (\S+)", text)
    if missing:
        return (f"base debian:{suite}: unknown package {', '.join(sorted(set(missing)))} "
                "(not in the apt sources for this suite)")
    errors = [line[3:] for line in lines if line.startswith("E: ")]
    return f"base debian:{suite}: mmdebstrap failed: " + (errors[0] if errors else
                                                         (lines[-1] if lines else "no output"))


def init_entries(entries: dict[str, RootfsEntry], inittab: bytes) -> None:
    """``/sbin/init`` -> busybox and its inittab, unless the rootfs has an init already."""
    if exists_as_file(entries, "/sbin/init"):
        return
    put(entries, RootfsEntry.symlink(resolve(entries, "sbin/init"), "/bin/busybox"))
    if not exists_as_file(entries, "/etc/inittab"):
        put(entries, RootfsEntry.file(resolve(entries, "etc/inittab"), inittab))
