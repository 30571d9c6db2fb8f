"""Where the agent keeps its state, and what enrollment gave it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from certfleet.shared import jws
from certfleet.shared.paths import state_dir
from certfleet.shared.pki import load_private_key, private_key_pem

from .files import write_atomic

__all__ = ["AgentConfig", "AgentPaths", "default_agent_dir"]


def default_agent_dir() -> Path:
    """``CERTFLEET_AGENT_DIR``; else ``/var/lib/certfleet-agent`` for root, else XDG."""
    return state_dir("CERTFLEET_AGENT_DIR", "certfleet-agent")


@dataclass(frozen=True)
class AgentPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "agent.json"

    @property
    def identity_key(self) -> Path:
        return self.root / "identity.key"

    @property
    def ca_bundle(self) -> Path:
        return self.root / "coordinator-ca.pem"

    @property
    def state(self) -> Path:
        return self.root / "state.db"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def allowed_commands(self) -> Path:
        """Programs targets may run (one per line); absent: any."""
        return self.root / "commands.allow"

    @property
    def allowed_paths(self) -> Path:
        """Directories targets may write into (one per line); absent: any."""
        return self.root / "paths.allow"

    @property
    def secrets(self) -> Path:
        """Secrets that targets name (``password_secret``…): JSON, 0600, never sent."""
        return self.root / "secrets.json"


@dataclass(frozen=True)
class AgentConfig:
    coordinator: str
    agent_id: str
    work_order_keys: dict[str, str]
    """Pinned work-order public keys by kid (raw Ed25519, base64url)."""

    def pinned_keys(self) -> dict[str, ed25519.Ed25519PublicKey]:
        return {kid: jws.public_key_from_raw(raw) for kid, raw in self.work_order_keys.items()}

    @classmethod
    def load(cls, paths: AgentPaths) -> AgentConfig:
        if not paths.config.exists():
            raise FileNotFoundError(f"{paths.config} does not exist: run `certfleet-agent enroll` first")
        data = json.loads(paths.config.read_text())
        return cls(data["coordinator"], data["agent_id"], dict(data["work_order_keys"]))

    def save(self, paths: AgentPaths) -> None:
        data = {"coordinator": self.coordinator, "agent_id": self.agent_id,
                "work_order_keys": self.work_order_keys}
        write_atomic(paths.config, json.dumps(data, indent=2).encode() + b"\n", mode=0o600)


def load_identity(paths: AgentPaths) -> ed25519.Ed25519PrivateKey:
    key = load_private_key(paths.identity_key.read_bytes())
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{paths.identity_key} is not an Ed25519 key")
    return key


def save_identity(paths: AgentPaths, key: ed25519.Ed25519PrivateKey) -> None:
    write_atomic(paths.identity_key, private_key_pem(key), mode=0o600)
