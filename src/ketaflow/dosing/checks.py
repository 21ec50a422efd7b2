"""Detection of the classic dosing errors, as structured findings.

Each check looks for one known way a ketamine order goes wrong and returns a :class:`Finding`
(code, severity, message, field) or nothing. The checks do not raise and do not decide: the
caller shows the findings, and a ``block`` finding must be fixed before the order goes on,
while a ``warning`` must be acknowledged. Drug-library limits are separate
(:mod:`ketaflow.dosing.library`); these checks catch errors that stay inside the limits or that
the limits would report with a less helpful message.

=============================  ========  ===================================================
code                           severity  what it catches
=============================  ========  ===================================================
``decimal_slip``               block/    a dose or rate 10 or 100 times the usual one ("5 mg/kg"
                               warning   for 0.5); block when too high, warning when too low
``mg_entered_as_mg_per_kg``    block     a total in mg typed as mg/kg ("35 mg/kg" for 35 mg)
``mg_per_kg_entered_as_mg``    warning   a mg/kg dose typed as mg ("0.5 mg" for 0.5 mg/kg)
``weight_lb_entered_as_kg``    block/    a weight in pounds typed as kg: block when the weight
                               warning   history shows it, warning when only BMI suggests it
``weight_changed``             warning   weight changed by more than 10 % within 30 days
``concentration_undiluted``    block     a vial strength refused for IV use (100 mg/mL)
``concentration_not_allowed``  block     a concentration the care area does not stock
``concentration_mismatch``     block     selected concentration differs from the prepared one
``duplicate_order``            block     same patient and drug, overlapping time window
``weight_outdated``            block     weight older than the configured limit (or future)
``volume_rate_for_mass_rate``  block     "mL/h" or "mL" where a drug dose (mg, mg/h) is needed
=============================  ========  ===================================================

Thresholds that are design choices, not published numbers, are named constants below with the
reason for their value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from ketaflow.errors import UnitError
from ketaflow.units import KG_PER_LB, MIN_PER_H, Dimension, lookup_unit

if TYPE_CHECKING:
    from ketaflow.dosing.library import CareArea
    from ketaflow.dosing.orders import DoseOrder

#: A value within this factor of an exact power-of-ten multiple of the usual dose counts as a
#: decimal slip. 1.6 keeps the studied doses clear: 0.1 mg/kg (Fava 2020) is 5x below the usual
#: 0.5 mg/kg and 1.0 mg/kg is 2x above it, neither near 10x; 0.05 or 5 mg/kg are flagged.
DECIMAL_SLIP_FACTOR: Final = 1.6
#: A per-kg number at least this many times the usual per-kg dose is read as a possible total in
#: mg; below it the number is a plausible (if high) per-kg dose and the limits judge it.
MG_AS_PER_KG_MIN_RATIO: Final = 3.0
#: Relative tolerance when comparing a new weight with 2.2046 x (lb/kg) the previous one.
LB_RATIO_TOLERANCE: Final = 0.05
#: Previous weights older than this are not used to judge the unit of a new one, days.
WEIGHT_HISTORY_WINDOW_DAYS: Final = 180
#: A real weight change above this fraction within WEIGHT_CHANGE_WINDOW_DAYS is rare enough in
#: adults to ask for a re-weigh (about 7 kg in a month for a 70 kg adult).
WEIGHT_CHANGE_FRACTION: Final = 0.10
WEIGHT_CHANGE_WINDOW_DAYS: Final = 30
#: BMI above which a weight is suspected to be in lb when converting it gives an ordinary BMI;
#: 40 is the WHO class III obesity threshold, and the converted BMI must fall in 16-30.
LB_SUSPECT_BMI: Final = 40.0
LB_CONVERTED_BMI_RANGE: Final = (16.0, 30.0)

_LB_PER_KG: Final = 1.0 / KG_PER_LB


class Severity(StrEnum):
    """How a finding must be handled."""

    WARNING = "warning"  # acknowledge, then go on
    BLOCK = "block"  # fix before going on


class FindingCode(StrEnum):
    """Stable, machine-readable codes of the dosing-error checks."""

    DECIMAL_SLIP = "decimal_slip"
    MG_AS_MG_PER_KG = "mg_entered_as_mg_per_kg"
    MG_PER_KG_AS_MG = "mg_per_kg_entered_as_mg"
    WEIGHT_LB_AS_KG = "weight_lb_entered_as_kg"
    WEIGHT_CHANGED = "weight_changed"
    CONCENTRATION_UNDILUTED = "concentration_undiluted"
    CONCENTRATION_NOT_ALLOWED = "concentration_not_allowed"
    CONCENTRATION_MISMATCH = "concentration_mismatch"
    DUPLICATE_ORDER = "duplicate_order"
    WEIGHT_OUTDATED = "weight_outdated"
    VOLUME_RATE_FOR_MASS_RATE = "volume_rate_for_mass_rate"


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected problem: what, how serious, a message a clinician can act on, which field."""

    code: FindingCode
    severity: Severity
    message: str
    field: str

    def to_dict(self) -> dict[str, str]:
        """Plain-data form (for JSON)."""
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "message": self.message,
            "field": self.field,
        }


