"""What every deployer receives and reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import trio

__all__ = ["Bundle", "DeployError", "DeployOutcome", "Step", "is_cancellation"]

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


def is_cancellation(exc: BaseException) -> bool:
    """``trio.Cancelled``, alone or as all an exception group holds (as a nursery
    inside the operation raises it): the agent is stopping, and a deployer that has
    started changing a target puts the previous state back before it lets go."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        return rest is None
    return isinstance(exc, trio.Cancelled)


async def describe_served(check, *, expected: str | None, server_name: str) -> str:
    """For a ``targets test``: what the listening address ``check`` serves, compared
    with ``expected`` (the certificate certfleet last deployed there) when there is
    one. Raises :class:`DeployError` for another certificate or an unreachable one."""
    from ..verify import served_fingerprint, verify_served

    if expected is not None:
        served = await verify_served(check, expected=expected, default_name=server_name)
        if not served.matched:
            raise DeployError(served.detail, step="verify", served_fingerprint=served.fingerprint)
        return f"{served.detail} (the certificate certfleet deployed)"
    try:
        fingerprint = await served_fingerprint(check, check.server_name or server_name)
    except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        raise DeployError(f"cannot read the served certificate from {check.host}:{check.port}: {exc}",
                          step="verify") from exc
    return f"{check.host}:{check.port} serves {fingerprint} (nothing deployed there yet)"
