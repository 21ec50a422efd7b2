"""The patient: identifiers, body measurements with dates, allergies, current medications.

:class:`Patient` is an immutable value; a new measurement gives a new value
(:meth:`Patient.with_weight`). Medications are checked against a small data file of drug
classes (``clinical/data/drug_interactions.toml``) and produce :class:`InteractionFlag`
records with the reason and source of each flag.

>>> from datetime import date
>>> p = Patient(mrn="MRN-1", family_name="Doe", given_name="Jane",
...             date_of_birth=date(1980, 5, 17), sex=Sex.FEMALE)
>>> p = p.with_weight(WeightMeasurement(weight_kg=70.0, measured_on=date(2025, 1, 2)))
>>> p.age_years(on=date(2025, 5, 16)), p.latest_weight_kg()
(44, 70.0)
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from functools import cache
from typing import Literal

from ketaflow.clinical._data import check_keys, get_str, get_str_list, read_packaged
from ketaflow.errors import InputError, ProtocolError
from ketaflow.units import lookup_unit

#: Body weight accepted, kg (adult outpatient clinic; outside = a keying or unit error).
WEIGHT_RANGE_KG = (20.0, 400.0)
#: Body height accepted, cm.
HEIGHT_RANGE_CM = (100.0, 250.0)


class Sex(Enum):
    """Administrative sex as recorded; PK models use only female/male."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


