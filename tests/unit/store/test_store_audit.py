"""The hash-chained audit log: hashing, verification, append-only triggers, tamper detection."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from ketaflow.config import Settings
from ketaflow.errors import InputError
from ketaflow.store.audit import AuditEntry, canonical_record, record_hash, verify_chain
from ketaflow.store.db import make_engine
from ketaflow.store.migrate import upgrade
from ketaflow.store.tables import GENESIS_HASH, AuditRecord
from ketaflow.store.uow import UnitOfWork
from service_testkit import T0

MakeUow = Callable[[], UnitOfWork]

# The canonical form written out by hand: sorted keys, no spaces, microsecond UTC time.
GOLDEN_TEXT = (
    '{"action":"read","actor":"user:3:alice","details":{"part":"weights"},"entity":"patient",'
    '"entity_id":"42","prev_hash":"' + "0" * 64 + '","seq":1,"ts":"2025-03-01T09:00:00.000000Z"}'
)
GOLDEN_SHA256 = "ac1f995d9633583dfb1403f25aa7e8a78d4c7f3af566cb5aa217593a6d43e742"


def test_canonical_serialisation_and_hash_match_the_written_out_golden_value() -> None:
    canonical = canonical_record(
        prev_hash=GENESIS_HASH,
        seq=1,
        ts=datetime(2025, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))),
        actor="user:3:alice",
        action="read",
        entity="patient",
        entity_id="42",
        details_json='{ "part" : "weights" }',  # spacing does not matter, content does
    )
    assert canonical == GOLDEN_TEXT.encode("ascii")
    assert hashlib.sha256(canonical).hexdigest() == GOLDEN_SHA256


def _append(make_uow: MakeUow, n: int, *, start: datetime = T0) -> None:
    with make_uow() as uow:
        for i in range(n):
            uow.audit.record(
                ts=start + timedelta(seconds=i),
                actor="user:1:admin1",
                action="read",
                entity="patient",
                entity_id=i + 1,
                details={"part": "record", "n": i},
            )


def test_appended_records_form_a_verified_chain(make_uow: MakeUow) -> None:
    _append(make_uow, 3)
    _append(make_uow, 2, start=T0 + timedelta(minutes=5))
    with make_uow() as uow:
        result = verify_chain(uow.session)
        rows = uow.session.query(AuditRecord).order_by(AuditRecord.seq).all()
    assert (result.ok, result.n_records, result.first_broken_seq) == (True, 5, None)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert all(record_hash(r) == r.hash for r in rows)
    assert rows[3].ts == T0 + timedelta(minutes=5)


def test_an_empty_log_verifies(make_uow: MakeUow) -> None:
    with make_uow() as uow:
        assert verify_chain(uow.session).ok


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"ts": datetime(2025, 1, 1), "action": "read"}, None),  # naive time
        ({"ts": T0, "action": "peek"}, "action"),
        ({"ts": T0, "action": "read", "details": {"x": object()}}, "details"),
        ({"ts": T0, "action": "read", "details": {"x": float("nan")}}, "details"),
    ],
)
def test_malformed_entries_are_refused_when_recorded(
    entry: dict[str, object], field: str | None
) -> None:
    with pytest.raises(InputError) as info:
        AuditEntry(actor="t", entity="patient", **entry)  # deliberately wrong
    assert info.value.field == field


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'someone else' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
    ],
)
def test_database_refuses_update_and_delete_of_audit_records(
    make_uow: MakeUow, engine: Engine, statement: str
) -> None:
    _append(make_uow, 1)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    with make_uow() as uow:
        assert verify_chain(uow.session).ok


def test_postgresql_also_refuses_truncate(pg_schema: str) -> None:
    engine = make_engine(Settings(database_url=pg_schema))
    try:
        upgrade(engine)
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_log"))
    finally:
        engine.dispose()


@contextmanager
def _bypassing_triggers(engine: Engine) -> Iterator[Connection]:
    """A transaction in which the append-only triggers do not fire (what an attacker with
    database access could do): on PostgreSQL as a replication session, on SQLite by dropping
    the triggers of this test's database copy."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        yield conn


def _verify(make_uow: MakeUow) -> tuple[bool, int | None, str]:
    with make_uow() as uow:
        result = verify_chain(uow.session)
    return result.ok, result.first_broken_seq, result.reason or ""


def test_a_changed_record_is_reported_by_seq(make_uow: MakeUow, engine: Engine) -> None:
    _append(make_uow, 5)
    with _bypassing_triggers(engine) as conn:
        conn.execute(text("UPDATE audit_log SET entity_id = '999' WHERE seq = 3"))
    assert _verify(make_uow) == (
        False,
        3,
        "the record's contents do not match its hash (it was changed)",
    )


def test_changed_details_are_reported(make_uow: MakeUow, engine: Engine) -> None:
    _append(make_uow, 2)
    with _bypassing_triggers(engine) as conn:
        conn.execute(
            text("UPDATE audit_log SET details = :d WHERE seq = 1"), {"d": '{"n":0,"part":"other"}'}
        )
    assert _verify(make_uow)[:2] == (False, 1)


def test_a_changed_and_rehashed_record_breaks_the_link_to_the_next(
    make_uow: MakeUow, engine: Engine
) -> None:
    _append(make_uow, 4)
    with make_uow() as uow:
        record = uow.session.get(AuditRecord, 2)
        assert record is not None
        record.actor = "user:9:mallory"
        forged_hash = record_hash(record)
        uow.session.expunge(record)
    with _bypassing_triggers(engine) as conn:
        conn.execute(
            text("UPDATE audit_log SET actor = 'user:9:mallory', hash = :h WHERE seq = 2"),
            {"h": forged_hash},
        )
    ok, seq, reason = _verify(make_uow)
    assert (ok, seq) == (False, 3)
    assert "prev_hash" in reason


def test_a_deleted_record_is_reported_as_missing(make_uow: MakeUow, engine: Engine) -> None:
    _append(make_uow, 5)
    with _bypassing_triggers(engine) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    ok, seq, reason = _verify(make_uow)
    assert (ok, seq) == (False, 2)
    assert "missing" in reason


def test_records_cut_off_the_end_are_reported(make_uow: MakeUow, engine: Engine) -> None:
    _append(make_uow, 5)
    with _bypassing_triggers(engine) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= 4"))
    ok, seq, reason = _verify(make_uow)
    assert (ok, seq) == (False, 4)
    assert "removed from the end" in reason


def test_timestamps_are_hashed_in_utc(make_uow: MakeUow) -> None:
    with make_uow() as uow:
        uow.audit.record(
            ts=datetime(2025, 3, 1, 4, 0, tzinfo=timezone(timedelta(hours=-5))),
            actor="t",
            action="read",
            entity="patient",
        )
    with make_uow() as uow:
        record = uow.session.get(AuditRecord, 1)
        assert record is not None
        assert record.ts == datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
        assert verify_chain(uow.session).ok