@dataclass(frozen=True, slots=True)
class WeightRecord:
    """A body weight measured on a day (the patient's weight history)."""

    weight_kg: float
    measured_on: date


# --- dose text ---------------------------------------------------------------------------------

_NUMBER_UNIT_RE: Final = re.compile(
    r"(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[A-Za-zµμ][A-Za-zµμ/]*)"
)


def check_dose_text_units(text: str) -> Finding | None:
    """Catch a pump volume (mL) or volume rate (mL/h) written where a drug dose is needed.

    A dose must be a drug amount (mg, mg/kg) or drug rate (mg/h, mg/kg/h): mL/h says how fast
    the pump moves fluid, and the drug it delivers depends on the concentration in the syringe.
    """
    if not isinstance(text, str):
        return None
    for match in _NUMBER_UNIT_RE.finditer(text):
        try:
            display, dim, _ = lookup_unit(match.group("unit"))
        except UnitError:
            continue
        number = float(match.group("num"))
        written = f"{match.group('num')} {display}"
        if dim is Dimension.VOLUME_RATE:
            per_h = number * MIN_PER_H if display == "mL/min" else number
            return Finding(
                FindingCode.VOLUME_RATE_FOR_MASS_RATE,
                Severity.BLOCK,
                f"'{written}' is a pump volume rate, but the order needs a drug rate (mg/h or "
                f"mg/kg/h): mL/h depends on the concentration in the syringe (at 1 mg/mL "
                f"{per_h:g} mL/h delivers {per_h:g} mg/h, at 10 mg/mL {10 * per_h:g} mg/h). "
                "Write e.g. '0.75 mg/kg/h for 40 min'; ketaflow computes the pump rate in mL/h.",
                "dose",
            )
        if dim is Dimension.VOLUME:
            return Finding(
                FindingCode.VOLUME_RATE_FOR_MASS_RATE,
                Severity.BLOCK,
                f"'{written}' is a fluid volume, but the order needs a drug amount (mg or mg/kg): "
                "the drug in a volume depends on the concentration. Write e.g. "
                "'0.5 mg/kg over 40 min'; ketaflow computes the volume to infuse.",
                "dose",
            )
    return None


# --- dose magnitude ----------------------------------------------------------------------------


def _usual_amount(
    order: DoseOrder, usual_dose: float | None, usual_bolus: float | None
) -> float | None:
    """The usual per-kg amount to compare with: the bolus size for a bolus, else the dose."""
    return usual_bolus if order.kind == "bolus" else usual_dose


def _power_of_ten_slip(value: float, usual: float, factor: float) -> int:
    """k != 0 when ``value`` is within ``factor`` of ``usual`` x 10^k (k in -2..2), else 0."""
    if value <= 0 or usual <= 0:
        return 0
    log_ratio = math.log10(value / usual)
    k = round(log_ratio)
    if k == 0 or abs(k) > 2 or abs(log_ratio - k) > math.log10(factor):
        return 0
    return int(k)


