"""Pharmacology commands: ``ketaflow models`` and ``ketaflow simulate``.

``simulate`` predicts plasma, effect-site and (where modelled) metabolite concentrations and the
PD effects for one patient and a list of doses, one row per output time from 0 to the duration
inclusive. Data goes to stdout (Rich table, CSV or JSON); validity warnings go to stderr, one
line each. Bad input raises an :class:`~ketaflow.errors.InputError`, which the CLI turns into
one line on stderr and exit code 2.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import warnings
from collections.abc import Sequence
from typing import Annotated, Any, Final

import numpy as np
import typer

from ketaflow.errors import InputError, ModelValidityWarning
from ketaflow.pk.effect import PD_MODELS, EmaxModel
from ketaflow.pk.library import Model, default_model, list_models, load_model, load_model_file
from ketaflow.pk.schedule import Schedule
from ketaflow.pk.solve import simulate as run_simulation
from ketaflow.units import Dimension, parse_duration_min, parse_quantity

#: Output formats of the data commands.
FORMATS: Final = ("table", "csv", "json")
#: Refuse to print more rows than this (a typo such as ``--step 1ms`` would flood the terminal).
MAX_ROWS: Final = 100_000
#: Steps that divide the duration within this relative tolerance count as dividing it.
_DIVIDES_RTOL: Final = 1e-9
#: CSV column of each PD model, with its unit in the name.
PD_COLUMNS: Final[dict[str, str]] = {
    "dissociation": "dissociation_fraction",
    "analgesia": "analgesia_fraction",
    "sbp_rise": "sbp_rise_mmhg",
    "dbp_rise": "dbp_rise_mmhg",
    "hr_rise": "hr_rise_beats_per_min",
}
_SEXES: Final = ("male", "female")


def _format(value: str) -> str:
    fmt = value.strip().lower()
    if fmt not in FORMATS:
        raise InputError(
            f"--format must be one of {', '.join(FORMATS)}, got {value!r}", field="format"
        )
    return fmt


def _positive(text: str, dimension: Dimension, option: str, plain_unit: str) -> float:
    """A positive quantity; a bare number is read in ``plain_unit``."""
    raw = text.strip()
    try:
        value = float(raw)
    except ValueError:
        value = parse_quantity(raw, dimension, field=option, allow_negative=True).value
    else:
        value = parse_quantity(
            f"{raw} {plain_unit}", dimension, field=option, allow_negative=True
        ).value
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{option} must be a positive number, got {text!r}", field=option)
    return value


def _age(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--age must be a number of years, got {text!r}", field="age") from None
    if not math.isfinite(value) or value < 0 or value > 130:
        raise InputError(f"--age must be between 0 and 130 years, got {text!r}", field="age")
    return value


def _sex(text: str | None) -> str | None:
    if text is None:
        return None
    sex = text.strip().lower()
    if sex not in _SEXES:
        raise InputError(f"--sex must be 'male' or 'female', got {text!r}", field="sex")
    return sex


def _model(name: str | None, path: str | None) -> Model:
    if name is not None and path is not None:
        raise InputError("give either --model or --model-file, not both", field="model")
    if path is not None:
        return load_model_file(path)
    if name is not None:
        return load_model(name)
    return default_model()


def output_times_min(duration: str, step: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Output times 0, step, ..., duration (min); the step must divide the duration."""
    duration_min = parse_duration_min(duration, field="--duration")
    step_min = parse_duration_min(step, field="--step")
    if duration_min <= 0:
        raise InputError(f"--duration must be positive, got {duration!r}", field="duration")
    if step_min <= 0:
        raise InputError(f"--step must be positive, got {step!r}", field="step")
    ratio = duration_min / step_min
    n = round(ratio)
    if n < 1 or abs(ratio - n) > _DIVIDES_RTOL * ratio:
        raise InputError(
            f"--step {step!r} does not divide --duration {duration!r} into whole steps; "
            "choose a step such as 10s, 1min or 5min that does",
            field="step",
        )
    if n + 1 > MAX_ROWS:
        raise InputError(
            f"--duration {duration!r} at --step {step!r} would print {n + 1:,} rows "
            f"(limit {MAX_ROWS:,}); use a longer step",
            field="step",
        )
    return np.asarray(np.arange(n + 1) * step_min, dtype=np.float64)


