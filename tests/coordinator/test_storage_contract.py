"""The storage contract: the same behaviour from the SQLite and the PostgreSQL engine.

Every test runs against both (``database_url``: ``None`` is the SQLite file in the
data dir, else a fresh PostgreSQL database).
"""

from __future__ import annotations

import json

import pytest
import trio

from certfleet.coordinator import audit, storage
from certfleet.coordinator.storage import (
    Agents,
    BootstrapTokens,
    Certificates,
    EnrollmentTokens,
    Issuers,
    Meta,
    Profiles,
    Targets,
    WorkOrders,
)
from certfleet.coordinator.storage.migrations import MIGRATIONS

NOW = 1_700_000_000

TABLES = ["meta", "issuers", "crls", "ocsp_responders", "ocsp_responses", "signing_keys", "bootstrap_tokens",
          "api_keys", "roles", "grants", "rate_limits", "profiles", "approvals", "enrollment_tokens", "agents",
          "agent_token_uses", "certificates", "work_orders", "certificate_versions", "agent_events",
          "audit_events", "schema_migrations"]


class Boom(Exception):
    pass


@pytest.fixture
async def empty_db(database_url, tmp_path):
    database = storage.open_database(database_url, tmp_path)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def db(empty_db):
    await storage.migrate(empty_db, now=NOW)
    return empty_db


def _agent(tx, id: str = "agent-1", *, public_key: str | None = None, now: int = NOW) -> None:
    Agents(tx).insert(id=id, name=id, public_key=public_key or f"key-of-{id}", labels={"env": "test"},
                      enrollment_token_id="enroll-1", now=now)


def _issuer_and_profile(tx) -> None:
    Issuers(tx).insert(id="issuer-1", name="issuing", kind="local", status="active", parent_id=None,
                       certificate_pem=None, chain_pem="", sealed_key="sealed", now=NOW)
    Profiles(tx).insert(id="profile-1", name="default", issuer_id="issuer-1", policy="{}", now=NOW)


def _certificate(tx, id: str = "cert-1", *, agent_id: str = "agent-1", now: int = NOW) -> None:
    Targets(tx).insert(id=f"target-of-{id}", name=f"target-of-{id}", agent_id=agent_id, kind="file",
                       settings=json.dumps({"kind": "file", "directory": "/etc/tls"}), created_by="test", now=now)
    Certificates(tx).insert(id=id, names=["www.example.com", "192.0.2.1"], key_type="ec-p256",
                            lifetime_seconds=90 * 86400, agent_id=agent_id, profile_id="profile-1",
                            target_id=f"target-of-{id}", now=now, tags=["web"])


def _order(tx, id: str, *, agent_id: str = "agent-1", created: int = NOW, expires: int = NOW + 3600,
           certificate_id: str | None = None) -> None:
    WorkOrders(tx).insert(id=id, agent_id=agent_id, certificate_id=certificate_id, kind="issue",
                          token=f"token-{id}", expires_at=expires, now=created)


async def _seed(db, fn) -> None:
    await db.transact(fn)


# --- migrations and transactions ---------------------------------------------------------


async def test_migrate_creates_the_schema_and_records_it(empty_db):
    applied = await storage.migrate(empty_db, now=NOW)
    assert applied == [f"{version:04d}_{name}" for version, name, _ in MIGRATIONS]

    def check(tx):
        for table in TABLES:
            assert tx.one(f"SELECT COUNT(*) AS n FROM {table}") is not None, table
        return tx.all("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")

    recorded = await empty_db.transact(check)
    assert recorded == [{"version": v, "name": n, "applied_at": NOW} for v, n, _ in MIGRATIONS]


async def test_migrate_twice_applies_nothing_the_second_time(empty_db):
    assert await storage.migrate(empty_db, now=NOW)
    assert await storage.migrate(empty_db, now=NOW + 1) == []
    rows = await empty_db.transact(lambda tx: tx.all("SELECT applied_at FROM schema_migrations"))
    assert {row["applied_at"] for row in rows} == {NOW}


async def test_concurrent_migrations_apply_once(empty_db):
    results: list[list[str]] = []

    async def run() -> None:
        results.append(await storage.migrate(empty_db, now=NOW))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        nursery.start_soon(run)
    assert sorted(results, key=len) == [[], [f"{v:04d}_{n}" for v, n, _ in MIGRATIONS]]


