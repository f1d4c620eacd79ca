"""Runs: the queue, each run's life in its container, and where runs are placed on a cluster."""

from .manager import RunManager

__all__ = ["RunManager"]
