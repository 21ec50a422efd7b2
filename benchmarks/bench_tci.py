"""TCI benchmark: ketaflow's controllers against PyTCI 1.2 in the same scenario.

Scenario (as in the team's peer-TCI reference, section 4.4): Domino 1984 ketamine, 70 kg, targets
200 ng/mL from 0 min and 400 ng/mL from 60 min, 2 hours, 10 s updates. PyTCI ships no ketamine
model, so one is built here from the same micro-constants and ke0 as ketaflow's library file.
Every engine's rates are replayed in ketaflow's exact engine and scored with the same code
(:func:`ketaflow.pk.tci.assess`, 1 s samples): MDPE/MDAPE over 5-60 min after each change,
largest overshoot, zero-rate intervals 30-60 min after each change, total dose, time to 95 %.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_tci.py [--repeats 21] [--pytci-repeats 3]

Wall times are medians; ketaflow's include building the controller.
"""

from __future__ import annotations

import os

# One BLAS thread, as in the reference measurements (set before NumPy is imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ketaflow.pk.library import load_model
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.tci import (
    PumpLimits,
    TargetSchedule,
    TciConfig,
    TciController,
    TciMode,
    TciResult,
    assess,
)

WEIGHT_KG = 70.0
UPDATE_S = 10
DURATION_MIN = 120.0
TARGETS = ("200 ng/mL from 0 min", "400 ng/mL from 60 min")
PUMP = PumpLimits.from_text(syringe="10 mg/mL", max_rate="1200 mL/h", resolution="0.1 mL/h")
OURS_EFFECT = "ketaflow (5 % plasma switch + 10 % equilibrium)"
WITH_PUMP = "ketaflow + pump 1200 mL/h, 0.1 mL/h"


@dataclass
class Row:
    engine: str
    mode: TciMode
    result: TciResult
    wall_s: float
    params: PKParameters


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls (after one warm-up) and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def ours(
    params: PKParameters,
    mode: TciMode,
    *,
    pump: PumpLimits | None = None,
    config: TciConfig | None = None,
) -> Callable[[], TciResult]:
    sched = TargetSchedule.from_texts(TARGETS)

    def run() -> TciResult:
        return TciController(params, mode=mode, pump=pump, config=config).run(sched, DURATION_MIN)

    return run


