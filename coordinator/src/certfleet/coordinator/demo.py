"""``certfleet demo``: the whole flow on one machine, with real processes.

Starts a coordinator (SQLite in the data dir unless ``CERTFLEET_DATABASE_URL`` says
otherwise), bootstraps an admin, enrolls a local agent (the real ``certfleet-agent``
program, a separate process), asks for a certificate for ``demo.localhost`` deployed
to a file target under the data dir, and waits until the agent reports it deployed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import trio
from cryptography.hazmat.primitives import serialization

from certfleet.shared import wire

from .client import ApiClient, ApiError
from .server import Running, run_coordinator
from .settings import Settings

__all__ = ["run_demo"]

DEMO_NAME = "demo.localhost"


def _say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def _agent_program() -> str:
    beside = Path(sys.executable).with_name("certfleet-agent")
    found = str(beside) if beside.exists() else shutil.which("certfleet-agent")
    if not found:
        raise FileNotFoundError("the certfleet-agent program is not installed")
    return found


def _read_secret(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


async def _admin_key(api_url: str, running: Running, demo_dir: Path, bootstrap_token: str) -> str:
    key_file = demo_dir / "admin-api-key"
    if key := _read_secret(key_file):
        return key
    async with ApiClient(api_url, api_key=None, ca_bundle=running.ca_path) as api:
        result = await api.call("auth.bootstrap", wire.BootstrapRequest(token=bootstrap_token))
    _write_secret(key_file, result.api_key)
    return result.api_key


async def _enroll_agent(api: ApiClient, url: str, running: Running, agent_dir: Path) -> str:
    agent_id_file = agent_dir / "demo-agent-id"
    if agent_id := _read_secret(agent_id_file):
        return agent_id
    token = await api.call("agents.enrollment-token.create", wire.EnrollmentTokenCreate(uses=1, ttl_seconds=600))
    root_der = running.coordinator.keys.root.public_bytes(serialization.Encoding.DER)
    fingerprint = hashlib.sha256(root_der).hexdigest()
    completed = await trio.run_process(
        [_agent_program(), "--agent-dir", str(agent_dir), "enroll", "--coordinator", url,
         "--ca-fingerprint", fingerprint, "--name", "demo-agent", "--json", "--force"],
        env={**os.environ, "CERTFLEET_ENROLLMENT_TOKEN": token.token},
        capture_stdout=True, check=True,
    )
    agent_id = json.loads(completed.stdout)["agent_id"]
    _write_secret(agent_id_file, agent_id)
    return agent_id


async def _wait_deployed(api: ApiClient, certificate_id: str) -> wire.CertificateInfo:
    with trio.fail_after(120):
        while True:
            info: wire.CertificateInfo = await api.call("certificates.get", certificate_id=certificate_id)
            if info.status in ("deployed", "failed"):
                return info
            await trio.sleep(0.2)


async def run_demo(data_dir: Path, listen: str, once: bool) -> int:
    """Run the demo; with ``once`` return after the first deployment, else keep running
    until SIGINT (Ctrl-C) or SIGTERM. Either signal stops the agent, then the
    coordinator (gracefully), and returns 0."""
    data_dir = data_dir.resolve()
    # Private from its creation: it becomes the coordinator's data dir (master key,
    # database), and the demo's own secrets below would otherwise create it 0755.
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    demo_dir = data_dir / "demo"
    bootstrap_file = demo_dir / "bootstrap-token"
    if not (bootstrap_token := _read_secret(bootstrap_file)):
        bootstrap_token = secrets.token_urlsafe(32)
        _write_secret(bootstrap_file, bootstrap_token)
    settings = Settings.from_env(data_dir=data_dir, listen=listen, bootstrap_token=bootstrap_token)
    stopping = trio.Event()
    code: int | None = None
    # The receiver is open before anything starts, so a signal at any moment is handled
    # here instead of surfacing as KeyboardInterrupt in whatever task it interrupts.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(functools.partial(
                run_coordinator, settings, announce_token=False, shutdown_trigger=stopping.wait))
            try:
                async with trio.open_nursery() as flow:
                    async def stop_on_signal() -> None:
                        async for received in signals:
                            _say(f"{signal.Signals(received).name} received; stopping")
                            flow.cancel_scope.cancel()
                            return

                    flow.start_soon(stop_on_signal)
                    code = await _demo(running, settings, demo_dir, bootstrap_token, once)
                    flow.cancel_scope.cancel()
            finally:
                # The agent has stopped by now: the coordinator goes last, so the agent
                # never sees it disappear (a graceful stop, not a dropped connection).
                stopping.set()
    return 0 if code is None else code


async def _demo(running: Running, settings: Settings, demo_dir: Path, bootstrap_token: str, once: bool) -> int:
    """Enroll, run the agent, deploy, and without ``once`` keep running until cancelled.
    The agent process is stopped (SIGTERM, then waited for) however this ends."""
    url = running.url
    backend = "PostgreSQL" if (settings.database_url or "").startswith("postgres") else "SQLite"
    _say(f"coordinator on {url} ({backend}), data in {settings.data_dir}")
    api_key = await _admin_key(url, running, demo_dir, bootstrap_token)
    async with ApiClient(url, api_key=api_key, ca_bundle=running.ca_path) as api:
        agent_dir = demo_dir / "agent"
        agent_id = await _enroll_agent(api, url, running, agent_dir)
        _say(f"agent {agent_id} enrolled (state in {agent_dir})")
        agent = await trio.lowlevel.open_process(
            [_agent_program(), "--agent-dir", str(agent_dir), "run", "--coordinator", url],
            stdin=subprocess.DEVNULL)
        try:
            target_dir = demo_dir / "deploy" / DEMO_NAME
            created = await api.call("certificates.create", wire.CertificateCreate(
                common_name=DEMO_NAME, agent_id=agent_id, target=wire.FileTarget(directory=str(target_dir)),
                lifetime_seconds=7 * 86400))
            _say(f"certificate {created.id} for {DEMO_NAME} requested; waiting for the agent")
            info = await _wait_deployed(api, created.id)
            if info.status != "deployed":
                _say(f"deployment failed: {info.last_error}")
                return 1
            _say(f"deployed serial {info.serial}, SHA-256 {info.fingerprint_sha256}")
            for name in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"):
                _say(f"  {target_dir / name}")
            _say(f"check it: openssl verify -CAfile {running.ca_path} -untrusted"
                 f" {target_dir / 'chain.pem'} {target_dir / 'cert.pem'}")
            if once:
                print(target_dir / "fullchain.pem", flush=True)
                return 0
            _say("running; press Ctrl-C to stop")
            await trio.sleep_forever()
        except ApiError as exc:
            _say(f"the coordinator refused a request: {exc}")
            return 1
        finally:
            with trio.CancelScope(shield=True):
                await _stop_agent(agent)


AGENT_STOP_SECONDS = 30
"""How long the agent may take to stop after SIGTERM before it is killed."""


async def _stop_agent(agent: trio.Process) -> None:
    if agent.returncode is None:
        agent.terminate()
    with trio.move_on_after(AGENT_STOP_SECONDS):
        await agent.wait()
        return
    _say(f"the agent did not stop within {AGENT_STOP_SECONDS} s; killing it")
    agent.kill()
    await agent.wait()
