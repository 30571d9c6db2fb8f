"""CRL: generation time with 1k, 10k and 100k revoked entries, and revoke-call latency
at each size.

Creating 100,000 revoked certificates through the API would take most of the run,
so the revoked entries are seeded straight into the database (rows shaped like the
ones revocation writes: a version with ``revoked_at`` and a reason). The certificates
revoked through the API (``POST /api/v1/certificates/{id}/revoke``) are real ones,
issued through the API first; their calls are timed at each size, paced so that the
debounced CRL rebuild the coordinator starts after a revocation runs while they go on.

Generation is timed through the coordinator: the stored CRL is removed and
``GET /.well-known/pki/crl/issuing`` builds it (reading the revoked entries, signing
with the issuing CA, storing it) before it answers. Baseline: plain ``cryptography``
building and signing a CRL with the same entries in this process, handing the builder
all entries at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import secrets
import statistics
import time

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet.shared import wire

from .bench_ocsp import issue_certificates
from .context import BenchContext
from .fleet import CoordinatorProcess
from .lighthttp import Connection, Url
from .procstats import percentile
from .profiling import Profiler
from .report import Figure, Section

__all__ = ["raw_crl_seconds", "run"]

SEED_REASONS = ("unspecified", "key-compromise", "superseded", "cessation-of-operation")
REPEATS = 3
REVOKE_PACING = 0.25


def raw_crl_seconds(entries: list[tuple[str, int, str]]) -> float:
    """Seconds for ``cryptography`` to build and sign a CRL with ``entries`` (P-256 CA).

    The entries go to the builder as one list: adding them one at a time
    (``add_revoked_certificate``) copies the list each time, which is quadratic.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench issuing CA")])
    reasons = {"key-compromise": x509.ReasonFlags.key_compromise, "superseded": x509.ReasonFlags.superseded,
               "cessation-of-operation": x509.ReasonFlags.cessation_of_operation}
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    revoked = []
    for serial, revoked_at, reason in entries:
        entry = x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(
            dt.datetime.fromtimestamp(revoked_at, tz=dt.UTC))
        if reason in reasons:
            entry = entry.add_extension(x509.CRLReason(reasons[reason]), critical=False)
        revoked.append(entry.build())
    extensions = [
        x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(1)),
        x509.Extension(x509.AuthorityKeyIdentifier.oid, False,
                       x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())),
    ]
    x509.CertificateRevocationListBuilder(name, now, now + dt.timedelta(days=1), extensions, revoked).sign(
        key, hashes.SHA256())
    return time.perf_counter() - started


