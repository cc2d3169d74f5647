"""Persistent state behind one interface (:class:`Store`), on SQLite or PostgreSQL."""

from __future__ import annotations

from .base import Change, Conflict, FeedPage, NotFound, Store, StoreError, StoreUnavailable
from .sql import SQLStore
from .urls import DatabaseURL

__all__ = [
    "Change",
    "Conflict",
    "DatabaseURL",
    "FeedPage",
    "NotFound",
    "SQLStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]


def open_store(url: str) -> Store:
    """The store for a database URL as users write it."""
    return SQLStore(url)
