"""Uploads: the TUS 1.0.0 protocol and the store of partial and finished uploads."""

from .service import UploadService

__all__ = ["UploadService"]
