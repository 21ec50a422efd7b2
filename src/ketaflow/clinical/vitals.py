"""Vital signs: kinds with their codes and units, plausibility checks, blood-pressure sets.

Every reading is a :class:`VitalReading` of one :class:`VitalKind`. The kind fixes the unit
(UCUM code in :attr:`VitalSpec.ucum`): beats or breaths per minute, mm[Hg], %, Cel. Values in
other units must be converted before they reach this module.

Plausibility works in two tiers (limits in ``clinical/data/vitals.toml``):

* **impossible** values (SpO2 > 100 %, HR <= 0 or > 300/min, SBP < DBP, ...) are refused with an
  :class:`~ketaflow.errors.InputError` naming the field; nothing is stored;
* **implausible but possible** values (HR 250/min, a sudden jump) are kept and flagged
  ``artefact_suspect`` with the reasons. Alarms are still evaluated on them: a real HR of 250 must
  never be silenced by a heuristic.

MAP is computed as DBP + (SBP - DBP) / 3 when a blood-pressure pair arrives without it.

>>> from datetime import UTC, datetime
>>> s = make_vital_set(measured_at=datetime(2025, 1, 1, 9, tzinfo=UTC), source=VitalSource.MANUAL,
...                    sbp_mmhg=120, dbp_mmhg=81)
>>> s.value(VitalKind.MAP)
94.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any

from ketaflow.clinical._data import (
    check_keys,
    get_number,
    get_optional_number,
    get_str,
    read_packaged,
)
from ketaflow.clinical.clock import require_aware
from ketaflow.errors import InputError, ProtocolError


class VitalKind(Enum):
    """Vital signs recorded during a session. The value is the stable code used in data files."""

    HR = "hr"
    SBP = "sbp"
    DBP = "dbp"
    MAP = "map"
    SPO2 = "spo2"
    RR = "rr"
    ETCO2 = "etco2"
    TEMP = "temp"


class VitalSource(Enum):
    """Where a reading came from."""

    MANUAL = "manual"
    DEVICE = "device"


@dataclass(frozen=True, slots=True)
class VitalSpec:
    """Codes, unit and plausibility limits of one vital-sign kind."""

    kind: VitalKind
    name: str
    ucum: str
    loinc: str
    mdc_code: int
    mdc_name: str
    loinc_alternates: tuple[str, ...]
    mdc_alternates: tuple[int, ...]
    valid_min: float
    valid_max: float
    suspect_below: float | None
    suspect_above: float | None
    jump_max: float | None
    jump_window_s: float | None


_SPEC_KEYS = (
    "name",
    "ucum",
    "loinc",
    "mdc_code",
    "mdc_name",
    "mdc_alternates",
    "valid_min",
    "valid_max",
)
_SPEC_OPTIONAL = (
    "loinc_alternates",
    "suspect_below",
    "suspect_above",
    "jump_max",
    "jump_window_s",
)


def _parse_spec(kind: VitalKind, t: Mapping[str, Any]) -> VitalSpec:
    where = f"vitals.toml [{kind.value}]"
    check_keys(t, _SPEC_KEYS, _SPEC_OPTIONAL, where)
    mdc_alt = t["mdc_alternates"]
    if not isinstance(mdc_alt, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in mdc_alt
    ):
        raise ProtocolError(f"{where}: 'mdc_alternates' must be a list of integers")
    loinc_alt = t.get("loinc_alternates", [])
    if not isinstance(loinc_alt, list) or not all(isinstance(c, str) for c in loinc_alt):
        raise ProtocolError(f"{where}: 'loinc_alternates' must be a list of strings")
    mdc_code = t["mdc_code"]
    if not isinstance(mdc_code, int) or isinstance(mdc_code, bool):
        raise ProtocolError(f"{where}: 'mdc_code' must be an integer")
    spec = VitalSpec(
        kind=kind,
        name=get_str(t, "name", where),
        ucum=get_str(t, "ucum", where),
        loinc=get_str(t, "loinc", where),
        mdc_code=mdc_code,
        mdc_name=get_str(t, "mdc_name", where),
        loinc_alternates=tuple(loinc_alt),
        mdc_alternates=tuple(mdc_alt),
        valid_min=get_number(t, "valid_min", where),
        valid_max=get_number(t, "valid_max", where),
        suspect_below=get_optional_number(t, "suspect_below", where),
        suspect_above=get_optional_number(t, "suspect_above", where),
        jump_max=get_optional_number(t, "jump_max", where),
        jump_window_s=get_optional_number(t, "jump_window_s", where),
    )
    if spec.valid_min >= spec.valid_max:
        raise ProtocolError(f"{where}: valid_min must be below valid_max")
    if (spec.jump_max is None) != (spec.jump_window_s is None):
        raise ProtocolError(f"{where}: give jump_max and jump_window_s together")
    return spec


@cache
def vital_specs() -> Mapping[VitalKind, VitalSpec]:
    """The spec of every vital kind, from ``clinical/data/vitals.toml``."""
    data = read_packaged("vitals.toml")
    unknown = set(data) - {k.value for k in VitalKind}
    if unknown:
        raise ProtocolError(f"vitals.toml: unknown vital kind(s) {sorted(unknown)}")
    specs: dict[VitalKind, VitalSpec] = {}
    for kind in VitalKind:
        if kind.value not in data:
            raise ProtocolError(f"vitals.toml: missing table [{kind.value}]")
        specs[kind] = _parse_spec(kind, data[kind.value])
    return specs


def vital_spec(kind: VitalKind) -> VitalSpec:
    """Codes, unit and limits of ``kind``."""
    return vital_specs()[kind]


def kind_for_mdc(code: int) -> VitalKind | None:
    """The vital kind for an IEEE 11073 MDC reference ID (primary or alternate), or None."""
    for spec in vital_specs().values():
        if code == spec.mdc_code or code in spec.mdc_alternates:
            return spec.kind
    return None


def kind_for_loinc(code: str) -> VitalKind | None:
    """The vital kind for a LOINC code (primary or alternate), or None."""
    for spec in vital_specs().values():
        if code == spec.loinc or code in spec.loinc_alternates:
            return spec.kind
    return None


@dataclass(frozen=True, slots=True)
class VitalReading:
    """One measured (or derived) value. ``value`` is in the kind's UCUM unit (:attr:`unit`)."""

    kind: VitalKind
    value: float
    measured_at: datetime
    source: VitalSource
    device_id: str | None = None
    artefact_suspect: bool = False
    artefact_reasons: tuple[str, ...] = ()
    derived: bool = False  # True for a MAP computed from SBP/DBP

    @property
    def unit(self) -> str:
        """UCUM code of :attr:`value`."""
        return vital_spec(self.kind).ucum


