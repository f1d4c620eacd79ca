"""Bases from OCI images: ``oci-archive:PATH``, ``docker-archive:PATH`` and ``oci:DIR[:TAG]``.

skopeo copies the image (for this host's architecture when it is a multi-arch index) into a
temporary OCI layout; its layers are then flattened here, in order, honouring whiteouts
(``.wh.NAME`` and ``.wh..wh..opq``), into rootfs entries that stream from the layer tarballs:
nothing is extracted on the host and numeric owners are kept. The image config's ``Env``,
``WorkingDir``, ``Entrypoint`` and ``Cmd`` become the pirus fields ``env``, ``workdir`` and
``run`` (when pirus.yaml sets none); its digest and tags go to ``provenance.image``.

An image without ``/sbin/init`` (or ``/bin/sh``) gets the host's static busybox at
``/.pirus-tools/busybox``, started as init (``/sbin/init`` is then a link to it) and as the
wrapper's shell (``shell: /.pirus-tools/sh``): the image's own files are left as they are.
"""

from __future__ import annotations

import json
import platform
import posixpath
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from .rootfs import BuildError, RootfsEntry, add_parents, exists_as_file, resolve

#: The base prefixes of pirus.yaml handled here (skopeo's transport names).
OCI_TRANSPORTS = ("oci-archive:", "docker-archive:", "oci:")
#: Where Pirus puts what it adds to an image: a folder no image uses, outside /.pirus (the
#: run's state folder, mounted over at run time).
TOOLS_DIR = ".pirus-tools"
TOOLS_SHELL = f"/{TOOLS_DIR}/sh"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
}
# Go's names of this host's architecture (the image config's "architecture").
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_oci_base(base: str) -> bool:
    return base.startswith(OCI_TRANSPORTS)


def absolute_reference(base: str, source_dir: Path) -> str:
    """The base of pirus.yaml with its path made absolute (relative to the source folder)."""
    transport, _, rest = base.partition(":")
    path, sep, name = rest.partition(":")  # skopeo's PATH[:REFERENCE]
    return f"{transport}:{(source_dir / path).resolve()}{sep}{name}"


def image_path(reference: str) -> Path:
    """The file or folder an OCI base names (its PATH, without the :REFERENCE)."""
    return Path(reference.partition(":")[2].partition(":")[0])


def host_architecture() -> str:
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)


def _skopeo_message(stderr: str) -> str:
    """skopeo's fatal message on one line (it logs ``time=... level=fatal msg="..."``)."""
    for line in reversed(stderr.strip().splitlines()):
        found = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
        if found:
            return found.group(1).replace('\\"', '"')
        if line.strip():
            return line.strip()
    return "no message"


# skopeo's words for the usual bad inputs, and what they mean to the pipeline's author.
_SKOPEO_MEANINGS = (
    ("index.json: no such file", "not an OCI image (no index.json)"),
    ("manifest.json: file does not exist", "not a docker-archive (no manifest.json)"),
    ("unexpected EOF", "the archive is truncated or corrupt"),
    ("no descriptor found for reference", "no image with this tag"),
)


def _copy_to_layout(reference: str, layout: Path) -> None:
    """``skopeo copy`` the image into an OCI layout tagged ``pirus`` (this host's architecture
    is picked from a multi-arch index). Local sources only: no signature policy applies."""
    path = image_path(reference)
    if not path.exists():
        raise BuildError(f"base {reference}: {path} not found")
    if shutil.which("skopeo") is None:
        raise BuildError("skopeo not found: apt-get install skopeo (OCI bases need it)")
    # skopeo unpacks an oci-archive in its --tmpdir: our temporary folder, removed with it.
    result = subprocess.run(
        ["skopeo", "--tmpdir", str(layout.parent), "--insecure-policy", "copy", "--quiet",
         reference, f"oci:{layout}:pirus"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        message = _skopeo_message(result.stderr)
        # "initializing source oci-archive:/x.tar:: open ...": the reference is said already.
        message = re.sub(r"^initializing source \S+?:? ", "", message)
        for found, meaning in _SKOPEO_MEANINGS:
            if found in message:
                message = f"{meaning} ({message})"
                break
        raise BuildError(f"base {reference}: not a readable image: {message}")


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, value = str(digest).partition(":")
    if not re.fullmatch(r"[a-z0-9]+", algorithm) or not re.fullmatch(r"[a-f0-9]+", value):
        raise BuildError(f"invalid digest {digest!r} in the image")
    return layout / "blobs" / algorithm / value


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"the image's {what} cannot be read: {exc}") from exc
    if not isinstance(loaded, dict):
        raise BuildError(f"the image's {what} is not a JSON object")
    return loaded


def _tags(reference: str) -> list[str]:
    """The names an archive gives its image: docker-archive's RepoTags, an OCI ref name."""
    transport, _, rest = reference.partition(":")
    path, _, name = rest.partition(":")
    try:
        if transport == "docker-archive":
            with tarfile.open(path) as tar:
                stream = tar.extractfile("manifest.json")
                entries = json.load(stream) if stream is not None else []
            return sorted({str(t) for e in entries for t in (e.get("RepoTags") or [])})
        if name or transport == "oci":
            return [name] if name else []
        with tarfile.open(path) as tar:
            stream = tar.extractfile("index.json")
            index = json.load(stream) if stream is not None else {}
        return sorted({str(m["annotations"]["org.opencontainers.image.ref.name"])
                       for m in index.get("manifests") or []
                       if "org.opencontainers.image.ref.name" in (m.get("annotations") or {})})
    except (OSError, KeyError, ValueError, TypeError, AttributeError, tarfile.TarError):
        return []  # names are provenance only; skopeo already read the image itself


def _open_layer(path: Path, kind: str, stack: ExitStack, workdir: Path) -> tarfile.TarFile:
    if kind == "gzip":
        # Random access for the sorted output: decompressed once to a temporary file.
        import gzip

        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".pirus-layer-",
                                                                   dir=workdir)))
        plain = tmp / "layer.tar"
        try:
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError) as exc:
            raise BuildError(f"an image layer is corrupt: {exc}") from exc
        path = plain
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the caller's ExitStack
    except tarfile.TarError as exc:
        raise BuildError(f"an image layer is not a tar archive: {exc}") from exc
    stack.callback(tar.close)
    return tar


