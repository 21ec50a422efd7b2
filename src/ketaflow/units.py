"""Units: the only home of conversion factors and of parsing quantities written by people.

Inside the pharmacology core everything is in **mg, L and min** (so concentrations are mg/L,
which equals µg/mL). Public names carry their unit (``rate_mg_per_h``, ``cp_ng_per_ml``); the
conversions between the internal system and the public one live here and nowhere else.

A quantity written by a person ("0.5 mg/kg", "40 min", "200 ng/mL", "1200 mL/h") is parsed by
:func:`parse_quantity` against an expected :class:`Dimension`. Each dimension has one canonical
unit, named in :data:`CANONICAL_UNIT`; a unit of the wrong dimension is an error that names both,
which is how "mL/h where mg/h was meant" is caught.

>>> parse_quantity("0.5 mg/kg", Dimension.DOSE_PER_WEIGHT).value
0.5
>>> parse_quantity("2 h", Dimension.TIME).value  # canonical: min
120.0
>>> round(parse_quantity("200 ng/mL", Dimension.CONCENTRATION).to("ng/mL"), 9)
200.0
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

from ketaflow.errors import UnitError

# --- Internal conversion factors (pk core works in mg, L, min) --------------------------------

#: ng/mL per mg/L (1 mg/L = 1 µg/mL = 1000 ng/mL).
NG_PER_ML_PER_MG_PER_L: Final = 1000.0
#: minutes per hour.
MIN_PER_H: Final = 60.0
#: seconds per minute.
S_PER_MIN: Final = 60.0
#: mL per L.
ML_PER_L: Final = 1000.0
#: kg per pound (international avoirdupois pound, exact by definition).
KG_PER_LB: Final = 0.45359237
#: cm per inch (exact by definition).
CM_PER_IN: Final = 2.54
#: Molar mass of ketamine base, g/mol (standard chemistry value; used for nmol/mL conversions
#: of published C50s, e.g. Olofsen 2022's 0.51 nmol/mL).
KETAMINE_G_PER_MOL: Final = 237.73
#: Molar mass of norketamine base, g/mol.
NORKETAMINE_G_PER_MOL: Final = 223.7


def mg_per_l_to_ng_per_ml(value: float) -> float:
    """Convert a concentration from mg/L (internal) to ng/mL (public)."""
    return value * NG_PER_ML_PER_MG_PER_L


def ng_per_ml_to_mg_per_l(value: float) -> float:
    """Convert a concentration from ng/mL (public) to mg/L (internal)."""
    return value / NG_PER_ML_PER_MG_PER_L


def mg_per_min_to_mg_per_h(value: float) -> float:
    """Convert a dosing rate from mg/min (internal) to mg/h (public)."""
    return value * MIN_PER_H


def mg_per_h_to_mg_per_min(value: float) -> float:
    """Convert a dosing rate from mg/h (public) to mg/min (internal)."""
    return value / MIN_PER_H


def nmol_per_ml_to_ng_per_ml(value: float, g_per_mol: float = KETAMINE_G_PER_MOL) -> float:
    """Convert a molar concentration (nmol/mL) to a mass concentration (ng/mL)."""
    return value * g_per_mol


class Dimension(Enum):
    """What a quantity measures. Each has one canonical unit (see :data:`CANONICAL_UNIT`)."""

    MASS = "mass"  # drug amount
    BODY_MASS = "body mass"
    LENGTH = "length"
    TIME = "time"
    VOLUME = "volume"
    CONCENTRATION = "concentration"
    DOSE_PER_WEIGHT = "dose per body weight"
    MASS_RATE = "dosing rate"
    MASS_RATE_PER_WEIGHT = "dosing rate per body weight"
    VOLUME_RATE = "volume rate"


CANONICAL_UNIT: Final[dict[Dimension, str]] = {
    Dimension.MASS: "mg",
    Dimension.BODY_MASS: "kg",
    Dimension.LENGTH: "cm",
    Dimension.TIME: "min",
    Dimension.VOLUME: "mL",
    Dimension.CONCENTRATION: "mg/L",
    Dimension.DOSE_PER_WEIGHT: "mg/kg",
    Dimension.MASS_RATE: "mg/min",
    Dimension.MASS_RATE_PER_WEIGHT: "mg/kg/min",
    Dimension.VOLUME_RATE: "mL/min",
}

#: UCUM code of each accepted unit spelling's canonical form (for FHIR/HL7 output).
UCUM: Final[dict[str, str]] = {
    "mg": "mg",
    "kg": "kg",
    "cm": "cm",
    "min": "min",
    "s": "s",
    "h": "h",
    "mL": "mL",
    "mg/L": "mg/L",
    "ng/mL": "ng/mL",
    "mg/mL": "mg/mL",
    "mg/kg": "mg/kg",
    "mg/h": "mg/h",
    "mg/min": "mg/min",
    "mg/kg/h": "mg/kg/h",
    "mg/kg/min": "mg/kg/min",
    "mL/h": "mL/h",
    "mL/min": "mL/min",
}

# Each accepted spelling (lower-cased, µ/mcg normalised to "ug") -> (display, dimension, factor
# to the canonical unit of its dimension).
_UNITS: Final[dict[str, tuple[str, Dimension, float]]] = {
    # drug mass, canonical mg
    "mg": ("mg", Dimension.MASS, 1.0),
    "g": ("g", Dimension.MASS, 1000.0),
    "ug": ("µg", Dimension.MASS, 1e-3),
    "ng": ("ng", Dimension.MASS, 1e-6),
    # body mass, canonical kg
    "kg": ("kg", Dimension.BODY_MASS, 1.0),
    "lb": ("lb", Dimension.BODY_MASS, KG_PER_LB),
    "lbs": ("lb", Dimension.BODY_MASS, KG_PER_LB),
    # length, canonical cm
    "cm": ("cm", Dimension.LENGTH, 1.0),
    "m": ("m", Dimension.LENGTH, 100.0),
    "mm": ("mm", Dimension.LENGTH, 0.1),
    "in": ("in", Dimension.LENGTH, CM_PER_IN),
    # time, canonical min
    "s": ("s", Dimension.TIME, 1.0 / S_PER_MIN),
    "sec": ("s", Dimension.TIME, 1.0 / S_PER_MIN),
    "secs": ("s", Dimension.TIME, 1.0 / S_PER_MIN),
    "second": ("s", Dimension.TIME, 1.0 / S_PER_MIN),
    "seconds": ("s", Dimension.TIME, 1.0 / S_PER_MIN),
    "min": ("min", Dimension.TIME, 1.0),
    "mins": ("min", Dimension.TIME, 1.0),
    "minute": ("min", Dimension.TIME, 1.0),
    "minutes": ("min", Dimension.TIME, 1.0),
    "h": ("h", Dimension.TIME, MIN_PER_H),
    "hr": ("h", Dimension.TIME, MIN_PER_H),
    "hrs": ("h", Dimension.TIME, MIN_PER_H),
    "hour": ("h", Dimension.TIME, MIN_PER_H),
    "hours": ("h", Dimension.TIME, MIN_PER_H),
    "d": ("d", Dimension.TIME, 24 * MIN_PER_H),
    "day": ("d", Dimension.TIME, 24 * MIN_PER_H),
    "days": ("d", Dimension.TIME, 24 * MIN_PER_H),
    # volume, canonical mL
    "ml": ("mL", Dimension.VOLUME, 1.0),
    "l": ("L", Dimension.VOLUME, ML_PER_L),
    # concentration, canonical mg/L (= µg/mL)
    "mg/l": ("mg/L", Dimension.CONCENTRATION, 1.0),
    "ug/ml": ("µg/mL", Dimension.CONCENTRATION, 1.0),
    "ng/ml": ("ng/mL", Dimension.CONCENTRATION, 1.0 / NG_PER_ML_PER_MG_PER_L),
    "ug/l": ("µg/L", Dimension.CONCENTRATION, 1.0 / NG_PER_ML_PER_MG_PER_L),
    "mg/ml": ("mg/mL", Dimension.CONCENTRATION, ML_PER_L),
    # dose per body weight, canonical mg/kg
    "mg/kg": ("mg/kg", Dimension.DOSE_PER_WEIGHT, 1.0),
    "ug/kg": ("µg/kg", Dimension.DOSE_PER_WEIGHT, 1e-3),
    # dosing rate, canonical mg/min
    "mg/min": ("mg/min", Dimension.MASS_RATE, 1.0),
    "mg/h": ("mg/h", Dimension.MASS_RATE, 1.0 / MIN_PER_H),
    "mg/hr": ("mg/h", Dimension.MASS_RATE, 1.0 / MIN_PER_H),
    "ug/min": ("µg/min", Dimension.MASS_RATE, 1e-3),
    "ug/h": ("µg/h", Dimension.MASS_RATE, 1e-3 / MIN_PER_H),
    # dosing rate per body weight, canonical mg/kg/min
    "mg/kg/min": ("mg/kg/min", Dimension.MASS_RATE_PER_WEIGHT, 1.0),
    "mg/kg/h": ("mg/kg/h", Dimension.MASS_RATE_PER_WEIGHT, 1.0 / MIN_PER_H),
    "mg/kg/hr": ("mg/kg/h", Dimension.MASS_RATE_PER_WEIGHT, 1.0 / MIN_PER_H),
    "ug/kg/min": ("µg/kg/min", Dimension.MASS_RATE_PER_WEIGHT, 1e-3),
    "ug/kg/h": ("µg/kg/h", Dimension.MASS_RATE_PER_WEIGHT, 1e-3 / MIN_PER_H),
    # volume rate, canonical mL/min
    "ml/min": ("mL/min", Dimension.VOLUME_RATE, 1.0),
    "ml/h": ("mL/h", Dimension.VOLUME_RATE, 1.0 / MIN_PER_H),
    "ml/hr": ("mL/h", Dimension.VOLUME_RATE, 1.0 / MIN_PER_H),
}

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_QUANTITY_RE: Final = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<unit>[^\s\d][^\s]*)?\s*$")


def _normalise_unit(unit: str) -> str:
    u = unit.strip().replace("µ", "u").replace("μ", "u").lower()
    u = u.replace("mcg", "ug").replace(" ", "")
    return u


def units_of(dimension: Dimension) -> list[str]:
    """Display spellings accepted for ``dimension``, for help texts and error messages."""
    seen: list[str] = []
    for display, dim, _ in _UNITS.values():
        if dim is dimension and display not in seen:
            seen.append(display)
    return seen


@dataclass(frozen=True, slots=True)
class Quantity:
    """A value in the canonical unit of its dimension, and the spelling it was written in."""

    value: float
    dimension: Dimension
    written_unit: str

    @property
    def canonical_unit(self) -> str:
        """The canonical unit of :attr:`value`."""
        return CANONICAL_UNIT[self.dimension]

    def to(self, unit: str) -> float:
        """The value expressed in ``unit`` (which must have the same dimension)."""
        display, dim, factor = lookup_unit(unit)
        if dim is not self.dimension:
            raise UnitError(f"cannot express a {self.dimension.value} in {display} (a {dim.value})")
        return self.value / factor


def lookup_unit(unit: str) -> tuple[str, Dimension, float]:
    """Return (display spelling, dimension, factor to canonical) for a unit spelling."""
    entry = _UNITS.get(_normalise_unit(unit))
    if entry is None:
        raise UnitError(f"unknown unit {unit!r}")
    return entry


def parse_quantity(
    text: str,
    dimension: Dimension | tuple[Dimension, ...],
    *,
    field: str = "quantity",
    allow_negative: bool = False,
) -> Quantity:
    """Parse a number with a unit, such as ``"0.5 mg/kg"`` or ``"120min"``.

    ``dimension`` is what the caller expects (one or several); the result holds the value in
    that dimension's canonical unit. Errors name ``field``, what was received and what is
    accepted, so that a person can fix the input at once.
    """
    expected = dimension if isinstance(dimension, tuple) else (dimension,)
    accepted = ", ".join(u for d in expected for u in units_of(d))
    match = _QUANTITY_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise UnitError(
            f"{field}: expected a number with a unit ({accepted}), got {text!r}", field=field
        )
    unit_text = match.group("unit")
    if not unit_text:
        raise UnitError(
            f"{field}: {text.strip()!r} has no unit; write it with one of {accepted}", field=field
        )
    entry = _UNITS.get(_normalise_unit(unit_text))
    if entry is None:
        raise UnitError(
            f"{field}: unknown unit {unit_text!r} in {text.strip()!r}; use one of {accepted}",
            field=field,
        )
    display, dim, factor = entry
    if dim not in expected:
        want = " or ".join(d.value for d in expected)
        raise UnitError(
            f"{field}: {text.strip()!r} is a {dim.value} ({display}) but a {want} is needed "
            f"({accepted})",
            field=field,
        )
    number = float(match.group("num"))
    if not math.isfinite(number):
        raise UnitError(f"{field}: {text.strip()!r} is not a finite number", field=field)
    if number < 0 and not allow_negative:
        raise UnitError(f"{field}: {text.strip()!r} must not be negative", field=field)
    return Quantity(number * factor, dim, display)


def parse_duration_min(text: str, *, field: str = "duration") -> float:
    """Parse a duration such as ``"120min"``, ``"10s"`` or ``"2 h"``; returns minutes."""
    return parse_quantity(text, Dimension.TIME, field=field).value
