"""Pump programming from an order: mL/h, VTBI, dilution, rounding error, independent double check.

:func:`program_pump` turns a :class:`~ketaflow.dosing.orders.DoseOrder` and the concentration of
the prepared syringe or bag into what a nurse keys into the pump: the rate in mL/h rounded to the
pump's resolution (``Settings.pump_rate_resolution_ml_per_h``, 0.1 mL/h by default) and the
volume to be infused (VTBI). Because the rate is rounded, the pump delivers slightly more or less
than ordered; the program states the delivered dose, rate and duration and their difference from
the order, so the rounding is visible rather than silent.

:func:`plan_dilution` says how to make the concentration from a vial (volume to draw, diluent,
final volume). :func:`double_check` compares a second clinician's blind re-entry of the key
numbers with the program and blocks on any mismatch.

>>> from datetime import date, datetime, timezone
>>> from ketaflow.dosing.orders import create_order
>>> now = datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)
>>> o = create_order("0.5 mg/kg over 40 min", 70.0, date(2025, 3, 1), 175.0, "male",
...                  "actual", now, order_id="o-1")
>>> p = program_pump(o, 1.0, resolution_ml_per_h=0.1)
>>> p.rate_ml_per_h, p.vtbi_ml, p.dilution.container_ml if p.dilution else None
(52.5, 35.0, 50.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from ketaflow.config import Settings, get_settings
from ketaflow.dosing.library import CareArea, DrugLibrary, load_library, validate_concentration
from ketaflow.errors import AuthError, HardLimitError, InputError
from ketaflow.units import MIN_PER_H

if TYPE_CHECKING:
    from ketaflow.dosing.orders import DoseOrder

#: VTBI entry step, mL. Volumetric and syringe pumps take the VTBI in 0.1 mL steps like the rate;
#: the delivered dose is computed from the rounded VTBI, so a coarser pump shows its error.
VTBI_RESOLUTION_ML: Final = 0.1
#: Fractions of a pump step below this are float noise, not a value (1e-9 of 0.1 mL/h).
_STEP_NOISE: Final = Decimal("1e-9")


def round_to_step(value: float, step: float) -> float:
    """``value`` rounded to the nearest multiple of ``step`` (halves away from zero).

    Decimal arithmetic on the shortest repr of both numbers, so 52.25 at step 0.1 gives 52.3
    rather than the 52.2 that binary floating point would give. The number of steps is first
    rounded to 1e-9 so that float noise from upstream arithmetic (0.35 x 70 = 24.499999999999996)
    does not decide which way a half goes.
    """
    if not (math.isfinite(value) and math.isfinite(step)) or step <= 0:
        raise InputError(f"cannot round {value!r} to a step of {step!r}", field="resolution")
    steps = (Decimal(repr(value)) / Decimal(repr(step))).quantize(_STEP_NOISE)
    q = steps.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return float(q * Decimal(repr(step)))


@dataclass(frozen=True, slots=True)
class Dilution:
    """How to make ``final_mg_per_ml`` in ``final_volume_ml`` from a vial."""

    vial_mg_per_ml: float
    drug_mg: float
    vial_volume_ml: float
    diluent_ml: float
    final_volume_ml: float
    final_mg_per_ml: float
    diluent: str
    warnings: tuple[str, ...] = ()

    @property
    def container_ml(self) -> float:
        """Size of the syringe or bag, mL (the final volume)."""
        return self.final_volume_ml

    def instructions(self) -> str:
        """The preparation in one sentence, with the label text."""
        return (
            f"Draw {self.vial_volume_ml:.4g} mL of ketamine {self.vial_mg_per_ml:g} mg/mL "
            f"({self.drug_mg:.4g} mg) and add {self.diluent_ml:.4g} mL of {self.diluent} to a "
            f"final volume of {self.final_volume_ml:g} mL. Label: ketamine {self.drug_mg:.4g} mg "
            f"in {self.final_volume_ml:g} mL ({self.final_mg_per_ml:g} mg/mL)."
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON)."""
        return {
            "vial_mg_per_ml": self.vial_mg_per_ml,
            "drug_mg": self.drug_mg,
            "vial_volume_ml": self.vial_volume_ml,
            "diluent_ml": self.diluent_ml,
            "final_volume_ml": self.final_volume_ml,
            "final_mg_per_ml": self.final_mg_per_ml,
            "diluent": self.diluent,
            "instructions": self.instructions(),
            "warnings": list(self.warnings),
        }


