"""Dosing commands: ``ketaflow plan`` (and ``ketaflow protocols``).

``ketaflow plan`` builds the order a protocol gives a patient, explains the dosing weight,
programs the pump (rate, VTBI, dilution), runs the drug-library limit checks and the
dosing-error checks, and predicts the peak plasma and effect-site concentrations with the
default PK model. Data goes to stdout; a mistake in the input is one line on stderr and exit 2;
a hard-limit breach prints the plan and then exits 3.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

import numpy as np
import typer

from ketaflow.config import get_settings
from ketaflow.dosing.checks import Finding, run_checks
from ketaflow.dosing.library import (
    LimitCheckResult,
    LimitStatus,
    evaluate_order,
    load_library,
)
from ketaflow.dosing.orders import DoseOrder, create_order
from ketaflow.dosing.protocols import Protocol, list_protocols, load_protocol
from ketaflow.dosing.pump import PumpProgram, program_pump
from ketaflow.errors import HardLimitError, InputError
from ketaflow.pk.effect import DBP_RISE, DISSOCIATION, HR_RISE, SBP_RISE, EmaxModel
from ketaflow.pk.library import default_model
from ketaflow.pk.solve import simulate

#: Adults only: every protocol and the default PK model are for adults.
_AGE_RANGE_Y = (18.0, 110.0)
#: Prediction grid step and how long after the end of the dose to follow the curve, min.
_PREDICTION_STEP_MIN = 0.5
_PREDICTION_AFTER_END_MIN = 120.0


@dataclass(frozen=True, slots=True)
class Prediction:
    """Peak concentrations of the planned dose (ng/mL, min from the start)."""

    model: str
    peak_cp_ng_per_ml: float
    peak_cp_time_min: float
    peak_ce_ng_per_ml: float | None
    peak_ce_time_min: float | None
    peak_dissociation_fraction: float | None = None
    peak_sbp_rise_mmhg: float | None = None
    peak_dbp_rise_mmhg: float | None = None
    peak_hr_rise_per_min: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON)."""
        return {
            "model": self.model,
            "peak_cp_ng_per_ml": self.peak_cp_ng_per_ml,
            "peak_cp_time_min": self.peak_cp_time_min,
            "peak_ce_ng_per_ml": self.peak_ce_ng_per_ml,
            "peak_ce_time_min": self.peak_ce_time_min,
            "peak_dissociation_fraction": self.peak_dissociation_fraction,
            "peak_sbp_rise_mmhg": self.peak_sbp_rise_mmhg,
            "peak_dbp_rise_mmhg": self.peak_dbp_rise_mmhg,
            "peak_hr_rise_per_min": self.peak_hr_rise_per_min,
        }


def _predict(order: DoseOrder, *, age_y: float, height_cm: float) -> tuple[Prediction, list[str]]:
    model = default_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params = model.parameters(
            weight_kg=order.actual_weight_kg, age_y=age_y, sex=order.sex, height_cm=height_cm
        )
        t_end = order.end_min + _PREDICTION_AFTER_END_MIN
        times = np.union1d(
            np.arange(0.0, t_end + 1e-9, _PREDICTION_STEP_MIN), [order.start_min, order.end_min]
        )
        pred = simulate(params, order.schedule(), times)
    messages = [f"PK model: {w.message}" for w in caught]
    cp = pred.cp_ng_per_ml[0]
    i_cp = int(np.argmax(cp))
    ce_all = pred.ce_ng_per_ml
    if ce_all is None:
        return Prediction(model.name, float(cp[i_cp]), float(times[i_cp]), None, None), messages
    ce = ce_all[0]
    i_ce = int(np.argmax(ce))
    # Emax effects are monotone in Ce, so each peaks with Ce.
    peak = float(ce[i_ce])

    def at_peak(m: EmaxModel) -> float:
        return float(m.effect(peak, enantiomer=model.enantiomer))

    return (
        Prediction(
            model.name,
            float(cp[i_cp]),
            float(times[i_cp]),
            peak,
            float(times[i_ce]),
            at_peak(DISSOCIATION),
            at_peak(SBP_RISE),
            at_peak(DBP_RISE),
            at_peak(HR_RISE),
        ),
        messages,
    )