async def test_transact_commits_and_returns_the_functions_result(db):
    def write(tx):
        Meta(tx).insert("color", "blue")
        return "done"

    assert await db.transact(write) == "done"
    assert await db.transact(lambda tx: Meta(tx).get("color")) == "blue"
    assert await db.transact(lambda tx: Meta(tx).get("missing")) is None


async def test_a_transaction_that_raises_rolls_back_every_statement(db):
    await _seed(db, lambda tx: Meta(tx).insert("kept", "1"))

    def write_then_fail(tx):
        Meta(tx).insert("a", "1")
        Meta(tx).insert("b", "2")
        tx.execute("UPDATE meta SET value = ? WHERE key = ?", ("changed", "kept"))
        _agent(tx)
        assert Meta(tx).get("a") == "1"  # visible inside the transaction
        raise Boom

    with pytest.raises(Boom):
        await db.transact(write_then_fail)

    def read(tx):
        return Meta(tx).get("a"), Meta(tx).get("b"), Meta(tx).get("kept"), Agents(tx).find("agent-1")

    assert await db.transact(read) == (None, None, "1", None)


async def test_a_conflict_rolls_back_the_whole_transaction(db):
    await _seed(db, lambda tx: Meta(tx).insert("key", "first"))

    def write(tx):
        Meta(tx).insert("other", "x")
        Meta(tx).insert("key", "second")

    with pytest.raises(storage.Conflict):
        await db.transact(write)
    assert await db.transact(lambda tx: (Meta(tx).get("key"), Meta(tx).get("other"))) == ("first", None)
    # The connection is usable afterwards (PostgreSQL aborted that transaction).
    await _seed(db, lambda tx: Meta(tx).insert("after", "ok"))
    assert await db.transact(lambda tx: Meta(tx).get("after")) == "ok"


async def test_duplicate_primary_key_is_a_conflict(db):
    await _seed(db, _agent)
    with pytest.raises(storage.Conflict):
        await db.transact(lambda tx: _agent(tx, public_key="another-key"))


async def test_duplicate_unique_column_is_a_conflict(db):
    await _seed(db, lambda tx: _agent(tx, "agent-1", public_key="shared-key"))
    with pytest.raises(storage.Conflict):
        await db.transact(lambda tx: _agent(tx, "agent-2", public_key="shared-key"))
    assert [a["id"] for a in await db.transact(lambda tx: Agents(tx).list())] == ["agent-1"]


async def test_duplicate_composite_primary_key_is_a_conflict(db):
    await _seed(db, _agent)
    await _seed(db, lambda tx: tx.execute(
        "INSERT INTO agent_token_uses (agent_id, jti, expires_at) VALUES (?, ?, ?)", ("agent-1", "j", NOW)))
    with pytest.raises(storage.Conflict):
        await db.transact(lambda tx: tx.execute(
            "INSERT INTO agent_token_uses (agent_id, jti, expires_at) VALUES (?, ?, ?)", ("agent-1", "j", NOW)))


async def test_foreign_keys_are_enforced(db):
    with pytest.raises(Exception):  # noqa: B017 - the engines raise their own driver errors
        await db.transact(lambda tx: _order(tx, "order-1", agent_id="nobody"))
    assert await db.transact(lambda tx: tx.all("SELECT * FROM work_orders")) == []


async def test_execute_many_writes_every_row_or_none_with_a_conflict(db):
    rows = [(f"key-{n}", f"value-{n}") for n in range(3)]
    await _seed(db, lambda tx: tx.execute_many("INSERT INTO meta (key, value) VALUES (?, ?)", rows))
    with pytest.raises(storage.Conflict):
        await db.transact(lambda tx: tx.execute_many("INSERT INTO meta (key, value) VALUES (?, ?)",
                                                     [("key-3", "new"), ("key-1", "again")]))
    stored = await db.transact(lambda tx: tx.all("SELECT key, value FROM meta WHERE key LIKE 'key-%' ORDER BY key"))
    assert [(r["key"], r["value"]) for r in stored] == rows
    await _seed(db, lambda tx: tx.execute_many("INSERT INTO meta (key, value) VALUES (?, ?)", []))


async def test_rows_by_id_come_back_for_more_ids_than_one_statement_takes(db):
    await _seed(db, _agent)
    await _seed(db, _issuer_and_profile)
    ids = [f"cert-{n:04}" for n in range(1203)]

    def seed(tx):
        for id in ids:
            _certificate(tx, id)

    await _seed(db, seed)
    targets = await db.transact(lambda tx: Targets(tx).get_many(f"target-of-{id}" for id in ids))
    assert sorted(targets) == sorted(f"target-of-{id}" for id in ids)
    assert targets["target-of-cert-0600"]["agent_id"] == "agent-1"
    with pytest.raises(storage.NotFound, match="target nowhere"):
        await db.transact(lambda tx: Targets(tx).get_many(["target-of-cert-0001", "nowhere"]))
    assert await db.transact(lambda tx: Profiles(tx).get_many([])) == {}


