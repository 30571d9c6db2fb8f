"""Ordered, named, idempotent schema migrations for both engines.

Pending migrations run in one transaction together with the rows that record them
(both engines have transactional DDL), so a crash leaves them applied or not at all. On PostgreSQL an advisory
lock keeps two coordinators starting at once from migrating together.

The SQL is portable except for the few placeholders below, filled per dialect.
Timestamps are integer Unix seconds; secrets are stored sealed (base64 text).
"""

from __future__ import annotations

from .engine import Database, Tx

__all__ = ["MIGRATIONS", "migrate"]

_DIALECT = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY"},
}

# Any value: it only has to be the same for every coordinator.
_MIGRATION_LOCK = 7_400_112_001

Statement = str | dict[str, str]
"""Portable SQL, or one statement per dialect (a dialect missing from the dict skips it)."""

MIGRATIONS: tuple[tuple[int, str, tuple[Statement, ...]], ...] = (
    (
        1,
        "initial",
        (
            """CREATE TABLE meta (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL)""",
            """CREATE TABLE issuers (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                parent_id TEXT REFERENCES issuers(id),
                certificate_pem TEXT,
                chain_pem TEXT NOT NULL,
                csr_pem TEXT,
                sealed_key TEXT NOT NULL,
                crl_number BIGINT NOT NULL DEFAULT 0,
                crl_dirty_since BIGINT,
                created_at BIGINT NOT NULL,
                retired_at BIGINT)""",
            """CREATE TABLE crls (
                issuer_id TEXT PRIMARY KEY REFERENCES issuers(id),
                number BIGINT NOT NULL,
                der TEXT NOT NULL,
                this_update BIGINT NOT NULL,
                next_update BIGINT NOT NULL,
                etag TEXT NOT NULL)""",
            """CREATE TABLE ocsp_responders (
                issuer_id TEXT PRIMARY KEY REFERENCES issuers(id),
                certificate_pem TEXT NOT NULL,
                sealed_key TEXT NOT NULL,
                not_after BIGINT NOT NULL)""",
            """CREATE TABLE ocsp_responses (
                issuer_id TEXT NOT NULL REFERENCES issuers(id),
                serial TEXT NOT NULL,
                der TEXT NOT NULL,
                refresh_at BIGINT NOT NULL,
                PRIMARY KEY (issuer_id, serial))""",
            """CREATE TABLE signing_keys (
                kid TEXT PRIMARY KEY,
                purpose TEXT NOT NULL,
                public_key TEXT NOT NULL,
                sealed_key TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                retired_at BIGINT)""",
            """CREATE TABLE bootstrap_tokens (
                id TEXT PRIMARY KEY,
                secret_hash TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                used_at BIGINT)""",
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                secret_hash TEXT NOT NULL,
                name TEXT NOT NULL,
                user_id TEXT,
                created_by TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT,
                revoked_at BIGINT,
                last_used_at BIGINT,
                mac TEXT)""",
            "CREATE INDEX api_keys_user ON api_keys (user_id)",
            """CREATE TABLE roles (
                name TEXT PRIMARY KEY,
                description TEXT NOT NULL,
                permissions TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                mac TEXT)""",
            """CREATE TABLE grants (
                id TEXT PRIMARY KEY,
                principal_type TEXT NOT NULL,
                principal_id TEXT NOT NULL,
                role TEXT NOT NULL,
                scope_type TEXT NOT NULL,
                scope_id TEXT,
                expires_at BIGINT,
                created_by TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                mac TEXT)""",
            "CREATE INDEX grants_principal ON grants (principal_type, principal_id)",
            """CREATE TABLE rate_limits (
                key TEXT PRIMARY KEY,
                window_start BIGINT NOT NULL,
                hits INTEGER NOT NULL)""",
            """CREATE TABLE profiles (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                issuer_id TEXT NOT NULL REFERENCES issuers(id),
                policy TEXT NOT NULL,
                version INTEGER NOT NULL DEFAULT 1,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL)""",
            """CREATE TABLE renewal_policies (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                fraction DOUBLE PRECISION,
                lead_seconds BIGINT,
                jitter DOUBLE PRECISION NOT NULL,
                reuse_key INTEGER NOT NULL,
                created_at BIGINT NOT NULL)""",
            """CREATE TABLE notification_channels (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                settings TEXT NOT NULL,
                sealed_secrets TEXT NOT NULL,
                min_severity TEXT NOT NULL,
                created_at BIGINT NOT NULL)""",
            """CREATE TABLE notifications (
                id TEXT PRIMARY KEY,
                channel_id TEXT NOT NULL REFERENCES notification_channels(id) ON DELETE CASCADE,
                event TEXT NOT NULL,
                dedup_key TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at BIGINT NOT NULL,
                last_error TEXT,
                created_at BIGINT NOT NULL,
                delivered_at BIGINT,
                UNIQUE (channel_id, dedup_key))""",
            "CREATE INDEX notifications_due ON notifications (status, next_attempt_at)",
            """CREATE TABLE approvals (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                subject_id TEXT NOT NULL,
                profile_id TEXT NOT NULL REFERENCES profiles(id),
                payload TEXT NOT NULL,
                status TEXT NOT NULL,
                requested_by TEXT NOT NULL,
                requester TEXT NOT NULL,
                decided_by TEXT,
                decision_note TEXT,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                decided_at BIGINT)""",
            "CREATE INDEX approvals_status ON approvals (status, expires_at)",
            """CREATE TABLE enrollment_tokens (
                id TEXT PRIMARY KEY,
                secret_hash TEXT NOT NULL,
                uses_left INTEGER NOT NULL,
                expires_at BIGINT NOT NULL,
                labels TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at BIGINT NOT NULL)""",
            """CREATE TABLE agents (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                public_key TEXT NOT NULL UNIQUE,
                labels TEXT NOT NULL,
                enrollment_token_id TEXT,
                created_at BIGINT NOT NULL,
                last_seen_at BIGINT,
                retired_at BIGINT,
                mac TEXT)""",
            """CREATE TABLE agent_token_uses (
                agent_id TEXT NOT NULL REFERENCES agents(id),
                jti TEXT NOT NULL,
                expires_at BIGINT NOT NULL,
                PRIMARY KEY (agent_id, jti))""",
            "CREATE INDEX agent_token_uses_expiry ON agent_token_uses (expires_at)",
            """CREATE TABLE targets (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                agent_id TEXT NOT NULL REFERENCES agents(id),
                kind TEXT NOT NULL,
                settings TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                mac TEXT,
                attempts BIGINT NOT NULL DEFAULT 0,
                skipped BIGINT NOT NULL DEFAULT 0,
                config_test_failures BIGINT NOT NULL DEFAULT 0,
                reload_failures BIGINT NOT NULL DEFAULT 0,
                verification_failures BIGINT NOT NULL DEFAULT 0,
                rollbacks BIGINT NOT NULL DEFAULT 0,
                last_outcome TEXT,
                last_detail TEXT,
                last_served_fingerprint TEXT,
                last_deployed_at BIGINT,
                last_check_status TEXT,
                last_check_detail TEXT,
                last_check_at BIGINT)""",
            "CREATE INDEX targets_agent ON targets (agent_id)",
            """CREATE TABLE certificates (
                id TEXT PRIMARY KEY,
                names TEXT NOT NULL,
                key_type TEXT NOT NULL,
                lifetime_seconds BIGINT NOT NULL,
                agent_id TEXT NOT NULL REFERENCES agents(id),
                profile_id TEXT NOT NULL REFERENCES profiles(id),
                renewal_policy_id TEXT REFERENCES renewal_policies(id),
                renew_at BIGINT,
                tags TEXT NOT NULL DEFAULT '[]',
                target_id TEXT NOT NULL REFERENCES targets(id),
                status TEXT NOT NULL,
                last_error TEXT,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL)""",
            """CREATE TABLE work_orders (
                id TEXT PRIMARY KEY,
                agent_id TEXT NOT NULL REFERENCES agents(id),
                certificate_id TEXT REFERENCES certificates(id),
                target_id TEXT REFERENCES targets(id),
                kind TEXT NOT NULL,
                token TEXT NOT NULL,
                status TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                dispatched_at BIGINT,
                completed_at BIGINT,
                result_detail TEXT)""",
            "CREATE INDEX work_orders_agent_status ON work_orders (agent_id, status)",
            "CREATE INDEX work_orders_status ON work_orders (status, agent_id)",
            """CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                certificate_id TEXT NOT NULL REFERENCES certificates(id),
                kind TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL,
                order_id TEXT,
                next_attempt_at BIGINT,
                last_error TEXT,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL)""",
            # Exactly one active job per certificate, enforced by the database.
            "CREATE UNIQUE INDEX jobs_one_active ON jobs (certificate_id)"
            " WHERE state NOT IN ('done', 'failed', 'cancelled')",
            "CREATE INDEX jobs_state ON jobs (state, next_attempt_at)",
            "CREATE INDEX jobs_order ON jobs (order_id)",
            "CREATE INDEX work_orders_certificate ON work_orders (certificate_id, status)",
            """CREATE TABLE certificate_versions (
                serial TEXT PRIMARY KEY,
                certificate_id TEXT NOT NULL REFERENCES certificates(id),
                order_id TEXT NOT NULL UNIQUE REFERENCES work_orders(id),
                issuer_id TEXT NOT NULL REFERENCES issuers(id),
                certificate_pem TEXT NOT NULL,
                public_key_sha256 TEXT NOT NULL,
                fingerprint_sha256 TEXT NOT NULL,
                not_before BIGINT NOT NULL,
                not_after BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT,
                revocation_reason TEXT)""",
            "CREATE INDEX certificate_versions_certificate ON certificate_versions (certificate_id)",
            "CREATE INDEX certificate_versions_revoked ON certificate_versions (issuer_id, revoked_at)",
            "CREATE INDEX certificate_versions_fingerprint ON certificate_versions (fingerprint_sha256)",
            # What the agents found: one row per certificate per location on an agent.
            # A find reported gone keeps its row (removed_at), so triage history stays.
            """CREATE TABLE discovered_certificates (
                id {serial},
                agent_id TEXT NOT NULL REFERENCES agents(id),
                source TEXT NOT NULL,
                fingerprint_sha256 TEXT NOT NULL,
                path TEXT NOT NULL,
                position INTEGER NOT NULL,
                subject TEXT NOT NULL,
                sans TEXT NOT NULL,
                issuer TEXT NOT NULL,
                serial TEXT NOT NULL,
                not_before BIGINT NOT NULL,
                not_after BIGINT NOT NULL,
                key_algorithm TEXT NOT NULL,
                key_size INTEGER,
                is_ca INTEGER NOT NULL,
                format TEXT NOT NULL,
                has_private_key INTEGER NOT NULL,
                status TEXT NOT NULL,
                managed_certificate_id TEXT REFERENCES certificates(id),
                claimed_certificate_id TEXT REFERENCES certificates(id),
                dismiss_reason TEXT,
                triaged_by TEXT,
                triaged_at BIGINT,
                scan_id TEXT NOT NULL,
                first_seen BIGINT NOT NULL,
                last_seen BIGINT NOT NULL,
                removed_at BIGINT,
                UNIQUE (fingerprint_sha256, agent_id, path, position))""",
            "CREATE INDEX discovered_certificates_agent ON discovered_certificates (agent_id, removed_at)",
            "CREATE INDEX discovered_certificates_expiry ON discovered_certificates (status, not_after)",
            """CREATE TABLE agent_events (
                id {serial},
                agent_id TEXT NOT NULL REFERENCES agents(id),
                event TEXT NOT NULL,
                order_id TEXT,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL,
                created_at BIGINT NOT NULL)""",
            """CREATE TABLE audit_events (
                id BIGINT PRIMARY KEY,
                at_ms BIGINT NOT NULL,
                actor_type TEXT NOT NULL,
                actor_id TEXT NOT NULL,
                action TEXT NOT NULL,
                resource_type TEXT NOT NULL,
                resource_id TEXT NOT NULL,
                outcome TEXT NOT NULL,
                request_id TEXT NOT NULL,
                source_address TEXT NOT NULL,
                body_sha256 TEXT NOT NULL,
                latency_ms BIGINT NOT NULL,
                details TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL)""",
            "CREATE INDEX audit_events_at ON audit_events (at_ms)",
            "CREATE INDEX audit_events_actor ON audit_events (actor_id)",
            "CREATE INDEX audit_events_resource ON audit_events (resource_type, resource_id)",
            # Append-only, enforced by the database itself.
            {
                "sqlite": "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events"
                          " BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END",
                "postgresql": "CREATE FUNCTION certfleet_audit_append_only() RETURNS trigger"
                              " LANGUAGE plpgsql AS $$ BEGIN"
                              " RAISE EXCEPTION 'audit events are append-only'; END $$",
            },
            {
                "sqlite": "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events"
                          " BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END",
                "postgresql": "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE"
                              " ON audit_events FOR EACH ROW EXECUTE FUNCTION certfleet_audit_append_only()",
            },
            {
                "postgresql": "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events"
                              " FOR EACH STATEMENT EXECUTE FUNCTION certfleet_audit_append_only()",
            },
        ),
    ),
    (
        2,
        "list-join-indexes",
        # What lists and scope checks join on: without them a list of targets or
        # agents scanned every certificate once per row.
        (
            "CREATE INDEX certificates_target ON certificates (target_id)",
            "CREATE INDEX certificates_agent ON certificates (agent_id, profile_id)",
            "CREATE INDEX certificates_profile ON certificates (profile_id)",
            "CREATE INDEX jobs_certificate ON jobs (certificate_id, state)",
            "CREATE INDEX profiles_issuer ON profiles (issuer_id)",
        ),
    ),
    (
        3,
        "issuer-revocation",
        # A revoked intermediate stays listed on its parent's CRL and in its OCSP
        # answers (RFC 5280 §5.3.1) with its time and reason.
        (
            "ALTER TABLE issuers ADD COLUMN revoked_at BIGINT",
            "ALTER TABLE issuers ADD COLUMN revocation_reason TEXT",
        ),
    ),
)


def _applied(tx: Tx) -> set[int]:
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
    )
    return {row["version"] for row in tx.all("SELECT version FROM schema_migrations")}


def _apply_all(tx: Tx, now: int) -> list[str]:
    if tx.dialect == "postgresql":
        tx.one("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
    applied = _applied(tx)
    done: list[str] = []
    for version, name, statements in MIGRATIONS:
        if version in applied:
            continue
        for statement in statements:
            if isinstance(statement, dict):
                if tx.dialect in statement:
                    tx.execute(statement[tx.dialect])
            else:
                tx.execute(statement.format(**_DIALECT[tx.dialect]))
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (version, name, now),
        )
        done.append(f"{version:04d}_{name}")
    return done


async def migrate(database: Database, *, now: int) -> list[str]:
    """Apply every migration not yet recorded; return the names applied."""
    return await database.transact(lambda tx: _apply_all(tx, now))
