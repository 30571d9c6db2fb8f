"""The coordinator: every catalogue operation, composed from one class per area.

Handlers are looked up by operation name (``certificates.create`` →
``certificates_create``). They receive a decoded request and the caller, do their
work in one database transaction with its audit row, and return a wire message.
They raise :mod:`errors` exceptions and never choose HTTP status codes.
"""

from __future__ import annotations

from .core import Call
from .operations.access import AccessOperations
from .operations.agent import MAX_POLL_WAIT, AgentOperations
from .operations.discovery import DiscoveryOperations
from .operations.fleet import FleetOperations
from .operations.hierarchy import HierarchyOperations
from .operations.pki import PkiOperations
from .operations.renewal import RenewalOperations
from .operations.revocation import RevocationOperations
from .operations.scans import ScanOperations
from .operations.system import SystemOperations

__all__ = ["MAX_POLL_WAIT", "Call", "Coordinator", "handler_name"]


def handler_name(operation_name: str) -> str:
    return operation_name.replace(".", "_").replace("-", "_")


class Coordinator(AccessOperations, FleetOperations, DiscoveryOperations, RenewalOperations, HierarchyOperations,
                  RevocationOperations, PkiOperations, AgentOperations, ScanOperations, SystemOperations):
    pass