def plan_dilution(
    concentration_mg_per_ml: float,
    *,
    vial_mg_per_ml: float,
    final_volume_ml: float,
    diluent: str = "0.9% sodium chloride",
    min_draw_volume_ml: float = 1.0,
) -> Dilution:
    """Volume of vial and diluent giving ``concentration_mg_per_ml`` in ``final_volume_ml``.

    ``vial volume = C x V_final / C_vial``; ``diluent = V_final - vial volume``. A vial volume
    below ``min_draw_volume_ml`` comes with a warning (measuring error) and a suggestion.
    """
    c = validate_concentration(concentration_mg_per_ml)
    vial = validate_concentration(vial_mg_per_ml, "vial_mg_per_ml")
    final = validate_concentration(final_volume_ml, "final_volume_ml")
    if c >= vial:
        raise InputError(
            f"vial_mg_per_ml: a {vial:g} mg/mL vial cannot be diluted to {c:g} mg/mL; "
            "choose a stronger vial",
            field="vial_mg_per_ml",
        )
    drug_mg = c * final
    vial_ml = drug_mg / vial
    warnings: list[str] = []
    if vial_ml < min_draw_volume_ml:
        warnings.append(
            f"only {vial_ml:.3g} mL of the {vial:g} mg/mL vial is drawn (< {min_draw_volume_ml:g} "
            "mL): measuring error is larger; use a weaker vial if stocked"
        )
    return Dilution(vial, drug_mg, vial_ml, final - vial_ml, final, c, diluent, tuple(warnings))


def choose_container_ml(vtbi_ml: float, containers_ml: Sequence[float]) -> float:
    """The smallest container that holds ``vtbi_ml``."""
    for size in sorted(containers_ml):
        if size >= vtbi_ml:
            return size
    raise InputError(
        f"vtbi_ml: {vtbi_ml:.4g} mL does not fit the largest container "
        f"({max(containers_ml):g} mL); use a higher standard concentration or split the dose",
        field="vtbi_ml",
    )


