"""Errors raised by the memory store. Messages are one line: what, where, what to do."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of memory store errors."""


class FormatVersionError(StoreError):
    """The store on disk was written by an incompatible version."""


class EmbedderMismatch(StoreError, ValueError):
    """Vectors from one embedder were offered to a store built with another."""

    def __init__(self, message: str, built_with: str | None = None) -> None:
        super().__init__(message)
        self.built_with = built_with


class StoreLocked(StoreError, TimeoutError):
    """Another process holds the store's write lock."""