def _remove_tree(entries: dict[str, RootfsEntry], path: str, *, keep_top: bool) -> None:
    prefix = path + "/"
    for name in [n for n in entries if n.startswith(prefix)]:
        del entries[name]
    if not keep_top:
        entries.pop(path, None)


def _apply_layer(entries: dict[str, RootfsEntry], tar: tarfile.TarFile,
                 links: dict[str, RootfsEntry]) -> None:
    """One layer over the entries below it: whiteouts first (they hide lower layers only),
    then the layer's own members."""
    from .bases import _entry_from_member, _norm_member_name

    try:
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BuildError(f"an image layer is corrupt: {exc}") from exc
    own: list[tuple[str, tarfile.TarInfo]] = []
    for member in members:
        name = _norm_member_name(member.name)
        if not name:
            continue
        folder, base = posixpath.split(name)
        folder = resolve(entries, folder) if folder else folder
        if base == _OPAQUE and folder:
            _remove_tree(entries, folder, keep_top=True)
        elif base == _OPAQUE:
            entries.clear()
        elif base.startswith(_WHITEOUT):
            _remove_tree(entries, posixpath.join(folder, base[len(_WHITEOUT):]),
                         keep_top=False)
        else:
            own.append((posixpath.join(folder, base), member))
    for name, member in own:
        # As a runtime unpacks a layer: through the symlinked folders below it (lib ->
        # usr/lib then lib/x is usr/lib/x), never outside the rootfs.
        name = resolve(entries, name)
        entry = _entry_from_member(name, tar, member)
        if entry is None:
            entries.pop(name, None)
            continue
        if entry.kind != "dir":
            _remove_tree(entries, name, keep_top=False)  # a file replacing a folder
        if entry.kind == "hardlink":
            entry = replace(entry, linkname=resolve(entries, entry.linkname))
            # What the link meant when it was made: an upper layer may replace its target.
            target = entries.get(entry.linkname)
            if target is None or target.kind != "file":
                raise BuildError(f"image layer: hardlink /{name} points at missing file "
                                 f"/{entry.linkname}")
            links[name] = target
        elif name in links:
            del links[name]
        entries[name] = entry


def _settle_hardlinks(entries: dict[str, RootfsEntry], links: dict[str, RootfsEntry]) -> None:
    """A hardlink whose target an upper layer replaced or removed keeps the old content."""
    for name, target in links.items():
        entry = entries.get(name)
        if entry is None or entry.kind != "hardlink":
            continue
        if entries.get(entry.linkname) is not target:
            entries[name] = replace(target, path=name, mode=entry.mode, uid=entry.uid,
                                    gid=entry.gid)


def _env_mapping(env: Any) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in env or []:
        name, sep, value = str(item).partition("=")
        if sep and _ENV_NAME.match(name) and "\x00" not in value:
            mapping[name] = value
    return mapping


def _resolve_program(entries: dict[str, RootfsEntry], program: str, path: str) -> str:
    """A bare program name found on the image's PATH, as an absolute path (so that Pirus's
    busybox shell runs the image's program even when it shares a name with an applet)."""
    if "/" in program:
        return program
    for folder in path.split(":"):
        if folder.startswith("/"):
            candidate = posixpath.join(folder, program)
            if exists_as_file(entries, candidate.lstrip("/")):
                return candidate
    return program


