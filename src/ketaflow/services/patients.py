"""Patient registration, search, demographics and body weight.

Every use-case runs inside the caller's unit of work and records an audit entry: ``create``,
``update``, ``read`` (one patient's record or weights) and ``query`` (a search; the audit keeps
which filters were used and the ids returned, never the search text, which may be a name).

Inputs arrive as :class:`NewPatient` / :class:`PatientChanges` / :class:`NewWeight`, validated
when built, so the API, the CLI and tests share one set of rules. Dates that depend on "today"
(no birth or weighing in the future) are checked against the injected clock.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Final

from ketaflow.errors import InputError, NotFoundError
from ketaflow.services.clock import Clock
from ketaflow.store.errors import ConflictError
from ketaflow.store.tables import Patient, WeightMeasurement
from ketaflow.store.types import Sex
from ketaflow.store.uow import UnitOfWork

MRN_PATTERN: Final[str] = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,31}$"
_MRN_RE = re.compile(MRN_PATTERN)
NAME_MAX_LENGTH: Final[int] = 100
#: No record predates this; an earlier birth date is a typing error.
EARLIEST_BIRTH_DATE: Final[date] = date(1900, 1, 1)
#: Data-entry plausibility for a body weight, kg (not a clinical limit: it catches pounds typed
#: as kilograms and missing digits). Dosing limits belong to the drug library.
WEIGHT_KG_MIN: Final[float] = 10.0
WEIGHT_KG_MAX: Final[float] = 500.0
#: Largest page of a patient search.
SEARCH_LIMIT_MAX: Final[int] = 100


def check_mrn(mrn: str) -> str:
    """The stripped MRN; InputError unless it is 1-32 letters, digits, '.', '_', '/' or '-'."""
    value = mrn.strip()
    if not _MRN_RE.fullmatch(value):
        raise InputError(
            "mrn must be 1-32 characters: letters, digits, '.', '_', '/' or '-', starting with "
            "a letter or digit; got a value that does not match.",
            field="mrn",
        )
    return value


def check_name(name: str, *, field: str) -> str:
    """The stripped name; InputError when empty, too long or holding control characters."""
    value = name.strip()
    if not value or len(value) > NAME_MAX_LENGTH:
        raise InputError(
            f"{field} must have 1-{NAME_MAX_LENGTH} characters after trimming spaces; "
            f"got {len(value)}.",
            field=field,
        )
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise InputError(
            f"{field} must not contain control or invisible formatting characters.", field=field
        )
    return value


def check_sex(sex: Sex | str) -> Sex:
    """The :class:`Sex` member for ``sex``; InputError for anything else."""
    try:
        return Sex(sex)
    except ValueError:
        raise InputError(
            f"sex must be one of {', '.join(s.value for s in Sex)}; got {sex!r}.", field="sex"
        ) from None


def check_weight_kg(weight_kg: float) -> float:
    """``weight_kg`` when plausible; InputError otherwise."""
    if not WEIGHT_KG_MIN <= weight_kg <= WEIGHT_KG_MAX:
        raise InputError(
            f"weight_kg must be in [{WEIGHT_KG_MIN:g}, {WEIGHT_KG_MAX:g}] kg; got {weight_kg!r}. "
            "Enter kilograms (1 lb = 0.4536 kg).",
            field="weight_kg",
        )
    return float(weight_kg)


@dataclass(frozen=True, slots=True)
class NewPatient:
    """Demographics of a patient to register (validated when built)."""

    mrn: str
    family_name: str
    given_name: str
    birth_date: date
    sex: Sex

    def __post_init__(self) -> None:
        object.__setattr__(self, "mrn", check_mrn(self.mrn))
        object.__setattr__(self, "family_name", check_name(self.family_name, field="family_name"))
        object.__setattr__(self, "given_name", check_name(self.given_name, field="given_name"))
        object.__setattr__(self, "sex", check_sex(self.sex))
        _check_birth_date_floor(self.birth_date)


@dataclass(frozen=True, slots=True)
class PatientChanges:
    """Demographic fields to change; None leaves a field as it is."""

    mrn: str | None = None
    family_name: str | None = None
    given_name: str | None = None
    birth_date: date | None = None
    sex: Sex | None = None

    def __post_init__(self) -> None:
        if self.mrn is not None:
            object.__setattr__(self, "mrn", check_mrn(self.mrn))
        for name in ("family_name", "given_name"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_name(value, field=name))
        if self.sex is not None:
            object.__setattr__(self, "sex", check_sex(self.sex))
        if self.birth_date is not None:
            _check_birth_date_floor(self.birth_date)


@dataclass(frozen=True, slots=True)
class NewWeight:
    """A body weight to record: kilograms, and the day it was measured."""

    weight_kg: float
    measured_on: date

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_kg", check_weight_kg(self.weight_kg))


@dataclass(frozen=True, slots=True)
class WeightView:
    """A recorded body weight."""

    id: int
    patient_id: int
    weight_kg: float
    measured_on: date
    recorded_at: datetime
    recorded_by_user_id: int | None

    @classmethod
    def of(cls, row: WeightMeasurement) -> WeightView:
        """The view of a stored weight."""
        return cls(
            id=row.id,
            patient_id=row.patient_id,
            weight_kg=row.weight_kg,
            measured_on=row.measured_on,
            recorded_at=row.recorded_at,
            recorded_by_user_id=row.recorded_by_user_id,
        )


@dataclass(frozen=True, slots=True)
class PatientSummary:
    """A patient as listed in search results."""

    id: int
    mrn: str
    family_name: str
    given_name: str
    birth_date: date
    sex: Sex

    @classmethod
    def of(cls, row: Patient) -> PatientSummary:
        """The summary of a stored patient."""
        return cls(
            id=row.id,
            mrn=row.mrn,
            family_name=row.family_name,
            given_name=row.given_name,
            birth_date=row.birth_date,
            sex=row.sex,
        )


@dataclass(frozen=True, slots=True)
class PatientView:
    """One patient's record: demographics, timestamps and the latest weight."""

    id: int
    mrn: str
    family_name: str
    given_name: str
    birth_date: date
    sex: Sex
    created_at: datetime
    updated_at: datetime
    latest_weight: WeightView | None


