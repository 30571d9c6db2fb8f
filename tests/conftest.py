"""Fixtures shared by the whole suite: databases (SQLite and a real PostgreSQL) and
an in-process coordinator served over real HTTPS on 127.0.0.1:0."""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import Iterator

import pytest

from tests.support import BOOTSTRAP_TOKEN

POSTGRES_URL = os.environ.get("CERTFLEET_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("CERTFLEET_REQUIRE_POSTGRES") == "1"


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs a command's ``main()`` in-process points the root logger at
    the stderr pytest captured for that test; put the handlers back afterwards, or a
    later test's log records go to a closed stream ("Logging error") and real errors
    drown in the noise."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _postgres_available() -> str | None:
    """The admin URL if a server answers; fails the run when CI requires it."""
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("CERTFLEET_REQUIRE_POSTGRES=1 but CERTFLEET_TEST_POSTGRES_URL is not set")
        return None
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=5):
            return POSTGRES_URL
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but not reachable at {POSTGRES_URL}: {exc}")
        return None


@functools.cache
def postgres_admin_url() -> str | None:
    return _postgres_available()


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(
            "PostgreSQL tests SKIPPED: set CERTFLEET_TEST_POSTGRES_URL (make test does, and"
            " starts a server) to run the PostgreSQL half of the suite"
        )
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"certfleet_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(admin)
    user = params.get("user", "postgres")
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    url = f"postgresql://{user}@{host}:{port}/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """``None`` selects the default SQLite file in the data dir."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
async def coordinator(request, nursery, tmp_path, database_url):
    """A coordinator on 127.0.0.1:0 over real TLS 1.3 (and its plain-HTTP PKI
    listener), in this test's trio run.

    Its periodic loops are off, so tests that move its clock run the rounds they
    need themselves and nothing races them; ``@pytest.mark.maintenance`` turns the
    loops on."""
    from certfleet.coordinator.server import run_coordinator
    from certfleet.coordinator.settings import Settings

    settings = Settings(data_dir=tmp_path / "coordinator", database_url=database_url,
                        listen="127.0.0.1:0", pki_listen="127.0.0.1:0", bootstrap_token=BOOTSTRAP_TOKEN,
                        maintenance_interval=0.2 if request.node.get_closest_marker("maintenance") else None)
    return await nursery.start(functools.partial(run_coordinator, settings, announce_token=False))
