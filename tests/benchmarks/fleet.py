"""The coordinator as a separate process, an operator's API client, and simulated agents.

A simulated agent speaks the real agent protocol: an Ed25519 identity registered with
an enrollment token, a fresh signed request token (method + path + jti) on every
request, work orders verified against the pinned work-order key, a new key and a real
CSR per issue order, and a signed result. It does not write files or run reloads (the
deployment is reported, not performed); everything the coordinator sees is what a
real agent would send.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from certfleet.shared import jws, wire
from certfleet.shared.agent_token import AUTH_SCHEME, sign_request_token
from certfleet.shared.api import operation
from certfleet.shared.pki import KeyType, build_csr, certificate_fingerprint, generate_private_key
from certfleet.shared.workorder import verify_work_order

from .lighthttp import Connection, Response, Url, tls13_context

__all__ = ["Api", "ApiFailed", "CoordinatorProcess", "Db", "SimAgent", "create_certificates", "enroll_agents", "gather"]

BIN = Path(sys.executable).parent
BOOTSTRAP_TOKEN = "bench-bootstrap-token-0123456789abcdef"
BULK_CHUNK = 100
"""Certificates per ``certificates.create-bulk`` call when setting up a benchmark."""


class ApiFailed(Exception):
    def __init__(self, name: str, response: Response) -> None:
        self.status = response.status
        super().__init__(f"{name}: {response.status} {response.body[:300]!r}")


# --- the coordinator process ------------------------------------------------------------


class CoordinatorProcess:
    """``certfleet serve`` on 127.0.0.1:0 with the plain-HTTP PKI listener also on port
    0; on PostgreSQL in a database of its own, dropped on :meth:`stop`."""

    def __init__(self, root: Path, backend: str, postgres_url: str | None) -> None:
        self.root = root
        self.backend = backend
        self.data_dir = root / "coordinator"
        self.lines: list[str] = []
        self.postgres_admin_url = postgres_url
        self.database_url: str | None = None
        self.database_name: str | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
        env.update(CERTFLEET_BOOTSTRAP_TOKEN=BOOTSTRAP_TOKEN, CERTFLEET_PKI_LISTEN="127.0.0.1:0")
        if backend == "postgresql":
            if not postgres_url:
                raise RuntimeError("the PostgreSQL benchmarks need --postgres-url")
            self.database_name = f"certfleet_bench_{os.getpid()}_{secrets.token_hex(4)}"
            self._admin(f'CREATE DATABASE "{self.database_name}"')
            self.database_url = _with_database(postgres_url, self.database_name)
            env["CERTFLEET_DATABASE_URL"] = self.database_url
        self.popen = subprocess.Popen(
            [str(BIN / "certfleet"), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while not (found := re.search(r"coordinator listening on (https://\S+)", self.output)):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the coordinator did not start:\n{self.output[-3000:]}")
            time.sleep(0.05)
        self.url = found.group(1)
        pki = re.search(r"PKI endpoints \(CRL, OCSP, CA certificates\) also on (http://\S+)", self.output)
        self.pki_url = pki.group(1) if pki else None
        self.ca_path = self.data_dir / "tls" / "ca.pem"
        self.context = tls13_context(self.ca_path)

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line.rstrip("\n"))

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.postgres_admin_url, autocommit=True) as connection:  # type: ignore[arg-type]
            connection.execute(sql)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(timeout=5)
        if self.database_name:
            self._admin(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
            self.database_name = None

    @contextmanager
    def database(self) -> Iterator[Db]:
        """A direct connection to the coordinator's database, for checks (duplicate
        jobs) and for seeding what would take too long to create through the API."""
        if self.backend == "postgresql":
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.database_url, row_factory=dict_row) as connection:  # type: ignore[arg-type]
                yield Db(connection, "postgresql")
        else:
            connection = sqlite3.connect(str(self.data_dir / "certfleet.db"), timeout=60, isolation_level=None)
            connection.row_factory = sqlite3.Row
            try:
                yield Db(connection, "sqlite")
            finally:
                connection.close()


def _with_database(url: str, name: str) -> str:
    scheme, rest = url.split("://", 1)
    authority, _, query = rest.partition("/")
    query = query.partition("?")[2]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


@dataclass
class Db:
    connection: Any
    dialect: str

    def _run(self, sql: str, params: tuple) -> Any:
        if self.dialect != "postgresql":
            return self.connection.execute(sql, params)
        if not params:
            return self.connection.execute(sql)
        # psycopg reads every % as a placeholder once there are parameters.
        return self.connection.execute(sql.replace("%", "%%").replace("?", "%s"), params)

    def all(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._run(sql, params).fetchall()]

    def scalar(self, sql: str, params: tuple = ()) -> Any:
        row = self._run(sql, params).fetchone()
        return None if row is None else list(dict(row).values())[0]

    def execute(self, sql: str, params: tuple = ()) -> None:
        self._run(sql, params)

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        if self.dialect == "postgresql":
            with self.connection.cursor() as cursor:
                cursor.executemany(sql.replace("%", "%%").replace("?", "%s"), rows)
        else:
            self.connection.executemany(sql, rows)

    def commit(self) -> None:
        if self.dialect == "postgresql":
            self.connection.commit()


# --- concurrency helper -------------------------------------------------------------------


async def gather(items: list[Any], fn: Callable[[Any], Any], *, concurrency: int) -> list[Any]:
    """``await fn(item)`` for every item, at most ``concurrency`` at a time; results in order."""
    results: list[Any] = [None] * len(items)
    queue = iter(enumerate(items))

    async def worker() -> None:
        for index, item in queue:
            results[index] = await fn(item)

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, len(items))):
            nursery.start_soon(worker)
    return results


# --- the operator's API ------------------------------------------------------------------


class Api:
    """Catalogue operations with an API key, over a small pool of keep-alive connections."""

    def __init__(self, url: str, context: ssl.SSLContext, api_key: str | None = None, *, size: int = 8) -> None:
        self.url = Url.parse(url)
        self.context = context
        self.api_key = api_key
        self._idle = [Connection(self.url, context) for _ in range(size)]
        self._available = trio.Semaphore(size)

    async def request(self, method: str, path: str, *, body: bytes = b"", content_type: str | None = None,
                      headers: list[tuple[str, str]] | None = None) -> Response:
        async with self._available:
            connection = self._idle.pop()
            try:
                auth = [("Authorization", f"Bearer {self.api_key}")] if self.api_key else []
                return await connection.request(method, path, body=body, content_type=content_type,
                                                headers=auth + (headers or []))
            finally:
                self._idle.append(connection)

    async def call(self, name: str, body: msgspec.Struct | None = None, *, query: str = "", **params: str) -> Any:
        op = operation(name)
        path = op.url_path(**params) + (f"?{query}" if query else "")
        response = await self.request(op.method, path, body=wire.encode(body) if body is not None else b"",
                                      content_type="application/json" if body is not None else None)
        if response.status >= 400:
            raise ApiFailed(name, response)
        if op.content_type != "application/json":
            return response.body
        return msgspec.json.decode(response.body, type=op.output or Any)

    async def aclose(self) -> None:
        for connection in self._idle:
            await connection.aclose()

    @classmethod
    async def bootstrap(cls, coordinator: CoordinatorProcess, *, size: int = 8) -> Api:
        anonymous = cls(coordinator.url, coordinator.context, size=1)
        result = await anonymous.call("auth.bootstrap", wire.BootstrapRequest(token=BOOTSTRAP_TOKEN))
        await anonymous.aclose()
        return cls(coordinator.url, coordinator.context, result.api_key, size=size)


# --- simulated agents ----------------------------------------------------------------------


@dataclass
class SimAgent:
    id: str
    identity: ed25519.Ed25519PrivateKey
    work_order_keys: dict[str, ed25519.Ed25519PublicKey]
    connection: Connection
    executed: set[str] = field(default_factory=set)
    csrs: dict[str, str] = field(default_factory=dict)
    """Order id → its CSR until the result is in: as an agent keeps an order's key in its
    state, an order cut short after its CSR was answered is finished with the same key."""

    def _headers(self, method: str, path: str) -> list[tuple[str, str]]:
        token = sign_request_token(self.identity, agent_id=self.id, method=method, path=path, now=int(time.time()))
        return [("Authorization", f"{AUTH_SCHEME} {token}")]

    async def call(self, name: str, body: msgspec.Struct | None = None, *, query: str = "", **params: str) -> Any:
        op = operation(name)
        path = op.url_path(**params)
        response = await self.connection.request(
            op.method, path + (f"?{query}" if query else ""), headers=self._headers(op.method, path),
            body=wire.encode(body) if body is not None else b"",
            content_type="application/json" if body is not None else None)
        if response.status >= 400:
            raise ApiFailed(name, response)
        return msgspec.json.decode(response.body, type=op.output)

    async def poll(self, wait: int) -> list[wire.Delivery]:
        batch: wire.WorkBatch = await self.call("agent.work", query=f"wait={wait}")
        return batch.orders

    def prepare(self, delivery: wire.Delivery) -> tuple[str, str, str]:
        """Verify an issue order and make its key and CSR: (order id, certificate id, CSR PEM)."""
        order = verify_work_order(delivery.token, keys=self.work_order_keys, agent_id=self.id, now=time.time())
        payload = order.payload
        assert isinstance(payload, wire.IssueOrder)
        csr = self.csrs.get(order.id)
        if csr is None:
            key = generate_private_key(KeyType(payload.key_type))
            csr = self.csrs[order.id] = build_csr(key, payload.names).decode()
        return order.id, payload.certificate_id, csr

    async def submit_csr(self, order_id: str, csr: str) -> wire.CertificateBundle:
        return await self.call("agent.csr", wire.CsrSubmission(csr=csr), order_id=order_id)

    async def report(self, order_id: str, bundle: wire.CertificateBundle) -> None:
        leaf = x509.load_pem_x509_certificate(bundle.certificate.encode())
        await self.call("agent.result", wire.OrderResult(
            status="succeeded", fingerprint_sha256=certificate_fingerprint(leaf), detail="deployed",
            deployment=wire.DeploymentFacts(kind="file")), order_id=order_id)

    async def execute(self, delivery: wire.Delivery) -> bool:
        """Run an issue order to the end (CSR, then result); ``False`` if it was
        already executed (the coordinator re-delivers until it has a result)."""
        order_id, _, csr = self.prepare(delivery)
        return await self.finish(order_id, csr)

    async def finish(self, order_id: str, csr: str) -> bool:
        """Submit the CSR and report the deployment; ``False`` if done before."""
        if order_id in self.executed:
            self.csrs.pop(order_id, None)
            return False
        bundle = await self.submit_csr(order_id, csr)
        await self.report(order_id, bundle)
        self.executed.add(order_id)
        del self.csrs[order_id]
        return True


async def enroll_agents(coordinator: CoordinatorProcess, api: Api, count: int, *, concurrency: int = 16,
                        prefix: str = "sim") -> list[SimAgent]:
    """Enroll ``count`` agents through the API (one N-use token, one POST each)."""
    token = await api.call("agents.enrollment-token.create",
                           wire.EnrollmentTokenCreate(uses=count, ttl_seconds=6 * 3600))
    url = Url.parse(coordinator.url)
    anonymous = Api(coordinator.url, coordinator.context, size=concurrency)

    async def enroll(index: int) -> SimAgent:
        identity = ed25519.Ed25519PrivateKey.generate()
        response: wire.EnrollResponse = await anonymous.call("agent.enroll", wire.EnrollRequest(
            token=token.token, name=f"{prefix}-{index:05d}", public_key=jws.public_key_raw(identity.public_key())))
        keys = {k.kid: jws.public_key_from_raw(k.public_key) for k in response.work_order_keys}
        return SimAgent(response.agent_id, identity, keys, Connection(url, coordinator.context))

    try:
        return await gather(list(range(count)), enroll, concurrency=concurrency)
    finally:
        await anonymous.aclose()


async def create_certificates(api: Api, agents: list[SimAgent], *, per_agent: int = 1, concurrency: int = 4,
                              lifetime: int = 90 * 86400, prefix: str = "bench", tags: list[str] | None = None,
                              key_type: KeyType = KeyType.EC_P256) -> list[str]:
    """Certificates for each agent (an inline file target each) through
    ``certificates.create-bulk``, ``BULK_CHUNK`` per call; returns ids in order."""
    names = [(agent, f"{prefix}-{agent.id[4:16]}-{n}.bench.test") for agent in agents for n in range(per_agent)]
    requests = [wire.CertificateCreate(common_name=name, agent_id=agent.id,
                                       target=wire.FileTarget(directory=f"/srv/bench/{name}"),
                                       lifetime_seconds=lifetime, tags=tags or [], key_type=key_type)
                for agent, name in names]
    chunks = [requests[start:start + BULK_CHUNK] for start in range(0, len(requests), BULK_CHUNK)]

    async def create(chunk: list[wire.CertificateCreate]) -> list[str]:
        created = await api.call("certificates.create-bulk", wire.CertificateCreateBulk(certificates=chunk))
        return [info.id for info in created]

    return [id for ids in await gather(chunks, create, concurrency=concurrency) for id in ids]
