"""``certfleet audit verify`` tells what it could not check from what it found broken:
a master key that is not the database's is not tampering, and a database that
cannot be opened is named with the reason."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import postgres_admin_url
from tests.support import admin_client

CLI = str(Path(sys.executable).with_name("certfleet"))


def _verify(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    return subprocess.run([CLI, "audit", "verify", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **env})


def _where(running, database_url) -> list[str]:
    where = ["--data-dir", str(running.ca_path.parents[1])]
    return where + (["--database-url", database_url] if database_url else [])


async def test_a_wrong_master_key_is_named_and_not_taken_for_tampering(coordinator, database_url):
    other_key = base64.b64encode(secrets.token_bytes(32)).decode()
    result = _verify(*_where(coordinator, database_url), CERTFLEET_MASTER_KEY=other_key)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout + result.stderr
    assert "not the master key of this database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


async def test_the_right_master_key_from_the_environment_verifies(coordinator, database_url):
    key = (coordinator.ca_path.parents[1] / "master.key").read_text().strip()
    result = _verify(*_where(coordinator, database_url), CERTFLEET_MASTER_KEY=key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit chain OK" in result.stdout


def test_a_missing_sqlite_file_is_named_and_not_created(tmp_path):
    missing = tmp_path / "nowhere" / "certfleet.db"
    result = _verify("--data-dir", str(tmp_path), "--database-url", f"sqlite:///{missing}",
                     CERTFLEET_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode())
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no database at {missing}" in result.stderr
    assert not missing.exists() and not missing.parent.exists()


def test_an_unreachable_database_is_named_with_the_cause(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = _verify("--data-dir", str(tmp_path), "--database-url",
                         f"postgresql://certfleet@127.0.0.1:{port}/certfleet",
                         CERTFLEET_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Connection refused" in result.stderr and "cannot start" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.postgres
def test_a_postgres_database_that_does_not_exist_is_named(tmp_path):
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL tests need CERTFLEET_TEST_POSTGRES_URL")
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(admin)
    name = f"certfleet_missing_{secrets.token_hex(4)}"
    url = f"postgresql://{params.get('user', 'postgres')}@{params['host']}:{params.get('port', 5432)}/{name}"
    result = _verify("--data-dir", str(tmp_path), "--database-url", url,
                     CERTFLEET_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode())
    assert result.returncode == 2, result.stdout + result.stderr
    assert f'database "{name}" does not exist' in result.stderr
    assert "cannot start" not in result.stderr


async def test_a_changed_key_check_value_is_named_when_the_key_verifies_the_chain(coordinator, database_url):
    """The key check value is what tells a wrong key from tampering; someone who
    changes it must not make every event look fine under a "wrong key" message."""
    def replace_check(tx):
        tx.execute("UPDATE meta SET value = ? WHERE key = 'master_key_check'", ("AAAA" + "A" * 60,))

    await admin_client(coordinator)  # the bootstrap exchange is an audited event
    await coordinator.coordinator.database.transact(replace_check)
    result = _verify(*_where(coordinator, database_url))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "key check value was changed" in result.stdout + result.stderr
    assert "not the master key of this database" not in result.stderr
