"""Name constraints (RFC 5280 §4.2.1.10), checked at issuance for the whole chain.

A relying party would reject a leaf that violates a constraint anywhere above it;
refusing to sign one is kinder than issuing a certificate nothing accepts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509

__all__ = ["ConstraintViolation", "check_name_constraints", "check_subordinate_constraints"]


class ConstraintViolation(ValueError):
    pass


def _dns_within(name: str, base: str) -> bool:
    """§4.2.1.10: a DNS constraint matches the name itself and any subdomain;
    a leading dot restricts it to subdomains."""
    base = base.lower().rstrip(".")
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _within(name: str, constraint: x509.GeneralName) -> bool | None:
    """Whether ``name`` is inside the subtree; ``None`` when the types differ."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if isinstance(constraint, x509.IPAddress):
        return None if address is None else address in constraint.value  # type: ignore[operator]
    if isinstance(constraint, x509.DNSName):
        if address is not None or name.startswith("spiffe://"):
            return None
        return _dns_within(name, constraint.value)
    if isinstance(constraint, x509.UniformResourceIdentifier) and name.startswith("spiffe://"):
        host = name[len("spiffe://"):].split("/", 1)[0]
        return _dns_within(host, constraint.value)
    return None


def check_name_constraints(names: Sequence[str], chain: Iterable[x509.Certificate]) -> None:
    """Raise :class:`ConstraintViolation` if any name breaks a constraint of any CA."""
    for certificate in chain:
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        subject = certificate.subject.rfc4514_string()
        for name in names:
            for excluded in constraints.excluded_subtrees or ():
                if _within(name, excluded):
                    raise ConstraintViolation(f"{name} is excluded by {subject}")
            permitted = [c for c in constraints.permitted_subtrees or () if _within(name, c) is not None]
            if permitted and not any(_within(name, c) for c in permitted):
                raise ConstraintViolation(f"{name} is outside the names permitted by {subject}")


def _dns_overlap(a: str, b: str) -> bool:
    """Whether two DNS subtrees (a leading dot: subdomains only) share any name."""
    return _dns_within(a.lstrip("."), b) or _dns_within(b.lstrip("."), a) or a.lstrip(".") == b.lstrip(".")


def _subtrees_overlap(child: x509.GeneralName, parent: x509.GeneralName) -> bool:
    """Whether two permitted subtrees of the same type share any name."""
    if isinstance(child, x509.IPAddress):
        return child.value.version == parent.value.version and child.value.overlaps(parent.value)  # type: ignore[union-attr]
    if isinstance(child, x509.DNSName):
        return _dns_overlap(child.value.lower().rstrip("."), parent.value.lower().rstrip("."))
    if isinstance(child, x509.RFC822Name):
        # A mailbox, a host or a domain (leading dot): compare the host parts.
        return _dns_overlap(child.value.lower().rsplit("@", 1)[-1], parent.value.lower().rsplit("@", 1)[-1])
    return child == parent


def check_subordinate_constraints(permitted: Iterable[x509.GeneralName], chain: Iterable[x509.Certificate]) -> None:
    """Raise :class:`ConstraintViolation` if a subordinate CA's permitted subtree
    shares no name with the subtrees of its type that a CA above permits (§4.2.1.10:
    a relying party intersects them, so such a CA could issue for nothing)."""
    permitted = list(permitted)
    for certificate in chain:
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        above = list(constraints.permitted_subtrees or ())
        for subtree in permitted:
            same_type = [p for p in above if type(p) is type(subtree)]
            if same_type and not any(_subtrees_overlap(subtree, p) for p in same_type):
                raise ConstraintViolation(
                    f"permitted {subtree.value} does not overlap the names "
                    f"{certificate.subject.rfc4514_string()} permits ({', '.join(str(p.value) for p in same_type)})")