def _check_date(value: date, field: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise InputError(f"{field}: expected a calendar date, got {value!r}", field=field)
    return value


def _check_number(value: float, field: str, lo: float, hi: float, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{field}: expected a number in {unit}, got {value!r}", field=field)
    if not lo <= value <= hi:
        raise InputError(
            f"{field}: {value:g} {unit} is outside {lo:g} to {hi:g} {unit}; check the unit",
            field=field,
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class WeightMeasurement:
    """A body weight and the date it was measured."""

    weight_kg: float
    measured_on: date
    note: str = ""

    def __post_init__(self) -> None:
        _check_number(self.weight_kg, "weight_kg", *WEIGHT_RANGE_KG, "kg")
        _check_date(self.measured_on, "measured_on")


@dataclass(frozen=True, slots=True)
class HeightMeasurement:
    """A body height and the date it was measured."""

    height_cm: float
    measured_on: date
    note: str = ""

    def __post_init__(self) -> None:
        _check_number(self.height_cm, "height_cm", *HEIGHT_RANGE_CM, "cm")
        _check_date(self.measured_on, "measured_on")


class AllergySeverity(Enum):
    """How severe a recorded reaction was."""

    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Allergy:
    """A recorded allergy or intolerance."""

    substance: str
    reaction: str = ""
    severity: AllergySeverity = AllergySeverity.UNKNOWN

    def __post_init__(self) -> None:
        if not isinstance(self.substance, str) or not self.substance.strip():
            raise InputError("allergy.substance: must be a non-empty string", field="substance")


@dataclass(frozen=True, slots=True)
class Medication:
    """A current medication as written in the chart (``name`` may be generic or brand)."""

    name: str
    dose_text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError("medication.name: must be a non-empty string", field="name")


@dataclass(frozen=True, slots=True)
class DrugClass:
    """A class of drugs that interacts with ketamine, from ``drug_interactions.toml``."""

    id: str
    name: str
    severity: str
    reason: str
    source: str
    examples: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InteractionFlag:
    """A current medication that belongs to an interacting drug class."""

    medication: str
    drug_class: str
    class_name: str
    matched: str
    reason: str
    source: str


@cache
def drug_classes() -> Mapping[str, DrugClass]:
    """The interacting drug classes shipped with ketaflow, by id."""
    data = read_packaged("drug_interactions.toml")
    out: dict[str, DrugClass] = {}
    for cid, t in data.items():
        where = f"drug_interactions.toml [{cid}]"
        check_keys(t, ("name", "severity", "reason", "source", "examples"), (), where)
        severity = get_str(t, "severity", where)
        if severity != "warning":
            raise ProtocolError(f"{where}: severity must be 'warning' (flags are never hard stops)")
        out[cid] = DrugClass(
            id=cid,
            name=get_str(t, "name", where),
            severity=severity,
            reason=get_str(t, "reason", where),
            source=get_str(t, "source", where),
            examples=tuple(e.lower() for e in get_str_list(t, "examples", where)),
        )
    return out


_WORD = re.compile(r"[a-z0-9]+")


def flag_interactions(
    medications: Iterable[Medication], classes: Mapping[str, DrugClass] | None = None
) -> tuple[InteractionFlag, ...]:
    """Flags for every medication whose name contains an example name of an interacting class.

    Matching is case-insensitive on whole words ("Xanax XR 1 mg" matches "xanax"), so it finds
    names, not every member of a class: a pharmacist review is still needed.
    """
    table = drug_classes() if classes is None else classes
    flags: list[InteractionFlag] = []
    for med in medications:
        words = set(_WORD.findall(med.name.lower()))
        for dc in table.values():
            hit = next((e for e in dc.examples if e in words), None)
            if hit is not None:
                flags.append(
                    InteractionFlag(
                        medication=med.name,
                        drug_class=dc.id,
                        class_name=dc.name,
                        matched=hit,
                        reason=dc.reason,
                        source=dc.source,
                    )
                )
    return tuple(flags)


PkSex = Literal["male", "female"]


@dataclass(frozen=True, slots=True)
class PatientCovariates:
    """What a PK model needs to know about a patient."""

    weight_kg: float
    age_y: float | None = None
    sex: PkSex | None = None
    height_cm: float | None = None


@dataclass(frozen=True, slots=True)
class Patient:
    """A patient with identifiers and clinical context; immutable (``with_*`` return copies)."""

    mrn: str
    family_name: str
    given_name: str
    date_of_birth: date
    sex: Sex
    weights: tuple[WeightMeasurement, ...] = ()
    heights: tuple[HeightMeasurement, ...] = ()
    allergies: tuple[Allergy, ...] = ()
    medications: tuple[Medication, ...] = ()

    def __post_init__(self) -> None:
        for name in ("mrn", "family_name", "given_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"patient.{name}: must be a non-empty string", field=name)
        _check_date(self.date_of_birth, "date_of_birth")
        if not isinstance(self.sex, Sex):
            raise InputError(
                f"patient.sex: must be one of {', '.join(s.value for s in Sex)}", field="sex"
            )

    def age_years(self, *, on: date) -> int:
        """Age in completed years on ``on``."""
        _check_date(on, "on")
        if on < self.date_of_birth:
            raise InputError("on: the date is before the date of birth", field="on")
        before_birthday = (on.month, on.day) < (self.date_of_birth.month, self.date_of_birth.day)
        return on.year - self.date_of_birth.year - int(before_birthday)

    def with_weight(self, measurement: WeightMeasurement) -> Patient:
        """A copy with one more weight measurement."""
        return dataclasses.replace(self, weights=(*self.weights, measurement))

    def with_height(self, measurement: HeightMeasurement) -> Patient:
        """A copy with one more height measurement."""
        return dataclasses.replace(self, heights=(*self.heights, measurement))

    def with_allergy(self, allergy: Allergy) -> Patient:
        """A copy with one more allergy."""
        return dataclasses.replace(self, allergies=(*self.allergies, allergy))

    def with_medications(self, medications: Iterable[Medication]) -> Patient:
        """A copy whose current medication list is ``medications``."""
        return dataclasses.replace(self, medications=tuple(medications))

    def latest_weight(self) -> WeightMeasurement | None:
        """The most recently measured weight (latest date; the last entered on a tie)."""
        if not self.weights:
            return None
        return max(enumerate(self.weights), key=lambda iw: (iw[1].measured_on, iw[0]))[1]

    def latest_height(self) -> HeightMeasurement | None:
        """The most recently measured height."""
        if not self.heights:
            return None
        return max(enumerate(self.heights), key=lambda ih: (ih[1].measured_on, ih[0]))[1]

    def latest_weight_kg(self) -> float | None:
        """The latest weight in kg, or None."""
        w = self.latest_weight()
        return None if w is None else w.weight_kg

    def weight_age_days(self, *, on: date) -> int | None:
        """Days since the latest weight was measured (None without a weight)."""
        w = self.latest_weight()
        return None if w is None else (_check_date(on, "on") - w.measured_on).days

    def bmi_kg_per_m2(self) -> float | None:
        """Body-mass index from the latest weight and height, kg/m², or None."""
        w, h = self.latest_weight(), self.latest_height()
        if w is None or h is None:
            return None
        cm_per_m = lookup_unit("m")[2]
        height_m = h.height_cm / cm_per_m
        return w.weight_kg / (height_m * height_m)

    def interaction_flags(self) -> tuple[InteractionFlag, ...]:
        """Interaction flags of the current medications."""
        return flag_interactions(self.medications)

    def covariates(self, *, on: date) -> PatientCovariates:
        """PK covariates (latest weight, age on ``on``, sex, latest height).

        Raises InputError when no weight is recorded: every dose and prediction needs one.
        """
        w = self.latest_weight()
        if w is None:
            raise InputError("weight_kg: no weight recorded; measure the patient", field="weight")
        h = self.latest_height()
        sex: PkSex | None = None
        if self.sex is Sex.FEMALE:
            sex = "female"
        elif self.sex is Sex.MALE:
            sex = "male"
        return PatientCovariates(
            weight_kg=w.weight_kg,
            age_y=float(self.age_years(on=on)),
            sex=sex,
            height_cm=None if h is None else h.height_cm,
        )