async def test_sql_with_literal_percent_and_question_mark_runs_on_both_engines(db):

    def run(tx):
        return tx.one("SELECT 'a%b' AS p, 'why?' AS q, ? AS v", ("x",))

    assert await db.transact(run) == {"p": "a%b", "q": "why?", "v": "x"}


# --- repositories --------------------------------------------------------------------------


async def test_get_of_a_missing_agent_or_certificate_is_not_found(db):
    with pytest.raises(storage.NotFound):
        await db.transact(lambda tx: Agents(tx).get("nobody"))
    with pytest.raises(storage.NotFound):
        await db.transact(lambda tx: Certificates(tx).get("nothing"))
    assert await db.transact(lambda tx: Agents(tx).find("nobody")) is None


async def test_agent_round_trips_with_json_labels(db):
    await _seed(db, _agent)
    agent = await db.transact(lambda tx: Agents(tx).get("agent-1"))
    assert agent["name"] == "agent-1" and agent["public_key"] == "key-of-agent-1"
    assert json.loads(agent["labels"]) == {"env": "test"}
    assert agent["created_at"] == NOW and agent["last_seen_at"] is None
    await _seed(db, lambda tx: Agents(tx).seen("agent-1", NOW + 5))
    assert (await db.transact(lambda tx: Agents(tx).get("agent-1")))["last_seen_at"] == NOW + 5


async def test_enrollment_token_consume_counts_down_then_refuses(db):
    await _seed(db, lambda tx: EnrollmentTokens(tx).insert(
        id="t1", secret_hash="h", uses=2, expires_at=NOW + 60, labels={"a": "b"}, created_by="admin", now=NOW))
    consume = lambda tx: EnrollmentTokens(tx).consume("t1", NOW)  # noqa: E731
    assert await db.transact(consume) is True
    assert (await db.transact(lambda tx: EnrollmentTokens(tx).find("t1")))["uses_left"] == 1
    assert await db.transact(consume) is True
    assert await db.transact(consume) is False
    token = await db.transact(lambda tx: EnrollmentTokens(tx).find("t1"))
    assert token["uses_left"] == 0 and json.loads(token["labels"]) == {"a": "b"}


async def test_enrollment_token_consume_refuses_when_expired(db):
    await _seed(db, lambda tx: EnrollmentTokens(tx).insert(
        id="t1", secret_hash="h", uses=5, expires_at=NOW + 60, labels={}, created_by="admin", now=NOW))
    assert await db.transact(lambda tx: EnrollmentTokens(tx).consume("t1", NOW + 59)) is True
    assert await db.transact(lambda tx: EnrollmentTokens(tx).consume("t1", NOW + 60)) is False
    assert await db.transact(lambda tx: EnrollmentTokens(tx).consume("t1", NOW + 61)) is False
    assert (await db.transact(lambda tx: EnrollmentTokens(tx).find("t1")))["uses_left"] == 4
    assert await db.transact(lambda tx: EnrollmentTokens(tx).consume("unknown", NOW)) is False


async def test_bootstrap_token_can_be_marked_used_only_once(db):
    await _seed(db, lambda tx: BootstrapTokens(tx).insert(id="b1", secret_hash="h", now=NOW))
    assert await db.transact(lambda tx: BootstrapTokens(tx).mark_used("b1", NOW + 1)) is True
    assert await db.transact(lambda tx: BootstrapTokens(tx).mark_used("b1", NOW + 2)) is False
    assert (await db.transact(lambda tx: BootstrapTokens(tx).current()))["used_at"] == NOW + 1
    assert await db.transact(lambda tx: BootstrapTokens(tx).mark_used("unknown", NOW)) is False


async def test_bootstrap_current_is_the_newest_token(db):
    await _seed(db, lambda tx: BootstrapTokens(tx).insert(id="old", secret_hash="h", now=NOW))
    await _seed(db, lambda tx: BootstrapTokens(tx).insert(id="new", secret_hash="h", now=NOW + 1))
    assert (await db.transact(lambda tx: BootstrapTokens(tx).current()))["id"] == "new"