def _seed(coordinator: CoordinatorProcess, owner: dict, count: int, now: int) -> list[tuple[str, int, str]]:
    """Insert ``count`` revoked versions of ``owner``'s certificate (and the orders they
    reference); returns their (serial, revoked at, reason)."""
    entries = []
    orders, versions = [], []
    for _ in range(count):
        serial = format(int.from_bytes(secrets.token_bytes(19), "big") | 1 << 150, "x")
        reason = random.choice(SEED_REASONS)
        order_id = f"ord_seed{secrets.token_hex(10)}"
        orders.append((order_id, owner["agent_id"], owner["id"], "issue", "seeded", "succeeded", now, now + 86400))
        versions.append((serial, owner["id"], order_id, owner["issuer_id"], "seeded", "0" * 64, "0" * 64, now - 60,
                         now + 90 * 86400, now, now, reason))
        entries.append((serial, now, reason))
    order_columns = "id, agent_id, certificate_id, kind, token, status, created_at, expires_at"
    version_columns = ("serial, certificate_id, order_id, issuer_id, certificate_pem, public_key_sha256,"
                       " fingerprint_sha256, not_before, not_after, created_at, revoked_at, revocation_reason")
    with coordinator.database() as db:
        if db.dialect == "postgresql":
            with db.connection.cursor() as cursor:
                with cursor.copy(f"COPY work_orders ({order_columns}) FROM STDIN") as copy:
                    for row in orders:
                        copy.write_row(row)
                with cursor.copy(f"COPY certificate_versions ({version_columns}) FROM STDIN") as copy:
                    for row in versions:
                        copy.write_row(row)
            db.commit()
        else:
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO work_orders ({order_columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", orders)
            db.executemany(f"INSERT INTO certificate_versions ({version_columns})"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", versions)
            db.execute("COMMIT")
    return entries


async def _crl_number(coordinator: CoordinatorProcess) -> int:
    def read() -> int:
        with coordinator.database() as db:
            return int(db.scalar("SELECT crl_number FROM issuers WHERE name = 'issuing'"))

    return await trio.to_thread.run_sync(read)


async def _wait_settled(coordinator: CoordinatorProcess) -> None:
    """Until no CRL rebuild is pending (the debounced one after the revocations ran)."""
    def pending() -> bool:
        with coordinator.database() as db:
            return bool(db.scalar(
                "SELECT i.crl_dirty_since IS NOT NULL OR c.number IS NULL OR c.number < i.crl_number AS pending"
                " FROM issuers i LEFT JOIN crls c ON c.issuer_id = i.id WHERE i.name = 'issuing'"))

    with trio.move_on_after(120):
        while await trio.to_thread.run_sync(pending):
            await trio.sleep(0.2)


async def _timed_generation(coordinator: CoordinatorProcess, connection: Connection) -> tuple[float, int]:
    """Remove the stored CRL and time the GET that rebuilds it; (seconds, CRL bytes).

    The coordinator's maintenance loop also builds a missing CRL; a run where it built
    one too (the CRL number moved by more than one) is repeated.
    """
    for _ in range(5):
        before = await _crl_number(coordinator)

        def drop() -> None:
            with coordinator.database() as db:
                db.execute("DELETE FROM crls WHERE issuer_id = (SELECT id FROM issuers WHERE name = 'issuing')")
                db.commit()

        await trio.to_thread.run_sync(drop)
        started = trio.current_time()
        response = await connection.request("GET", "/.well-known/pki/crl/issuing")
        elapsed = trio.current_time() - started
        assert response.status == 200, response
        if await _crl_number(coordinator) == before + 1:
            return elapsed, len(response.body)
        await trio.sleep(1.5)
    return elapsed, len(response.body)


async def run(ctx: BenchContext, backend: str) -> Section:
    sizes = ctx.sizes
    section = Section(f"crl-{backend}", f"CRL ({backend})")
    revokes = sizes.crl_revokes
    async with ctx.coordinator(backend, "crl") as (coordinator, api):
        needed = revokes * (len(sizes.crl_sizes) + 1) + 1
        ctx.log(f"crl/{backend}: issuing {needed} certificates to revoke")
        _, _, owned = await issue_certificates(coordinator, api, needed)
        ids = [certificate_id for _, certificate_id in owned]
        owner_id, ids = ids[0], ids[1:]

        def owner_row() -> dict:
            with coordinator.database() as db:
                return db.all("SELECT c.id, c.agent_id, v.issuer_id FROM certificates c JOIN certificate_versions v"
                              " ON v.certificate_id = c.id WHERE c.id = ?", (owner_id,))[0]

        owner = await trio.to_thread.run_sync(owner_row)
        connection = Connection(Url.parse(coordinator.url), coordinator.context)

        async def revoke_batch() -> list[float]:
            latencies = []
            for certificate_id in ids[:revokes]:
                started = trio.current_time()
                await api.call("certificates.revoke", wire.RevokeRequest(reason="key-compromise"),
                               certificate_id=certificate_id)
                latencies.append(trio.current_time() - started)
                await trio.sleep(max(0.0, started + REVOKE_PACING - trio.current_time()))
            del ids[:revokes]
            return latencies

        empty_latencies = await revoke_batch()
        await _wait_settled(coordinator)
        revoked = revokes
        for size in sizes.crl_sizes:
            ctx.log(f"crl/{backend}: {size:,} revoked entries")
            seeded = await trio.to_thread.run_sync(_seed, coordinator, owner, max(0, size - revoked - revokes),
                                                   int(time.time()))
            latencies = await revoke_batch()
            revoked += len(seeded) + revokes
            await _wait_settled(coordinator)
            generation = []
            largest = size == max(sizes.crl_sizes)
            profile_path = ctx.results_dir / "profiles" / f"crl-{size}-{backend}.raw"
            with Profiler(coordinator.pid, profile_path) if largest else contextlib.nullcontext() as profiler:
                # A rebuild at the largest size takes long enough that one is a fair sample.
                for _ in range(1 if largest else REPEATS):
                    seconds, crl_bytes = await _timed_generation(coordinator, connection)
                    generation.append(seconds)
            if largest:
                section.profile = [f"(while the coordinator rebuilt the CRL of {size:,} entries)",
                                   *profiler.summary()]
            started = trio.current_time()
            fetched = await connection.request("GET", "/.well-known/pki/crl/issuing")
            fetch_seconds = trio.current_time() - started
            crl = x509.load_der_x509_crl(fetched.body)
            listed = len(crl)
            same = [(format(r.serial_number, "x"), int(r.revocation_date_utc.timestamp()), "key-compromise")
                    for r in crl]
            raw = await trio.to_thread.run_sync(raw_crl_seconds, same)
            label = f"{listed:,} entries"
            section.add(
                Figure("crl", backend, f"{label}: generation (GET rebuilds it)", statistics.median(generation) * 1000,
                       "ms", "raw cryptography build+sign, same entries (one list)", raw * 1000, False),
                Figure("crl", backend, f"{label}: revoke call p50", percentile(latencies, 0.5) * 1000, "ms",
                       "revoke call p50 with an empty CRL", percentile(empty_latencies, 0.5) * 1000, False),
                Figure("crl", backend, f"{label}: revoke call max", max(latencies) * 1000, "ms",
                       "revoke call max with an empty CRL", max(empty_latencies) * 1000, False),
            )
            section.notes.append(
                f"{label}: CRL of {crl_bytes / 1024:,.0f} KiB; generation runs {', '.join(f'{g * 1000:.0f}' for g in generation)} ms; "
                f"serving the stored CRL took {fetch_seconds * 1000:.0f} ms.")
        await connection.aclose()
    section.notes += [
        f"Revocations: {revokes} real certificates per size, one call every {REVOKE_PACING} s, so the CRL rebuild "
        "the coordinator schedules 2 s after a revocation (debounce) overlaps the later calls.",
        "The revoked entries beyond those are seeded into the database (see the module docstring): creating "
        "100,000 revoked certificates through the API would take longer than the whole run.",
    ]
    return section
