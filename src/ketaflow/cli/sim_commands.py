"""Simulation commands: ``ketaflow trial`` (in-silico trials) and ``ketaflow monitor``.

Data goes to stdout (the trial's key results as tab-separated lines); messages and the
progress bar go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from ketaflow.errors import InputError


def _key_rows(summary: dict[str, Any]) -> list[str]:
    keys = (
        "peak_cp_ng_per_ml",
        "peak_ce_ng_per_ml",
        "peak_dissociation",
        "time_above_dissociation_min",
        "discharge_ready_after_end_min",
        "total_dose_mg",
        "alarm_SBP_HIGH_STOP",
        "alarm_DBP_HIGH_STOP",
        "stopped_early",
    )
    rows = ["protocol\toutcome\tvalue\tci95_low\tci95_high"]
    for arm, data in summary["arms"].items():
        for key in keys:
            stats = data["outcomes"].get(key)
            if stats is None:
                continue
            if "proportion" in stats:
                value, (lo, hi) = stats["proportion"], stats["ci95"]
            else:
                value, (lo, hi) = stats["mean"], stats["mean_ci95"]
            rows.append(f"{arm}\t{key}\t{_g(value)}\t{_g(lo)}\t{_g(hi)}")
    for pair in summary["paired"]:
        for key in keys:
            d = pair["outcomes"][key]
            rows.append(
                f"{pair['b']} - {pair['a']}\t{key}\t{_g(d['mean_difference'])}\t"
                f"{_g(d['ci95'][0])}\t{_g(d['ci95'][1])}"
            )
    return rows


_SESSION_KEYS = ("dose_mg_per_kg", "peak_dissociation", "stop_threshold_crossed")
_COURSE_KEYS = (
    "max_dose_mg_per_kg",
    "reached_ceiling",
    "cumulative_dose_mg",
    "any_stop_threshold_crossed",
)


def _value(stats: dict[str, Any]) -> tuple[Any, Any, Any]:
    if "proportion" in stats:
        return stats["proportion"], stats["ci95"][0], stats["ci95"][1]
    return stats["mean"], stats["mean_ci95"][0], stats["mean_ci95"][1]


def _course_rows(summary: dict[str, Any]) -> list[str]:
    """Course results: per session (session number in the outcome) and per course."""
    course = summary["course"]
    rows = [
        "# response assumption: " + course["response_assumption"]["label"],
        f"# CADSS mapping: {course['cadss_mapping']['points_per_fraction']:g} points per unit "
        "of predicted dissociation (assumption)",
        "protocol\tsession\toutcome\tvalue\tci95_low\tci95_high",
    ]
    for arm, data in course["arms"].items():
        for s in data["per_session"]:
            for key in _SESSION_KEYS:
                v, lo, hi = _value(s["outcomes"][key])
                rows.append(f"{arm}\t{s['session_number']}\t{key}\t{_g(v)}\t{_g(lo)}\t{_g(hi)}")
        for key in _COURSE_KEYS:
            v, lo, hi = _value(data["per_course"]["outcomes"][key])
            rows.append(f"{arm}\tcourse\t{key}\t{_g(v)}\t{_g(lo)}\t{_g(hi)}")
    for pair in course["paired"]:
        head = f"{pair['b']} - {pair['a']}"
        for s in pair["per_session"]:
            d = s["outcomes"]["dose_mg_per_kg"]
            rows.append(
                f"{head}\t{s['session_number']}\tdose_mg_per_kg\t{_g(d['mean_difference'])}\t"
                f"{_g(d['ci95'][0])}\t{_g(d['ci95'][1])}"
            )
        for key in ("cumulative_dose_mg", "any_stop_threshold_crossed"):
            d = pair["per_course"][key]
            rows.append(
                f"{head}\tcourse\t{key}\t{_g(d['mean_difference'])}\t"
                f"{_g(d['ci95'][0])}\t{_g(d['ci95'][1])}"
            )
    return rows


def _g(v: float | None) -> str:
    return "NA" if v is None else f"{v:.6g}"


def trial(
    protocol: Annotated[
        list[str],
        typer.Option("--protocol", "-p", help="Protocol to run (repeat for more arms)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    n: Annotated[int, typer.Option("--n", help="Number of virtual patients.")] = 10_000,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Population seed (default: random, printed).")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler address (e.g. tcp://10.0.0.5:8786)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Local worker processes (default: all CPUs)."),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", help="Patients per unit of work.")
    ] = 16_384,
    model: Annotated[
        str | None, typer.Option("--model", help="PK model id (default: the library's).")
    ] = None,
    horizon_min: Annotated[
        float, typer.Option("--horizon", help="Simulated time per session, min.")
    ] = 360.0,
    dt_min: Annotated[float, typer.Option("--dt", help="Time step and output grid, min.")] = 0.5,
    patients: Annotated[
        bool,
        typer.Option(
            "--patients/--no-patients", help="Write one row per patient, protocol and session."
        ),
    ] = True,
    fmt: Annotated[
        str, typer.Option("--format", help="Per-patient file: auto, parquet or csv.")
    ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    sessions: Annotated[
        int | None,
        typer.Option(
            "--sessions", help="Sessions per course (default: each protocol's [course] sessions)."
        ),
    ] = None,
    response: Annotated[
        str,
        typer.Option(
            "--response",
            help="ASSUMED % improvement after each session: none (0 %, worst case for exposure) "
            "or fixed:PCT.",
        ),
    ] = "none",
    cadss_per_fraction: Annotated[
        float | None,
        typer.Option(
            "--cadss-per-fraction",
            help="ASSUMED CADSS points per unit of predicted dissociation (default 17.1, "
            "calibrated; 92 = scale maximum).",
        ),
    ] = None,
) -> None:
    """Run an in-silico trial: every protocol on the same virtual patients, with paired results."""
    from ketaflow.sim.arms import resolve_arms
    from ketaflow.sim.course import CadssMapping, CourseSettings, ResponseAssumption
    from ketaflow.sim.engine import SessionSettings, TimeGrid
    from ketaflow.sim.trial import default_workers, make_spec, run_trial

    formats: dict[str, Literal["auto", "parquet", "csv"]] = {
        "auto": "auto",
        "parquet": "parquet",
        "csv": "csv",
    }
    if fmt not in formats:
        raise InputError(f"--format must be auto, parquet or csv, got {fmt!r}", field="format")
    spec = make_spec(
        resolve_arms(protocol),
        n=n,
        seed=seed,
        model=model,
        chunk_size=chunk_size,
        settings=SessionSettings(grid=TimeGrid(horizon_min=horizon_min, dt_min=dt_min)),
        course=CourseSettings(
            sessions=sessions,
            response=ResponseAssumption.parse(response),
            cadss=CadssMapping()
            if cadss_per_fraction is None
            else CadssMapping(cadss_per_fraction),
        ),
    )
    n_workers = default_workers() if workers is None else workers
    where = f"Dask scheduler {scheduler}" if scheduler else f"{n_workers} local worker(s)"
    courses = ", ".join(f"{a.name} {spec.sessions(a)}" for a in spec.arms)
    typer.echo(
        f"ketaflow trial: {n:,} virtual patients x {len(spec.arms)} protocol(s) (sessions: "
        f"{courses}), seed {spec.population.seed}, on {where}; ASSUMED response "
        f"{spec.course.response.label}, CADSS {spec.course.cadss.points_per_fraction:g} x "
        "predicted dissociation",
        err=True,
    )
    result = run_trial(
        spec,
        workers=n_workers,
        scheduler=scheduler,
        out_dir=out,
        write_patients=patients,
        patient_format=formats[fmt],
        progress=not quiet,
    )
    for line in _key_rows(result.summary):
        typer.echo(line)
    for line in _course_rows(result.summary):
        typer.echo(line)
    files = ", ".join(str(p) for p in result.files.values())
    typer.echo(f"done in {result.elapsed_s:.1f} s; wrote {files}", err=True)


def monitor(
    session: Annotated[str, typer.Option("--session", help="Session id in the service.")],
    url: Annotated[str, typer.Option("--url", help="Base URL of the ketaflow service.")] = (
        "http://127.0.0.1:8000"
    ),
    token: Annotated[str | None, typer.Option("--token", help="API token (device role).")] = None,
    username: Annotated[str | None, typer.Option("--username", help="Sign in as.")] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="Password (or KETAFLOW_MONITOR_PASSWORD).")
    ] = None,
    speed: Annotated[float, typer.Option("--speed", help="Simulated seconds per second.")] = 1.0,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Population seed (default: random, printed).")
    ] = None,
    patient: Annotated[
        int, typer.Option("--patient", help="Index of the virtual patient in the population.")
    ] = 0,
    duration_min: Annotated[
        float, typer.Option("--duration", help="How long to stream, simulated min.")
    ] = 180.0,
    weight_kg: Annotated[
        float | None, typer.Option("--weight", help="Patient weight, kg (default: from service).")
    ] = None,
    check_ins: Annotated[
        bool, typer.Option("--check-ins", help="Also post patient check-ins.")
    ] = False,
) -> None:
    """Stream a virtual patient's vital signs into a running service (bedside-monitor simulator)."""
    import os

    from ketaflow.pk.population import PopulationSpec
    from ketaflow.sim.monitor import ServiceClient, open_monitor

    password = password or os.environ.get("KETAFLOW_MONITOR_PASSWORD")
    if token is None and (username is None or password is None):
        raise InputError(
            "give --token, or --username with --password (or KETAFLOW_MONITOR_PASSWORD)",
            field="token",
        )
    if patient < 0:
        raise InputError(f"--patient must be >= 0, got {patient}", field="patient")
    spec = PopulationSpec.create(seed=seed)
    with ServiceClient(url, token=token) as client:
        if username is not None and password is not None and token is None:
            client.login(username, password)
        mon = open_monitor(
            client,
            session,
            spec=spec,
            patient_index=patient,
            duration_min=duration_min,
            speed=speed,
            weight_kg=weight_kg,
            post_check_ins=check_ins,
        )
        typer.echo(
            f"ketaflow monitor: virtual patient {patient} of seed {spec.seed} "
            f"({mon.session.weight_kg:.1f} kg) -> session {session} at {url}, speed {speed:g}x",
            err=True,
        )
        stats = mon.run(duration_min=duration_min)
    typer.echo(
        f"readings_posted\t{stats.readings_posted}\nbatches\t{stats.batches_posted}\n"
        f"check_ins_posted\t{stats.check_ins_posted}\nrate_changes\t{stats.rate_changes_applied}\n"
        f"readings_refused\t{stats.readings_refused}"
    )


def register(app: typer.Typer) -> None:
    """Attach the simulation commands."""
    app.command("trial")(trial)
    app.command("monitor")(monitor)