def _supply_tools(entries: dict[str, RootfsEntry], busybox: Path) -> str | None:
    """Add Pirus's busybox where the image lacks an init or a shell; returns the shell to
    start the wrapper with when it is not the image's /bin/sh."""
    has_init = exists_as_file(entries, "sbin/init")
    has_sh = exists_as_file(entries, "bin/sh")
    if has_init and has_sh:
        return None
    from .bases import busybox_rootfs_entries

    # The host busybox checked as for the busybox base (static, with sh and init).
    checked = {e.path: e for e in busybox_rootfs_entries(busybox)}
    tool = f"{TOOLS_DIR}/busybox"
    entries[TOOLS_DIR] = RootfsEntry.directory(TOOLS_DIR)
    entries[tool] = replace(checked["bin/busybox"], path=tool)
    shell = None
    if not has_sh:
        entries[f"{TOOLS_DIR}/sh"] = RootfsEntry.symlink(f"{TOOLS_DIR}/sh", "busybox")
        shell = TOOLS_SHELL
    if not has_init:
        # busybox picks its applet from the name it is started as: /sbin/init is init.
        init = resolve(entries, "sbin/init")
        entries[init] = RootfsEntry.symlink(init, f"/{tool}")
        inittab = resolve(entries, "etc/inittab")
        if inittab not in entries:
            entries[inittab] = replace(checked["etc/inittab"], path=inittab)
    # Mount points LXD expects; images made for Docker often leave them out.
    for folder, mode in (("dev", 0o755), ("proc", 0o555), ("sys", 0o555), ("tmp", 0o1777)):
        path = resolve(entries, folder)
        entries.setdefault(path, RootfsEntry.directory(path, mode))
    add_parents(entries)
    return shell


def open_oci(reference: str, stack: ExitStack, workdir: Path, busybox: Path,
             progress: Callable[[str], None] | None = None
             ) -> tuple[dict[str, RootfsEntry], dict[str, Any], dict[str, str]]:
    """The flattened rootfs of an OCI image, the pirus fields it supplies by default (``run``,
    ``env``, ``workdir``, ``shell``, ``provenance``) and its LXD image properties.
    ``progress`` hears of the long steps (the copy, each layer)."""
    say = progress or (lambda _line: None)
    say(f"Copying image {reference} ...")
    layout = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".pirus-oci-",
                                                                  dir=workdir)))
    _copy_to_layout(reference, layout / "image")
    layout = layout / "image"
    index = _read_json(layout / "index.json", "index")
    manifests = index.get("manifests") or []
    if len(manifests) != 1 or not isinstance(manifests[0], dict):
        raise BuildError(f"base {reference}: expected one image, found {len(manifests)}")
    digest = str(manifests[0].get("digest"))
    manifest = _read_json(_blob(layout, digest), "manifest")
    config_digest = str((manifest.get("config") or {}).get("digest"))
    config = _read_json(_blob(layout, config_digest), "config")
    arch = str(config.get("architecture") or "")
    if arch != host_architecture():
        raise BuildError(f"base {reference}: the image is for {arch or 'an unknown'} "
                         f"architecture, this host runs {host_architecture()}")
    entries: dict[str, RootfsEntry] = {}
    links: dict[str, RootfsEntry] = {}
    layers = manifest.get("layers") or []
    for number, layer in enumerate(layers, 1):
        media = str(layer.get("mediaType"))
        size = layer.get("size")
        say(f"Reading layer {number}/{len(layers)}"
            + (f" ({size / 1e6:.1f} MB) ..." if isinstance(size, int) else " ..."))
        kind = _LAYER_TYPES.get(media)
        if kind is None:
            raise BuildError(f"base {reference}: layers of type {media} are not supported "
                             "(gzip or plain tar only)")
        _apply_layer(entries, _open_layer(_blob(layout, layer.get("digest")), kind, stack,
                                          workdir), links)
    _settle_hardlinks(entries, links)
    add_parents(entries)

    run_config = config.get("config") or {}
    env = _env_mapping(run_config.get("Env"))
    defaults: dict[str, Any] = {}
    if env:
        defaults["env"] = env
    workdir_in_image = str(run_config.get("WorkingDir") or "")
    if workdir_in_image.startswith("/"):
        defaults["workdir"] = posixpath.normpath(workdir_in_image)
    argv = [str(a) for a in (run_config.get("Entrypoint") or []) + (run_config.get("Cmd") or [])]
    if argv:
        argv[0] = _resolve_program(entries, argv[0], env.get("PATH", "/usr/bin:/bin"))
        defaults["run"] = shlex.join(argv)
    shell = _supply_tools(entries, busybox)
    if shell:
        defaults["shell"] = shell
    # The file's name only: the builder's folders are nobody's business.
    image: dict[str, Any] = {
        "source": f"{reference.partition(':')[0]}:{image_path(reference).name}",
        "digest": digest, "config": config_digest, "tags": _tags(reference),
        "architecture": arch, "os": str(config.get("os") or ""),
    }
    if config.get("created"):
        image["created"] = str(config["created"])
    if run_config.get("User"):
        # Not applied: Pirus runs the command as the container's (unprivileged) root.
        image["user"] = str(run_config["User"])
    defaults["provenance"] = {"image": image}
    properties = {"os": str(config.get("os") or "linux"),
                  "release": (image["tags"] or [digest])[0]}
    return entries, defaults, properties


def oci_problem(base: str) -> str | None:
    """What is wrong with an OCI base's spelling, for validate; None when it reads well."""
    transport, _, rest = base.partition(":")
    if not rest.partition(":")[0]:
        example = "oci:layout-folder:tag" if transport == "oci" else f"{transport}:image.tar"
        return f"base: {transport}: needs a path, like {example}"
    return None


