"""Issuance policy: what a profile allows, checked before anything is signed.

Pure functions over a parsed CSR and the request. Every refusal names the rule and
the value that broke it, so an operator can fix the request without reading code.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Sequence

from certfleet.shared.pki import KeyType
from certfleet.shared.wire import ProfilePolicy

__all__ = ["DEFAULT_LIFETIME", "SHORT_LIVED_MAX", "PolicyViolation", "check_issuance", "default_lifetime",
           "name_matches", "validate_patterns", "validate_policy"]

SHORT_LIVED_MAX = 7 * 86400
"""A short-lived certificate needs no revocation pointers (CA/Browser Forum
Baseline Requirements §7.1.2.11.2) and lives at most seven days."""

DEFAULT_LIFETIME = 90 * 86400
"""A certificate's lifetime when neither the request nor its profile names one."""


def lifetime_limit(policy: ProfilePolicy) -> int:
    return min(policy.max_lifetime_seconds, SHORT_LIVED_MAX) if policy.short_lived else policy.max_lifetime_seconds


def default_lifetime(policy: ProfilePolicy) -> int:
    """The lifetime of a certificate created without one: the profile's
    ``default_lifetime_seconds``, else 90 days, never above the profile's limit."""
    return min(policy.default_lifetime_seconds or DEFAULT_LIFETIME, lifetime_limit(policy))


class PolicyViolation(ValueError):
    def __init__(self, rule: str, value: object, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.value = value
        self.detail = detail


def _dns_match(name: str, pattern: str) -> bool:
    if pattern == "**":
        return True
    labels, parts = name.split("."), pattern.lower().split(".")
    if parts[0] == "**":
        suffix = parts[1:]
        return len(labels) > len(suffix) and labels[-len(suffix):] == suffix
    if len(labels) != len(parts):
        return False
    return all(p == "*" or p == label for p, label in zip(parts, labels, strict=True))


def name_matches(name: str, pattern: str) -> bool:
    if pattern.startswith("ip:"):
        try:
            return ipaddress.ip_address(name) in ipaddress.ip_network(pattern[3:], strict=False)
        except ValueError:
            return False
    if pattern.startswith("spiffe://"):
        return name.startswith("spiffe://") and fnmatch.fnmatchcase(name, pattern)
    if name.startswith("spiffe://"):
        return False
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        return _dns_match(name, pattern)


def validate_patterns(patterns: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the first pattern that can never match anything."""
    for pattern in patterns:
        if pattern.startswith("ip:"):
            try:
                ipaddress.ip_network(pattern[3:], strict=False)
            except ValueError as exc:
                raise ValueError(f"invalid IP range in name pattern {pattern!r}") from exc
        elif pattern.startswith("spiffe://"):
            continue
        elif not all(label == "*" or label == "**" or (label and " " not in label) for label in pattern.split(".")):
            raise ValueError(f"invalid name pattern {pattern!r}")


def validate_policy(policy: ProfilePolicy) -> None:
    """Raise ``ValueError`` naming the first part of a profile's policy that cannot
    work: a name pattern that matches nothing, a default lifetime above the maximum."""
    validate_patterns(policy.name_patterns or ())
    limit = lifetime_limit(policy)
    if policy.default_lifetime_seconds is not None and policy.default_lifetime_seconds > limit:
        raise ValueError(f"default_lifetime_seconds {policy.default_lifetime_seconds} is above the profile's"
                         f" maximum of {limit} s ({limit // 86400} days)")


def check_issuance(policy: ProfilePolicy, *, key_type: KeyType, names: Sequence[str],
                   lifetime_seconds: int) -> None:
    """Raise :class:`PolicyViolation` for the first rule the request breaks."""
    if key_type not in policy.key_types:
        raise PolicyViolation("key_types", str(key_type),
                              f"key type {key_type} is not allowed (allowed: {', '.join(policy.key_types)})")
    limit = lifetime_limit(policy)
    if lifetime_seconds > limit:
        raise PolicyViolation("max_lifetime_seconds", lifetime_seconds,
                              f"lifetime {lifetime_seconds}s exceeds the profile's maximum of {limit}s")
    if policy.name_patterns is not None:
        for name in names:
            if not any(name_matches(name, p) for p in policy.name_patterns):
                raise PolicyViolation("name_patterns", name,
                                      f"{name} matches none of the allowed patterns {list(policy.name_patterns)}")
