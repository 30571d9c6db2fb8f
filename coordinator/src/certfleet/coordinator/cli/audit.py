"""``audit``: the audit trail, listed and exported through the API, and its hash chain
verified straight from the database on the coordinator's host."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any

import trio

from ..client import ApiClient
from ..initialize import InitializationError
from ..storage import StorageError

__all__ = ["add_audit", "run_audit", "verify"]


def add_audit(commands: argparse._SubParsersAction) -> None:
    audit_cmd = commands.add_parser("audit", help="the audit trail").add_subparsers(dest="action", required=True)
    verify = audit_cmd.add_parser("verify", help="walk the hash chain straight from the database")
    verify.add_argument("--data-dir", type=Path,
                        help="the coordinator's data dir: its master key keys the chain, and its SQLite database"
                             " (env CERTFLEET_DATA_DIR)")
    verify.add_argument("--database-url", default=os.environ.get("CERTFLEET_DATABASE_URL"),
                        help="the coordinator's database, if not the SQLite file in the data dir"
                             " (env CERTFLEET_DATABASE_URL)")
    audit_list = audit_cmd.add_parser("list", help="audit events, oldest first, a page at a time")
    audit_list.add_argument("--after", type=int, default=0, help="the last id of the previous page")
    audit_list.add_argument("--limit", type=int, default=100, help="at most this many (default: %(default)s)")
    audit_list.add_argument("--actor", help="only events by this principal id")
    audit_list.add_argument("--action", dest="audit_action", help="only this operation, e.g. certificates.revoke")
    audit_list.add_argument("--resource-type", help="only events on this kind of resource, e.g. certificate")
    audit_list.add_argument("--resource-id", help="only events on this resource")
    audit_cmd.add_parser("export", help="NDJSON on stdout")


async def run_audit(api: ApiClient, args: argparse.Namespace) -> Any:
    """``audit list`` and ``audit export``; ``audit verify`` does not go through the API."""
    if args.action == "export":
        sys.stdout.write(await api.call("audit.export"))
        return None, None, None
    query = {"after": args.after, "limit": args.limit, "actor_id": args.actor, "action": args.audit_action,
             "resource_type": args.resource_type, "resource_id": args.resource_id}
    page = await api.call("audit.list", query={k: v for k, v in query.items() if v is not None})
    return page.events, ["id", "at_ms", "actor_type", "actor_id", "action", "resource_type", "resource_id",
                         "outcome"], None


async def verify(args: argparse.Namespace) -> int:
    """``audit verify``: 0 when the chain holds, 1 when it is broken, 2 when it cannot be checked."""
    from ..audit import verify_chain
    from ..initialize import WrongMasterKey, check_master_key
    from ..secretbox import MasterKey, MasterKeyError, audit_chain_key
    from ..settings import default_data_dir
    from ..storage import open_database

    data_dir = (args.data_dir or default_data_dir()).resolve()
    if not args.database_url and not (data_dir / "certfleet.db").exists():
        print(f"certfleet: no database in {data_dir}; pass --data-dir or --database-url", file=sys.stderr)
        return 2
    try:
        master = MasterKey.load(data_dir / "master.key", os.environ.get("CERTFLEET_MASTER_KEY") or None)
    except MasterKeyError as exc:
        print(f"certfleet: {exc}: the chain is keyed by the master key", file=sys.stderr)
        return 2
    try:
        database = await trio.to_thread.run_sync(
            functools.partial(open_database, args.database_url, data_dir, create=False))
    except StorageError as exc:
        print(f"certfleet: cannot open the database: {exc}", file=sys.stderr)
        return 2
    try:
        # Every event's hash is keyed by the master key, so under another key every
        # event looks changed: tell that apart before calling anything tampered.
        await database.transact(lambda tx: check_master_key(tx, master))
        report = await verify_chain(database, key=audit_chain_key(master))
    except WrongMasterKey:
        # A key that verifies every event is the right one: then the check value is what changed.
        report = await verify_chain(database, key=audit_chain_key(master))
        if report.ok and report.events:
            print(f"audit chain OK: {report.events} events, but the database's master key check value was"
                  " changed: this key verifies every event, so the key is right and the check value was altered")
            return 1
        print("certfleet: this is not the master key of this database (its key check value does not open),"
              " so the chain cannot be checked: use the data dir (master.key) or CERTFLEET_MASTER_KEY"
              " the coordinator runs with", file=sys.stderr)
        return 2
    except (InitializationError, StorageError) as exc:
        print(f"certfleet: cannot read the audit trail: {exc}", file=sys.stderr)
        return 2
    finally:
        await database.close()
    if report.ok:
        print(f"audit chain OK: {report.events} events")
        return 0
    print(f"audit chain BROKEN at event {report.first_bad_id}: {report.problem}"
          f" ({report.events} events before it verify)")
    return 1