def check_decimal_slip(
    order: DoseOrder,
    *,
    usual_dose_mg_per_kg: float | None,
    usual_rate_mg_per_kg_per_h: float | None,
    where: str,
    usual_bolus_mg_per_kg: float | None = None,
    factor: float = DECIMAL_SLIP_FACTOR,
) -> Finding | None:
    """A session dose (or infusion rate) 10 or 100 times larger or smaller than the usual one.

    The session dose per kg of dosing weight is checked first; if it is usual, the rate is
    checked (a slip in the duration, "over 4 min" for 40, shows only in the rate). Boluses are
    compared with ``usual_bolus_mg_per_kg`` (not checked when None).
    """
    candidates: list[tuple[str, float, float | None, str]] = [
        (
            "bolus" if order.kind == "bolus" else "session dose",
            order.dose_mg_per_kg,
            _usual_amount(order, usual_dose_mg_per_kg, usual_bolus_mg_per_kg),
            "mg/kg",
        )
    ]
    if order.kind == "infusion" and order.rate_mg_per_kg_per_h is not None:
        candidates.append(
            ("infusion rate", order.rate_mg_per_kg_per_h, usual_rate_mg_per_kg_per_h, "mg/kg/h")
        )
    for label, value, usual, unit in candidates:
        if usual is None:
            continue
        k = _power_of_ten_slip(value, usual, factor)
        if k == 0:
            continue
        times = 10 ** abs(k)
        direction = "times the" if k > 0 else "times less than the"
        meant = value / 10.0**k
        return Finding(
            FindingCode.DECIMAL_SLIP,
            Severity.BLOCK if k > 0 else Severity.WARNING,
            f"{label} {value:.3g} {unit} is {times} {direction} usual {usual:g} {unit} in "
            f"the {where}: check the decimal point"
            + (" or the duration" if label == "infusion rate" else "")
            + f" (did you mean {meant:.3g} {unit}?)",
            "dose",
        )
    return None


def check_mg_as_mg_per_kg(
    order: DoseOrder,
    *,
    usual_dose_mg_per_kg: float | None,
    usual_rate_mg_per_kg_per_h: float | None,
    usual_bolus_mg_per_kg: float | None = None,
    factor: float = DECIMAL_SLIP_FACTOR,
) -> Finding | None:
    """A total in mg (or mg/h) typed with a per-kg unit: "35 mg/kg" meaning 35 mg for 70 kg.

    Flags a per-kg number at least :data:`MG_AS_PER_KG_MIN_RATIO` times the usual per-kg value
    that, read as a total for this dosing weight, is the usual per-kg dose (within ``factor``).
    """
    if not order.written_per_kg:
        return None
    w = order.dosing_weight_kg
    usual_amount = _usual_amount(order, usual_dose_mg_per_kg, usual_bolus_mg_per_kg)
    checks: list[tuple[float, float | None, str, str]] = [
        (order.dose_mg_per_kg, usual_amount, "mg/kg", "mg")
    ]
    if order.kind == "infusion" and order.rate_mg_per_kg_per_h is not None:
        checks.append((order.rate_mg_per_kg_per_h, usual_rate_mg_per_kg_per_h, "mg/kg/h", "mg/h"))
    for value, usual, unit, total_unit in checks:
        if usual is None or value < MG_AS_PER_KG_MIN_RATIO * usual:
            continue
        as_total_per_kg = value / w
        if abs(math.log10(as_total_per_kg / usual)) <= math.log10(factor):
            return Finding(
                FindingCode.MG_AS_MG_PER_KG,
                Severity.BLOCK,
                f"{value:g} {unit} looks like a total in {total_unit}: for the dosing weight "
                f"{w:.1f} kg, {value:g} {total_unit} is {as_total_per_kg:.3g} {unit}, the usual "
                f"dose, while {value:g} {unit} would be {value * w:.0f} {total_unit}. Write "
                f"'{value:g} {total_unit}' or '{as_total_per_kg:.3g} {unit}'.",
                "dose",
            )
    return None


