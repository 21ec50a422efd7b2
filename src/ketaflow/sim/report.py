"""The trial's HTML report: a Jinja2 template shipped in the package, charts as inline SVG.

The page is self-contained (no scripts, styles or fonts fetched): it can be archived or mailed
as one file.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any, Final

import jinja2
from markupsafe import Markup

from ketaflow import __version__
from ketaflow.sim.svg import Band, band_chart, histogram_chart

#: Outcomes shown as histograms, in order.
HISTOGRAMS: Final = (
    "peak_cp_ng_per_ml",
    "peak_dissociation",
    "time_above_dissociation_min",
    "discharge_ready_after_end_min",
    "total_dose_mg",
    "max_sbp_mm_hg",
)
_TRACE_TITLES: Final = {
    "cp": ("Plasma concentration", "ng/mL"),
    "ce": ("Effect-site concentration", "ng/mL"),
    "dissociation": ("Predicted dissociation", "fraction of maximum"),
}


def _num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    a = abs(v)
    digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 0.1 else 3
    text = f"{v:.{digits}f}"
    # Rounding noise such as -1e-16 would otherwise print as "-0.000".
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _ci(lo: float | None, hi: float | None) -> str:
    return f"({_num(lo)} to {_num(hi)})"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def _cells(spec: dict[str, Any], stats: dict[str, Any]) -> dict[str, str]:
    if spec["kind"] == "binary":
        lo, hi = stats["ci95"]
        return {
            "mean": f"{_pct(stats['proportion'])} ({_pct(lo)} to {_pct(hi)})",
            "median": f"{stats['count']:,} of {stats['n']:,}",
        }
    mean = f"{_num(stats['mean'])} {_ci(*stats['mean_ci95'])}"
    if stats.get("n_missing"):
        mean += f" n/a: {stats['n_missing']:,}"
    if "median" in stats:
        median = (
            f"{_num(stats['median'])} [{_num(stats['median_ci95'][0])}-"
            f"{_num(stats['median_ci95'][1])}] ({_num(stats['p5'])}-{_num(stats['p95'])})"
        )
    else:
        median = ""
    return {"mean": mean, "median": median}


def render_report(summary: dict[str, Any]) -> str:
    """The HTML report of a trial summary (as produced by :func:`ketaflow.sim.trial.run_trial`)."""
    arms: dict[str, Any] = summary["arms"]
    names = list(arms)
    specs: dict[str, Any] = summary["outcome_specs"]
    table_rows = [
        {
            "label": spec["label"],
            "unit": spec["unit"],
            "cells": [_cells(spec, arms[a]["outcomes"][key]) for a in names],
        }
        for key, spec in specs.items()
    ]
    paired_heads = [f"{p['b']} - {p['a']}" for p in summary["paired"]]
    paired_rows = []
    for key, spec in specs.items():
        cells = []
        for p in summary["paired"]:
            d = p["outcomes"][key]
            scale = 100.0 if spec["kind"] == "binary" else 1.0
            m = d["mean_difference"]
            lo, hi = d["ci95"]
            unit = " pp" if spec["kind"] == "binary" else ""
            cells.append(
                f"{_num(None if m is None else m * scale)}{unit} "
                f"{_ci(None if lo is None else lo * scale, None if hi is None else hi * scale)}"
            )
        paired_rows.append({"label": spec["label"], "cells": cells})
    first = arms[names[0]]["vpc"]
    times = first["times_min"]
    band_charts = []
    for key, (title, unit) in _TRACE_TITLES.items():
        bands = {
            a: Band(
                arms[a]["vpc"][key]["p5"], arms[a]["vpc"][key]["p50"], arms[a]["vpc"][key]["p95"]
            )
            for a in names
        }
        band_charts.append(
            Markup(band_chart(times, bands, title=title, x_label="time (min)", y_label=unit))
        )
    histogram_charts = []
    for key in HISTOGRAMS:
        if key not in arms[names[0]]["histograms"]:
            continue
        h0 = arms[names[0]]["histograms"][key]
        counts = {a: arms[a]["histograms"][key]["counts"] for a in names}
        spec = specs[key]
        histogram_charts.append(
            Markup(histogram_chart(h0["edges"], counts, title=spec["label"], x_label=spec["unit"]))
        )
    course = _course_context(summary)
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    template = env.get_template("trial_report.html")
    return template.render(
        meta=summary["meta"],
        arm_names=names,
        table_rows=table_rows,
        paired_heads=paired_heads,
        paired_rows=paired_rows if summary["paired"] else [],
        band_charts=band_charts,
        histogram_charts=histogram_charts,
        course=course,
        version=__version__,
    )


def _levels(levels: list[dict[str, Any]]) -> str:
    return ", ".join(f"{d['mg_per_kg']:g}: {_pct(d['share'])}" for d in levels) or "n/a"


def _diff(d: dict[str, Any], binary: bool) -> str:
    scale = 100.0 if binary else 1.0
    m, (lo, hi) = d["mean_difference"], d["ci95"]

    def sc(v: float | None) -> float | None:
        return None if v is None else v * scale

    return f"{_num(sc(m))}{' pp' if binary else ''} {_ci(sc(lo), sc(hi))}"


def _course_context(summary: dict[str, Any]) -> dict[str, Any]:
    """Tables and charts of the course section (per session, per course, paired)."""
    course: dict[str, Any] = summary["course"]
    s_specs: dict[str, Any] = course["session_outcome_specs"]
    c_specs: dict[str, Any] = course["course_outcome_specs"]
    arms: dict[str, Any] = course["arms"]
    names = list(arms)
    columns = [k for k in s_specs if k != "dose_mg_per_kg"]
    session_tables = []
    for name, data in arms.items():
        rows = []
        for s in data["per_session"]:
            cells = []
            for key in columns:
                spec, st = s_specs[key], s["outcomes"][key]
                if spec["kind"] == "binary":
                    cells.append(_pct(st["proportion"]))
                else:
                    cells.append(
                        f"{_num(st.get('median'))} ({_num(st.get('p5'))}-{_num(st.get('p95'))})"
                    )
            rows.append(
                {
                    "session": s["session_number"],
                    "levels": _levels(s["dose_levels"]),
                    "mean_dose": _num(s["outcomes"]["dose_mg_per_kg"]["mean"]),
                    "cells": cells,
                }
            )
        session_tables.append({"name": name, "rows": rows})
    heads = [
        s_specs[k]["label"] + ("" if s_specs[k]["kind"] == "binary" else f" ({s_specs[k]['unit']})")
        for k in columns
    ]
    course_rows = [
        {
            "label": spec["label"],
            "unit": spec["unit"],
            "cells": [_cells(spec, arms[a]["per_course"]["outcomes"][key]) for a in names],
        }
        for key, spec in c_specs.items()
    ]
    dose_rows = [
        {
            "name": a,
            "max": _levels(arms[a]["per_course"]["max_dose_levels"]),
            "at_dose": ", ".join(
                f"{d['mg_per_kg']:g}: {_num(d['mean_sessions_per_patient'])}"
                for d in arms[a]["per_course"]["sessions_at_dose"]
            ),
        }
        for a in names
    ]
    paired_keys = [k for k in s_specs if k != "tolerated"]
    paired_tables = []
    for p in course["paired"]:
        rows = [
            {
                "session": s["session_number"],
                "cells": [
                    _diff(s["outcomes"][k], s_specs[k]["kind"] == "binary") for k in paired_keys
                ],
            }
            for s in p["per_session"]
        ]
        per_course = [
            {"label": c_specs[k]["label"], "cell": _diff(d, c_specs[k]["kind"] == "binary")}
            for k, d in p["per_course"].items()
        ]
        paired_tables.append(
            {"head": f"{p['b']} - {p['a']}", "rows": rows, "per_course": per_course}
        )
    charts = []
    for key, title, unit in (
        ("dose_mg_per_kg", "Session dose by session (5th, 50th, 95th percentiles)", "mg/kg"),
        ("peak_dissociation", "Peak predicted dissociation by session", "fraction of maximum"),
    ):
        n_max = max(len(arms[a]["per_session"]) for a in names)
        bands = {}
        for a in names:
            per = arms[a]["per_session"]
            pad: list[float | None] = [None] * (n_max - len(per))
            bands[a] = Band(
                [s["outcomes"][key]["p5"] for s in per] + pad,
                [s["outcomes"][key]["median"] for s in per] + pad,
                [s["outcomes"][key]["p95"] for s in per] + pad,
            )
        sessions = [float(k) for k in range(1, n_max + 1)]
        if n_max == 1:
            sessions = [1.0]
        charts.append(
            Markup(band_chart(sessions, bands, title=title, x_label="session", y_label=unit))
        )
    return {
        "response": course["response_assumption"]["text"],
        "cadss": course["cadss_mapping"]["text"],
        "tolerated": course["tolerated_definition"],
        "stop_threshold": course["stop_threshold_definition"],
        "sessions": {a: arms[a]["sessions"] for a in names},
        "heads": heads,
        "session_tables": session_tables,
        "course_rows": course_rows,
        "dose_rows": dose_rows,
        "paired_heads": [
            s_specs[k]["label"] + (" (pp)" if s_specs[k]["kind"] == "binary" else "")
            for k in paired_keys
        ],
        "paired_tables": paired_tables,
        "charts": charts,
    }


def _load_template(name: str) -> str:
    return (resources.files("ketaflow.sim") / "templates" / name).read_text(encoding="utf-8")
