"""Schema versions and start-up errors on both real backends: upgrades in place, concurrent starts, a newer schema
refused, unusable stores named clearly."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.postgres import PostgresCluster
from vigil.server.store.base import Store
from vigil.server.store.opening import open_store
from vigil.server.store.records import SchemaTooNew, StoreError
from vigil.server.store.sqlite import MIGRATIONS, SqliteStore
from vigil.telemetry.quality.outcomes import LoggedPrediction

LATEST = len(MIGRATIONS)


def logged(request_id: str) -> LoggedPrediction:
    return LoggedPrediction(request_id, 1_796_300_000.0, "m", "1", False, np.array([0]), np.array([0.9], np.float32))


def _store_at(url: str, *, version: int) -> Store:
    """A store made by a Vigil that knew only the first `version` migrations."""
    store: Store
    if url.startswith("postgresql"):
        from vigil.server.store.postgres import PostgresStore
        store = PostgresStore(url, pool_size=2, connect_timeout=5, retention_days=30)
    else:
        store = SqliteStore(Path(url.removeprefix("sqlite:///")), retention_days=30)
    assert store.migrate(target=version) == (0, version)
    return store


def test_an_older_schema_is_upgraded_in_place_and_keeps_its_rows(store_url: str) -> None:
    first = _store_at(store_url, version=1)
    first.register("m", "1", ["a", "b"])
    first.write([logged("kept")])
    first.close()
    upgraded = open_store(store_url, retention_days=30)  # migrates at start
    try:
        assert upgraded.migrate() == (LATEST, LATEST)
        with upgraded.transaction(write=True) as tx:
            assert [row.request_id for row in upgraded._lock_rows(tx, ["kept"])] == ["kept"]
        assert upgraded.forget("no-one").predictions == 0  # the erasure index of migration 2 is there to use
    finally:
        upgraded.close()


def test_processes_starting_at_once_migrate_once(store_url: str) -> None:
    """Six processes open a new store at the same moment (for SQLite: a file none of them created yet)."""
    fresh = store_url
    script = ("import sys, time; from vigil.server.store.opening import open_store; "
              "time.sleep(max(float(sys.argv[2]) - time.time(), 0)); "
              "s = open_store(sys.argv[1], retention_days=30); print(s.migrate()); s.close()")
    at = str(time.time() + 3)  # after every interpreter has started
    processes = [subprocess.Popen([sys.executable, "-c", script, fresh, at], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert sorted(out.strip() for out, _ in outputs) == [f"({LATEST}, {LATEST})"] * 6
    store = open_store(fresh, retention_days=30)
    try:
        with store.transaction(write=True) as tx:
            assert store._schema_version(tx) == LATEST
    finally:
        store.close()


def test_a_newer_schema_is_refused_naming_both_versions(store: Store, store_url: str) -> None:
    with store.transaction(write=True) as tx:
        store._set_schema_version(tx, LATEST + 5)
    store.close()
    with pytest.raises(SchemaTooNew, match=f"has schema version {LATEST + 5}, newer than the {LATEST} this Vigil "
                                           "knows"):
        open_store(store_url, retention_days=30)


def test_a_corrupt_sqlite_file_is_named_at_start(tmp_path: Path) -> None:
    path = tmp_path / "vigil.db"
    path.write_bytes(b"this is not a database, though it is long enough to look like one" * 100)
    with pytest.raises(StoreError, match=f"the SQLite store {path} is not a readable SQLite database"):
        open_store(f"sqlite:///{path}", retention_days=30)


def test_a_read_only_sqlite_file_is_named_at_start(tmp_path: Path) -> None:
    path = tmp_path / "vigil.db"
    open_store(f"sqlite:///{path}", retention_days=30).close()
    for leftover in tmp_path.glob("vigil.db-*"):
        leftover.unlink()
    os.chmod(path, 0o444)
    # root may write any file whatever its mode: make it immutable then (needs CAP_LINUX_IMMUTABLE)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without the capability to make a file immutable: no way to make it read-only")
    try:
        with pytest.raises(StoreError, match=f"the SQLite store {path} is read-only"):
            store = open_store(f"sqlite:///{path}", retention_days=30)
            store.close()
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_unreachable_or_refusing_postgresql_is_named_without_its_password(postgres: PostgresCluster) -> None:
    wrong = postgres.url().replace(postgres.password, "not-the-password")
    with pytest.raises(StoreError) as refused:
        open_store(wrong, retention_days=30, connect_timeout=3)
    assert "password authentication failed" in str(refused.value) and "not-the-password" not in str(refused.value)
    assert "vigil:***@" in str(refused.value)
    with pytest.raises(StoreError, match="cannot connect to the PostgreSQL store .*Connection refused"):
        open_store("postgresql://vigil@127.0.0.1:1/vigil", retention_days=30, connect_timeout=2)


def test_an_unknown_url_is_refused() -> None:
    with pytest.raises(StoreError, match="is not one of sqlite:///PATH, postgresql://... or memory"):
        open_store("mysql://root:secret@db/vigil", retention_days=30)
    with pytest.raises(StoreError, match=r"mysql://root:\*\*\*@db/vigil"):
        open_store("mysql://root:secret@db/vigil", retention_days=30)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'v.db'}", retention_days=30)
    store.close()
    assert sqlite3.connect(tmp_path / "v.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_server_that_cannot_open_its_store_says_why_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "VIGIL_STORE__URL": "postgresql://vigil:s3cret@127.0.0.1:1/vigil",
           "VIGIL_STORE__CONNECT_TIMEOUT_SECONDS": "2", "VIGIL_GRPC_PORT": "0", "VIGIL_HTTP_PORT": "0",
           "VIGIL_TELEMETRY__LOG_FORMAT": "text"}
    result = subprocess.run([sys.executable, "-m", "vigil.server"], capture_output=True, text=True, env=env,
                            timeout=120, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "cannot start: cannot connect to the PostgreSQL store postgresql://vigil:***@127.0.0.1:1/vigil" in output
    assert "Traceback" not in output and "s3cret" not in output