def _field(kind: VitalKind) -> str:
    return f"vitals.{kind.value}"


def assess_reading(
    kind: VitalKind,
    value: float,
    *,
    measured_at: datetime,
    source: VitalSource,
    previous: VitalReading | None = None,
    device_id: str | None = None,
    derived: bool = False,
) -> VitalReading:
    """Validate one value and flag it when implausible; ``previous`` (same kind) detects jumps.

    Raises InputError naming the field (e.g. ``vitals.spo2``) for an impossible value.
    """
    if not isinstance(kind, VitalKind):
        raise InputError("vitals.kind: must be a VitalKind", field="vitals.kind")
    spec = vital_spec(kind)
    name = _field(kind)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InputError(f"{name}: expected a number in {spec.ucum}, got {value!r}", field=name)
    v = float(value)
    if not spec.valid_min <= v <= spec.valid_max:
        raise InputError(
            f"{name}: {v:g} {spec.ucum} is impossible; allowed {spec.valid_min:g} to "
            f"{spec.valid_max:g} {spec.ucum}; check the unit and re-enter the value",
            field=name,
        )
    require_aware(measured_at, f"{name}.measured_at")
    if not isinstance(source, VitalSource):
        raise InputError(f"{name}.source: must be 'manual' or 'device'", field=f"{name}.source")
    reasons: list[str] = []
    if spec.suspect_below is not None and v < spec.suspect_below:
        reasons.append(f"below {spec.suspect_below:g} {spec.ucum}")
    if spec.suspect_above is not None and v > spec.suspect_above:
        reasons.append(f"above {spec.suspect_above:g} {spec.ucum}")
    if (
        previous is not None
        and previous.kind is kind
        and spec.jump_max is not None
        and spec.jump_window_s is not None
    ):
        gap_s = (measured_at - previous.measured_at).total_seconds()
        if 0 <= gap_s <= spec.jump_window_s and abs(v - previous.value) > spec.jump_max:
            reasons.append(
                f"changed by {v - previous.value:+g} {spec.ucum} in {gap_s:g} s "
                f"(more than {spec.jump_max:g} within {spec.jump_window_s:g} s)"
            )
    return VitalReading(
        kind=kind,
        value=v,
        measured_at=measured_at,
        source=source,
        device_id=device_id,
        artefact_suspect=bool(reasons),
        artefact_reasons=tuple(reasons),
        derived=derived,
    )


def mean_arterial_pressure_mmhg(sbp_mmhg: float, dbp_mmhg: float) -> float:
    """MAP estimated as DBP + (SBP - DBP) / 3, mm[Hg]."""
    return dbp_mmhg + (sbp_mmhg - dbp_mmhg) / 3.0


@dataclass(frozen=True, slots=True)
class VitalSet:
    """Readings taken together (one monitor cycle or one manual entry)."""

    measured_at: datetime
    source: VitalSource
    readings: tuple[VitalReading, ...]
    _by_kind: dict[VitalKind, VitalReading] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self._by_kind.update({r.kind: r for r in self.readings})

    def get(self, kind: VitalKind) -> VitalReading | None:
        """The reading of ``kind``, or None."""
        return self._by_kind.get(kind)

    def value(self, kind: VitalKind) -> float | None:
        """The value of ``kind`` in its UCUM unit, or None."""
        r = self._by_kind.get(kind)
        return None if r is None else r.value

    def __iter__(self) -> Iterator[VitalReading]:
        return iter(self.readings)

    @property
    def artefact_suspect(self) -> bool:
        """Whether any reading in the set is flagged."""
        return any(r.artefact_suspect for r in self.readings)


