"""Pipeline packages: the manifest, building a package from a folder, checking one offline,
and reading one without extracting it (what the server does at install)."""

from .build import BuildError, build_package, build_package_from_parts, validate_manifest

__all__ = ["BuildError", "build_package", "build_package_from_parts", "validate_manifest"]
