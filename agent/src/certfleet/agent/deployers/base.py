"""What every deployer receives and reports."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bundle", "DeployError", "DeployOutcome"]


@dataclass(frozen=True)
class Bundle:
    """A certificate, its chain (intermediates, no root) and its private key, as PEM."""

    certificate: bytes
    chain: bytes
    private_key: bytes
    fingerprint_sha256: str


@dataclass(frozen=True)
class DeployOutcome:
    changed: tuple[str, ...]
    reloaded: bool
    fingerprint_sha256: str


class DeployError(Exception):
    """The deployment failed; ``detail`` says what and includes the rollback outcome."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
