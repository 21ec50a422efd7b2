"""Audit use-cases: verify the chain, export records (itself audited)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ketaflow.errors import InputError
from ketaflow.services.clock import Clock
from ketaflow.store.audit import ChainVerification, read_records, verify_chain
from ketaflow.store.uow import UnitOfWork

EXPORT_LIMIT_MAX: Final[int] = 1000


@dataclass(frozen=True, slots=True)
class AuditRecordView:
    """One audit record as exported (identifiers only, as stored)."""

    seq: int
    ts: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditService:
    """Reading the audit log. Appending happens through ``uow.audit`` in every use-case."""

    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    def verify(self) -> ChainVerification:
        """Check the whole chain (see :func:`ketaflow.store.audit.verify_chain`)."""
        return verify_chain(self._uow.session)

    def export(self, actor: str, *, after_seq: int = 0, limit: int = 100) -> list[AuditRecordView]:
        """Up to ``limit`` records with ``seq > after_seq``, in order; audited as an export."""
        if not 1 <= limit <= EXPORT_LIMIT_MAX:
            raise InputError(
                f"limit must be in [1, {EXPORT_LIMIT_MAX}]; got {limit}.", field="limit"
            )
        if after_seq < 0:
            raise InputError(f"after_seq must be >= 0; got {after_seq}.", field="after_seq")
        rows = read_records(self._uow.session, after_seq=after_seq, limit=limit)
        views = [
            AuditRecordView(
                seq=r.seq,
                ts=r.ts,
                actor=r.actor,
                action=r.action,
                entity=r.entity,
                entity_id=r.entity_id,
                details=json.loads(r.details),
                prev_hash=r.prev_hash,
                hash=r.hash,
            )
            for r in rows
        ]
        self._uow.audit.record(
            ts=self._clock.now(),
            actor=actor,
            action="export",
            entity="audit_log",
            details={"after_seq": after_seq, "count": len(views)},
        )
        return views
