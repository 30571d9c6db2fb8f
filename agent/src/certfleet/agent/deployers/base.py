"""What every deployer receives and reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Bundle", "DeployError", "DeployOutcome", "Step"]

Step = Literal["prepare", "write", "config-test", "reload", "verify", "apply"]
"""Where a deployment failed: ``prepare`` (settings, secrets, rendering), ``write``
(files), ``config-test``, ``reload``, ``verify`` (the served certificate), ``apply``
(an API call, for targets that are not files)."""


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
    served_fingerprint: str | None = None
    """What the post-deploy check saw being served; ``None`` without a check."""

    @property
    def skipped(self) -> bool:
        """Identical content was already in place: nothing written, nothing reloaded."""
        return not self.changed


class DeployError(Exception):
    """The deployment failed at ``step``; ``detail`` says what, and the rollback outcome."""

    def __init__(self, detail: str, *, step: Step = "write", rolled_back: bool = False,
                 served_fingerprint: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.step = step
        self.rolled_back = rolled_back
        self.served_fingerprint = served_fingerprint
