"""``issuers``: the CA hierarchy, from roots to the intermediates that sign leaves."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from certfleet.shared import wire

from ..client import ApiClient

__all__ = ["add_issuers", "run_issuers"]

ISSUER_REASONS = ["unspecified", "key-compromise", "ca-compromise", "affiliation-changed", "superseded",
                  "cessation-of-operation", "privilege-withdrawn"]


def add_issuers(commands: argparse._SubParsersAction) -> None:
    issuers = commands.add_parser("issuers", help="the CA hierarchy").add_subparsers(dest="action", required=True)
    issuers.add_parser("list", help="every issuer (root, intermediate, external)")
    issuer_show = issuers.add_parser("show", help="one issuer, with its certificate")
    issuer_show.add_argument("issuer", help="the issuer's name or id")
    root = issuers.add_parser("create-root", help="a new self-signed root CA")
    root.add_argument("name", help="the new issuer's name (also its common name)")
    root.add_argument("--path-length", type=int,
                      help="how many intermediates may stand below it (RFC 5280 §4.2.1.9; default: no limit)")
    root.add_argument("--days", type=int, default=10 * 365, help="lifetime in days (default: %(default)s)")
    middle = issuers.add_parser("create-intermediate", help="a new intermediate CA signed by another issuer")
    middle.add_argument("name", help="the new issuer's name (also its common name)")
    middle.add_argument("--parent", required=True, help="the issuer (name or id) that signs it")
    middle.add_argument("--path-length", type=int, default=0,
                        help="how many intermediates may stand below it (default: %(default)s)")
    middle.add_argument("--days", type=int, default=5 * 365, help="lifetime in days (default: %(default)s)")
    for kind in ("permit", "exclude"):
        for what in ("dns", "ip", "email"):
            middle.add_argument(f"--{kind}-{what}", action="append", default=[],
                                help=f"name constraint (RFC 5280 §4.2.1.10): {kind} this {what.upper()}"
                                     f" subtree (repeatable)")
    external = issuers.add_parser("create-external", help="sub-CA mode: print a CSR for an external root")
    external.add_argument("name", help="the new issuer's name")
    imported = issuers.add_parser("import", help="import the certificate the external root signed")
    imported.add_argument("issuer", help="the pending issuer's name or id (from create-external)")
    imported.add_argument("--certificate", type=Path, required=True,
                          help="the certificate the external root signed, PEM")
    imported.add_argument("--chain", type=Path, required=True, help="the external intermediates and root, PEM")
    retire = issuers.add_parser("retire", help="stop issuing; keep publishing CRL and OCSP until its last"
                                                 " certificate expires")
    retire.add_argument("issuer", help="the issuer's name or id")
    issuer_revoke = issuers.add_parser("revoke", help="revoke an intermediate CA on its parent's CRL and OCSP")
    issuer_revoke.add_argument("issuer", help="the issuer's name or id")
    issuer_revoke.add_argument("--reason", required=True, choices=ISSUER_REASONS,
                               help="the CRL reason (RFC 5280 §5.3.1)")


async def run_issuers(api: ApiClient, args: argparse.Namespace) -> Any:
    action = args.action
    columns = ["id", "name", "kind", "status", "parent_id", "not_after", "subject"]
    if action == "list":
        return await api.call("issuers.list"), columns, None
    if action == "show":
        return await api.call("issuers.get", issuer_id=args.issuer), columns + ["certificate_pem"], None
    if action == "create-root":
        body = wire.RootCreate(name=args.name, path_length=args.path_length, lifetime_days=args.days)
        return await api.call("issuers.create-root", body), columns, None
    if action == "create-intermediate":
        constraints = wire.NameConstraints(
            permitted_dns=args.permit_dns, excluded_dns=args.exclude_dns, permitted_ip=args.permit_ip,
            excluded_ip=args.exclude_ip, permitted_email=args.permit_email, excluded_email=args.exclude_email)
        body = wire.IntermediateCreate(name=args.name, parent=args.parent, path_length=args.path_length,
                                       lifetime_days=args.days, name_constraints=constraints)
        return await api.call("issuers.create-intermediate", body), columns, None
    if action == "create-external":
        result = await api.call("issuers.create-external", wire.ExternalSubordinateCreate(name=args.name))
        return result, None, f"issuer {result.id} is pending; have the external root sign this CSR:\n{result.csr_pem}"
    if action == "import":
        body = wire.IssuerCertificateImport(certificate=args.certificate.read_text(), chain=args.chain.read_text())
        return await api.call("issuers.import", body, issuer_id=args.issuer), columns, None
    if action == "revoke":
        return (await api.call("issuers.revoke", wire.IssuerRevokeRequest(reason=args.reason),
                               issuer_id=args.issuer), columns + ["revocation_reason"], None)
    return await api.call("issuers.retire", issuer_id=args.issuer), columns, None
