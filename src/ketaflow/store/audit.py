"""The append-only, hash-chained audit log.

Each record stores ``prev_hash`` (the hash of the record before it, or :data:`GENESIS_HASH`)
and ``hash`` = SHA-256 over :func:`canonical_record` of (prev_hash, seq, ts, actor, action,
entity, entity_id, details). Changing, removing or inserting any record breaks the chain from
that record on, and :func:`verify_chain` names the first broken ``seq``.

Writers extend the chain one at a time: :func:`append_entries` locks the one-row
``audit_chain_head`` (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions already hold
the database write lock from ``BEGIN IMMEDIATE``). The unit of work calls it right before
COMMIT, so the lock is the last one a transaction takes and is held only for the append.

Details are identifiers and codes only (ids, field names, reasons), never patient data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, TypeAlias

from sqlalchemy import select
from sqlalchemy.orm import Session

from ketaflow.errors import InputError, StorageError
from ketaflow.store.tables import GENESIS_HASH, AuditChainHead, AuditRecord

#: What a details value may be: JSON scalars or lists of them (ids, codes, field names).
_Scalar: TypeAlias = str | int | float | bool | None
DetailValue: TypeAlias = _Scalar | Sequence[_Scalar]

#: The action vocabulary. New actions need no migration; keep them short verbs.
AUDIT_ACTIONS: Final[frozenset[str]] = frozenset(
    {
        "create",
        "read",
        "query",
        "update",
        "delete",
        "export",
        "login",
        "login_failed",
        "logout",
    }
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One event to be appended: who did what to which record, and when (aware UTC)."""

    ts: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None = None
    details: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None:
            raise InputError("audit ts must be timezone-aware UTC; got a naive datetime.")
        if self.action not in AUDIT_ACTIONS:
            raise InputError(
                f"audit action must be one of {sorted(AUDIT_ACTIONS)}; got {self.action!r}.",
                field="action",
            )
        # Fail at the call site, not at commit, when details are not plain JSON.
        canonical_details(self.details)


@dataclass(frozen=True, slots=True)
class ChainVerification:
    """Result of :func:`verify_chain`."""

    ok: bool
    n_records: int
    first_broken_seq: int | None = None
    reason: str | None = None


def format_ts(ts: datetime) -> str:
    """The canonical text of a timestamp: UTC, microseconds, ``Z`` suffix."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_details(details: Mapping[str, DetailValue]) -> str:
    """Details as canonical JSON text (sorted keys, no spaces, ASCII, no NaN)."""
    try:
        return json.dumps(
            dict(details), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"audit details must be JSON scalars or lists of them; {exc}", field="details"
        ) from None


def canonical_record(
    *,
    prev_hash: str,
    seq: int,
    ts: datetime,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | None,
    details_json: str,
) -> bytes:
    """The exact bytes that are hashed for one record.

    A JSON object with sorted keys and no whitespace; ``details`` is embedded as the parsed
    object, so the hash covers the details' content rather than their spacing.
    """
    payload = {
        "prev_hash": prev_hash,
        "seq": seq,
        "ts": format_ts(ts),
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": entity_id,
        "details": json.loads(details_json),
    }
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def record_hash(record: AuditRecord) -> str:
    """SHA-256 (hex) of a stored record's canonical serialisation."""
    return hashlib.sha256(
        canonical_record(
            prev_hash=record.prev_hash,
            seq=record.seq,
            ts=record.ts,
            actor=record.actor,
            action=record.action,
            entity=record.entity,
            entity_id=record.entity_id,
            details_json=record.details,
        )
    ).hexdigest()


