"""`certfleet demo --once` on the embedded default and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import BIN

pytestmark = pytest.mark.e2e


def _demo(data_dir: Path, database_url: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    if database_url:
        env["CERTFLEET_DATABASE_URL"] = database_url
    return subprocess.run([str(BIN / "certfleet"), "demo", "--once", "--listen", "127.0.0.1:0",
                           "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, timeout=180)


def test_demo_once_deploys_and_prints_fullchain_path(tmp_path, database_url):
    data_dir = tmp_path / "demo-data"
    completed = _demo(data_dir, database_url)
    assert completed.returncode == 0, completed.stderr
    fullchain = Path(completed.stdout.strip().splitlines()[-1])
    assert fullchain == data_dir / "demo" / "deploy" / "demo.localhost" / "fullchain.pem"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(data_dir / "tls" / "ca.pem"),
                             "-untrusted", str(fullchain.with_name("chain.pem")), str(fullchain.with_name("cert.pem"))],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    expected_backend = "PostgreSQL" if database_url else "SQLite"
    assert f"({expected_backend})" in completed.stderr

    # A second run reuses the data dir: same admin, same agent, a new certificate.
    again = _demo(data_dir, database_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(fullchain)