def _notes(protocol: Protocol, order: DoseOrder, session: int) -> list[str]:
    notes: list[str] = []
    review = protocol.dosing_weight.review_bmi_at_least
    bmi = order.dosing_weight.bmi_kg_per_m2
    if review is not None and bmi is not None and bmi >= review:
        notes.append(
            f"BMI {bmi:.1f} >= {review:g}: the APA consensus suggested dosing on ideal body weight "
            f"at this BMI; this protocol doses on {protocol.dosing_weight.rule.describe()}. "
            "Confirm the dosing weight (ketamine-pkpd.md §4.5)."
        )
    if session > protocol.course.sessions:
        notes.append(
            f"session {session} is beyond the induction course of {protocol.course.sessions} "
            "sessions; continuation has no established regimen (clinical.md §1.1)."
        )
    if session > 1 and protocol.titration is not None:
        notes.append(
            f"the session-{session} dose assumes every earlier session was tolerated without "
            "adequate response or safety events; otherwise use the dose from the recorded "
            "titration decisions."
        )
    if protocol.evidence == "secondary":
        notes.append(
            "this protocol's dose is taken from a secondary source; check it against the "
            f"guideline ({protocol.source.get('citation', 'see protocol file')})."
        )
    return notes


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _table(
    protocol: Protocol,
    session: int,
    order: DoseOrder,
    pump: PumpProgram | None,
    limits: LimitCheckResult,
    findings: tuple[Finding, ...],
    prediction: Prediction,
    notes: list[str],
    age_y: float,
) -> str:
    lines = [
        f"Plan: {protocol.name} v{protocol.version}, session {session}",
        f"  {protocol.title}",
        f"  care area {protocol.care_area}; evidence {protocol.evidence}",
        "Order",
        f"  dose text      {order.dose_text}",
        f"  dose           {order.summary()}",
        "Dosing weight",
        f"  {order.dosing_weight_kg:.1f} kg ({order.policy.value}): "
        f"{order.dosing_weight.explanation}",
    ]
    if pump is not None:
        lines += [
            f"Pump ({pump.concentration_mg_per_ml:g} mg/mL)",
            f"  rate           {_fmt(pump.rate_ml_per_h, 'g')} mL/h "
            f"(exact {_fmt(pump.rate_ml_per_h_exact)}, step {pump.resolution_ml_per_h:g} mL/h)",
            f"  VTBI           {pump.vtbi_ml:g} mL",
            f"  duration       {pump.delivered_duration_min:.1f} min "
            f"(ordered {pump.ordered_duration_min:g} min)",
            f"  delivered      {pump.delivered_dose_mg:.4g} mg "
            f"({pump.dose_difference_mg:+.3g} mg, {pump.dose_difference_pct:+.2f} % vs order)",
        ]
        if pump.dilution is not None:
            lines.append(f"  dilution       {pump.dilution.instructions()}")
    lines.append(f"Limit checks (drug library {limits.library_version}, {limits.care_area})")
    for c in limits.checks:
        lines.append(f"  {c.status.value.upper():<12} {c.message}")
    if limits.hard_breaches:
        lines.append("  => REFUSED: hard limits cannot be overridden")
    elif limits.soft_breaches:
        lines.append("  => needs a physician's override with a documented reason")
    else:
        lines.append("  => all limits passed")
    mon = protocol.monitoring
    vitals = ", ".join(f"{t:g}" for t in mon.vitals_times_min(order.end_min))
    lines += ["Monitoring", f"  vitals at      {vitals} min"]
    if mon.dissociation_scale:
        times = ", ".join(f"{t:g}" for t in mon.dissociation_at_min)
        lines.append(f"  {mon.dissociation_scale:<14} at {times} min")
    lines.append(
        f"  observe        >= {mon.min_observation_after_infusion_min:g} min after the infusion"
    )
    a = protocol.alarms
    lines.append(
        f"  BP stop        > {a.stop_sbp_mmhg:g}/{a.stop_dbp_mmhg:g} mmHg on "
        f"{a.stop_confirm_readings} readings, or > {a.emergency_sbp_mmhg:g}/"
        f"{a.emergency_dbp_mmhg:g} once"
    )
    lines += [
        f"Prediction ({prediction.model}; actual weight {order.actual_weight_kg:g} kg, "
        f"age {age_y:g} y, {order.sex})",
        f"  peak Cp        {prediction.peak_cp_ng_per_ml:.0f} ng/mL at "
        f"{prediction.peak_cp_time_min:g} min",
    ]
    if prediction.peak_ce_ng_per_ml is not None:
        lines.append(
            f"  peak Ce        {prediction.peak_ce_ng_per_ml:.0f} ng/mL at "
            f"{_fmt(prediction.peak_ce_time_min, 'g')} min"
        )
    if prediction.peak_dissociation_fraction is not None:
        lines += [
            f"  dissociation   {prediction.peak_dissociation_fraction:.2f} of maximal effect "
            "at peak (Olofsen 2022 C50; Hill coefficient assumed)",
            f"  BP/HR rise     SBP +{prediction.peak_sbp_rise_mmhg:.0f} / DBP "
            f"+{prediction.peak_dbp_rise_mmhg:.0f} mmHg, HR +{prediction.peak_hr_rise_per_min:.0f}"
            "/min at peak (typical patient; calibrated to Vankawala 2021 means)",
        ]
    warns = [f"[{f.severity.value}] {f.message}" for f in findings] + notes
    lines.append("Warnings" if warns else "Warnings: none")
    lines += [f"  - {w}" for w in warns]
    return "\n".join(lines)


