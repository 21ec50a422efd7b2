"""Audit log endpoints under ``/api/v1/audit`` (administrators only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ketaflow.api.deps import MAX_ID, AuditServiceDep, require
from ketaflow.api.schemas import AuditRecordOut, ChainStatusOut
from ketaflow.services.audit import EXPORT_LIMIT_MAX
from ketaflow.services.auth import Principal
from ketaflow.store.types import Role

router = APIRouter(prefix="/audit", tags=["audit"])

Admin = Annotated[Principal, require(Role.ADMIN)]


@router.get("/verify", response_model=ChainStatusOut)
def verify(principal: Admin, audit: AuditServiceDep) -> ChainStatusOut:
    """Check the hash chain of the whole audit log."""
    result = audit.verify()
    return ChainStatusOut(
        ok=result.ok,
        records=result.n_records,
        first_broken_seq=result.first_broken_seq,
        reason=result.reason,
    )


@router.get("/records", response_model=list[AuditRecordOut])
def export_records(
    principal: Admin,
    audit: AuditServiceDep,
    after_seq: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=EXPORT_LIMIT_MAX)] = 100,
) -> list[AuditRecordOut]:
    """Audit records after ``after_seq``, in order (the export is itself audited)."""
    return [
        AuditRecordOut.model_validate(r)
        for r in audit.export(principal.actor, after_seq=after_seq, limit=limit)
    ]