def check_mg_per_kg_as_mg(
    order: DoseOrder,
    *,
    usual_dose_mg_per_kg: float | None,
    usual_rate_mg_per_kg_per_h: float | None,
    usual_bolus_mg_per_kg: float | None = None,
    factor: float = DECIMAL_SLIP_FACTOR,
) -> Finding | None:
    """A per-kg dose typed as a total: "0.5 mg over 40 min" meaning 0.5 mg/kg."""
    if order.written_per_kg:
        return None
    w = order.dosing_weight_kg
    usual_amount = _usual_amount(order, usual_dose_mg_per_kg, usual_bolus_mg_per_kg)
    checks: list[tuple[float, float | None, str, str]] = [
        (order.dose_mg, usual_amount, "mg", "mg/kg")
    ]
    if order.kind == "infusion" and order.rate_mg_per_h is not None:
        checks.append((order.rate_mg_per_h, usual_rate_mg_per_kg_per_h, "mg/h", "mg/kg/h"))
    for value, usual, unit, per_kg_unit in checks:
        if usual is None or value / w > usual / 5.0:
            continue
        if abs(math.log10(value / usual)) <= math.log10(factor):
            return Finding(
                FindingCode.MG_PER_KG_AS_MG,
                Severity.WARNING,
                f"{value:g} {unit} is only {value / w:.3g} {per_kg_unit} for {w:.1f} kg, but "
                f"{value:g} is the usual dose in {per_kg_unit}: did you mean "
                f"'{value:g} {per_kg_unit}' ({value * w:.1f} {unit})?",
                "dose",
            )
    return None


# --- weight ------------------------------------------------------------------------------------


def check_weight_entry(
    weight_kg: float,
    *,
    measured_on: date,
    height_cm: float | None = None,
    history: Sequence[WeightRecord] = (),
) -> tuple[Finding, ...]:
    """Catch a weight in pounds typed as kg, and implausible jumps against the history.

    With a previous weight from the last :data:`WEIGHT_HISTORY_WINDOW_DAYS` days, a new weight
    2.2 times it (±5 %) is blocked as lb-as-kg; a change above 10 % within 30 days is a warning.
    Without such evidence, a BMI above 40 that becomes ordinary (16-30) when the number is read
    as pounds gives a warning.
    """
    findings: list[Finding] = []
    earlier = [
        r
        for r in history
        if r.measured_on <= measured_on
        and (measured_on - r.measured_on).days <= WEIGHT_HISTORY_WINDOW_DAYS
    ]
    previous = max(earlier, key=lambda r: r.measured_on) if earlier else None
    consistent_with_history = False
    if previous is not None and previous.weight_kg > 0:
        ratio = weight_kg / previous.weight_kg
        days = (measured_on - previous.measured_on).days
        when = f"{previous.measured_on.isoformat()} ({days} days earlier)"
        if abs(ratio / _LB_PER_KG - 1.0) <= LB_RATIO_TOLERANCE:
            findings.append(
                Finding(
                    FindingCode.WEIGHT_LB_AS_KG,
                    Severity.BLOCK,
                    f"weight {weight_kg:g} kg is {ratio:.2f} times the {previous.weight_kg:g} kg "
                    f"recorded on {when}: it looks like pounds entered as kg "
                    f"({weight_kg:g} lb = {weight_kg * KG_PER_LB:.1f} kg). Re-enter the weight "
                    "in kg.",
                    "weight_kg",
                )
            )
            return tuple(findings)
        if abs(ratio * _LB_PER_KG - 1.0) <= LB_RATIO_TOLERANCE:
            findings.append(
                Finding(
                    FindingCode.WEIGHT_LB_AS_KG,
                    Severity.BLOCK,
                    f"weight {weight_kg:g} kg is {ratio:.2f} times the {previous.weight_kg:g} kg "
                    f"recorded on {when}: the earlier weight looks like pounds entered as kg. "
                    "Correct the weight history before dosing.",
                    "weight_kg",
                )
            )
            return tuple(findings)
        consistent_with_history = abs(ratio - 1.0) <= WEIGHT_CHANGE_FRACTION
        if not consistent_with_history and days <= WEIGHT_CHANGE_WINDOW_DAYS:
            findings.append(
                Finding(
                    FindingCode.WEIGHT_CHANGED,
                    Severity.WARNING,
                    f"weight {weight_kg:g} kg differs by {100 * (ratio - 1):+.0f} % from the "
                    f"{previous.weight_kg:g} kg recorded on {when}: re-weigh the patient and "
                    "confirm before dosing.",
                    "weight_kg",
                )
            )
    if height_cm is not None and not consistent_with_history and height_cm > 0:
        m2 = (height_cm / 100.0) ** 2
        bmi = weight_kg / m2
        as_kg = weight_kg * KG_PER_LB
        bmi_if_lb = as_kg / m2
        lo, hi = LB_CONVERTED_BMI_RANGE
        if bmi > LB_SUSPECT_BMI and lo <= bmi_if_lb <= hi:
            findings.append(
                Finding(
                    FindingCode.WEIGHT_LB_AS_KG,
                    Severity.WARNING,
                    f"weight {weight_kg:g} kg gives BMI {bmi:.1f} at {height_cm:g} cm; if the "
                    f"scale showed pounds the weight is {as_kg:.1f} kg (BMI {bmi_if_lb:.1f}). "
                    "Confirm the unit of the weight.",
                    "weight_kg",
                )
            )
    return tuple(findings)