@dataclass(frozen=True, slots=True)
class PumpProgram:
    """What to key into the pump, and what it will actually deliver.

    ``*_exact`` are the unrounded values; ``rate_ml_per_h`` and ``vtbi_ml`` are rounded to the
    pump's resolution. The pump runs at ``rate_ml_per_h`` until ``vtbi_ml`` is infused, so it
    delivers ``delivered_dose_mg`` over ``delivered_duration_min`` at ``delivered_rate_mg_per_h``.
    """

    order_id: str
    mode: Literal["infusion", "bolus"]
    concentration_mg_per_ml: float
    resolution_ml_per_h: float
    rate_ml_per_h: float | None
    rate_ml_per_h_exact: float | None
    vtbi_ml: float
    vtbi_ml_exact: float
    ordered_dose_mg: float
    delivered_dose_mg: float
    ordered_rate_mg_per_h: float | None
    delivered_rate_mg_per_h: float | None
    ordered_duration_min: float
    delivered_duration_min: float
    dilution: Dilution | None
    warnings: tuple[str, ...] = ()

    @property
    def dose_difference_mg(self) -> float:
        """Delivered minus ordered dose, mg."""
        return self.delivered_dose_mg - self.ordered_dose_mg

    @property
    def dose_difference_pct(self) -> float:
        """Delivered minus ordered dose, % of the ordered dose."""
        return 100.0 * self.dose_difference_mg / self.ordered_dose_mg

    @property
    def rate_difference_pct(self) -> float | None:
        """Delivered minus ordered rate, % of the ordered rate (None for a bolus)."""
        if self.ordered_rate_mg_per_h is None or self.delivered_rate_mg_per_h is None:
            return None
        return 100.0 * (self.delivered_rate_mg_per_h / self.ordered_rate_mg_per_h - 1.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON)."""
        return {
            "order_id": self.order_id,
            "mode": self.mode,
            "concentration_mg_per_ml": self.concentration_mg_per_ml,
            "resolution_ml_per_h": self.resolution_ml_per_h,
            "rate_ml_per_h": self.rate_ml_per_h,
            "rate_ml_per_h_exact": self.rate_ml_per_h_exact,
            "vtbi_ml": self.vtbi_ml,
            "vtbi_ml_exact": self.vtbi_ml_exact,
            "ordered_dose_mg": self.ordered_dose_mg,
            "delivered_dose_mg": self.delivered_dose_mg,
            "dose_difference_mg": self.dose_difference_mg,
            "dose_difference_pct": self.dose_difference_pct,
            "ordered_rate_mg_per_h": self.ordered_rate_mg_per_h,
            "delivered_rate_mg_per_h": self.delivered_rate_mg_per_h,
            "rate_difference_pct": self.rate_difference_pct,
            "ordered_duration_min": self.ordered_duration_min,
            "delivered_duration_min": self.delivered_duration_min,
            "dilution": None if self.dilution is None else self.dilution.to_dict(),
            "warnings": list(self.warnings),
        }


def program_pump(
    order: DoseOrder,
    concentration_mg_per_ml: float,
    *,
    resolution_ml_per_h: float | None = None,
    vial_mg_per_ml: float | None = None,
    container_ml: float | None = None,
    care_area: CareArea | str | None = None,
    library: DrugLibrary | None = None,
    settings: Settings | None = None,
) -> PumpProgram:
    """Pump settings for ``order`` at ``concentration_mg_per_ml``.

    ``resolution_ml_per_h`` defaults to ``Settings.pump_rate_resolution_ml_per_h``. The vial
    defaults to the care area's default vial (or the weakest vial stronger than the
    concentration); the container to the smallest standard one that holds the VTBI. A strength
    the library refuses for IV use raises :class:`~ketaflow.errors.HardLimitError`; a rate that
    rounds to 0 mL/h raises :class:`~ketaflow.errors.InputError`. Library limits are not checked
    here: run :func:`~ketaflow.dosing.library.check_order` first.
    """
    lib = library if library is not None else load_library()
    c = validate_concentration(concentration_mg_per_ml)
    if any(math.isclose(c, r, rel_tol=1e-9) for r in lib.refused_iv_mg_per_ml):
        raise HardLimitError(
            f"concentration_mg_per_ml: {c:g} mg/mL is never given IV undiluted",
            field="concentration_mg_per_ml",
        )
    if resolution_ml_per_h is None:
        cfg = settings if settings is not None else get_settings()
        resolution = cfg.pump_rate_resolution_ml_per_h
    else:
        resolution = validate_concentration(resolution_ml_per_h, "resolution_ml_per_h")
    area = None
    if care_area is not None:
        area = care_area if isinstance(care_area, CareArea) else lib.care_area(care_area)
    warnings: list[str] = []
    ordered_mg = order.dose_mg
    vtbi_exact = ordered_mg / c
    vtbi = round_to_step(vtbi_exact, VTBI_RESOLUTION_ML)
    if vtbi <= 0:
        raise InputError(
            f"vtbi_ml: {vtbi_exact:.3g} mL is below the pump's {VTBI_RESOLUTION_ML:g} mL step; "
            "use a lower concentration",
            field="vtbi_ml",
        )
    delivered_mg = vtbi * c
    if order.kind == "bolus":
        mode: Literal["infusion", "bolus"] = "bolus"
        rate_exact = rate = None
        ordered_rate = delivered_rate = None
        ordered_duration = delivered_duration = 0.0
        warnings.append("give the bolus over at least 1 min (clinical.md §4.2)")
    else:
        mode = "infusion"
        assert order.rate_mg_per_h is not None
        ordered_rate = order.rate_mg_per_h
        rate_exact = ordered_rate / c
        rate = round_to_step(rate_exact, resolution)
        if rate <= 0:
            raise InputError(
                f"rate_ml_per_h: {rate_exact:.3g} mL/h is below the pump resolution "
                f"{resolution:g} mL/h; use a lower concentration",
                field="rate_ml_per_h",
            )
        delivered_rate = rate * c
        ordered_duration = order.duration_min
        delivered_duration = vtbi / rate * MIN_PER_H
    if vial_mg_per_ml is not None:
        vial = validate_concentration(vial_mg_per_ml, "vial_mg_per_ml")
        if not any(math.isclose(vial, v, rel_tol=1e-9) for v in lib.vial_strengths_mg_per_ml):
            stocked = ", ".join(f"{v:g}" for v in lib.vial_strengths_mg_per_ml)
            raise InputError(
                f"vial_mg_per_ml: {vial:g} mg/mL is not a stocked vial strength ({stocked} mg/mL)",
                field="vial_mg_per_ml",
            )
    elif area is not None:
        vial = area.default_vial_mg_per_ml
    else:
        stronger = [v for v in lib.vial_strengths_mg_per_ml if v > c]
        if not stronger:
            raise InputError(
                f"concentration_mg_per_ml: no stocked vial is stronger than {c:g} mg/mL",
                field="concentration_mg_per_ml",
            )
        vial = min(stronger)
    size = (
        choose_container_ml(vtbi, lib.containers_ml)
        if container_ml is None
        else validate_concentration(container_ml, "container_ml")
    )
    if size < vtbi:
        raise InputError(
            f"container_ml: {size:g} mL is smaller than the {vtbi:g} mL to infuse",
            field="container_ml",
        )
    dilution = plan_dilution(
        c,
        vial_mg_per_ml=vial,
        final_volume_ml=size,
        diluent=lib.diluent,
        min_draw_volume_ml=lib.min_draw_volume_ml,
    )
    warnings.extend(dilution.warnings)
    return PumpProgram(
        order_id=order.order_id,
        mode=mode,
        concentration_mg_per_ml=c,
        resolution_ml_per_h=resolution,
        rate_ml_per_h=rate,
        rate_ml_per_h_exact=rate_exact,
        vtbi_ml=vtbi,
        vtbi_ml_exact=vtbi_exact,
        ordered_dose_mg=ordered_mg,
        delivered_dose_mg=delivered_mg,
        ordered_rate_mg_per_h=ordered_rate,
        delivered_rate_mg_per_h=delivered_rate,
        ordered_duration_min=ordered_duration,
        delivered_duration_min=delivered_duration,
        dilution=dilution,
        warnings=tuple(warnings),
    )


# --- independent double check ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Allowed difference ``max(abs_tol, rel_tol x expected)`` between entry and program."""

    abs_tol: float
    rel_tol: float

    def allows(self, expected: float, entered: float) -> bool:
        """True when ``entered`` is close enough to ``expected``."""
        return abs(entered - expected) <= max(self.abs_tol, self.rel_tol * abs(expected)) + 1e-12


