"""Pipeline packages: the manifest and its schema (manifest), a source folder (project), the
rootfs (rootfs, bases), writing the tarball (tarwriter), building (build), checking a package
or folder offline (validate) and reading one without extracting it at install (inspect)."""

from .build import BuildError, build_package, build_package_from_parts
from .manifest import validate_manifest

__all__ = ["BuildError", "build_package", "build_package_from_parts", "validate_manifest"]