async def test_agent_token_id_is_accepted_once_per_agent(db):
    await _seed(db, lambda tx: (_agent(tx, "agent-1"), _agent(tx, "agent-2")))
    use = lambda agent, jti: lambda tx: Agents(tx).use_token_id(agent, jti, NOW + 60)  # noqa: E731
    assert await db.transact(use("agent-1", "j1")) is True
    assert await db.transact(use("agent-1", "j1")) is False  # a replay
    assert await db.transact(use("agent-2", "j1")) is True  # another agent's id space
    assert await db.transact(use("agent-1", "j2")) is True


async def test_agent_token_ids_are_pruned_once_long_expired(db):
    await _seed(db, _agent)
    await db.transact(lambda tx: Agents(tx).use_token_id("agent-1", "old", NOW + 60))
    await db.transact(lambda tx: Agents(tx).use_token_id("agent-1", "later", NOW + 1000))

    def count(tx):
        return tx.one("SELECT COUNT(*) AS n FROM agent_token_uses WHERE jti = 'old'")["n"]

    # Still remembered while a token with that id could be accepted (expiry plus leeway).
    assert await db.transact(lambda tx: Agents(tx).prune_token_ids(NOW + 60 + 300)) == 0
    assert await db.transact(count) == 1
    assert await db.transact(lambda tx: Agents(tx).use_token_id("agent-1", "old", NOW + 60)) is False
    # Long past its expiry it is forgotten; the later one stays.
    assert await db.transact(lambda tx: Agents(tx).prune_token_ids(NOW + 60 + 301)) == 1
    assert await db.transact(count) == 0
    assert (await db.transact(lambda tx: tx.one("SELECT COUNT(*) AS n FROM agent_token_uses")))["n"] == 1


async def test_deliverable_lists_only_active_unexpired_orders_of_that_agent_in_creation_order(db):
    def seed(tx):
        _agent(tx, "agent-1")
        _agent(tx, "agent-2")
        _order(tx, "z-first", created=NOW - 30)
        _order(tx, "a-second", created=NOW - 20)
        _order(tx, "m-third", created=NOW - 10)
        _order(tx, "b-third-too", created=NOW - 10)  # same time: ordered by id
        _order(tx, "dispatched", created=NOW - 5)
        _order(tx, "issued", created=NOW - 4)
        _order(tx, "expired", created=NOW - 100, expires=NOW)
        _order(tx, "succeeded", created=NOW - 50)
        _order(tx, "failed", created=NOW - 50)
        _order(tx, "refused", created=NOW - 50)
        _order(tx, "other-agent", agent_id="agent-2", created=NOW - 60)
        orders = WorkOrders(tx)
        orders.mark_dispatched(["dispatched"], NOW)
        orders.set_status("issued", "issued", NOW)
        for status in ("succeeded", "failed", "refused"):
            orders.set_status(status, status, NOW)

    await _seed(db, seed)
    deliverable = await db.transact(lambda tx: WorkOrders(tx).deliverable("agent-1", NOW))
    assert [o["id"] for o in deliverable] == ["z-first", "a-second", "b-third-too", "m-third", "dispatched",
                                              "issued"]
    assert deliverable[0]["token"] == "token-z-first"
    limited = await db.transact(lambda tx: WorkOrders(tx).deliverable("agent-1", NOW, limit=2))
    assert [o["id"] for o in limited] == ["z-first", "a-second"]
    assert [o["id"] for o in await db.transact(lambda tx: WorkOrders(tx).deliverable("agent-2", NOW))] == [
        "other-agent"]
    later = await db.transact(lambda tx: WorkOrders(tx).deliverable("agent-1", NOW + 3600))
    assert later == []


async def test_mark_dispatched_moves_only_queued_orders(db):
    def seed(tx):
        _agent(tx)
        for id in ("queued", "already", "done"):
            _order(tx, id)
        WorkOrders(tx).mark_dispatched(["already"], NOW)
        WorkOrders(tx).set_status("done", "succeeded", NOW)

    await _seed(db, seed)
    await db.transact(lambda tx: WorkOrders(tx).mark_dispatched(["queued", "already", "done", "missing"], NOW + 9))

    def read(tx):
        return {id: WorkOrders(tx).find_for_agent(id, "agent-1") for id in ("queued", "already", "done")}

    orders = await db.transact(read)
    assert (orders["queued"]["status"], orders["queued"]["dispatched_at"]) == ("dispatched", NOW + 9)
    assert (orders["already"]["status"], orders["already"]["dispatched_at"]) == ("dispatched", NOW)
    assert (orders["done"]["status"], orders["done"]["dispatched_at"]) == ("succeeded", None)