def _lock_head(session: Session) -> AuditChainHead:
    head = session.execute(
        select(AuditChainHead)
        .where(AuditChainHead.id == 1)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if head is None:
        raise StorageError(
            "the audit chain head is missing; the database schema is incomplete. "
            "Run `ketaflow db upgrade`."
        )
    return head


def append_entries(session: Session, entries: Iterable[AuditEntry]) -> list[AuditRecord]:
    """Append ``entries`` to the chain in order, inside the caller's transaction.

    Never commits. Callers outside :class:`~ketaflow.store.uow.UnitOfWork` should not need it:
    record through ``uow.audit`` instead.
    """
    pending = list(entries)
    if not pending:
        return []
    head = _lock_head(session)
    seq, prev_hash = head.last_seq, head.last_hash
    records: list[AuditRecord] = []
    for entry in pending:
        seq += 1
        record = AuditRecord(
            seq=seq,
            ts=entry.ts.astimezone(UTC),
            actor=entry.actor,
            action=entry.action,
            entity=entry.entity,
            entity_id=entry.entity_id,
            details=canonical_details(entry.details),
            prev_hash=prev_hash,
            hash="",
        )
        record.hash = record_hash(record)
        prev_hash = record.hash
        records.append(record)
    session.add_all(records)
    head.last_seq, head.last_hash = seq, prev_hash
    session.flush()
    return records


def verify_chain(session: Session, *, batch_size: int = 1000) -> ChainVerification:
    """Check every record's hash and link, in ``seq`` order, and the chain head.

    Returns ``ok=True`` with the record count, or ``ok=False`` with the first ``seq`` that
    does not verify and why (a changed record, a missing or inserted record, a cut-off tail).
    Reads in batches of ``batch_size`` rows, so it runs in constant memory.
    """
    expected_seq, prev_hash, n_records = 1, GENESIS_HASH, 0
    rows = session.execute(
        select(AuditRecord)
        .order_by(AuditRecord.seq)
        .execution_options(yield_per=batch_size, populate_existing=True)
    ).scalars()
    for record in rows:
        if record.seq != expected_seq:
            return ChainVerification(
                ok=False,
                n_records=n_records,
                first_broken_seq=expected_seq,
                reason=f"record {expected_seq} is missing (the next record is {record.seq})",
            )
        if record.prev_hash != prev_hash:
            return ChainVerification(
                ok=False,
                n_records=n_records,
                first_broken_seq=record.seq,
                reason="prev_hash does not match the previous record's hash",
            )
        if record_hash(record) != record.hash:
            return ChainVerification(
                ok=False,
                n_records=n_records,
                first_broken_seq=record.seq,
                reason="the record's contents do not match its hash (it was changed)",
            )
        prev_hash = record.hash
        expected_seq += 1
        n_records += 1
        session.expunge(record)
    head = session.get(AuditChainHead, 1)
    if head is None:
        return ChainVerification(
            ok=False, n_records=n_records, first_broken_seq=None, reason="chain head missing"
        )
    if head.last_seq != n_records or head.last_hash != prev_hash:
        return ChainVerification(
            ok=False,
            n_records=n_records,
            first_broken_seq=n_records + 1,
            reason=f"the chain head names record {head.last_seq} but the log ends at "
            f"record {n_records} (records were removed from the end)",
        )
    return ChainVerification(ok=True, n_records=n_records)


def read_records(session: Session, *, after_seq: int, limit: int) -> Sequence[AuditRecord]:
    """Up to ``limit`` records with ``seq > after_seq``, in chain order."""
    return (
        session.execute(
            select(AuditRecord)
            .where(AuditRecord.seq > after_seq)
            .order_by(AuditRecord.seq)
            .limit(limit)
        )
        .scalars()
        .all()
    )


class AuditTrail:
    """Audit entries collected during a unit of work, appended to the chain at commit.

    Services call :meth:`record`; the unit of work calls :meth:`flush` right before COMMIT
    and :meth:`discard` on rollback, so a rolled-back change leaves no audit record and a
    committed one always has its record.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._pending: list[AuditEntry] = []

    def record(
        self,
        *,
        ts: datetime,
        actor: str,
        action: str,
        entity: str,
        entity_id: int | str | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditEntry:
        """Queue one audit entry (validated now, written at commit)."""
        entry = AuditEntry(
            ts=ts,
            actor=actor,
            action=action,
            entity=entity,
            entity_id=None if entity_id is None else str(entity_id),
            details=dict(details or {}),
        )
        self._pending.append(entry)
        return entry

    @property
    def pending(self) -> tuple[AuditEntry, ...]:
        """Entries recorded but not yet written."""
        return tuple(self._pending)

    def flush(self) -> list[AuditRecord]:
        """Write the queued entries to the chain (inside the current transaction)."""
        entries, self._pending = self._pending, []
        return append_entries(self._session, entries)

    def discard(self) -> None:
        """Forget the queued entries (their transaction rolled back)."""
        self._pending.clear()