def plan(
    protocol: Annotated[
        str, typer.Option("--protocol", help="Protocol name (ketaflow protocols).")
    ],
    weight: Annotated[float, typer.Option("--weight", help="Measured body weight, kg.")],
    height: Annotated[float, typer.Option("--height", help="Height, cm.")],
    age: Annotated[float, typer.Option("--age", help="Age, years.")],
    sex: Annotated[str, typer.Option("--sex", help="male or female.")],
    session: Annotated[int, typer.Option("--session", help="Session number (1 = first).")] = 1,
    output_format: Annotated[
        str, typer.Option("--format", help="Output: table or json.")
    ] = "table",
    concentration: Annotated[
        float | None,
        typer.Option("--concentration", help="mg/mL in the syringe/bag; default: protocol's."),
    ] = None,
    weight_date: Annotated[
        str | None,
        typer.Option(
            "--weight-date", help="Day the weight was measured, YYYY-MM-DD; default today."
        ),
    ] = None,
) -> None:
    """Plan a protocol session: order, dosing weight, pump, limits, predicted peaks, warnings."""
    if output_format not in ("table", "json"):
        raise InputError(
            f"--format: expected 'table' or 'json', got {output_format!r}", field="format"
        )
    lo, hi = _AGE_RANGE_Y
    if not (math.isfinite(age) and lo <= age <= hi):
        raise InputError(
            f"--age: ketaflow protocols are for adults aged {lo:g}-{hi:g} years, got {age:g}",
            field="age",
        )
    if session < 1:
        raise InputError(f"--session: expected 1 or more, got {session}", field="session")
    # The CLI is the edge of the system: the clock is read here and passed inward.
    now = datetime.now(UTC)
    if weight_date is None:
        measured = now.date()
    else:
        try:
            measured = date.fromisoformat(weight_date)
        except ValueError:
            raise InputError(
                f"--weight-date: expected YYYY-MM-DD, got {weight_date!r}", field="weight_date"
            ) from None
    proto = load_protocol(protocol)
    library = load_library()
    settings = get_settings()
    conc = proto.standard_concentration_mg_per_ml if concentration is None else concentration
    per_kg = proto.planned_dose_mg_per_kg(session) if proto.instruction.per_kg else None
    if per_kg is None or math.isclose(per_kg, proto.instruction.total()):
        text = proto.dose_text
    else:
        text = proto.dose_text_for(per_kg)
    order = create_order(
        text,
        weight,
        measured,
        height,
        sex,
        proto.dosing_weight.rule,
        now,
        order_id=f"plan-{proto.name}-s{session}",
        settings=settings,
    )
    limits = evaluate_order(order, proto.care_area, conc, library=library)
    area = library.care_area(proto.care_area)
    findings = run_checks(
        order,
        care_area=area,
        concentration_mg_per_ml=conc,
        now=now,
        max_weight_age_days=settings.weight_max_age_days,
    )
    try:
        pump: PumpProgram | None = program_pump(
            order, conc, care_area=area, library=library, settings=settings
        )
    except HardLimitError:
        pump = None
    prediction, model_warnings = _predict(order, age_y=age, height_cm=height)
    notes = _notes(proto, order, session) + model_warnings
    if pump is not None:
        notes += pump.warnings
    if output_format == "json":
        doc = {
            "protocol": {"name": proto.name, "version": proto.version, "session": session},
            "order": order.to_dict(),
            "dosing_weight": {
                "weight_kg": order.dosing_weight_kg,
                "policy": order.policy.value,
                "explanation": order.dosing_weight.explanation,
            },
            "pump": None if pump is None else pump.to_dict(),
            "limits": limits.to_dict(),
            "findings": [f.to_dict() for f in findings],
            "prediction": prediction.to_dict(),
            "monitoring": {
                "vitals_at_min": list(proto.monitoring.vitals_times_min(order.end_min)),
                "dissociation_scale": proto.monitoring.dissociation_scale,
                "dissociation_at_min": list(proto.monitoring.dissociation_at_min),
                "min_observation_after_infusion_min": (
                    proto.monitoring.min_observation_after_infusion_min
                ),
            },
            "warnings": notes,
        }
        typer.echo(json.dumps(doc, indent=2, allow_nan=False))
    else:
        typer.echo(_table(proto, session, order, pump, limits, findings, prediction, notes, age))
    hard = [c for c in limits.checks if c.status is LimitStatus.HARD_BREACH]
    if hard:
        raise HardLimitError(
            f"plan refused by the drug library: {hard[0].message}", field=hard[0].name
        )


def protocols() -> None:
    """List the shipped treatment protocols with their dose and source."""
    for p in list_protocols():
        typer.echo(
            f"{p.name}\t{p.care_area}\t{p.dose_text}\t{p.evidence}\t{p.source.get('citation', '')}"
        )


def register(app: typer.Typer) -> None:
    """Attach the dosing commands."""
    app.command("plan")(plan)
    app.command("protocols")(protocols)