def pytci_runner(mode: TciMode, integrator: str) -> Callable[[], list[float]]:
    """PyTCI 1.2 with a Domino ketamine model (ketaflow's ke0); rates in mg/s."""
    from PyTCI.models.base import Three

    model = load_model("domino-1984")

    class DominoKetamine(Three):  # type: ignore[misc]  # PyTCI is untyped
        def __init__(self, weight_kg: float) -> None:
            v = model.values
            self.v1 = v["v1_l"] * weight_kg  # v1_l_per_kg in the library file
            self.k10 = v["k10_per_min"]
            self.k12 = v["k12_per_min"]
            self.k13 = v["k13_per_min"]
            self.k21 = v["k21_per_min"]
            self.k31 = v["k31_per_min"]
            self.keo = v["ke0_per_min"]
            self.setup()

    seconds = 60 * 60

    def run() -> list[float]:
        m = DominoKetamine(WEIGHT_KG)
        m.set_integrator(integrator)
        if mode == "plasma":
            return list(m.plasma_infusion(0.2, seconds, UPDATE_S)) + list(
                m.plasma_infusion(0.4, seconds, UPDATE_S)
            )
        first = list(m.effect_target(0.2, seconds, UPDATE_S))
        for r in first:  # effect_target restores the state: deliver the plan, then go on
            m.giveoverseconds(r, UPDATE_S)
        return first + list(m.effect_target(0.4, seconds, UPDATE_S))

    return run


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def accuracy_table(rows: list[Row]) -> list[str]:
    head = (
        "| Engine | Mode | First 10 s rate (mg/s) | MDPE seg 1 / 2 (%) | MDAPE seg 1 / 2 (%) "
        "| Max overshoot seg 1 / 2 (%) | Zero intervals 30-60 min (seg 1 / 2, of 180) "
        "| Total dose 2 h (mg) | Time to 95 % seg 1 / 2 (s) | Wall time (ms) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        a = assess(r.params, r.result)
        s1, s2 = a.segments
        lines.append(
            f"| {r.engine} | {r.mode} | {r.result.rate_mg_per_min[0] / 60:.5f} "
            f"| {s1.mdpe_pct:+.3f} / {s2.mdpe_pct:+.3f} | {s1.mdape_pct:.3f} / {s2.mdape_pct:.3f} "
            f"| {s1.max_overshoot_pct:+.3f} / {s2.max_overshoot_pct:+.3f} "
            f"| {s1.zero_intervals_30_60} / {s2.zero_intervals_30_60} "
            f"| {r.result.total_mg:.2f} "
            f"| {fmt(s1.time_to_95_s, '.0f')} / {fmt(s2.time_to_95_s, '.0f')} "
            f"| {r.wall_s * 1e3:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="runs per ketaflow timing")
    parser.add_argument("--pytci-repeats", type=int, default=3, help="runs per PyTCI timing")
    parser.add_argument("--skip-pytci", action="store_true", help="ketaflow only")
    args = parser.parse_args()

    print(
        f"# TCI benchmark ({platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs)\n"
    )
    domino = load_model("domino-1984").parameters(weight_kg=WEIGHT_KG)
    kamp = load_model("kamp-2020").parameters(weight_kg=WEIGHT_KG)
    sched = TargetSchedule.from_texts(TARGETS)
    dt_min = UPDATE_S / 60.0

    cases: list[tuple[str, TciMode, PKParameters, Callable[[], TciResult]]] = [
        (OURS_EFFECT, "effect", domino, ours(domino, "effect")),
        (WITH_PUMP, "effect", domino, ours(domino, "effect", pump=PUMP)),
        (
            "ketaflow pure Shafer-Gregg (no switch)",
            "effect",
            domino,
            ours(domino, "effect", config=TciConfig(plasma_band=None)),
        ),
        (
            "ketaflow pure Shafer-Gregg + pump",
            "effect",
            domino,
            ours(domino, "effect", pump=PUMP, config=TciConfig(plasma_band=None)),
        ),
        (
            "ketaflow + pump + Cp limit 1.5x",
            "effect",
            domino,
            ours(domino, "effect", pump=PUMP, config=TciConfig(cp_limit_factor=1.5)),
        ),
        (
            "ketaflow, exact-matrix engine",
            "effect",
            domino,
            ours(domino, "effect", config=TciConfig(engine="matrix")),
        ),
        ("ketaflow", "plasma", domino, ours(domino, "plasma")),
        (WITH_PUMP, "plasma", domino, ours(domino, "plasma", pump=PUMP)),
        (
            "ketaflow, exact-matrix engine",
            "plasma",
            domino,
            ours(domino, "plasma", config=TciConfig(engine="matrix")),
        ),
    ]
    rows: list[Row] = []
    for name, mode, params, fn in cases:
        wall, result = median_time(fn, args.repeats)
        rows.append(Row(name, mode, result, wall, params))

    if not args.skip_pytci:
        for mode in ("effect", "plasma"):
            for integrator in ("exact", "euler"):
                wall, rates = median_time(pytci_runner(mode, integrator), args.pytci_repeats)
                result = TciResult.from_rates(
                    domino,
                    np.asarray(rates) * 60.0,  # mg/s -> mg/min
                    update_min=dt_min,
                    targets=sched,
                    mode=mode,
                )
                rows.append(Row(f"PyTCI 1.2 {integrator}", mode, result, wall, domino))

    print("## Domino 1984, 70 kg, 200 -> 400 ng/mL at 60 min, 10 s updates, 2 h\n")
    print("\n".join(accuracy_table(rows)))

    print("\n## Kamp 2020, 70 kg, same targets (ketaflow only)\n")
    kamp_rows = []
    kamp_modes: tuple[TciMode, ...] = ("effect", "plasma")
    for kmode in kamp_modes:
        wall, result = median_time(ours(kamp, kmode, pump=PUMP), args.repeats)
        kamp_rows.append(Row(WITH_PUMP, kmode, result, wall, kamp))
    print("\n".join(accuracy_table(kamp_rows)))

    print("\n## Timing summary (median wall time, 2 h at 10 s = 720 updates, one patient)\n")
    print("| Task | ketaflow (ms) | PyTCI 1.2 exact (ms) | target (ms) |")
    print("|---|---|---|---|")
    by = {(r.engine, r.mode): r.wall_s * 1e3 for r in rows}
    for mode, label, target in (("effect", "effect-site TCI", 10.0), ("plasma", "plasma TCI", 2.0)):
        first = OURS_EFFECT if mode == "effect" else "ketaflow"
        py = by.get(("PyTCI 1.2 exact", mode))
        print(f"| {label} | {by[(first, mode)]:.2f} | {fmt(py, '.0f')} | < {target:g} |")


if __name__ == "__main__":
    main()
