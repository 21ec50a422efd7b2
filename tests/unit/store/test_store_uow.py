"""The unit of work: the only commit, rollback on error, audit and after-commit hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date

import pytest
from sqlalchemy import func, select

from ketaflow.errors import InputError
from ketaflow.store.audit import verify_chain
from ketaflow.store.errors import ConflictError
from ketaflow.store.tables import AuditChainHead, AuditRecord, Patient
from ketaflow.store.types import Sex
from ketaflow.store.uow import UnitOfWork
from service_testkit import T0

MakeUow = Callable[[], UnitOfWork]


def _patient(mrn: str = "MRN-1") -> Patient:
    return Patient(
        mrn=mrn,
        family_name="Doe",
        given_name="Jane",
        birth_date=date(1980, 1, 2),
        sex=Sex.FEMALE,
        created_at=T0,
        updated_at=T0,
    )


def _count(make_uow: MakeUow, model: type[object]) -> int:
    with make_uow() as uow:
        return int(uow.session.execute(select(func.count()).select_from(model)).scalar_one())


def test_leaving_the_block_commits_the_data_and_its_audit(make_uow: MakeUow) -> None:
    with make_uow() as uow:
        patient = uow.patients.add(_patient())
        uow.audit.record(ts=T0, actor="t", action="create", entity="patient", entity_id=patient.id)
    with make_uow() as uow:
        assert uow.patients.get_by_mrn("MRN-1") is not None
        assert verify_chain(uow.session).n_records == 1


def test_an_exception_rolls_back_data_and_audit_entries(make_uow: MakeUow) -> None:
    def work() -> None:
        with make_uow() as uow:
            uow.patients.add(_patient())
            uow.audit.record(ts=T0, actor="t", action="create", entity="patient", entity_id=1)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        work()
    assert _count(make_uow, Patient) == 0
    assert _count(make_uow, AuditRecord) == 0
    with make_uow() as uow:
        head = uow.session.get(AuditChainHead, 1)
        assert head is not None
        assert head.last_seq == 0


def test_explicit_commit_keeps_work_done_before_a_later_error(make_uow: MakeUow) -> None:
    def work() -> None:
        with make_uow() as uow:
            uow.patients.add(_patient("KEPT"))
            uow.audit.record(ts=T0, actor="t", action="login_failed", entity="user")
            uow.commit()
            uow.patients.add(_patient("LOST"))
            raise InputError("refused after the commit")

    with pytest.raises(InputError):
        work()
    with make_uow() as uow:
        assert uow.patients.get_by_mrn("KEPT") is not None
        assert uow.patients.get_by_mrn("LOST") is None
        assert verify_chain(uow.session).n_records == 1


def test_after_commit_callbacks_run_only_after_a_commit(make_uow: MakeUow) -> None:
    calls: list[str] = []
    with make_uow() as uow:
        uow.after_commit(lambda: calls.append("committed"))
        assert calls == []  # not before the commit
    assert calls == ["committed"]

    def work() -> None:
        with make_uow() as uow:
            uow.after_commit(lambda: calls.append("rolled back"))
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        work()
    assert calls == ["committed"]


def test_a_failing_after_commit_callback_is_logged_not_raised(
    make_uow: MakeUow, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise ValueError("listener broke")

    with caplog.at_level(logging.ERROR, logger="ketaflow.store.uow"), make_uow() as uow:
        uow.patients.add(_patient())
        uow.after_commit(broken)
    assert _count(make_uow, Patient) == 1
    assert "after-commit callback failed" in caplog.text


def test_duplicate_unique_value_becomes_conflict_naming_the_column_not_the_value(
    make_uow: MakeUow,
) -> None:
    with make_uow() as uow:
        uow.patients.add(_patient("SECRET-MRN-77"))
    with pytest.raises(ConflictError) as info, make_uow() as uow:
        uow.patients.add(_patient("SECRET-MRN-77"))
    assert info.value.field == "mrn"
    assert "patients" in info.value.message
    assert "SECRET-MRN-77" not in info.value.message


def test_unit_of_work_is_usable_only_inside_its_block(make_uow: MakeUow) -> None:
    uow = make_uow()
    with pytest.raises(RuntimeError, match="inside its `with` block"):
        uow.commit()
    with uow:
        pass
    with pytest.raises(RuntimeError, match="inside its `with` block"):
        uow.rollback()
