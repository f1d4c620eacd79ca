"""The Debian base's offline parts: apt sources read (deb822 and one-line), the entries of one
suite picked, package names checked, the cache key. No mmdebstrap, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from pirus_jupyter.packaging.debian import (
    cache_key,
    package_list_problem,
    parse_request,
    suite_sources,
)
from pirus_jupyter.packaging.rootfs import BuildError

pytestmark = pytest.mark.fast

DEB822 = """\
Types: deb deb-src
# a comment
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Enabled: no
Types: deb
URIs: http://disabled.invalid/debian
Suites: bookworm
"""
ONE_LINE = """\
deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm main contrib # x
deb-src http://mirror.invalid/debian bookworm main
# deb http://commented.invalid/debian bookworm main
deb http://other.invalid/nodesource nodistro main
"""


@pytest.fixture
def sources(tmp_path: Path) -> list[Path]:
    (tmp_path / "debian.sources").write_text(DEB822)
    (tmp_path / "extra.list").write_text(ONE_LINE)
    return [tmp_path / "debian.sources", tmp_path / "extra.list"]


def test_suite_sources_keep_the_suite_and_its_companions(sources) -> None:
    text = suite_sources("bookworm", sources)
    assert text == (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n"
        "Components: main contrib\nArchitectures: amd64\nSigned-By: /k.gpg\n")
    assert "Suites: trixie\n" in suite_sources("trixie", sources)


def test_unknown_suite_names_what_the_sources_serve(sources) -> None:
    with pytest.raises(BuildError) as caught:
        suite_sources("sid", sources)
    assert str(caught.value) == (
        f"unknown suite 'sid': the apt sources ({sources[0]}, {sources[1]}) serve bookworm, "
        "bookworm-security, bookworm-updates, nodistro, trixie")
    with pytest.raises(BuildError, match="unknown suite 'security'"):
        suite_sources("security", sources)


@pytest.mark.parametrize(("packages", "problem"), [
    (None, None),
    ([], None),
    (["bcftools", "libc6", "g++", "python3.11", "seqkit=2.3.1+ds-1+b4"], None),
    ("bcftools", "packages: must be a list of Debian package names"),
    (["bcftools,seqkit"], "packages: 'bcftools,seqkit' is not a Debian package name (like "
                          "bcftools)"),
    (["--option"], "packages: '--option' is not a Debian package name (like bcftools)"),
    (["Bcftools"], "packages: 'Bcftools' is not a Debian package name (like bcftools)"),
    ([3], "packages: 3 is not a Debian package name (like bcftools)"),
])
def test_package_names(packages, problem) -> None:
    assert package_list_problem(packages) == problem


def test_parse_request() -> None:
    assert parse_request("debian:bookworm", ["seqkit", "bcftools", "seqkit"]) == (
        "bookworm", ["bcftools", "seqkit"])
    with pytest.raises(BuildError, match="expected debian:<suite>, like debian:bookworm"):
        parse_request("debian:", ["x1"])
    with pytest.raises(BuildError, match="expected debian:<suite>"):
        parse_request("debian:../etc", ["x1"])


def test_cache_key() -> None:
    key = cache_key("bookworm", ["a1", "b1"], "Types: deb\n")
    assert key == cache_key("bookworm", ["b1", "a1"], "Types: deb\n")  # a set
    assert key != cache_key("bookworm", ["a1"], "Types: deb\n")
    assert key != cache_key("trixie", ["a1", "b1"], "Types: deb\n")
    assert key != cache_key("bookworm", ["a1", "b1"], "Types: deb\nURIs: x\n")


@pytest.mark.parametrize(("spec", "problems"), [
    ({"base": "debian:bookworm", "packages": ["bcftools"]}, []),
    ({"base": "debian:bookworm", "packages": "bcftools"},
     ["pirus.yaml: packages: must be a list of Debian package names"]),
    ({"base": "busybox", "packages": ["bcftools"]},
     ["pirus.yaml: packages: only a debian:<suite> base installs packages"]),
])
def test_validate_folder_without_build(tmp_path, spec, problems) -> None:
    import yaml

    from pirus_jupyter.packaging.validate import validate_folder

    (tmp_path / "pirus.yaml").write_text(yaml.safe_dump({"name": "n", "run": "true", **spec}))
    assert [str(p) for p in validate_folder(tmp_path, build=False)] == problems


@pytest.mark.parametrize(("lines", "message"), [
    (["I: running apt-get update...", "E: Unable to locate package nope",
      "E: apt-get install failed"],
     "base debian:bookworm: unknown package nope (not in the apt sources for this suite)"),
    (["E: Failed to fetch http://h.invalid/debian/dists/bookworm/InRelease  Could not "
      "resolve 'h.invalid'", "E: Unable to locate package bcftools"],
     "base debian:bookworm: apt source unreachable "
     "(http://h.invalid/debian/dists/bookworm/InRelease)"),
    (["I: x", "E: something else", "E: later"],
     "base debian:bookworm: mmdebstrap failed: something else"),
    ([], "base debian:bookworm: mmdebstrap failed: no output"),
])
def test_mmdebstrap_failure_in_one_line(lines, message) -> None:
    from pirus_jupyter.packaging.debian import _failure

    assert _failure("bookworm", lines) == message
