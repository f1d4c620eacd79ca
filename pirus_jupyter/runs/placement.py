"""Placement of runs on LXD cluster members.

LXD places instances but keeps no queue and ignores CPU and memory when it does, so Pirus's own
queue decides and passes ``target=`` when it creates the container. A member is a candidate
while it is Online and not suspected (a create or start sent to it just failed to connect); a
run fits when the member has a free run slot and room for the run's CPU and memory limits next
to the Pirus runs it already holds. Among the members where it fits, the least loaded one wins,
so runs spread over the cluster.

A member's capacity comes from the ``member_capacity`` setting (``{"*": {...}, "m1": {...}}``,
keys ``runs``, ``cpu``, ``memory``) and otherwise from its resources as LXD reports them
(CPU threads and memory; as many runs as CPU threads). Pure functions: unit-tested without LXD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..backend.base import Member

# Seconds a member whose create/start failed to connect is avoided (LXD takes up to ~20 s to
# mark a lost member OFFLINE; launches sent to it meanwhile fail).
SUSPECT_SECONDS = 30.0

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
          "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(value: Any, total: int | None = None) -> int | None:
    """An LXD size (``512MB``, ``1GiB``, ``50%`` of ``total``) in bytes; None when unset."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().replace(" ", "")
    if text.endswith("%"):
        if total is None:
            return None
        return int(total * float(text[:-1]) / 100)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def cpu_count(value: Any) -> int | None:
    """CPUs asked by an LXD ``limits.cpu`` (``2``, ``0-3``, ``1,3``); None when unset."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        if not low.strip().isdigit() or (high and not high.strip().isdigit()):
            raise ValueError(f"not a CPU limit: {value!r}")
        count += int(high) - int(low) + 1 if high else 1
    return count


def format_bytes(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


@dataclass
class Capacity:
    runs: int
    cpu: int | None
    memory: int | None


@dataclass
class Load:
    """What the active Pirus runs on one member hold."""

    runs: int = 0
    cpu: int = 0
    memory: int = 0


@dataclass
class Demand:
    cpu: int = 0
    memory: int = 0


def capacity(member: Member, setting: dict[str, Any]) -> Capacity:
    spec = {**(setting.get("*") or {}), **(setting.get(member.name) or {})}
    runs = int(spec.get("runs") or member.cpu or 1)
    cpu = cpu_count(spec["cpu"]) if spec.get("cpu") not in (None, "") else member.cpu
    memory = (parse_bytes(spec["memory"], member.memory)
              if spec.get("memory") not in (None, "") else member.memory)
    return Capacity(runs=max(1, runs), cpu=cpu, memory=memory)


def demand(limits: dict[str, Any], cap: Capacity) -> Demand:
    return Demand(cpu=cpu_count(limits.get("cpu")) or 0,
                  memory=parse_bytes(limits.get("memory"), cap.memory) or 0)


def add_load(load: Load, limits: dict[str, Any], cap: Capacity) -> None:
    need = demand(limits, cap)
    load.runs += 1
    load.cpu += need.cpu
    load.memory += need.memory


def _never_fits(need: Demand, cap: Capacity) -> str | None:
    if need.memory and cap.memory is not None and need.memory > cap.memory:
        return f"memory {format_bytes(need.memory)} > {format_bytes(cap.memory)}"
    if need.cpu and cap.cpu is not None and need.cpu > cap.cpu:
        return f"{need.cpu} CPUs > {cap.cpu}"
    return None


def choose(members: list[Member], loads: dict[str, Load], limits: dict[str, Any],
           setting: dict[str, Any], *, target: str | None = None,
           exclude: set[str] | frozenset[str] = frozenset()) -> tuple[str | None, str | None]:
    """The member to run on now: ``(name, None)``. ``(None, None)`` when the run must wait
    (every member it fits is busy, offline or excluded); ``(None, reason)`` when no member
    could ever hold it."""
    candidates = [m for m in members if target is None or m.name == target]
    if target is not None and not candidates:
        return None, f"no cluster member is named {target!r}"
    ready: list[tuple[float, int, str]] = []
    refused: list[str] = []
    for member in candidates:
        cap = capacity(member, setting)
        need = demand(limits, cap)
        why = _never_fits(need, cap)
        if why:
            refused.append(f"{member.name}: {why}")
            continue
        if not member.online or member.name in exclude:
            continue
        load = loads.get(member.name, Load())
        if load.runs + 1 > cap.runs:
            continue
        if need.memory and cap.memory is not None and load.memory + need.memory > cap.memory:
            continue
        if need.cpu and cap.cpu is not None and load.cpu + need.cpu > cap.cpu:
            continue
        ready.append((load.runs / cap.runs, load.runs, member.name))
    if ready:
        return min(ready)[2], None
    if refused and len(refused) == len(candidates):
        return None, "no cluster member can hold this run (" + "; ".join(refused) + ")"
    return None, None