def _time_s(t_min: float) -> float | int:
    t_s = round(t_min * 60.0, 9)
    return int(t_s) if t_s == int(t_s) else t_s


def prediction_rows(
    model: Model,
    *,
    weight_kg: float,
    doses: Sequence[str],
    times_min: np.ndarray[Any, np.dtype[np.float64]],
    age_y: float | None = None,
    height_cm: float | None = None,
    sex: str | None = None,
) -> tuple[list[str], list[dict[str, float | int]], list[str]]:
    """Columns, one row per output time, and the validity warnings, for one patient."""
    if not doses:
        raise InputError(
            "give at least one --dose, e.g. --dose '0.5 mg/kg over 40 min'", field="dose"
        )
    schedule = Schedule.from_text(list(doses), weight_kg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModelValidityWarning)
        params = model.parameters(weight_kg=weight_kg, age_y=age_y, height_cm=height_cm, sex=sex)
    notes = [str(w.message) for w in caught if issubclass(w.category, ModelValidityWarning)]
    pred = run_simulation(params, schedule, times_min)
    columns: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {
        "rate_mg_per_h": pred.rate_mg_per_h[0],
        "cp_ng_per_ml": pred.cp_ng_per_ml[0],
    }
    ce = pred.ce_ng_per_ml
    if ce is not None:
        columns["ce_ng_per_ml"] = ce[0]
    cm = pred.cm_ng_per_ml
    if cm is not None:
        columns[f"{model.metabolite_name}_ng_per_ml"] = cm[0]
    if ce is not None:
        for key, pd in PD_MODELS.items():
            columns[PD_COLUMNS[key]] = pd.effect(ce[0], enantiomer=model.enantiomer)
    names = ["time_s", *columns]
    rows: list[dict[str, float | int]] = []
    for i, t in enumerate(times_min):
        row: dict[str, float | int] = {"time_s": _time_s(float(t))}
        for name, values in columns.items():
            row[name] = float(values[i])
        rows.append(row)
    return names, rows, notes