def check_weight_age(measured_on: date, now: datetime, max_age_days: float) -> Finding | None:
    """A weight measured too long ago (or in the future) to dose by."""
    age_days = (now.date() - measured_on).days
    if age_days < 0:
        return Finding(
            FindingCode.WEIGHT_OUTDATED,
            Severity.BLOCK,
            f"weight measured on {measured_on.isoformat()}, which is after today "
            f"({now.date().isoformat()}): correct the measurement date.",
            "weight_measured_on",
        )
    if age_days > max_age_days:
        return Finding(
            FindingCode.WEIGHT_OUTDATED,
            Severity.BLOCK,
            f"weight measured {age_days} days ago ({measured_on.isoformat()}), more than the "
            f"{max_age_days:g}-day limit: re-weigh the patient before computing a dose.",
            "weight_measured_on",
        )
    return None


# --- concentration -----------------------------------------------------------------------------


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_concentration(
    selected_mg_per_ml: float,
    *,
    allowed_mg_per_ml: Sequence[float],
    refused_mg_per_ml: Sequence[float] = (),
    prepared_mg_per_ml: float | None = None,
    where: str = "care area",
) -> tuple[Finding, ...]:
    """The concentration chosen on the pump against the care area's list and the syringe.

    ``refused_mg_per_ml`` are strengths never given IV as they are (100 mg/mL);
    ``prepared_mg_per_ml`` is what the syringe or bag label says, when known.
    """
    findings: list[Finding] = []
    if any(_same(selected_mg_per_ml, r) for r in refused_mg_per_ml):
        findings.append(
            Finding(
                FindingCode.CONCENTRATION_UNDILUTED,
                Severity.BLOCK,
                f"{selected_mg_per_ml:g} mg/mL is a vial strength that must not be given IV "
                "undiluted: dilute to a standard concentration first.",
                "concentration_mg_per_ml",
            )
        )
    elif not any(_same(selected_mg_per_ml, a) for a in allowed_mg_per_ml):
        allowed = ", ".join(f"{a:g} mg/mL" for a in allowed_mg_per_ml)
        findings.append(
            Finding(
                FindingCode.CONCENTRATION_NOT_ALLOWED,
                Severity.BLOCK,
                f"{selected_mg_per_ml:g} mg/mL is not a standard concentration in the {where} "
                f"(allowed: {allowed}): select the concentration that was prepared.",
                "concentration_mg_per_ml",
            )
        )
    if prepared_mg_per_ml is not None and not _same(selected_mg_per_ml, prepared_mg_per_ml):
        factor = prepared_mg_per_ml / selected_mg_per_ml if selected_mg_per_ml > 0 else math.inf
        effect = (
            f"the patient would get {factor:.3g} times the ordered dose"
            if factor > 1
            else f"the patient would get {factor:.3g} of the ordered dose"
        )
        findings.append(
            Finding(
                FindingCode.CONCENTRATION_MISMATCH,
                Severity.BLOCK,
                f"the pump is set for {selected_mg_per_ml:g} mg/mL but the prepared syringe/bag is "
                f"labelled {prepared_mg_per_ml:g} mg/mL: {effect}. Select the labelled "
                "concentration or prepare a new syringe.",
                "concentration_mg_per_ml",
            )
        )
    return tuple(findings)


