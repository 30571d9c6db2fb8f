"""``serve``, ``demo`` and ``bootstrap``: running the coordinator and getting its
first admin API key."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import trio

from certfleet.shared import wire

from ..client import ApiClient
from ..initialize import InitializationError
from ..settings import Settings
from ..storage import StorageError

__all__ = ["add_commands", "exchange_bootstrap_token", "reissue_bootstrap", "start"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the coordinator")
    serve.add_argument("--listen", default="127.0.0.1:8443", metavar="HOST:PORT",
                       help="address and port of the HTTPS API (default: %(default)s; port 0: any free port)")
    serve.add_argument("--data-dir", type=Path,
                       help="where the master key, TLS files and SQLite database live (env CERTFLEET_DATA_DIR;"
                            " default: /var/lib/certfleet for root, else ~/.local/share/certfleet)")
    serve.add_argument("--tls-san", action="append", default=[], metavar="NAME",
                       help="extra DNS name or IP address for the TLS certificate made on first start (repeatable)")

    demo = commands.add_parser("demo", help="coordinator + agent + one certificate, end to end")
    demo.add_argument("--data-dir", type=Path, default=Path("demo-data"),
                      help="where the demo keeps its coordinator, agent and certificate (default: %(default)s)")
    demo.add_argument("--listen", default="127.0.0.1:8443", metavar="HOST:PORT",
                      help="address and port of the demo coordinator (default: %(default)s; port 0: any free port)")
    demo.add_argument("--once", action="store_true", help="exit after the first deployment")

    bootstrap = commands.add_parser("bootstrap", help="exchange the bootstrap token for an admin API key")
    bootstrap.add_argument("--token", default=os.environ.get("CERTFLEET_BOOTSTRAP_TOKEN"),
                           help="the one-time token the coordinator printed at first start"
                                " (env CERTFLEET_BOOTSTRAP_TOKEN)")
    bootstrap.add_argument("--reissue", action="store_true",
                           help="on the coordinator's host: print a new token in place of one never exchanged"
                                " (reads the data dir and database directly)")
    bootstrap.add_argument("--data-dir", type=Path,
                           help="with --reissue: the coordinator's data dir (env CERTFLEET_DATA_DIR)")
    bootstrap.add_argument("--database-url", default=os.environ.get("CERTFLEET_DATABASE_URL"),
                           help="with --reissue: the coordinator's database, if not the SQLite file in the data dir"
                                " (env CERTFLEET_DATABASE_URL)")


async def exchange_bootstrap_token(api: ApiClient, args: argparse.Namespace) -> Any:
    """``bootstrap``: the one API call made without an API key, since it is what gets the first one."""
    result = await api.call("auth.bootstrap", wire.BootstrapRequest(token=args.token))
    return result, [], f"admin API key (shown once; export it as CERTFLEET_API_KEY):\n{result.api_key}"


async def reissue_bootstrap(args: argparse.Namespace) -> int:
    """``bootstrap --reissue``, on the coordinator's host, straight from its database."""
    from ..initialize import reissue_bootstrap_token
    from ..storage import open_database

    settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url)
    try:
        database = await trio.to_thread.run_sync(
            functools.partial(open_database, settings.database_url, settings.data_dir, create=False))
        try:
            token = await reissue_bootstrap_token(settings, database, now=int(time.time()))
        finally:
            await database.close()
    except (InitializationError, StorageError) as exc:
        print(f"certfleet: cannot reissue the bootstrap token: {exc}", file=sys.stderr)
        return 1
    print("new one-time bootstrap token (the previous one no longer works; exchange it with"
          f" `certfleet bootstrap --token …`):\n{token}")
    return 0


async def _termination_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for received in signals:
            logging.getLogger("certfleet.server").info("%s received; shutting down", signal.Signals(received).name)
            return


def start(args: argparse.Namespace) -> int:
    """``serve`` or ``demo``; a failure to start is the one line ``main`` prints, even
    when it was raised inside the nurseries (trio wraps it in exception groups)."""
    try:
        if args.command == "serve":
            from ..server import run_coordinator

            settings = Settings.from_env(data_dir=args.data_dir, listen=args.listen, tls_sans=tuple(args.tls_san))
            trio.run(functools.partial(run_coordinator, settings, shutdown_trigger=_termination_signal))
            return 0
        from ..demo import run_demo

        return trio.run(run_demo, args.data_dir, args.listen, args.once)
    except BaseExceptionGroup as group:
        failure: BaseException = group
        while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
            failure = failure.exceptions[0]
        if isinstance(failure, (InitializationError, StorageError)):
            raise failure from None
        raise
