"""Concurrent writers extend the audit chain one at a time, on a real server database."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import date

from sqlalchemy import select

from ketaflow.store.audit import verify_chain
from ketaflow.store.tables import AuditRecord, Patient
from ketaflow.store.types import Sex
from ketaflow.store.uow import UnitOfWork
from service_testkit import T0

N_WRITERS = 8
N_TRANSACTIONS = 10
N_ENTRIES = 2


def test_concurrent_transactions_keep_the_chain_valid(make_uow: Callable[[], UnitOfWork]) -> None:
    start = threading.Barrier(N_WRITERS)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            start.wait()
            for t in range(N_TRANSACTIONS):
                with make_uow() as uow:
                    patient = uow.patients.add(
                        Patient(
                            mrn=f"W{w}-T{t}",
                            family_name="Load",
                            given_name="Test",
                            birth_date=date(1990, 1, 1),
                            sex=Sex.UNKNOWN,
                            created_at=T0,
                            updated_at=T0,
                        )
                    )
                    for e in range(N_ENTRIES):
                        uow.audit.record(
                            ts=T0,
                            actor=f"writer:{w}",
                            action="create",
                            entity="patient",
                            entity_id=patient.id,
                            details={"t": t, "e": e},
                        )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(N_WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with make_uow() as uow:
        result = verify_chain(uow.session)
        actors = Counter(uow.session.execute(select(AuditRecord.actor)).scalars())
        n_patients = len(uow.session.execute(select(Patient.id)).all())
    total = N_WRITERS * N_TRANSACTIONS * N_ENTRIES
    assert (result.ok, result.n_records) == (True, total)
    assert actors == {f"writer:{w}": N_TRANSACTIONS * N_ENTRIES for w in range(N_WRITERS)}
    assert n_patients == N_WRITERS * N_TRANSACTIONS