# --- duplicates --------------------------------------------------------------------------------


def check_duplicate(
    order: DoseOrder,
    existing: Sequence[DoseOrder],
    *,
    margin_min: float = 0.0,
) -> Finding | None:
    """Another order for the same patient and drug whose time window overlaps this one.

    Windows are ``[scheduled_start + start_min, scheduled_start + end_min]``, widened by
    ``margin_min`` on both sides; orders with the same ``order_id`` are the same order. Orders
    without a patient reference are never compared.
    """
    if not order.patient_ref:
        return None
    margin = timedelta(minutes=margin_min)
    start, end = order.window()
    for other in existing:
        if (
            other.order_id == order.order_id
            or other.patient_ref != order.patient_ref
            or other.drug != order.drug
        ):
            continue
        o_start, o_end = other.window()
        if start - margin <= o_end and o_start <= end + margin:
            return Finding(
                FindingCode.DUPLICATE_ORDER,
                Severity.BLOCK,
                f"order {other.order_id} already gives {other.drug} to this patient from "
                f"{o_start.isoformat(timespec='minutes')} to {o_end.isoformat(timespec='minutes')}"
                f", overlapping this order ({start.isoformat(timespec='minutes')} to "
                f"{end.isoformat(timespec='minutes')}): cancel one of them.",
                "order",
            )
    return None


# --- all together ------------------------------------------------------------------------------


def run_checks(
    order: DoseOrder,
    *,
    care_area: CareArea,
    concentration_mg_per_ml: float | None,
    now: datetime,
    max_weight_age_days: float,
    prepared_mg_per_ml: float | None = None,
    existing_orders: Sequence[DoseOrder] = (),
    weight_history: Sequence[WeightRecord] = (),
) -> tuple[Finding, ...]:
    """Every dosing-error check for one order, most specific first.

    When the number looks like a total typed as mg/kg, the decimal-slip finding for the same
    number is left out (one error, one message).
    """
    findings: list[Finding] = []
    text_finding = check_dose_text_units(order.dose_text)
    if text_finding is not None:
        findings.append(text_finding)
    usual_dose = care_area.usual_dose_mg_per_kg
    usual_rate = care_area.usual_rate_mg_per_kg_per_h
    usual_bolus = care_area.usual_bolus_mg_per_kg
    as_total = check_mg_as_mg_per_kg(
        order,
        usual_dose_mg_per_kg=usual_dose,
        usual_rate_mg_per_kg_per_h=usual_rate,
        usual_bolus_mg_per_kg=usual_bolus,
    )
    as_per_kg = check_mg_per_kg_as_mg(
        order,
        usual_dose_mg_per_kg=usual_dose,
        usual_rate_mg_per_kg_per_h=usual_rate,
        usual_bolus_mg_per_kg=usual_bolus,
    )
    for f in (as_total, as_per_kg):
        if f is not None:
            findings.append(f)
    if as_total is None and as_per_kg is None:
        slip = check_decimal_slip(
            order,
            usual_dose_mg_per_kg=usual_dose,
            usual_rate_mg_per_kg_per_h=usual_rate,
            usual_bolus_mg_per_kg=usual_bolus,
            where=care_area.label,
        )
        if slip is not None:
            findings.append(slip)
    findings.extend(
        check_weight_entry(
            order.actual_weight_kg,
            measured_on=order.weight_measured_on,
            height_cm=order.height_cm,
            history=weight_history,
        )
    )
    age = check_weight_age(order.weight_measured_on, now, max_weight_age_days)
    if age is not None:
        findings.append(age)
    if concentration_mg_per_ml is not None:
        findings.extend(
            check_concentration(
                concentration_mg_per_ml,
                allowed_mg_per_ml=care_area.concentrations_mg_per_ml,
                refused_mg_per_ml=care_area.refused_iv_mg_per_ml,
                prepared_mg_per_ml=prepared_mg_per_ml,
                where=care_area.label,
            )
        )
    dup = check_duplicate(order, existing_orders)
    if dup is not None:
        findings.append(dup)
    return tuple(findings)