#: Default tolerances. Rate, VTBI and dose: 1 % or one pump step, which accepts a last-digit
#: rounding difference and rejects any transposition or decimal slip (10x). The concentration
#: must match exactly: a standard concentration is chosen, not calculated.
DEFAULT_TOLERANCES: Final[Mapping[str, Tolerance]] = MappingProxyType(
    {
        "rate_ml_per_h": Tolerance(abs_tol=0.1, rel_tol=0.01),
        "vtbi_ml": Tolerance(abs_tol=0.1, rel_tol=0.01),
        "concentration_mg_per_ml": Tolerance(abs_tol=0.0, rel_tol=1e-9),
        "dose_mg": Tolerance(abs_tol=0.1, rel_tol=0.01),
    }
)


@dataclass(frozen=True, slots=True)
class BlindEntry:
    """Numbers the second clinician computes and enters without seeing the program."""

    rate_ml_per_h: float | None
    vtbi_ml: float
    concentration_mg_per_ml: float
    dose_mg: float


@dataclass(frozen=True, slots=True)
class FieldMismatch:
    """One field where the blind entry and the program disagree."""

    field: str
    expected: float | None
    entered: float | None
    allowed_difference: str


class DoubleCheckStatus(StrEnum):
    """Outcome of an independent double check."""

    VERIFIED = "verified"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class DoubleCheckRecord:
    """The record of one independent double check (who, when, what was entered, outcome)."""

    order_id: str
    programmed_by: str
    checked_by: str
    at: datetime
    status: DoubleCheckStatus
    entry: BlindEntry
    mismatches: tuple[FieldMismatch, ...] = field(default=())

    @property
    def blocked(self) -> bool:
        """True when the infusion may not start."""
        return self.status is DoubleCheckStatus.BLOCKED

    def message(self) -> str:
        """A sentence for the nurse: verified, or which fields differ."""
        if not self.blocked:
            return "independent double check verified: all numbers match"
        parts = [
            f"{m.field} entered {m.entered if m.entered is not None else 'nothing'}, "
            f"program {m.expected if m.expected is not None else 'none'} "
            f"(allowed difference {m.allowed_difference})"
            for m in self.mismatches
        ]
        return "independent double check BLOCKED: " + "; ".join(parts)