def make_vital_set(
    *,
    measured_at: datetime,
    source: VitalSource,
    hr_per_min: float | None = None,
    sbp_mmhg: float | None = None,
    dbp_mmhg: float | None = None,
    map_mmhg: float | None = None,
    spo2_pct: float | None = None,
    rr_per_min: float | None = None,
    etco2_mmhg: float | None = None,
    temp_c: float | None = None,
    previous: Mapping[VitalKind, VitalReading] | VitalSet | None = None,
    device_id: str | None = None,
) -> VitalSet:
    """Validate a set of values taken at one time and compute MAP when it is missing.

    SBP and DBP must be given together and SBP must not be below DBP; a given MAP must lie
    between them. ``previous`` (latest reading per kind) is used to flag sudden jumps.
    """
    values: dict[VitalKind, float | None] = {
        VitalKind.HR: hr_per_min,
        VitalKind.SBP: sbp_mmhg,
        VitalKind.DBP: dbp_mmhg,
        VitalKind.MAP: map_mmhg,
        VitalKind.SPO2: spo2_pct,
        VitalKind.RR: rr_per_min,
        VitalKind.ETCO2: etco2_mmhg,
        VitalKind.TEMP: temp_c,
    }
    if all(v is None for v in values.values()):
        raise InputError("vitals: no value given; enter at least one vital sign", field="vitals")
    if (sbp_mmhg is None) != (dbp_mmhg is None):
        missing = "dbp" if dbp_mmhg is None else "sbp"
        raise InputError(
            f"vitals.{missing}: blood pressure needs both systolic and diastolic values",
            field=f"vitals.{missing}",
        )
    prev: Mapping[VitalKind, VitalReading]
    if previous is None:
        prev = {}
    elif isinstance(previous, VitalSet):
        prev = {r.kind: r for r in previous.readings}
    else:
        prev = previous
    readings: dict[VitalKind, VitalReading] = {}
    for kind, v in values.items():
        if v is None:
            continue
        readings[kind] = assess_reading(
            kind,
            v,
            measured_at=measured_at,
            source=source,
            previous=prev.get(kind),
            device_id=device_id,
        )
    sbp = readings.get(VitalKind.SBP)
    dbp = readings.get(VitalKind.DBP)
    if sbp is not None and dbp is not None:
        if sbp.value < dbp.value:
            raise InputError(
                f"vitals.sbp: systolic {sbp.value:g} mm[Hg] is below diastolic {dbp.value:g} "
                "mm[Hg]; the two values may be swapped",
                field="vitals.sbp",
            )
        given_map = readings.get(VitalKind.MAP)
        if given_map is None:
            readings[VitalKind.MAP] = assess_reading(
                VitalKind.MAP,
                mean_arterial_pressure_mmhg(sbp.value, dbp.value),
                measured_at=measured_at,
                source=source,
                previous=prev.get(VitalKind.MAP),
                device_id=device_id,
                derived=True,
            )
        elif not dbp.value <= given_map.value <= sbp.value:
            raise InputError(
                f"vitals.map: {given_map.value:g} mm[Hg] must lie between diastolic "
                f"{dbp.value:g} and systolic {sbp.value:g} mm[Hg]",
                field="vitals.map",
            )
    ordered = tuple(readings[k] for k in VitalKind if k in readings)
    return VitalSet(measured_at=measured_at, source=source, readings=ordered)


class VitalLog:
    """Readings of one session in arrival order, with the latest reading per kind.

    Used to flag jumps against the previous reading and as the source of "latest vitals" for
    discharge. Out-of-order readings are kept but do not replace a newer latest value.
    """

    def __init__(self) -> None:
        self._readings: list[VitalReading] = []
        self._latest: dict[VitalKind, VitalReading] = {}

    def add(self, reading: VitalReading) -> None:
        """Store one already-assessed reading."""
        self._readings.append(reading)
        current = self._latest.get(reading.kind)
        if current is None or reading.measured_at >= current.measured_at:
            self._latest[reading.kind] = reading

    def add_set(self, vitals: VitalSet) -> None:
        """Store every reading of a set."""
        for r in vitals.readings:
            self.add(r)

    def latest(self, kind: VitalKind) -> VitalReading | None:
        """The newest reading of ``kind`` (by measurement time), or None."""
        return self._latest.get(kind)

    def latest_by_kind(self) -> Mapping[VitalKind, VitalReading]:
        """The newest reading of every kind seen (a copy)."""
        return dict(self._latest)

    @property
    def readings(self) -> tuple[VitalReading, ...]:
        """Every reading in arrival order."""
        return tuple(self._readings)

    def assess(
        self,
        kind: VitalKind,
        value: float,
        *,
        measured_at: datetime,
        source: VitalSource,
        device_id: str | None = None,
    ) -> VitalReading:
        """Validate ``value`` against the latest reading of its kind, store and return it."""
        reading = assess_reading(
            kind,
            value,
            measured_at=measured_at,
            source=source,
            previous=self._latest.get(kind),
            device_id=device_id,
        )
        self.add(reading)
        return reading
