"""Opening the database: the data dir is private from its creation, an incomplete
PostgreSQL URL is refused before anything connects, and a database that cannot be
reached fails at once with the reason, not after the pool's 30-second wait."""

from __future__ import annotations

import secrets
import socket
import stat
import time

import pytest
import trio

from certfleet.coordinator.storage import StorageError, open_database
from tests.conftest import postgres_admin_url


async def test_the_data_dir_is_created_private(tmp_path):
    data_dir = tmp_path / "fresh" / "data"
    database = await trio.to_thread.run_sync(open_database, None, data_dir)
    await database.close()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


async def test_the_directory_of_a_sqlite_url_is_created_private(tmp_path):
    directory = tmp_path / "elsewhere"
    database = await trio.to_thread.run_sync(open_database, f"sqlite:///{directory}/certfleet.db", tmp_path / "data")
    await database.close()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@pytest.mark.parametrize(("url", "missing"), [
    ("postgres://", "host"),
    ("postgresql://", "host"),
    ("postgresql://postgres@127.0.0.1:5432", "database"),
    ("postgresql:///certfleet", "host"),
])
def test_an_incomplete_postgres_url_is_refused(tmp_path, url, missing):
    with pytest.raises(StorageError, match=f"names no {missing}"):
        open_database(url, tmp_path)


def test_a_sqlite_url_without_a_file_is_refused(tmp_path):
    with pytest.raises(StorageError, match="names no file"):
        open_database("sqlite:///", tmp_path)


def test_a_malformed_postgres_url_is_refused_without_echoing_it(tmp_path):
    with pytest.raises(StorageError, match="not a valid PostgreSQL URL") as raised:
        open_database("postgresql://user:s3cret@127.0.0.1:5432/db?nonsense=1", tmp_path)
    assert "s3cret" not in str(raised.value)


def test_an_unreachable_postgres_fails_at_once_with_the_cause(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound but not listening: connections are refused
        started = time.monotonic()
        with pytest.raises(StorageError, match="Connection refused") as raised:
            open_database(f"postgresql://certfleet:s3cret@127.0.0.1:{port}/certfleet", tmp_path)
        # The pool alone would retry for 30 seconds and then say only that it timed out.
        assert time.monotonic() - started < 15
    message = str(raised.value)
    assert "\n" not in message and "s3cret" not in message
    assert f"127.0.0.1:{port}" in message


@pytest.mark.postgres
def test_a_postgres_database_that_does_not_exist_says_so(tmp_path):
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL tests need CERTFLEET_TEST_POSTGRES_URL")
    from psycopg.conninfo import conninfo_to_dict

    name = f"certfleet_missing_{secrets.token_hex(4)}"
    params = conninfo_to_dict(admin)
    url = f"postgresql://{params.get('user', 'postgres')}@{params['host']}:{params.get('port', 5432)}/{name}"
    with pytest.raises(StorageError, match=f'database "{name}" does not exist'):
        open_database(url, tmp_path)