@dataclass(frozen=True, slots=True)
class PatientSearchResult:
    """A page of search results and the total number of matches."""

    items: Sequence[PatientSummary]
    total: int
    limit: int
    offset: int


def _check_birth_date_floor(birth_date: date) -> None:
    if birth_date < EARLIEST_BIRTH_DATE:
        raise InputError(
            f"birth_date must be on or after {EARLIEST_BIRTH_DATE.isoformat()}; check the year.",
            field="birth_date",
        )


class PatientService:
    """Use-cases on patients, inside the caller's unit of work, each audited."""

    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    def _today(self) -> date:
        return self._clock.now().date()

    def _check_not_future(self, day: date, *, field: str) -> None:
        if day > self._today():
            # The date itself is not repeated: dates about a patient are patient data.
            raise InputError(
                f"{field} must not be in the future (today is {self._today().isoformat()}, UTC); "
                "check the year.",
                field=field,
            )

    def _get(self, patient_id: int) -> Patient:
        patient = self._uow.patients.get(patient_id)
        if patient is None:
            raise NotFoundError(f"no patient with id {patient_id}.", field="patient_id")
        return patient

    def _check_mrn_free(self, mrn: str, *, patient_id: int | None = None) -> None:
        existing = self._uow.patients.get_by_mrn(mrn)
        if existing is not None and existing.id != patient_id:
            raise ConflictError(
                "mrn is already registered to another patient; search for that patient instead.",
                field="mrn",
            )

    def _view(self, patient: Patient) -> PatientView:
        latest = self._uow.patients.latest_weight(patient.id)
        return PatientView(
            id=patient.id,
            mrn=patient.mrn,
            family_name=patient.family_name,
            given_name=patient.given_name,
            birth_date=patient.birth_date,
            sex=patient.sex,
            created_at=patient.created_at,
            updated_at=patient.updated_at,
            latest_weight=None if latest is None else WeightView.of(latest),
        )

    def create(self, actor: str, new: NewPatient) -> PatientView:
        """Register a patient. ConflictError when the MRN is taken."""
        self._check_not_future(new.birth_date, field="birth_date")
        self._check_mrn_free(new.mrn)
        now = self._clock.now()
        patient = self._uow.patients.add(
            Patient(
                mrn=new.mrn,
                family_name=new.family_name,
                given_name=new.given_name,
                birth_date=new.birth_date,
                sex=new.sex,
                created_at=now,
                updated_at=now,
            )
        )
        self._uow.audit.record(
            ts=now, actor=actor, action="create", entity="patient", entity_id=patient.id
        )
        return self._view(patient)

    def get(self, actor: str, patient_id: int) -> PatientView:
        """One patient's record (audited as a read). NotFoundError when absent."""
        view = self._view(self._get(patient_id))
        self._uow.audit.record(
            ts=self._clock.now(), actor=actor, action="read", entity="patient", entity_id=view.id
        )
        return view

    def search(
        self,
        actor: str,
        *,
        name: str | None = None,
        mrn: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> PatientSearchResult:
        """Patients whose family or given name starts with ``name`` (any case) and/or whose
        MRN is ``mrn``; without filters, everyone, a page at a time (audited as a query)."""
        if not 1 <= limit <= SEARCH_LIMIT_MAX:
            raise InputError(
                f"limit must be in [1, {SEARCH_LIMIT_MAX}]; got {limit}.", field="limit"
            )
        if offset < 0:
            raise InputError(f"offset must be >= 0; got {offset}.", field="offset")
        name_prefix = None if name is None or not name.strip() else check_name(name, field="q")
        mrn_value = None if mrn is None or not mrn.strip() else check_mrn(mrn)
        page = self._uow.patients.search(
            name_prefix=name_prefix, mrn=mrn_value, limit=limit, offset=offset
        )
        items = [PatientSummary.of(p) for p in page.items]
        filters = [f for f, v in (("name", name_prefix), ("mrn", mrn_value)) if v is not None]
        self._uow.audit.record(
            ts=self._clock.now(),
            actor=actor,
            action="query",
            entity="patient",
            details={"filters": filters, "result_ids": [p.id for p in items], "total": page.total},
        )
        return PatientSearchResult(items=items, total=page.total, limit=limit, offset=offset)

    def update(self, actor: str, patient_id: int, changes: PatientChanges) -> PatientView:
        """Change demographics; the audit entry names the changed fields, not their values."""
        patient = self._get(patient_id)
        if changes.birth_date is not None:
            self._check_not_future(changes.birth_date, field="birth_date")
        if changes.mrn is not None:
            self._check_mrn_free(changes.mrn, patient_id=patient.id)
        changed: list[str] = []
        for f in fields(changes):
            value = getattr(changes, f.name)
            if value is not None and getattr(patient, f.name) != value:
                setattr(patient, f.name, value)
                changed.append(f.name)
        now = self._clock.now()
        if changed:
            patient.updated_at = now
        self._uow.audit.record(
            ts=now,
            actor=actor,
            action="update",
            entity="patient",
            entity_id=patient.id,
            details={"fields": changed},
        )
        return self._view(patient)

    def add_weight(
        self, actor: str, patient_id: int, weight: NewWeight, *, recorded_by_user_id: int | None
    ) -> WeightView:
        """Record a body weight measured on ``weight.measured_on``."""
        patient = self._get(patient_id)
        self._check_not_future(weight.measured_on, field="measured_on")
        if weight.measured_on < patient.birth_date:
            raise InputError(
                "measured_on must not be before the patient's birth date; check the date.",
                field="measured_on",
            )
        now = self._clock.now()
        row = self._uow.patients.add_weight(
            WeightMeasurement(
                patient_id=patient.id,
                weight_kg=weight.weight_kg,
                measured_on=weight.measured_on,
                recorded_at=now,
                recorded_by_user_id=recorded_by_user_id,
            )
        )
        self._uow.audit.record(
            ts=now,
            actor=actor,
            action="create",
            entity="weight_measurement",
            entity_id=row.id,
            details={"patient_id": patient.id},
        )
        return WeightView.of(row)

    def weights(self, actor: str, patient_id: int) -> list[WeightView]:
        """Every recorded weight of the patient, oldest first (audited as a read)."""
        patient = self._get(patient_id)
        rows = [WeightView.of(w) for w in self._uow.patients.weights(patient.id)]
        self._uow.audit.record(
            ts=self._clock.now(),
            actor=actor,
            action="read",
            entity="patient",
            entity_id=patient.id,
            details={"part": "weights"},
        )
        return rows