@pytest.mark.parametrize("status", ["succeeded", "failed", "refused"])
async def test_set_status_records_completion_for_terminal_states(db, status):
    await _seed(db, lambda tx: (_agent(tx), _order(tx, "o1")))
    await db.transact(lambda tx: WorkOrders(tx).set_status("o1", status, NOW + 7, detail="why"))
    order = await db.transact(lambda tx: WorkOrders(tx).find_for_agent("o1", "agent-1"))
    assert (order["status"], order["completed_at"], order["result_detail"]) == (status, NOW + 7, "why")


@pytest.mark.parametrize("status", ["queued", "dispatched", "issued"])
async def test_set_status_leaves_completion_empty_for_active_states(db, status):
    await _seed(db, lambda tx: (_agent(tx), _order(tx, "o1")))
    await db.transact(lambda tx: WorkOrders(tx).set_status("o1", status, NOW + 7))
    order = await db.transact(lambda tx: WorkOrders(tx).find_for_agent("o1", "agent-1"))
    assert (order["status"], order["completed_at"], order["result_detail"]) == (status, None, None)


async def test_set_status_keeps_an_earlier_detail_when_given_none(db):
    await _seed(db, lambda tx: (_agent(tx), _order(tx, "o1")))
    await db.transact(lambda tx: WorkOrders(tx).set_status("o1", "issued", NOW, detail="issued serial 01"))
    await db.transact(lambda tx: WorkOrders(tx).set_status("o1", "succeeded", NOW + 1))
    order = await db.transact(lambda tx: WorkOrders(tx).find_for_agent("o1", "agent-1"))
    assert (order["result_detail"], order["completed_at"]) == ("issued serial 01", NOW + 1)


async def test_work_order_of_another_agent_is_not_found(db):
    await _seed(db, lambda tx: (_agent(tx, "agent-1"), _agent(tx, "agent-2"), _order(tx, "o1")))
    with pytest.raises(storage.NotFound):
        await db.transact(lambda tx: WorkOrders(tx).find_for_agent("o1", "agent-2"))


def _version(tx, serial: str, order_id: str, *, created: int, not_after: int, certificate_id: str = "cert-1"):
    _order(tx, order_id, certificate_id=certificate_id, created=created)
    Certificates(tx).add_version(serial=serial, certificate_id=certificate_id, order_id=order_id,
                                 issuer_id="issuer-1", certificate_pem="PEM", public_key_sha256="k" * 64,
                                 fingerprint_sha256=serial * 8, not_before=created, not_after=not_after,
                                 now=created)


async def test_certificates_expose_their_latest_version(db):
    def seed(tx):
        _agent(tx)
        _issuer_and_profile(tx)
        _certificate(tx, "cert-1", now=NOW)
        _certificate(tx, "cert-2", now=NOW + 1)
        _version(tx, "0a", "o1", created=NOW + 10, not_after=NOW + 1000)
        _version(tx, "0c", "o2", created=NOW + 30, not_after=NOW + 3000)
        _version(tx, "0b", "o3", created=NOW + 20, not_after=NOW + 2000)

    await _seed(db, seed)
    certificate = await db.transact(lambda tx: Certificates(tx).get("cert-1"))
    assert (certificate["serial"], certificate["not_before"], certificate["not_after"]) == ("0c", NOW + 30,
                                                                                          NOW + 3000)
    assert certificate["fingerprint_sha256"] == "0c" * 8
    assert certificate["issuer_id"] == "issuer-1"
    assert json.loads(certificate["names"]) == ["www.example.com", "192.0.2.1"]
    assert json.loads(certificate["tags"]) == ["web"]
    assert certificate["status"] == "pending"

    listed = await db.transact(lambda tx: Certificates(tx).list())
    assert [(c["id"], c["serial"], c["not_after"]) for c in listed] == [("cert-1", "0c", NOW + 3000),
                                                                         ("cert-2", None, None)]


async def test_certificate_status_and_error_are_updated_together(db):
    await _seed(db, lambda tx: (_agent(tx), _issuer_and_profile(tx), _certificate(tx)))
    await db.transact(lambda tx: Certificates(tx).set_status("cert-1", "failed", NOW + 5, "CA said no"))
    certificate = await db.transact(lambda tx: Certificates(tx).get("cert-1"))
    assert (certificate["status"], certificate["last_error"], certificate["updated_at"]) == ("failed", "CA said no",
                                                                                             NOW + 5)
    await db.transact(lambda tx: Certificates(tx).set_status("cert-1", "deployed", NOW + 6))
    assert (await db.transact(lambda tx: Certificates(tx).get("cert-1")))["last_error"] is None


