"""Where runs' containers live: the interface (:mod:`.base`) and its LXD implementation
(:mod:`.lxd`, the only module that imports pylxd)."""

from .base import Backend, ContainerSpec, ContainerState, DiskMount, FileEntry, Member

__all__ = ["Backend", "ContainerSpec", "ContainerState", "DiskMount", "FileEntry", "Member"]