def _print_csv(names: list[str], rows: list[dict[str, float | int]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([repr(v) if isinstance(v, float) else v for v in (row[n] for n in names)])


def _cell(name: str, value: float | int) -> str:
    if name == "time_s":
        return str(value)
    if name.endswith("_fraction"):
        return f"{value:.3f}"
    if name.endswith("_ng_per_ml"):
        return f"{value:.1f}"
    if name == "rate_mg_per_h":
        return f"{value:.2f}"
    return f"{value:.1f}"


def _console(min_width: int = 100) -> Any:
    from rich.console import Console

    # Created per call so that it writes to the current sys.stdout (tests capture it), at
    # least as wide as the table needs so that headers are not cut when output is redirected.
    return Console(file=sys.stdout, width=max(min_width, Console(file=sys.stdout).width))


def _print_table(title: str, names: list[str], rows: list[dict[str, float | int]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(n, row[n]) for n in names))
    _console(min_width=sum(len(n) + 3 for n in names) + 1).print(table)


def _warn(notes: list[str]) -> None:
    for note in notes:
        print(f"ketaflow: warning: {' '.join(note.split())}", file=sys.stderr)


def simulate(
    # --weight and --dose are required; they are checked here rather than by Typer so that a
    # missing one gets the same one-line message and exit code 2 as any other bad input.
    weight: Annotated[
        str | None,
        typer.Option(
            "--weight", help="Body weight (required): kg, or a quantity such as '154 lb'."
        ),
    ] = None,
    dose: Annotated[
        list[str] | None,
        typer.Option(
            "--dose",
            help="A dose (required, repeatable), e.g. '0.5 mg/kg over 40 min' or "
            "'bolus 10 mg at 5 min'.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Library model id (see 'ketaflow models'); default Kamp 2020."
        ),
    ] = None,
    model_file: Annotated[
        str | None, typer.Option("--model-file", help="A model TOML file instead of --model.")
    ] = None,
    age: Annotated[str | None, typer.Option("--age", help="Age, years.")] = None,
    height: Annotated[
        str | None, typer.Option("--height", help="Height: cm, or a quantity such as '1.75 m'.")
    ] = None,
    sex: Annotated[str | None, typer.Option("--sex", help="male or female.")] = None,
    duration: Annotated[
        str, typer.Option("--duration", help="Length of the prediction, e.g. 120min or 4h.")
    ] = "120min",
    step: Annotated[
        str, typer.Option("--step", help="Output interval; must divide the duration, e.g. 10s.")
    ] = "1min",
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """Predict concentrations and effects for one patient, one row per output time."""
    fmt = _format(output_format)
    if weight is None:
        raise InputError("--weight is required (kg, e.g. --weight 70)", field="weight")
    if not dose:
        raise InputError(
            "give at least one --dose, e.g. --dose '0.5 mg/kg over 40 min'", field="dose"
        )
    weight_kg = _positive(weight, Dimension.BODY_MASS, "--weight", "kg")
    height_cm = None if height is None else _positive(height, Dimension.LENGTH, "--height", "cm")
    age_y = _age(age)
    sex_ = _sex(sex)
    chosen = _model(model, model_file)
    times = output_times_min(duration, step)
    names, rows, notes = prediction_rows(
        chosen,
        weight_kg=weight_kg,
        doses=dose,
        times_min=times,
        age_y=age_y,
        height_cm=height_cm,
        sex=sex_,
    )
    _warn(notes)
    if fmt == "csv":
        _print_csv(names, rows)
    elif fmt == "json":
        doc = {
            "model": chosen.describe(),
            "patient": {
                "weight_kg": weight_kg,
                "age_y": age_y,
                "height_cm": height_cm,
                "sex": sex_,
            },
            "doses": list(dose),
            "pd_models": {k: _pd_meta(m) for k, m in PD_MODELS.items()},
            "columns": names,
            "rows": rows,
        }
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        title = f"{chosen.name} ({chosen.drug}), {weight_kg:g} kg: " + "; ".join(dose)
        _print_table(title, names, rows)


def _pd_meta(m: EmaxModel) -> dict[str, Any]:
    return {
        "endpoint": m.endpoint,
        "column": PD_COLUMNS[m.key],
        "c50_s_ketamine_ng_per_ml": m.c50_ng_per_ml,
        "gamma": m.gamma,
        "emax": m.emax,
        "unit": m.effect_unit,
        "source": m.source,
        "assumptions": m.assumptions,
    }


def models(
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """List the PK model library with sources (the default is marked)."""
    fmt = _format(output_format)
    library = list_models()
    if fmt == "json":
        json.dump([m.describe() for m in library], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["id", "default", "name", "drug", "population", "doi", "verification"])
        for m in library:
            d = m.describe()
            writer.writerow(
                [
                    d["id"],
                    d["default"],
                    d["name"],
                    d["drug"],
                    d["population"],
                    d["doi"],
                    d["verification"],
                ]
            )
        return
    from rich.table import Table

    table = Table(title="ketaflow PK model library (* = default)", title_justify="left")
    for col in ("id", "name", "drug", "population", "DOI", "verification"):
        table.add_column(col, overflow="fold")
    for m in library:
        d = m.describe()
        table.add_row(
            f"{d['id']}{' *' if d['default'] else ''}",
            d["name"],
            d["drug"],
            d["population"],
            d["doi"] or "-",
            d["verification"],
        )
    _console().print(table)


def register(app: typer.Typer) -> None:
    """Attach the pharmacology commands."""
    app.command("models")(models)
    app.command("simulate")(simulate)
