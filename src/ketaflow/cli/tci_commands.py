"""TCI commands: ``ketaflow tci`` (plasma/effect-site TCI plan) and ``ketaflow plan-gentle``.

Both are thin: they parse and validate the options, call :mod:`ketaflow.pk.tci` or
:mod:`ketaflow.pk.tci_planner`, and print a table, CSV or JSON on stdout. Warnings (a patient
outside a model's studied population) go to stderr.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ketaflow.errors import InputError
from ketaflow.pk.effect import DISSOCIATION, Enantiomer
from ketaflow.pk.library import Model, load_model, load_model_file
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.tci import (
    PumpLimits,
    TargetSchedule,
    TciConfig,
    TciController,
    TciMode,
    TciResult,
    assess,
    parse_level_ng_per_ml,
)
from ketaflow.pk.tci_planner import GentlePlan, plan_gentle_start, plan_shortest_under_cap
from ketaflow.units import (
    S_PER_MIN,
    Dimension,
    mg_per_min_to_mg_per_h,
    parse_duration_min,
    parse_quantity,
)

#: CSV columns of ``ketaflow tci`` (a public contract: append, never reorder).
TCI_COLUMNS = (
    "time_s",
    "target_ng_per_ml",
    "rate_mg_per_h",
    "cp_ng_per_ml",
    "ce_ng_per_ml",
    "rate_ml_per_h",
    "volume_ml",
    "dissociation_fraction",
    "control",
)
#: CSV columns of ``ketaflow plan-gentle``.
PLAN_COLUMNS = ("start_min", "end_min", "rate_mg_per_h", "rate_ml_per_h", "constant_rate_mg_per_h")


_MODES: tuple[TciMode, ...] = ("plasma", "effect")
_FORMATS = ("table", "csv", "json")


def _choice(value: str, allowed: Sequence[str], option: str) -> str:
    v = value.strip().lower()
    if v not in allowed:
        raise InputError(
            f"{option} must be one of {', '.join(allowed)}, got {value!r}", field=option[2:]
        )
    return v


def _required(value: str | None, option: str, example: str) -> str:
    # Required options are checked here rather than by the option parser, so that a missing
    # one is reported like every other input error (one line, exit 2).
    if value is None or not value.strip():
        raise InputError(f"{option} is required, e.g. {option} {example}", field=option[2:])
    return value


# --- option parsing --------------------------------------------------------------------------


def _number_or_quantity(text: str, dim: Dimension, unit: str, field: str) -> float:
    """A bare number is in ``unit``; otherwise the text must carry a unit of ``dim``."""
    try:
        return float(text)
    except ValueError:
        pass
    return parse_quantity(text, dim, field=field).to(unit)


def _positive(value: float, field: str, unit: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{field} must be > 0 {unit}, got {value:g}", field=field)
    return value


def _model(model: str | None, model_file: Path | None) -> Model:
    if (model is None) == (model_file is None):
        raise InputError(
            "give exactly one of --model NAME (see 'ketaflow models') or --model-file PATH",
            field="model",
        )
    return load_model(model) if model is not None else load_model_file(str(model_file))


def _sex(sex: str | None) -> str | None:
    if sex is None:
        return None
    s = sex.strip().lower()
    mapping = {"m": "male", "male": "male", "f": "female", "female": "female"}
    if s not in mapping:
        raise InputError(f"--sex must be male or female (m/f), got {sex!r}", field="sex")
    return mapping[s]


def _patient_parameters(
    m: Model, weight: str, age: float | None, height: str | None, sex: str | None
) -> tuple[PKParameters, float]:
    weight_kg = _positive(
        _number_or_quantity(weight, Dimension.BODY_MASS, "kg", "weight"), "weight", "kg"
    )
    height_cm = (
        None
        if height is None
        else _positive(
            _number_or_quantity(height, Dimension.LENGTH, "cm", "height"), "height", "cm"
        )
    )
    if age is not None and not (math.isfinite(age) and age >= 0):
        raise InputError(f"--age must be >= 0 years, got {age:g}", field="age")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params = m.parameters(
            weight_kg=weight_kg,
            age_y=age,
            height_cm=height_cm,
            sex=_sex(sex),
        )
    for w in caught:
        typer.echo(f"ketaflow: warning: {w.message}", err=True)
    return params, weight_kg


#: Plasma peak (as a multiple of the highest target) above which effect mode warns.
_CP_WARN_FACTOR = 1.5


def _band(text: str | None, field: str, default: float) -> float | None:
    if text is None:
        return default
    t = text.strip().lower()
    if t in ("off", "none", "no"):
        return None
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise InputError(
            f"--{field} must be a fraction (0.05), a percentage (5%) or 'off', got {text!r}",
            field=field,
        ) from None
    return value


def _factor(text: str | None) -> float | None:
    if text is None:
        return None
    t = text.strip().lower()
    try:
        return float(t[:-1] if t.endswith("x") else t)
    except ValueError:
        raise InputError(
            f"--cp-limit must be a multiple of the target such as 1.5 or 1.5x, got {text!r}",
            field="cp_limit",
        ) from None


def _fmt(value: float | None, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{decimals}f}"


def _emit(lines: Sequence[str]) -> None:
    typer.echo("\n".join(lines))


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().rstrip("\n")


def _clock(t_min: float) -> str:
    """``m:ss`` (with tenths when the time is not a whole second)."""
    minutes, seconds = divmod(round(float(t_min) * S_PER_MIN, 1), S_PER_MIN)
    if seconds == int(seconds):
        return f"{int(minutes)}:{int(seconds):02d}"
    return f"{int(minutes)}:{seconds:04.1f}"


# --- ketaflow tci ----------------------------------------------------------------------------


def _tci_columns(result: TciResult, enantiomer: Enantiomer) -> dict[str, list[float | None]]:
    """Every numeric CSV column of ``ketaflow tci`` as a list (None where not applicable)."""
    n = len(result.time_min)

    def col(values: np.ndarray | None) -> list[float | None]:
        return [None] * n if values is None else [float(v) for v in values]

    ce = result.ce_ng_per_ml
    return {
        "time_s": col(result.time_min * S_PER_MIN),
        "target_ng_per_ml": col(result.target_ng_per_ml),
        "rate_mg_per_h": col(result.rate_mg_per_h),
        "cp_ng_per_ml": col(result.cp_ng_per_ml),
        "ce_ng_per_ml": col(ce),
        "rate_ml_per_h": col(result.rate_ml_per_h),
        "volume_ml": col(result.volume_ml),
        "dissociation_fraction": col(
            None if ce is None else DISSOCIATION.effect(ce, enantiomer=enantiomer)
        ),
    }


_TCI_DECIMALS = {
    "time_s": 3,
    "target_ng_per_ml": 3,
    "rate_mg_per_h": 4,
    "cp_ng_per_ml": 3,
    "ce_ng_per_ml": 3,
    "rate_ml_per_h": 4,
    "volume_ml": 4,
    "dissociation_fraction": 5,
}


def tci(
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help="Required, repeatable: target from a time, '200 ng/mL from 0 min', "
            "'0.3 dissociation from 60 min'.",
        ),
    ] = None,
    weight: Annotated[
        str | None, typer.Option("--weight", help="Required: body weight (kg, or '154 lb').")
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="Required: plasma or effect.")] = None,
    duration: Annotated[
        str | None, typer.Option("--duration", help="Required: length of the plan, e.g. 120min.")
    ] = None,
    syringe: Annotated[
        str | None,
        typer.Option("--syringe", help="Required: syringe concentration, e.g. '10 mg/mL'."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Library model id (see 'ketaflow models').")
    ] = None,
    model_file: Annotated[
        Path | None, typer.Option("--model-file", help="Model TOML file.")
    ] = None,
    age: Annotated[float | None, typer.Option("--age", help="Age, years.")] = None,
    height: Annotated[str | None, typer.Option("--height", help="Height (cm).")] = None,
    sex: Annotated[str | None, typer.Option("--sex", help="male or female.")] = None,
    update: Annotated[str, typer.Option("--update", help="Update interval, e.g. 10s.")] = "10s",
    max_rate: Annotated[
        str | None, typer.Option("--max-rate", help="Pump maximum, e.g. '1200 mL/h'.")
    ] = None,
    resolution: Annotated[
        str, typer.Option("--resolution", help="Pump rate step; '0 mL/h' for continuous.")
    ] = "0.1 mL/h",
    plasma_band: Annotated[
        str | None,
        typer.Option(
            "--plasma-band",
            help="Effect mode: drive the plasma when Ce is within this of target "
            "(default 5%; 'off' for pure Shafer-Gregg).",
        ),
    ] = None,
    equilibrium_band: Annotated[
        str | None,
        typer.Option(
            "--equilibrium-band",
            help="Effect mode: also require |Ce - Cp| within this of Ce (default 10%; 'off').",
        ),
    ] = None,
    cp_limit: Annotated[
        str | None,
        typer.Option(
            "--cp-limit",
            help="Effect mode: keep planned Cp under this multiple of the target, e.g. 1.5x.",
        ),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """Plan target-controlled infusion rates (plasma or effect-site) with pump limits."""
    fmt = _choice(output, _FORMATS, "--format")
    tci_mode: TciMode = (
        "plasma"
        if _choice(_required(mode, "--mode", "effect"), _MODES, "--mode") == "plasma"
        else "effect"
    )
    if not target:
        raise InputError(
            "--target is required, e.g. --target '200 ng/mL from 0 min'", field="target"
        )
    m = _model(model, model_file)
    params, weight_kg = _patient_parameters(
        m, _required(weight, "--weight", "70"), age, height, sex
    )
    pump = PumpLimits.from_text(
        syringe=_required(syringe, "--syringe", "'10 mg/mL'"),
        max_rate=max_rate,
        resolution=resolution,
    )
    update_min = parse_duration_min(update, field="update")
    config = TciConfig(
        update_s=update_min * S_PER_MIN,
        plasma_band=_band(plasma_band, "plasma-band", 0.05),
        equilibrium_band=_band(equilibrium_band, "equilibrium-band", 0.10),
        cp_limit_factor=_factor(cp_limit),
    )
    duration_min = _positive(
        parse_duration_min(_required(duration, "--duration", "120min"), field="duration"),
        "duration",
        "min",
    )
    targets = TargetSchedule.from_texts(target, enantiomer=m.enantiomer)
    late = [t for t in targets.starts_min if t >= duration_min]
    if late:
        raise InputError(
            f"a target starts at {late[0]:g} min, at or after the end of the plan "
            f"({duration_min:g} min); lengthen --duration or drop that target",
            field="target",
        )
    controller = TciController(params, mode=tci_mode, config=config, pump=pump)
    result = controller.run(targets, duration_min)
    report = assess(params, result)
    if tci_mode == "effect" and config.cp_limit_factor is None:
        # Effect-site targeting loads the plasma far above the target when ke0 is slow (t1/2ke0
        # 8.3 min here): the clinician must see that peak before choosing this mode.
        peak_cp = float(assess(params, result, site="plasma").concentration_ng_per_ml.max())
        highest = float(np.max(result.target_ng_per_ml))
        if highest > 0 and peak_cp > _CP_WARN_FACTOR * highest:
            typer.echo(
                f"ketaflow: warning: effect-site targeting drives plasma to {peak_cp:.0f} ng/mL "
                f"({peak_cp / highest:.1f}x the highest target); consider --cp-limit 1.5x or "
                "--mode plasma",
                err=True,
            )
    cols = _tci_columns(result, m.enantiomer)
    n = len(result.time_min)
    volume = result.volume_ml
    summary: dict[str, Any] = {
        "total_mg": result.total_mg,
        "total_ml": None if volume is None else float(volume[-1]),
        "max_rate_mg_per_h": float(np.max(result.rate_mg_per_h)),
        "limited_intervals": int(np.sum(result.limited)),
        "engine": result.engine,
        "targets": [
            {
                "start_min": s.start_min,
                "target_ng_per_ml": s.target_ng_per_ml,
                "time_to_95_s": s.time_to_95_s,
                "max_overshoot_pct": s.max_overshoot_pct,
            }
            for s in report.segments
        ],
    }
    if fmt == "json":
        rows = [{**{c: cols[c][i] for c in cols}, "control": result.control[i]} for i in range(n)]
        doc = {
            "model": {"id": m.id, "name": m.name, "enantiomer": m.enantiomer},
            "weight_kg": weight_kg,
            "mode": tci_mode,
            "update_s": config.update_s,
            "pump": {
                "syringe_mg_per_ml": pump.syringe_mg_per_ml,
                "max_rate_ml_per_h": pump.max_rate_ml_per_h,
                "resolution_ml_per_h": pump.resolution_ml_per_h,
            },
            "targets": [
                {"start_min": st.start_min, "target_ng_per_ml": c, "text": st.text}
                for c, st in zip(targets.targets_ng_per_ml, targets.steps, strict=True)
            ],
            "rows": rows,
            "summary": summary,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    if fmt == "csv":
        body = [
            [_fmt(cols[c][i], d) for c, d in _TCI_DECIMALS.items()] + [result.control[i]]
            for i in range(n)
        ]
        typer.echo(_csv_text(TCI_COLUMNS, body))
        return
    max_txt = f", max {pump.max_rate_ml_per_h:g} mL/h" if pump.max_rate_ml_per_h else ""
    lines = [
        f"{m.name} ({m.id}), {weight_kg:g} kg, {tci_mode} targeting, update "
        f"{config.update_s:g} s, syringe {pump.syringe_mg_per_ml:g} mg/mL{max_txt}",
        f"{'time':>8} {'target':>8} {'rate':>10} {'rate':>8} {'Cp':>8} {'Ce':>8} "
        f"{'volume':>8} {'dissoc':>6}  control",
        f"{'m:ss':>8} {'ng/mL':>8} {'mg/h':>10} {'mL/h':>8} {'ng/mL':>8} {'ng/mL':>8} "
        f"{'mL':>8} {'0-1':>6}",
    ]
    for i in range(n):
        lines.append(
            f"{_clock(result.time_min[i]):>8} {_fmt(cols['target_ng_per_ml'][i], 1):>8} "
            f"{_fmt(cols['rate_mg_per_h'][i], 2):>10} {_fmt(cols['rate_ml_per_h'][i], 1):>8} "
            f"{_fmt(cols['cp_ng_per_ml'][i], 1):>8} {_fmt(cols['ce_ng_per_ml'][i], 1):>8} "
            f"{_fmt(cols['volume_ml'][i], 2):>8} {_fmt(cols['dissociation_fraction'][i], 3):>6}  "
            f"{result.control[i]}"
        )
    lines.append(
        f"total {result.total_mg:.2f} mg = {summary['total_ml']:.2f} mL; highest rate "
        f"{summary['max_rate_mg_per_h']:.1f} mg/h; {summary['limited_intervals']} intervals "
        "held at the maximum rate"
    )
    for seg in report.segments:
        t95 = "not reached" if seg.time_to_95_s is None else f"{seg.time_to_95_s:.0f} s"
        lines.append(
            f"target {seg.target_ng_per_ml:g} ng/mL from {seg.start_min:g} min: within 5 % "
            f"after {t95}"
        )
    _emit(lines)


# --- ketaflow plan-gentle --------------------------------------------------------------------


def plan_gentle(
    dose: Annotated[
        str, typer.Option("--dose", help="Required: total dose, '35 mg' or '0.5 mg/kg'.")
    ],
    duration: Annotated[
        str, typer.Option("--duration", help="Required: give it within this time, e.g. 40min.")
    ],
    weight: Annotated[str, typer.Option("--weight", help="Required: body weight (kg).")],
    model: Annotated[str | None, typer.Option("--model", help="Library model id.")] = None,
    model_file: Annotated[
        Path | None, typer.Option("--model-file", help="Model TOML file.")
    ] = None,
    age: Annotated[float | None, typer.Option("--age", help="Age, years.")] = None,
    height: Annotated[str | None, typer.Option("--height", help="Height (cm).")] = None,
    sex: Annotated[str | None, typer.Option("--sex", help="male or female.")] = None,
    segment: Annotated[
        str, typer.Option("--segment", help="Length of each constant-rate step.")
    ] = "1min",
    syringe: Annotated[
        str | None, typer.Option("--syringe", help="Syringe concentration (adds mL/h).")
    ] = None,
    max_rate: Annotated[
        str | None,
        typer.Option("--max-rate", help="Highest rate: '1200 mL/h' (needs --syringe), '90 mg/h'."),
    ] = None,
    cap: Annotated[
        str | None,
        typer.Option("--cap", help="Keep Ce at or under this: '150 ng/mL' or '0.3 dissociation'."),
    ] = None,
    shortest: Annotated[
        bool,
        typer.Option("--shortest", help="With --cap: shortest duration (up to --duration)."),
    ] = False,
    threshold: Annotated[
        str,
        typer.Option("--threshold", help="Report time with Ce above this level."),
    ] = "100 ng/mL",
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> int:
    """Plan the infusion profile with the lowest effect-site peak for a dose (gentle start)."""
    fmt = _choice(output, _FORMATS, "--format")
    dose_text = _required(dose, "--dose", "'0.5 mg/kg'")
    duration_text = _required(duration, "--duration", "40min")
    m = _model(model, model_file)
    params, weight_kg = _patient_parameters(
        m, _required(weight, "--weight", "70"), age, height, sex
    )
    q = parse_quantity(dose_text, (Dimension.MASS, Dimension.DOSE_PER_WEIGHT), field="dose")
    total_mg = q.value * weight_kg if q.dimension is Dimension.DOSE_PER_WEIGHT else q.value
    duration_min = _positive(parse_duration_min(duration_text, field="duration"), "duration", "min")
    segment_min = _positive(parse_duration_min(segment, field="segment"), "segment", "min")
    pump = None if syringe is None else PumpLimits.from_text(syringe=syringe, resolution="0 mL/h")
    r_max = math.inf
    if max_rate is not None:
        rq = parse_quantity(
            max_rate,
            (Dimension.VOLUME_RATE, Dimension.MASS_RATE, Dimension.MASS_RATE_PER_WEIGHT),
            field="max_rate",
        )
        if rq.dimension is Dimension.VOLUME_RATE:
            if pump is None:
                raise InputError(
                    "--max-rate in mL/h needs --syringe (the drug concentration)",
                    field="max_rate",
                )
            r_max = pump.mg_per_min(rq.to("mL/h"))
        elif rq.dimension is Dimension.MASS_RATE_PER_WEIGHT:
            r_max = rq.value * weight_kg
        else:
            r_max = rq.value
    cap_ng = (
        None if cap is None else parse_level_ng_per_ml(cap, enantiomer=m.enantiomer, field="cap")
    )
    threshold_ng = parse_level_ng_per_ml(threshold, enantiomer=m.enantiomer, field="threshold")
    if shortest and cap_ng is None:
        raise InputError("--shortest needs --cap (the level to stay under)", field="shortest")
    if shortest:
        assert cap_ng is not None
        plan = plan_shortest_under_cap(
            params,
            total_mg=total_mg,
            cap_ce_ng_per_ml=cap_ng,
            max_duration_min=duration_min,
            segment_min=segment_min,
            max_rate_mg_per_min=r_max,
            threshold_ce_ng_per_ml=threshold_ng,
            enantiomer=m.enantiomer,
        )
    else:
        plan = plan_gentle_start(
            params,
            total_mg=total_mg,
            duration_min=duration_min,
            segment_min=segment_min,
            max_rate_mg_per_min=r_max,
            cap_ce_ng_per_ml=cap_ng,
            threshold_ce_ng_per_ml=threshold_ng,
            enantiomer=m.enantiomer,
        )
    _print_plan(plan, m, weight_kg, pump, fmt)
    if not plan.feasible:
        typer.echo(
            f"ketaflow: cap not met: the lowest achievable peak is "
            f"{plan.lowest_peak_ce_ng_per_ml:.1f} ng/mL within {plan.duration_min:g} min, above "
            f"the cap {plan.cap_ce_ng_per_ml:.1f} ng/mL; lengthen --duration"
            + ("" if shortest else " or add --shortest"),
            err=True,
        )
        return 3
    return 0


def _plan_summary(plan: GentlePlan) -> dict[str, Any]:
    return {
        "total_mg": plan.total_mg,
        "duration_min": plan.duration_min,
        "segment_min": plan.segment_min,
        "feasible": plan.feasible,
        "cap_ce_ng_per_ml": plan.cap_ce_ng_per_ml,
        "lowest_peak_ce_ng_per_ml": plan.lowest_peak_ce_ng_per_ml,
        "plan": {
            "peak_ce_ng_per_ml": plan.peak_ce_ng_per_ml,
            "peak_time_min": plan.peak_time_min,
            "peak_dissociation_fraction": plan.peak_effect,
            "time_above_threshold_min": plan.time_above_min,
        },
        "constant_rate": {
            "rate_mg_per_h": mg_per_min_to_mg_per_h(plan.constant_rate_mg_per_min),
            "peak_ce_ng_per_ml": plan.constant_peak_ce_ng_per_ml,
            "peak_time_min": plan.constant_peak_time_min,
            "peak_dissociation_fraction": plan.constant_peak_effect,
            "time_above_threshold_min": plan.constant_time_above_min,
        },
        "threshold_ce_ng_per_ml": plan.threshold_ce_ng_per_ml,
    }


def _print_plan(
    plan: GentlePlan, m: Model, weight_kg: float, pump: PumpLimits | None, fmt: str
) -> None:
    w = plan.segment_min
    const_h = mg_per_min_to_mg_per_h(plan.constant_rate_mg_per_min)
    rows: list[dict[str, float | None]] = [
        {
            "start_min": j * w,
            "end_min": (j + 1) * w,
            "rate_mg_per_h": mg_per_min_to_mg_per_h(float(r)),
            "rate_ml_per_h": None if pump is None else pump.ml_per_h(float(r)),
            "constant_rate_mg_per_h": const_h,
        }
        for j, r in enumerate(plan.rates_mg_per_min)
    ]
    summary = _plan_summary(plan)
    if fmt == "json":
        doc = {
            "model": {"id": m.id, "name": m.name, "enantiomer": m.enantiomer},
            "weight_kg": weight_kg,
            "segments": rows,
            "summary": summary,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    if fmt == "csv":
        body = [[_fmt(r[c], 4) for c in PLAN_COLUMNS] for r in rows]
        typer.echo(_csv_text(PLAN_COLUMNS, body))
        return
    lines = [
        f"{m.name} ({m.id}), {weight_kg:g} kg: {plan.total_mg:g} mg within "
        f"{plan.duration_min:g} min in {w:g}-min steps",
        f"{'from':>7} {'to':>7} {'rate mg/h':>10} {'rate mL/h':>10}",
    ]
    for r in rows:
        lines.append(
            f"{r['start_min']:>7g} {r['end_min']:>7g} {_fmt(r['rate_mg_per_h'], 2):>10} "
            f"{_fmt(r['rate_ml_per_h'], 2):>10}"
        )
    th = plan.threshold_ce_ng_per_ml
    for label, peak, t_peak, eff, above in (
        (
            "plan",
            plan.peak_ce_ng_per_ml,
            plan.peak_time_min,
            plan.peak_effect,
            plan.time_above_min,
        ),
        (
            f"constant {const_h:.2f} mg/h",
            plan.constant_peak_ce_ng_per_ml,
            plan.constant_peak_time_min,
            plan.constant_peak_effect,
            plan.constant_time_above_min,
        ),
    ):
        lines.append(
            f"{label}: peak Ce {peak:.1f} ng/mL at {t_peak:.1f} min, predicted dissociation "
            f"{eff:.3f}; {above:.1f} min above {th:g} ng/mL"
        )
    if plan.cap_ce_ng_per_ml is not None:
        verdict = "met" if plan.feasible else "NOT met"
        lines.append(f"cap {plan.cap_ce_ng_per_ml:.1f} ng/mL: {verdict}")
    _emit(lines)


def register(app: typer.Typer) -> None:
    """Attach the TCI commands."""
    app.command("tci")(tci)
    app.command("plan-gentle")(plan_gentle)
