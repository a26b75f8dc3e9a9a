"""Which store a URL names, opened and migrated: `sqlite:///PATH`, `postgresql://...` or `memory`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vigil.server.store.base import Store
from vigil.server.store.records import StoreError
from vigil.server.store.sqlite import SqliteStore
from vigil.server.store.urls import redact


def open_store(url: str, *, retention_days: float, pool_size: int = 4, connect_timeout: float = 10.0,
               clock: Callable[[], float] = time.time) -> Store:
    """Open the store `url` names and bring its schema up to date; StoreError says what is wrong."""
    if url == "memory":
        store: Store = SqliteStore(None, retention_days=retention_days, clock=clock)
    elif url.startswith("sqlite:///"):
        store = SqliteStore(Path(url.removeprefix("sqlite:///")), retention_days=retention_days, clock=clock)
    elif url.startswith(("postgresql://", "postgres://")):
        from vigil.server.store.postgres import PostgresStore  # psycopg is loaded only for PostgreSQL stores
        store = PostgresStore(url, retention_days=retention_days, pool_size=pool_size,
                              connect_timeout=connect_timeout, clock=clock)
    else:
        raise StoreError(f"the store URL {redact(url)!r} is not one of sqlite:///PATH, postgresql://... or memory")
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