def _finite_or_none(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name}: expected a number, got {value!r}", field=name)
    return float(value)


def double_check(
    program: PumpProgram,
    entry: BlindEntry,
    *,
    programmed_by: str,
    checked_by: str,
    at: datetime,
    tolerances: Mapping[str, Tolerance] = DEFAULT_TOLERANCES,
) -> DoubleCheckRecord:
    """Compare a blind re-entry with the program; any difference beyond tolerance blocks.

    The second clinician must be a different user than the one who programmed the pump:
    the same user raises :class:`~ketaflow.errors.AuthError` and no record is made.
    """
    first = programmed_by.strip().lower() if isinstance(programmed_by, str) else ""
    second = checked_by.strip().lower() if isinstance(checked_by, str) else ""
    if not first or not second:
        raise InputError(
            "checked_by: both the programming and the checking user must be named",
            field="checked_by",
        )
    if first == second:
        raise AuthError(
            "checked_by: an independent double check needs a second clinician, not the one who "
            "programmed the pump",
            field="checked_by",
        )
    expected: dict[str, float | None] = {
        "rate_ml_per_h": program.rate_ml_per_h,
        "vtbi_ml": program.vtbi_ml,
        "concentration_mg_per_ml": program.concentration_mg_per_ml,
        "dose_mg": program.ordered_dose_mg,
    }
    entered: dict[str, float | None] = {
        "rate_ml_per_h": _finite_or_none(entry.rate_ml_per_h, "rate_ml_per_h"),
        "vtbi_ml": _finite_or_none(entry.vtbi_ml, "vtbi_ml"),
        "concentration_mg_per_ml": _finite_or_none(
            entry.concentration_mg_per_ml, "concentration_mg_per_ml"
        ),
        "dose_mg": _finite_or_none(entry.dose_mg, "dose_mg"),
    }
    mismatches: list[FieldMismatch] = []
    for name, exp in expected.items():
        tol = tolerances[name]
        got = entered[name]
        allowed = f"{tol.abs_tol:g} or {100 * tol.rel_tol:g} %"
        if exp is None and got is None:
            continue
        if exp is None or got is None or not tol.allows(exp, got):
            mismatches.append(FieldMismatch(name, exp, got, allowed))
    status = DoubleCheckStatus.BLOCKED if mismatches else DoubleCheckStatus.VERIFIED
    return DoubleCheckRecord(
        order_id=program.order_id,
        programmed_by=programmed_by.strip(),
        checked_by=checked_by.strip(),
        at=at,
        status=status,
        entry=entry,
        mismatches=tuple(mismatches),
    )
