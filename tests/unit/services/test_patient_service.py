"""Patient use-cases: validation, audit of every access, and no patient data in the audit."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from ketaflow.errors import InputError, NotFoundError
from ketaflow.services.clock import ManualClock
from ketaflow.services.patients import (
    NewPatient,
    NewWeight,
    PatientChanges,
    PatientSearchResult,
    PatientService,
    PatientView,
    WeightView,
)
from ketaflow.store.errors import ConflictError
from ketaflow.store.tables import AuditRecord
from ketaflow.store.types import Sex
from ketaflow.store.uow import UnitOfWork
from service_testkit import T0

MakeUow = Callable[[], UnitOfWork]
ACTOR = "user:2:desk1"

JANE = NewPatient(
    mrn="MRN-20931",
    family_name="Quintero",
    given_name="Josefina",
    birth_date=date(1981, 7, 14),
    sex=Sex.FEMALE,
)


@pytest.fixture
def patients(
    make_uow: MakeUow, clock: ManualClock
) -> Callable[[Callable[[PatientService], object]], object]:
    """Run one call on a PatientService inside its own unit of work."""

    def run(call: Callable[[PatientService], object]) -> object:
        with make_uow() as uow:
            return call(PatientService(uow, clock))

    return run


def _audit(make_uow: MakeUow) -> list[AuditRecord]:
    with make_uow() as uow:
        return list(uow.session.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars())


def _create(patients: Callable[..., object], new: NewPatient = JANE) -> PatientView:
    view = patients(lambda s: s.create(ACTOR, new))
    assert isinstance(view, PatientView)
    return view


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"mrn": ""}, "mrn"),
        ({"mrn": "has space"}, "mrn"),
        ({"mrn": "x" * 33}, "mrn"),
        ({"family_name": "   "}, "family_name"),
        ({"given_name": "x" * 101}, "given_name"),
        ({"given_name": "Jo\x00sefina"}, "given_name"),
        ({"family_name": "Quin\u200btero"}, "family_name"),  # zero-width space
        ({"sex": "f"}, "sex"),
        ({"birth_date": date(1899, 12, 31)}, "birth_date"),
    ],
)
def test_new_patient_validation_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as info:
        NewPatient(**{**_fields(JANE), **changes})  # invalid on purpose
    assert info.value.field == field


def test_new_patient_strips_spaces() -> None:
    raw: dict[str, object] = {
        "mrn": " A1 ",
        "family_name": " Doe ",
        "given_name": "Jane ",
        "birth_date": date(1990, 1, 1),
        "sex": "male",  # a plain string is accepted and converted
    }
    patient = NewPatient(**raw)  # str for Sex on purpose
    assert (patient.mrn, patient.family_name, patient.given_name, patient.sex) == (
        "A1",
        "Doe",
        "Jane",
        Sex.MALE,
    )


def test_create_returns_the_record_and_audits_ids_only(
    patients: Callable[..., object], make_uow: MakeUow
) -> None:
    view = _create(patients)
    assert (view.mrn, view.family_name, view.created_at, view.latest_weight) == (
        "MRN-20931",
        "Quintero",
        T0,
        None,
    )
    (record,) = _audit(make_uow)
    assert (record.actor, record.action, record.entity, record.entity_id) == (
        ACTOR,
        "create",
        "patient",
        str(view.id),
    )


def test_birth_date_may_not_be_in_the_future(
    patients: Callable[..., object], clock: ManualClock
) -> None:
    tomorrow = clock.now().date() + timedelta(days=1)
    with pytest.raises(InputError) as info:
        _create(patients, NewPatient(**{**_fields(JANE), "birth_date": tomorrow}))  # test data
    assert info.value.field == "birth_date"
    assert tomorrow.isoformat() not in info.value.message  # dates about patients are not echoed


def _fields(patient: NewPatient) -> dict[str, object]:
    return {
        f: getattr(patient, f) for f in ("mrn", "family_name", "given_name", "birth_date", "sex")
    }


def test_mrn_must_be_unique(patients: Callable[..., object]) -> None:
    _create(patients)
    with pytest.raises(ConflictError) as info:
        _create(patients, NewPatient(**{**_fields(JANE), "family_name": "Other"}))
    assert info.value.field == "mrn"
    assert "MRN-20931" not in info.value.message


def test_get_is_audited_as_a_read_and_missing_ids_are_not_found(
    patients: Callable[..., object], make_uow: MakeUow
) -> None:
    view = _create(patients)
    got = patients(lambda s: s.get("user:3:nurse1", view.id))
    assert got == view
    assert [(r.action, r.actor, r.entity_id) for r in _audit(make_uow)][-1] == (
        "read",
        "user:3:nurse1",
        str(view.id),
    )
    with pytest.raises(NotFoundError):
        patients(lambda s: s.get(ACTOR, view.id + 1))


def test_search_is_audited_with_filters_and_ids_never_the_search_text(
    patients: Callable[..., object], make_uow: MakeUow
) -> None:
    view = _create(patients)
    _create(patients, NewPatient(**{**_fields(JANE), "mrn": "MRN-2", "family_name": "Baker"}))
    result = patients(lambda s: s.search(ACTOR, name="quin"))
    assert isinstance(result, PatientSearchResult)
    assert [p.id for p in result.items] == [view.id]
    assert result.total == 1
    record = _audit(make_uow)[-1]
    assert (record.action, record.entity, record.entity_id) == ("query", "patient", None)
    assert json.loads(record.details) == {"filters": ["name"], "result_ids": [view.id], "total": 1}
    assert "quin" not in record.details.lower()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"name": "\x00"}, "q"),
    ],
)
def test_search_refuses_bad_paging_and_control_characters(
    patients: Callable[..., object], kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InputError) as info:
        patients(lambda s: s.search(ACTOR, **kwargs))
    assert info.value.field == field


def test_update_changes_only_given_fields_and_audits_their_names(
    patients: Callable[..., object], make_uow: MakeUow, clock: ManualClock
) -> None:
    view = _create(patients)
    clock.advance(minutes=5)
    updated = patients(
        lambda s: s.update(
            ACTOR, view.id, PatientChanges(family_name="Quintero-Ruiz", sex=Sex.FEMALE)
        )
    )
    assert isinstance(updated, PatientView)
    assert (updated.family_name, updated.given_name, updated.updated_at) == (
        "Quintero-Ruiz",
        "Josefina",
        T0 + timedelta(minutes=5),
    )
    record = _audit(make_uow)[-1]
    assert (record.action, json.loads(record.details)) == ("update", {"fields": ["family_name"]})
    assert "Quintero" not in record.details


def test_update_to_another_patients_mrn_conflicts(patients: Callable[..., object]) -> None:
    view = _create(patients)
    _create(patients, NewPatient(**{**_fields(JANE), "mrn": "MRN-2"}))
    with pytest.raises(ConflictError):
        patients(lambda s: s.update(ACTOR, view.id, PatientChanges(mrn="MRN-2")))
    same = patients(lambda s: s.update(ACTOR, view.id, PatientChanges(mrn="MRN-20931")))
    assert isinstance(same, PatientView)


def test_weights_are_recorded_listed_and_shown_as_latest(
    patients: Callable[..., object], make_uow: MakeUow
) -> None:
    view = _create(patients)
    first = patients(
        lambda s: s.add_weight(
            ACTOR, view.id, NewWeight(71.5, date(2025, 1, 10)), recorded_by_user_id=None
        )
    )
    patients(
        lambda s: s.add_weight(
            ACTOR, view.id, NewWeight(70.0, date(2025, 2, 20)), recorded_by_user_id=None
        )
    )
    assert isinstance(first, WeightView)
    assert (first.weight_kg, first.recorded_at) == (71.5, T0)
    listed = patients(lambda s: s.weights(ACTOR, view.id))
    assert isinstance(listed, list)
    assert [w.weight_kg for w in listed] == [71.5, 70.0]
    record = patients(lambda s: s.get(ACTOR, view.id))
    assert isinstance(record, PatientView)
    assert record.latest_weight is not None
    assert record.latest_weight.weight_kg == 70.0
    actions = [(r.action, r.entity) for r in _audit(make_uow)]
    assert actions[1:] == [
        ("create", "weight_measurement"),
        ("create", "weight_measurement"),
        ("read", "patient"),
        ("read", "patient"),
    ]


@pytest.mark.parametrize("weight_kg", [9.9, 500.1, float("nan"), float("inf")])
def test_implausible_weights_are_refused(weight_kg: float) -> None:
    with pytest.raises(InputError) as info:
        NewWeight(weight_kg, date(2025, 1, 1))
    assert info.value.field == "weight_kg"


@pytest.mark.parametrize(
    "measured_on",
    [T0.date() + timedelta(days=1), date(1981, 7, 13)],  # future; before birth
)
def test_weight_dates_must_be_between_birth_and_today(
    patients: Callable[..., object], measured_on: date
) -> None:
    view = _create(patients)
    with pytest.raises(InputError) as info:
        patients(
            lambda s: s.add_weight(
                ACTOR, view.id, NewWeight(70.0, measured_on), recorded_by_user_id=None
            )
        )
    assert info.value.field == "measured_on"


def test_audit_never_holds_patient_data(patients: Callable[..., object], make_uow: MakeUow) -> None:
    view = _create(patients)
    patients(lambda s: s.search(ACTOR, name="Quintero", mrn="MRN-20931"))
    patients(lambda s: s.get(ACTOR, view.id))
    patients(lambda s: s.update(ACTOR, view.id, PatientChanges(given_name="Josefa")))
    patients(
        lambda s: s.add_weight(
            ACTOR, view.id, NewWeight(70.0, date(2025, 1, 1)), recorded_by_user_id=None
        )
    )
    text = " ".join(
        f"{r.actor} {r.action} {r.entity} {r.entity_id} {r.details}" for r in _audit(make_uow)
    )
    for secret in ("Quintero", "Josef", "MRN-20931", "1981", "07-14"):
        assert secret not in text
