"""The throwaway PostgreSQL cluster the tests use (tests/postgres.py): logins by password, and a stop and start that
keep the data."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.postgres import PostgresCluster


def test_connects_and_refuses_a_wrong_password(postgres: PostgresCluster, postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    with psycopg.connect(postgres.url()) as conn:
        assert conn.execute("select current_database(), current_user").fetchone() == ("vigil", "vigil")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://vigil:wrong@127.0.0.1:{postgres.port}/vigil", connect_timeout=5)


def test_data_survives_a_stop_and_start(postgres: PostgresCluster, postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("create table readings (id int primary key, value text)")
        conn.execute("insert into readings values (1, 'kept')")
    client = psycopg.connect(postgres_url)  # still connected, mid-transaction: the fast shutdown disconnects it
    client.execute("select count(*) from readings")
    started = time.monotonic()
    postgres.stop()
    assert time.monotonic() - started < postgres.stop_timeout
    assert not postgres.running
    with pytest.raises(psycopg.OperationalError):
        client.execute("select 1")
    client.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_url, connect_timeout=2)
    postgres.start()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select value from readings where id = 1").fetchone() == ("kept",)