async def test_one_version_per_work_order(db):
    def seed(tx):
        _agent(tx)
        _issuer_and_profile(tx)
        _certificate(tx)
        _version(tx, "01", "o1", created=NOW, not_after=NOW + 10)

    await _seed(db, seed)
    with pytest.raises(storage.Conflict):
        await db.transact(lambda tx: Certificates(tx).add_version(
            serial="02", certificate_id="cert-1", order_id="o1", issuer_id="issuer-1", certificate_pem="PEM",
            public_key_sha256="k", fingerprint_sha256="f", not_before=NOW, not_after=NOW + 10, now=NOW))


# --- audit -----------------------------------------------------------------------------------


CHAIN_KEY = b"k" * 32


def _record(**overrides) -> audit.AuditRecord:
    fields = dict(at_ms=NOW * 1000, actor_type="api-key", actor_id="key-1", action="certificates.create",
                  resource_type="certificate", resource_id="cert-1")
    fields.update(overrides)
    return audit.AuditRecord(**fields)


async def test_audit_record_stores_details_as_json_and_chains(db):
    details = {"names": ["www.example.com"], "nested": {"b": 2, "a": 1}, "note": "caf\u00e9", "count": 3}
    first = await db.transact(lambda tx: audit.append(tx, _record(details=details), key=CHAIN_KEY))
    second = await db.transact(lambda tx: audit.append(tx, _record(action="certificates.revoke"), key=CHAIN_KEY))
    assert (first, second) == (1, 2)

    rows = await db.transact(lambda tx: tx.all("SELECT * FROM audit_events ORDER BY id"))
    assert isinstance(rows[0]["details"], str)
    assert json.loads(rows[0]["details"]) == details
    assert json.loads(rows[1]["details"]) == {}
    assert rows[0]["prev_hash"] == audit.GENESIS and rows[1]["prev_hash"] == rows[0]["hash"]
    assert all(audit.event_hash(row, CHAIN_KEY) == row["hash"] for row in rows)
    report = await audit.verify_chain(db, key=CHAIN_KEY)
    assert report.ok and report.events == 2


async def test_audit_events_appended_together_chain_like_one_at_a_time(db):
    await db.transact(lambda tx: audit.append(tx, _record(), key=CHAIN_KEY))
    # More events than one INSERT carries, so the rows are written in several.
    records = [_record(resource_id=f"cert-{n}", details={"n": n}) for n in range(audit._INSERT_ROWS + 7)]
    ids = await db.transact(lambda tx: audit.append_all(tx, records, key=CHAIN_KEY))
    assert ids == list(range(2, len(records) + 2))
    assert await db.transact(lambda tx: audit.append_all(tx, [], key=CHAIN_KEY)) == []
    assert await db.transact(lambda tx: audit.append(tx, _record(action="certificates.revoke"), key=CHAIN_KEY)) \
        == len(records) + 2

    rows = await db.transact(lambda tx: tx.all("SELECT * FROM audit_events ORDER BY id"))
    assert [row["resource_id"] for row in rows[1:-1]] == [r.resource_id for r in records]
    assert all(rows[n]["prev_hash"] == rows[n - 1]["hash"] for n in range(1, len(rows)))
    report = await audit.verify_chain(db, key=CHAIN_KEY, page=100)
    assert report.ok and report.events == len(records) + 2


async def test_audit_event_rolls_back_with_its_transaction(db):
    def change_and_fail(tx):
        Meta(tx).insert("k", "v")
        audit.append(tx, _record(), key=CHAIN_KEY)
        raise Boom

    with pytest.raises(Boom):
        await db.transact(change_and_fail)
    assert await db.transact(lambda tx: tx.all("SELECT * FROM audit_events")) == []
    assert await db.transact(lambda tx: audit.append(tx, _record(), key=CHAIN_KEY)) == 1


@pytest.mark.parametrize("statement", ["UPDATE audit_events SET outcome = 'failure'", "DELETE FROM audit_events"])
async def test_audit_events_are_append_only(db, statement):
    await db.transact(lambda tx: audit.append(tx, _record(), key=CHAIN_KEY))
    with pytest.raises(storage.AppendOnly):
        await db.transact(lambda tx: tx.execute(statement))
    assert (await audit.verify_chain(db, key=CHAIN_KEY)).ok
