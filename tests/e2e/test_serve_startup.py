"""``certfleet serve`` starting, and failing to start, as an operator sees it: a busy
port is one line and loses nothing; the one-time bootstrap token is printed only
once the coordinator listens, and one that was never exchanged can be had again
on the host."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import BIN, Process, wait_until

pytestmark = pytest.mark.e2e

TOKEN = re.compile(r"\bcfb_\S+")


def _env(**extra: str) -> dict[str, str]:
    # The PKI listener on any free port: its default port may be taken by another test.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")},
            "CERTFLEET_PKI_LISTEN": "127.0.0.1:0", **extra}


def _busy_port() -> socket.socket:
    """A socket another program holds: bound and listening on 127.0.0.1."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    return held


def _serve(data_dir: Path, listen: str = "127.0.0.1:0", **env: str) -> tuple[Process, str]:
    """A coordinator process and its URL, once it listens."""
    process = Process([str(BIN / "certfleet"), "serve", "--listen", listen, "--data-dir", str(data_dir)],
                      _env(**env))
    found = wait_until(lambda: re.search(r"coordinator listening on (https://\S+)", process.output)
                       or process.popen.poll() is not None, what="the coordinator to listen")
    if not isinstance(found, re.Match):
        raise AssertionError(f"coordinator exited:\n{process.output}")
    return process, found.group(1)


def _bootstrap(url: str, data_dir: Path, token: str) -> subprocess.CompletedProcess:
    env = _env(CERTFLEET_URL=url, CERTFLEET_CA_BUNDLE=str(data_dir / "tls" / "ca.pem"))
    return subprocess.run([str(BIN / "certfleet"), "--json", "bootstrap", "--token", token], env=env,
                          capture_output=True, text=True, timeout=60)


def _reissue(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "certfleet"), "bootstrap", "--reissue", "--data-dir", str(data_dir)],
                          env=_env(), capture_output=True, text=True, timeout=60)


def _refused_on_a_busy_port(data_dir: Path) -> str:
    """Start ``serve`` on a port something else holds; it must fail in one line.
    Returns the address it was given (free again afterwards)."""
    held = _busy_port()
    listen = f"127.0.0.1:{held.getsockname()[1]}"
    try:
        failed = subprocess.run([str(BIN / "certfleet"), "serve", "--listen", listen, "--data-dir", str(data_dir)],
                                env=_env(), capture_output=True, text=True, timeout=60)
    finally:
        held.close()
    assert failed.returncode != 0
    assert failed.stderr.strip() == f"certfleet: cannot start: {listen} is in use", failed.stderr
    return listen


def test_a_busy_port_is_one_line_and_the_first_start_happens_later(tmp_path):
    data_dir = tmp_path / "data"
    listen = _refused_on_a_busy_port(data_dir)
    # Nothing was created, so nothing was printed that could be lost: the next start is the first.
    assert not data_dir.exists()

    process, url = _serve(data_dir, listen)
    try:
        token = TOKEN.search(process.output)
        assert token, process.output
        exchanged = _bootstrap(url, data_dir, token.group(0))
        assert exchanged.returncode == 0, exchanged.stderr
    finally:
        process.stop()


def test_a_busy_port_after_the_first_start_is_one_line(tmp_path):
    data_dir = tmp_path / "data"
    process, _ = _serve(data_dir, CERTFLEET_BOOTSTRAP_TOKEN="cfb_preset_token")
    process.stop()
    _refused_on_a_busy_port(data_dir)


def test_an_unexchanged_bootstrap_token_can_be_reissued_on_the_host(tmp_path):
    data_dir = tmp_path / "data"
    process, url = _serve(data_dir)
    try:
        first = TOKEN.search(process.output)
        assert first, process.output
        reissued = _reissue(data_dir)
        assert reissued.returncode == 0, reissued.stderr
        second = TOKEN.search(reissued.stdout)
        assert second and second.group(0) != first.group(0), reissued.stdout

        # The lost token no longer works; the new one does, once.
        assert _bootstrap(url, data_dir, first.group(0)).returncode != 0
        exchanged = _bootstrap(url, data_dir, second.group(0))
        assert exchanged.returncode == 0, exchanged.stderr

        # With an admin in place there is nothing to reissue.
        refused = _reissue(data_dir)
        assert refused.returncode != 0
        assert len(refused.stderr.strip().splitlines()) == 1 and "already exchanged" in refused.stderr
        assert "cfb_" not in refused.stdout + refused.stderr

        # The replacement was recorded in the audit trail, under the chain's key.
        verified = subprocess.run([str(BIN / "certfleet"), "audit", "verify", "--data-dir", str(data_dir)],
                                  env=_env(), capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0 and "audit chain OK" in verified.stdout, verified.stdout + verified.stderr
    finally:
        process.stop()


def test_a_bootstrap_token_set_at_a_later_start_is_honoured_while_no_admin_exists(tmp_path):
    data_dir = tmp_path / "data"
    process, _ = _serve(data_dir)
    process.stop()  # the printed token is gone with the terminal
    process, url = _serve(data_dir, CERTFLEET_BOOTSTRAP_TOKEN="cfb_chosen_later")
    try:
        exchanged = _bootstrap(url, data_dir, "cfb_chosen_later")
        assert exchanged.returncode == 0, exchanged.stderr
    finally:
        process.stop()


def test_the_data_dir_is_private(tmp_path):
    data_dir = tmp_path / "data"
    process, _ = _serve(data_dir)
    process.stop()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_an_incomplete_database_url_is_one_line_and_creates_nothing(tmp_path):
    data_dir = tmp_path / "data"
    failed = subprocess.run([str(BIN / "certfleet"), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
                            env=_env(CERTFLEET_DATABASE_URL="postgres://"), capture_output=True, text=True,
                            timeout=60)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines() == [
        "certfleet: cannot start: CERTFLEET_DATABASE_URL names no host"
        " (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"], failed.stderr
    assert not data_dir.exists()


def test_a_later_start_says_how_to_get_a_token_while_no_admin_exists(tmp_path):
    data_dir = tmp_path / "data"
    process, _ = _serve(data_dir)
    process.stop()
    process, url = _serve(data_dir)
    try:
        wait_until(lambda: "certfleet bootstrap --reissue" in process.output, what="the hint")
        assert not TOKEN.search(process.output), process.output
    finally:
        process.stop()
