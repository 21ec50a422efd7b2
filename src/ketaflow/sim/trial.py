"""In-silico trials: every protocol on the same virtual patients, at scale, with paired results.

:func:`run_trial` cuts the population into chunks of ``chunk_size`` patients. Each chunk is
simulated by :func:`run_chunk` (anywhere: this process, a local process pool, or a Dask
distributed cluster) in sub-blocks of :data:`SUB_BLOCK` patients so that its arrays stay in
cache, and returns per-patient outcomes for every arm plus per-time bin counts of Cp, Ce and
predicted dissociation. The caller merges chunk results **in chunk order**, whatever finished
first, into bounded-memory reducers (:mod:`ketaflow.sim.reducers`), writes per-patient rows and
keeps at most two chunks per worker in flight, so memory does not grow with N.

Reproducibility: patient ``i`` depends only on ``(seed, i)`` (see :mod:`ketaflow.pk.population`),
so the same seed gives the same patients and per-patient outcomes whatever the chunk size,
worker count or scheduler. Summary statistics are bitwise identical for the same chunk size
(integer counts, and float sums merged in the same order); another chunk size changes float sums
in the last bits only (relative 1e-12).

Outcomes (per patient and arm) are listed in :data:`OUTCOMES` with units and meaning; the
paired difference of arm B minus arm A is computed patient by patient, which is what running
every arm on the same patients (with the same within-session noise) buys.
"""

from __future__ import annotations

import importlib.util
import json
import math
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from ketaflow.errors import InputError
from ketaflow.pk.population import PopulationSpec
from ketaflow.sim.arms import TrialArm
from ketaflow.sim.cohort import Cohort
from ketaflow.sim.course import (
    STOP_THRESHOLD_DEFINITION,
    TOLERATED_DEFINITION,
    CourseSettings,
    next_doses,
    stop_alarm_codes,
    titration_inputs,
)
from ketaflow.sim.engine import ArmResult, Plan, SessionSettings, TrialNoise, run_arm
from ketaflow.sim.reducers import (
    Bins,
    Histogram,
    Moments,
    TimeHistogram,
    quantile_ci95,
    time_counts,
    wilson_ci95,
)

FloatArray = npt.NDArray[np.float64]

#: Patients simulated together inside a chunk (keeps the (T, n) arrays cache- and heap-friendly).
SUB_BLOCK: Final = 2048
#: Default patients per chunk (unit of work shipped to a worker).
DEFAULT_CHUNK_SIZE: Final = 16384
#: Largest N accepted (a run of 10^8 patients already takes hours per core).
MAX_PATIENTS: Final = 100_000_000

#: Bins of the time-resolved percentile bands (see ketaflow.sim.reducers for their accuracy).
CONCENTRATION_BINS: Final = Bins("log", 0.1, 1e4, 500)
EFFECT_BINS: Final = Bins("linear", 0.0, 1.0, 500)
TRACES: Final = ("cp", "ce", "dissociation")
PERCENTILES: Final = (0.05, 0.5, 0.95)


@dataclass(frozen=True)
class OutcomeSpec:
    """A per-patient outcome: label, unit, kind and the bins of its histogram."""

    label: str
    unit: str
    kind: Literal["continuous", "binary", "count"]
    bins: Bins | None = None
    censored: bool = False
    description: str = ""


def _outcome_specs(settings: SessionSettings) -> dict[str, OutcomeSpec]:
    h = settings.grid.horizon_min
    # One bin per time step: times are multiples of the step, so bins cannot be finer.
    minutes = Bins("linear", 0.0, h, settings.grid.n_steps)
    specs: dict[str, OutcomeSpec] = {
        "peak_cp_ng_per_ml": OutcomeSpec(
            "Peak plasma concentration", "ng/mL", "continuous", Bins("linear", 0.0, 3000.0, 1500)
        ),
        "peak_ce_ng_per_ml": OutcomeSpec(
            "Peak effect-site concentration",
            "ng/mL",
            "continuous",
            Bins("linear", 0.0, 3000.0, 1500),
        ),
        "peak_dissociation": OutcomeSpec(
            "Peak predicted dissociation", "fraction", "continuous", Bins("linear", 0, 1, 200)
        ),
        "time_above_dissociation_min": OutcomeSpec(
            f"Time with predicted dissociation > {settings.dissociation_threshold:g}",
            "min",
            "continuous",
            minutes,
        ),
        "infusion_end_min": OutcomeSpec(
            "End of infusion", "min", "continuous", minutes, censored=True
        ),
        "discharge_ready_after_end_min": OutcomeSpec(
            "Discharge readiness after end of infusion",
            "min",
            "continuous",
            minutes,
            censored=True,
            description="NaN (censored) when not ready within the horizon",
        ),
        "dosing_weight_kg": OutcomeSpec(
            "Dosing weight", "kg", "continuous", Bins("linear", 0.0, 250.0, 500)
        ),
        "total_dose_mg": OutcomeSpec(
            "Total dose given", "mg", "continuous", Bins("linear", 0, 500, 1000)
        ),
        "ordered_dose_mg": OutcomeSpec(
            "Ordered dose", "mg", "continuous", Bins("linear", 0, 500, 1000)
        ),
        "max_sbp_mm_hg": OutcomeSpec(
            "Highest SBP reading", "mmHg", "continuous", Bins("linear", 40, 300, 260)
        ),
        "max_dbp_mm_hg": OutcomeSpec(
            "Highest DBP reading", "mmHg", "continuous", Bins("linear", 20, 200, 180)
        ),
        "max_hr_per_min": OutcomeSpec(
            "Highest HR at cuff readings", "/min", "continuous", Bins("linear", 20, 220, 200)
        ),
        "n_cuff_readings": OutcomeSpec("Cuff readings until discharge", "count", "count"),
        "n_slowdowns": OutcomeSpec("Rate reductions by the rules", "count", "count"),
        "n_pauses": OutcomeSpec("Pauses by the rules", "count", "count"),
        "stopped_early": OutcomeSpec("Infusion stopped before the full dose", "share", "binary"),
        "need_help": OutcomeSpec("'I need help' at a check-in", "share", "binary"),
    }
    for rule in settings.alarm_rules:
        specs[f"alarm_{rule.spec.code}"] = OutcomeSpec(
            f"Alarm {rule.spec.code}",
            "share",
            "binary",
            description=f"{rule.spec.message} ({rule.spec.priority.value} priority)",
        )
    return specs


def _bp_alarm_codes(settings: SessionSettings) -> list[str]:
    return [r.spec.code for r in settings.alarm_rules if r.vital.value in ("sbp", "dbp")]


#: Per-session outcomes summarised for every session of a course (besides the BP alarms).
SESSION_KEYS: Final = (
    "dose_mg_per_kg",
    "total_dose_mg",
    "peak_cp_ng_per_ml",
    "peak_ce_ng_per_ml",
    "peak_dissociation",
    "cadss_score",
    "max_sbp_mm_hg",
    "max_dbp_mm_hg",
    "stopped_early",
    "tolerated",
    "stop_threshold_crossed",
)


def _session_specs(settings: SessionSettings) -> dict[str, OutcomeSpec]:
    base = _outcome_specs(settings)
    extra = {
        "dose_mg_per_kg": OutcomeSpec(
            "Session dose", "mg/kg", "continuous", Bins("linear", 0.0, 2.0, 2000)
        ),
        "cadss_score": OutcomeSpec(
            "CADSS total (assumed mapping of predicted dissociation)",
            "points",
            "continuous",
            Bins("linear", 0.0, 92.0, 920),
        ),
        "tolerated": OutcomeSpec(
            "Session tolerated", "share", "binary", description=TOLERATED_DEFINITION
        ),
        "stop_threshold_crossed": OutcomeSpec(
            "Stop threshold crossed", "share", "binary", description=STOP_THRESHOLD_DEFINITION
        ),
    }
    keys = [*SESSION_KEYS, *(f"alarm_{c}" for c in _bp_alarm_codes(settings))]
    return {k: extra[k] if k in extra else base[k] for k in keys}


def _course_specs(settings: SessionSettings) -> dict[str, OutcomeSpec]:
    specs = {
        "max_dose_mg_per_kg": OutcomeSpec(
            "Highest session dose", "mg/kg", "continuous", Bins("linear", 0.0, 2.0, 2000)
        ),
        "reached_ceiling": OutcomeSpec(
            "Reached the titration ceiling",
            "share",
            "binary",
            description="titrating protocols only",
        ),
        "cumulative_dose_mg": OutcomeSpec(
            "Cumulative dose given over the course",
            "mg",
            "continuous",
            Bins("log", 1.0, 1e5, 1000),
        ),
        "cumulative_dose_mg_per_kg": OutcomeSpec(
            "Cumulative dose given per kg dosing weight",
            "mg/kg",
            "continuous",
            Bins("log", 0.01, 1000.0, 1000),
        ),
        "any_stop_threshold_crossed": OutcomeSpec(
            "Stop threshold crossed in any session", "share", "binary"
        ),
        "any_stopped_early": OutcomeSpec(
            "Infusion stopped early in any session", "share", "binary"
        ),
        "any_not_tolerated": OutcomeSpec("Any session not tolerated", "share", "binary"),
    }
    for code in _bp_alarm_codes(settings):
        specs[f"any_alarm_{code}"] = OutcomeSpec(f"Alarm {code} in any session", "share", "binary")
    return specs


@dataclass(frozen=True)
class TrialSpec:
    """A whole trial: population, arms, session settings, size and chunking."""

    population: PopulationSpec
    arms: tuple[TrialArm, ...]
    n_patients: int
    settings: SessionSettings = field(default_factory=SessionSettings)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    course: CourseSettings = field(default_factory=CourseSettings)

    def __post_init__(self) -> None:
        if not 1 <= self.n_patients <= MAX_PATIENTS:
            raise InputError(f"n must lie in 1-{MAX_PATIENTS}, got {self.n_patients}", field="n")
        if not 1 <= self.chunk_size <= 10_000_000:
            raise InputError(
                f"chunk_size must lie in 1-10000000, got {self.chunk_size}", field="chunk_size"
            )
        if not self.arms:
            raise InputError("a trial needs at least one protocol", field="protocol")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise InputError(f"protocol names must be distinct, got {names}", field="protocol")
        for arm in self.arms:
            # Resolve each order once for a nominal patient so that a dose time off the grid or
            # beyond the horizon fails here, before any work starts.
            Plan.build(arm, np.array([70.0]), self.settings.grid)

    def chunks(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every chunk, in order."""
        n, c = self.n_patients, self.chunk_size
        return [(s, min(s + c, n)) for s in range(0, n, c)]

    @property
    def outcomes(self) -> dict[str, OutcomeSpec]:
        """The per-patient outcomes of one session (summarised in full for session 1)."""
        return _outcome_specs(self.settings)

    @property
    def session_outcomes(self) -> dict[str, OutcomeSpec]:
        """The outcomes summarised for every session of the course."""
        return _session_specs(self.settings)

    @property
    def course_outcomes(self) -> dict[str, OutcomeSpec]:
        """The per-patient outcomes of a whole course."""
        return _course_specs(self.settings)

    def sessions(self, arm: TrialArm) -> int:
        """Sessions of ``arm``'s course in this trial."""
        return self.course.sessions_for(arm)


@dataclass
class ArmChunk:
    """One arm's results for one chunk: per-session outcomes (index 0: session 1), per-patient
    course outcomes, and session 1's trace counts."""

    sessions: list[dict[str, npt.NDArray[np.generic]]]
    course: dict[str, npt.NDArray[np.generic]]
    counts: dict[str, npt.NDArray[np.int32]]

    @property
    def outcomes(self) -> dict[str, npt.NDArray[np.generic]]:
        """Session 1's per-patient outcomes."""
        return self.sessions[0]


@dataclass
class ChunkResult:
    """Everything a chunk sends back: covariates, and per arm outcomes and trace counts."""

    start: int
    stop: int
    covariates: dict[str, npt.NDArray[np.generic]]
    arms: dict[str, ArmChunk]


def run_chunk(spec: TrialSpec, start: int, stop: int) -> ChunkResult:
    """Simulate patients ``start .. stop-1`` under every arm, every session (any worker)."""
    settings = spec.settings
    names = [a.name for a in spec.arms]
    parts: dict[str, list[list[dict[str, npt.NDArray[np.generic]]]]] = {n: [] for n in names}
    course_parts: dict[str, list[dict[str, npt.NDArray[np.generic]]]] = {n: [] for n in names}
    counts: dict[str, dict[str, npt.NDArray[np.int32]]] = {n: {} for n in names}
    covs: list[dict[str, npt.NDArray[np.generic]]] = []
    stop_codes = stop_alarm_codes(settings.alarm_rules)
    for a in range(start, stop, SUB_BLOCK):
        b = min(a + SUB_BLOCK, stop)
        cohort = Cohort.generate(spec.population, a, b)
        # Session k's noise is shared by every arm (common random numbers), drawn once.
        noises: dict[int, TrialNoise] = {}
        covs.append(_covariates(cohort))
        for arm in spec.arms:
            sessions: list[dict[str, npt.NDArray[np.generic]]] = []
            for k in range(1, spec.sessions(arm) + 1):
                if k not in noises:
                    noises[k] = TrialNoise.generate(
                        spec.population.seed, a, b, settings.n_slots, session_number=k
                    )
                if k == 1:
                    first = math.nan if arm.dose_mg_per_kg is None else arm.dose_mg_per_kg
                    dose = np.full(b - a, first)
                else:
                    dose = np.asarray(sessions[-1]["next_dose_mg_per_kg"], dtype=np.float64)
                scale = None
                if arm.titration is not None and arm.dose_mg_per_kg is not None:
                    scale = dose / arm.dose_mg_per_kg
                res = run_arm(cohort, arm, settings, noises[k], scale)
                if k == 1:
                    _add_trace_counts(counts[arm.name], res)
                sessions.append(_session_row(spec, arm, k, dose, res.outcomes, stop_codes))
            parts[arm.name].append(sessions)
            course_parts[arm.name].append(_course_row(arm, sessions))
    return ChunkResult(
        start=start,
        stop=stop,
        covariates=_concat(covs),
        arms={
            name: ArmChunk(
                sessions=[
                    _concat([blk[k] for blk in parts[name]]) for k in range(len(parts[name][0]))
                ],
                course=_concat(course_parts[name]),
                counts=counts[name],
            )
            for name in names
        },
    )


def _any(a: npt.NDArray[np.generic]) -> npt.NDArray[np.bool_]:
    return np.asarray(np.asarray(a, dtype=np.bool_).any(axis=0), dtype=np.bool_)


def _all(a: npt.NDArray[np.generic]) -> npt.NDArray[np.bool_]:
    return np.asarray(np.asarray(a, dtype=np.bool_).all(axis=0), dtype=np.bool_)


def _add_trace_counts(acc: dict[str, npt.NDArray[np.int32]], res: ArmResult) -> None:
    traces = {"cp": res.cp_ng_per_ml, "ce": res.ce_ng_per_ml, "dissociation": res.dissociation}
    for key, values in traces.items():
        bins = EFFECT_BINS if key == "dissociation" else CONCENTRATION_BINS
        c = time_counts(bins, values)
        acc[key] = c if key not in acc else acc[key] + c


def _session_row(
    spec: TrialSpec,
    arm: TrialArm,
    session_number: int,
    dose_mg_per_kg: FloatArray,
    outcomes: dict[str, npt.NDArray[np.generic]],
    stop_codes: Sequence[str],
) -> dict[str, npt.NDArray[np.generic]]:
    """A session's outcomes plus what the between-session rules saw and decided."""
    n = dose_mg_per_kg.shape[0]
    inputs = titration_inputs(outcomes, stop_codes, spec.course.cadss)
    response = spec.course.response.response_pct(session_number, n)
    row: dict[str, npt.NDArray[np.generic]] = {
        "session_number": np.full(n, session_number, dtype=np.int64),
        "dose_mg_per_kg": dose_mg_per_kg,
    }
    row.update(outcomes)
    row.update(
        {
            "cadss_score": inputs.cadss,
            "tolerated": inputs.tolerated,
            "stop_threshold_crossed": inputs.stop_threshold_crossed,
            "response_pct": response,
        }
    )
    if arm.dose_mg_per_kg is None:
        # An order in mg, not mg/kg: no per-kg dose to titrate; the rules are not applied.
        row["titration_action"] = np.zeros(n, dtype=np.int64)
        row["titration_rule"] = np.full(n, "none", dtype=object)
        row["next_dose_mg_per_kg"] = dose_mg_per_kg
        return row
    decision = next_doses(arm, dose_mg_per_kg, session_number, inputs, response)
    ids = np.array([r.id for r in arm.between_sessions] + ["none"], dtype=object)
    row["titration_action"] = decision.action_code
    row["titration_rule"] = ids[decision.rule_index]
    row["next_dose_mg_per_kg"] = decision.next_mg_per_kg
    return row


def _course_row(
    arm: TrialArm, sessions: list[dict[str, npt.NDArray[np.generic]]]
) -> dict[str, npt.NDArray[np.generic]]:
    """Per-patient outcomes of a whole course from its session rows."""

    def stack(key: str) -> npt.NDArray[np.generic]:
        return np.stack([np.asarray(s[key]) for s in sessions])

    dose = stack("dose_mg_per_kg").astype(np.float64)
    given = stack("total_dose_mg").astype(np.float64)
    weight = stack("dosing_weight_kg").astype(np.float64)
    max_dose = dose.max(axis=0)
    if arm.titration is None:
        ceiling = np.full(max_dose.shape[0], np.nan)
    else:
        reached = max_dose >= arm.titration.ceiling_mg_per_kg - 1e-9
        ceiling = reached.astype(np.float64)
    out: dict[str, npt.NDArray[np.generic]] = {
        "max_dose_mg_per_kg": max_dose,
        "reached_ceiling": ceiling,
        "cumulative_dose_mg": given.sum(axis=0),
        "cumulative_dose_mg_per_kg": (given / weight).sum(axis=0),
        "any_stop_threshold_crossed": _any(stack("stop_threshold_crossed")),
        "any_stopped_early": _any(stack("stopped_early")),
        "any_not_tolerated": ~_all(stack("tolerated")),
    }
    for key in sessions[0]:
        if key.startswith("alarm_"):
            out[f"any_{key}"] = _any(stack(key))
    return out


def _concat(parts: list[dict[str, npt.NDArray[np.generic]]]) -> dict[str, npt.NDArray[np.generic]]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _covariates(cohort: Cohort) -> dict[str, npt.NDArray[np.generic]]:
    pop = cohort.population
    return {
        "patient_index": pop.index,
        "female": pop.female,
        "age_y": pop.age_y,
        "height_cm": pop.height_cm,
        "weight_kg": pop.weight_kg,
        "bmi_kg_per_m2": pop.bmi_kg_per_m2,
        "sbp0_mm_hg": cohort.sbp0_mm_hg,
        "dbp0_mm_hg": cohort.dbp0_mm_hg,
        "hr0_per_min": cohort.hr0_per_min,
    }


# --- executors ------------------------------------------------------------------------------


def _sequential(spec: TrialSpec) -> Iterator[ChunkResult]:
    for start, stop in spec.chunks():
        yield run_chunk(spec, start, stop)


def _in_order(
    submit: Callable[[int, int], Any],
    result: Callable[[Any], ChunkResult],
    spec: TrialSpec,
    window: int,
) -> Iterator[ChunkResult]:
    # Submission order is chunk order; waiting on the oldest keeps results in order and at most
    # ``window`` chunks in flight (bounded memory on both sides).
    pending: deque[Any] = deque()
    for start, stop in spec.chunks():
        pending.append(submit(start, stop))
        if len(pending) >= window:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


def _process_pool(spec: TrialSpec, workers: int) -> Iterator[ChunkResult]:
    # "spawn": the parent may run a progress-bar thread, and forking a threaded process is unsafe.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:

        def submit(start: int, stop: int) -> Future[ChunkResult]:
            return pool.submit(run_chunk, spec, start, stop)

        def result(fut: Future[ChunkResult]) -> ChunkResult:
            return fut.result()

        yield from _in_order(submit, result, spec, 2 * workers)


def _dask(spec: TrialSpec, address: str, timeout_s: float) -> Iterator[ChunkResult]:
    # Imported here, not at module import: dask is needed only with a scheduler, and importing it
    # costs a second. Typed as Any: distributed ships no complete type information.
    try:
        distributed: Any = importlib.import_module("distributed")
    except ImportError as exc:  # pragma: no cover - dask is a declared dependency
        raise InputError(
            "--scheduler needs dask.distributed; install it with pip install 'dask[distributed]'",
            field="scheduler",
        ) from exc
    try:
        client = distributed.Client(address, set_as_default=False, timeout=f"{timeout_s}s")
    except OSError as exc:
        raise InputError(
            f"cannot reach the Dask scheduler at {address!r} ({exc}); start one with "
            "'dask scheduler' or check the address",
            field="scheduler",
        ) from exc
    try:
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        [spec_future] = client.scatter([spec], broadcast=True)

        def submit(start: int, stop: int) -> Any:
            return client.submit(run_chunk, spec_future, start, stop, pure=False)

        def result(fut: Any) -> ChunkResult:
            res = fut.result()
            assert isinstance(res, ChunkResult)
            return res

        yield from _in_order(submit, result, spec, 2 * workers)
    finally:
        client.close()


# --- accumulation -----------------------------------------------------------------------------


@dataclass
class _Table:
    """Moments and histograms of a set of per-patient outcomes."""

    specs: dict[str, OutcomeSpec]
    moments: dict[str, Moments] = field(init=False)
    histograms: dict[str, Histogram] = field(init=False)

    def __post_init__(self) -> None:
        self.moments = {k: Moments() for k in self.specs}
        self.histograms = {k: Histogram(o.bins) for k, o in self.specs.items() if o.bins}

    def add(self, values: dict[str, npt.NDArray[np.generic]]) -> None:
        for key in self.specs:
            v = np.asarray(values[key], dtype=np.float64)
            self.moments[key].add(v)
            if key in self.histograms:
                self.histograms[key].add(v)

    def stats(self) -> dict[str, Any]:
        return {
            k: _stats(o, self.moments[k], self.histograms.get(k)) for k, o in self.specs.items()
        }


@dataclass
class _Paired:
    """Per-patient differences b - a of a set of outcomes."""

    keys: tuple[str, ...]
    moments: dict[str, Moments] = field(init=False)

    def __post_init__(self) -> None:
        self.moments = {k: Moments() for k in self.keys}

    def add(
        self, a: dict[str, npt.NDArray[np.generic]], b: dict[str, npt.NDArray[np.generic]]
    ) -> None:
        for key, m in self.moments.items():
            m.add(np.asarray(b[key], dtype=np.float64) - np.asarray(a[key], dtype=np.float64))

    def out(self) -> dict[str, Any]:
        rows = {}
        for key, m in self.moments.items():
            lo, hi = m.mean_ci95()
            rows[key] = {"n": m.n, "mean_difference": m.mean, "ci95": [lo, hi], "sd": m.sd}
        return rows


def _add_levels(levels: dict[float, int], dose_mg_per_kg: npt.NDArray[np.generic]) -> None:
    """Count doses per level (mg/kg rounded as the dosing package rounds; NaN left out)."""
    d = np.asarray(dose_mg_per_kg, dtype=np.float64)
    values, counts = np.unique(np.round(d[~np.isnan(d)], 6), return_counts=True)
    for v, c in zip(values.tolist(), counts.tolist(), strict=True):
        levels[v] = levels.get(v, 0) + int(c)


def _levels_out(levels: dict[float, int]) -> list[dict[str, Any]]:
    total = sum(levels.values())
    return [
        {"mg_per_kg": v, "count": c, "share": c / total if total else math.nan}
        for v, c in sorted(levels.items())
    ]


@dataclass
class _CourseAccumulator:
    """Per-session and per-course statistics of one arm."""

    sessions: list[_Table]
    dose_levels: list[dict[float, int]]
    course: _Table
    max_levels: dict[float, int] = field(default_factory=dict)

    def add(self, chunk: ArmChunk) -> None:
        for table, levels, values in zip(
            self.sessions, self.dose_levels, chunk.sessions, strict=True
        ):
            table.add(values)
            _add_levels(levels, values["dose_mg_per_kg"])
        self.course.add(chunk.course)
        _add_levels(self.max_levels, chunk.course["max_dose_mg_per_kg"])


@dataclass
class _ArmAccumulator:
    moments: dict[str, Moments]
    histograms: dict[str, Histogram]
    traces: dict[str, TimeHistogram]


@dataclass
class TrialAccumulator:
    """Merges chunk results (in chunk order) into the trial's summary statistics."""

    spec: TrialSpec
    arms: dict[str, _ArmAccumulator] = field(init=False)
    paired: dict[tuple[str, str], dict[str, Moments]] = field(init=False)
    courses: dict[str, _CourseAccumulator] = field(init=False)
    paired_sessions: dict[tuple[str, str], list[_Paired]] = field(init=False)
    paired_courses: dict[tuple[str, str], _Paired] = field(init=False)
    n_done: int = 0

    def __post_init__(self) -> None:
        spec = self.spec
        s_specs, c_specs = spec.session_outcomes, spec.course_outcomes
        self.courses = {
            a.name: _CourseAccumulator(
                sessions=[_Table(s_specs) for _ in range(spec.sessions(a))],
                dose_levels=[{} for _ in range(spec.sessions(a))],
                course=_Table(c_specs),
            )
            for a in spec.arms
        }
        arms = spec.arms
        pairs = [(arms[i], arms[j]) for i in range(len(arms)) for j in range(i + 1, len(arms))]
        self.paired_sessions = {
            (a.name, b.name): [
                _Paired(tuple(s_specs)) for _ in range(min(spec.sessions(a), spec.sessions(b)))
            ]
            for a, b in pairs
        }
        self.paired_courses = {(a.name, b.name): _Paired(tuple(c_specs)) for a, b in pairs}
        outcomes = self.spec.outcomes
        n_t = self.spec.settings.grid.n_times
        self.arms = {
            a.name: _ArmAccumulator(
                moments={k: Moments() for k in outcomes},
                histograms={
                    k: Histogram(o.bins) for k, o in outcomes.items() if o.bins is not None
                },
                traces={
                    key: TimeHistogram(
                        EFFECT_BINS if key == "dissociation" else CONCENTRATION_BINS, n_t
                    )
                    for key in TRACES
                },
            )
            for a in self.spec.arms
        }
        names = [a.name for a in self.spec.arms]
        self.paired = {
            (names[i], names[j]): {k: Moments() for k in outcomes}
            for i in range(len(names))
            for j in range(i + 1, len(names))
        }

    def add(self, chunk: ChunkResult) -> None:
        """Fold one chunk in (call in chunk order for bitwise-reproducible sums)."""
        outcome_keys = list(self.spec.outcomes)
        for name, arm_chunk in chunk.arms.items():
            acc = self.arms[name]
            first = arm_chunk.outcomes
            for key in outcome_keys:
                v = np.asarray(first[key], dtype=np.float64)
                acc.moments[key].add(v)
                if key in acc.histograms:
                    acc.histograms[key].add(v)
            for key, c in arm_chunk.counts.items():
                acc.traces[key].add_counts(c)
            self.courses[name].add(arm_chunk)
        for (a, b), moments in self.paired.items():
            oa, ob = chunk.arms[a].outcomes, chunk.arms[b].outcomes
            for key, m in moments.items():
                m.add(np.asarray(ob[key], dtype=np.float64) - np.asarray(oa[key], dtype=np.float64))
            ca, cb = chunk.arms[a], chunk.arms[b]
            for k, paired in enumerate(self.paired_sessions[(a, b)]):
                paired.add(ca.sessions[k], cb.sessions[k])
            self.paired_courses[(a, b)].add(ca.course, cb.course)
        self.n_done += chunk.stop - chunk.start

    def summary(self) -> dict[str, Any]:
        """The trial's results as plain JSON-compatible data."""
        spec = self.spec
        outcomes = spec.outcomes
        ps = np.array(PERCENTILES)
        times = spec.settings.grid.times_min()
        arms_out: dict[str, Any] = {}
        for name, acc in self.arms.items():
            table = {
                key: _stats(o, acc.moments[key], acc.histograms.get(key))
                for key, o in outcomes.items()
            }
            vpc = {"times_min": times.tolist()}
            for key, th in acc.traces.items():
                q = th.quantiles(ps)
                vpc[key] = {f"p{round(p * 100)}": q[i].tolist() for i, p in enumerate(PERCENTILES)}
            hists = {
                key: {
                    "edges": h.bins.edges().tolist(),
                    "counts": h.counts[1:-1].tolist(),
                    "underflow": int(h.counts[0]),
                    "overflow": int(h.counts[-1]),
                    "missing": h.n_nan,
                }
                for key, h in acc.histograms.items()
            }
            arms_out[name] = {"outcomes": table, "vpc": vpc, "histograms": hists}
        paired_out = []
        for (a, b), moments in self.paired.items():
            rows = {}
            for key, m in moments.items():
                lo, hi = m.mean_ci95()
                rows[key] = {"n": m.n, "mean_difference": m.mean, "ci95": [lo, hi], "sd": m.sd}
            paired_out.append({"a": a, "b": b, "difference": "b - a", "outcomes": rows})
        clean: dict[str, Any] = _json_clean(
            {
                "meta": _meta(spec),
                "outcome_specs": {
                    k: {
                        "label": o.label,
                        "unit": o.unit,
                        "kind": o.kind,
                        "description": o.description,
                    }
                    for k, o in outcomes.items()
                },
                "arms": arms_out,
                "paired": paired_out,
                "course": self._course_summary(),
            }
        )
        return clean

    def _course_summary(self) -> dict[str, Any]:
        spec = self.spec
        arms: dict[str, Any] = {}
        for arm in spec.arms:
            acc = self.courses[arm.name]
            per_session = [
                {
                    "session_number": k + 1,
                    "dose_levels": _levels_out(acc.dose_levels[k]),
                    "outcomes": table.stats(),
                }
                for k, table in enumerate(acc.sessions)
            ]
            n_sessions = spec.sessions(arm)
            totals: dict[float, int] = {}
            for levels in acc.dose_levels:
                for v, c in levels.items():
                    totals[v] = totals.get(v, 0) + c
            n_pat = max(self.n_done, 1)
            sessions_at_dose = [
                {
                    "mg_per_kg": v,
                    "mean_sessions_per_patient": c / n_pat,
                    "share_of_sessions": c / (n_pat * n_sessions),
                }
                for v, c in sorted(totals.items())
            ]
            t = arm.titration
            arms[arm.name] = {
                "sessions": n_sessions,
                "start_mg_per_kg": arm.dose_mg_per_kg,
                "titration": None
                if t is None
                else {
                    "start_mg_per_kg": t.start_mg_per_kg,
                    "step_mg_per_kg": t.step_mg_per_kg,
                    "ceiling_mg_per_kg": t.ceiling_mg_per_kg,
                    "floor_mg_per_kg": t.floor_mg_per_kg,
                },
                "between_session_rules": [
                    {"id": r.id, "action": r.action.value, "when": dict(r.when)}
                    for r in arm.between_sessions
                ],
                "per_session": per_session,
                "per_course": {
                    "outcomes": acc.course.stats(),
                    "max_dose_levels": _levels_out(acc.max_levels),
                    "sessions_at_dose": sessions_at_dose,
                },
            }
        paired = [
            {
                "a": a,
                "b": b,
                "difference": "b - a",
                "per_session": [
                    {"session_number": k + 1, "outcomes": p.out()}
                    for k, p in enumerate(self.paired_sessions[(a, b)])
                ],
                "per_course": self.paired_courses[(a, b)].out(),
            }
            for (a, b) in self.paired_courses
        ]
        course = spec.course
        return {
            "sessions_override": course.sessions,
            "response_assumption": {
                "label": course.response.label,
                "text": course.response.describe(),
            },
            "cadss_mapping": {
                "points_per_fraction": course.cadss.points_per_fraction,
                "text": course.cadss.describe(),
            },
            "tolerated_definition": TOLERATED_DEFINITION,
            "stop_threshold_definition": STOP_THRESHOLD_DEFINITION,
            "session_outcome_specs": _spec_dict(spec.session_outcomes),
            "course_outcome_specs": _spec_dict(spec.course_outcomes),
            "arms": arms,
            "paired": paired,
        }


def _spec_dict(specs: dict[str, OutcomeSpec]) -> dict[str, Any]:
    return {
        k: {"label": o.label, "unit": o.unit, "kind": o.kind, "description": o.description}
        for k, o in specs.items()
    }


def _stats(o: OutcomeSpec, m: Moments, h: Histogram | None) -> dict[str, Any]:
    n_total = m.n + m.n_nan
    if o.kind == "binary":
        k = round(m.total)
        lo, hi = wilson_ci95(k, m.n)
        return {"n": m.n, "count": k, "proportion": m.mean, "ci95": [lo, hi]}
    lo, hi = m.mean_ci95()
    out: dict[str, Any] = {
        "n": n_total,
        "n_missing": m.n_nan,
        "mean": m.mean,
        "sd": m.sd,
        "mean_ci95": [lo, hi],
    }
    if h is not None:
        q = h.quantiles(np.array(PERCENTILES), nan_as_overflow=o.censored)
        out["p5"], out["median"], out["p95"] = (float(x) for x in q)
        out["median_ci95"] = list(quantile_ci95(h, 0.5, nan_as_overflow=o.censored))
    return out


def _meta(spec: TrialSpec) -> dict[str, Any]:
    pop = spec.population
    st = spec.settings
    return {
        "n_patients": spec.n_patients,
        "seed": pop.seed,
        "chunk_size": spec.chunk_size,
        "model": {"id": pop.model.id, "name": pop.model.name, "citation": pop.model.citation},
        "pk_variability": pop.pk_variability.source,
        "pd_variability": pop.pd_iiv.source,
        "arms": [
            {
                "name": a.name,
                "doses": list(a.doses),
                "dosing_weight": a.dosing_weight_rule.describe(),
                "rules": a.rules.description,
                "source": a.source,
                "max_infusion_factor": a.max_infusion_factor,
                "vitals_during_infusion_every_min": a.vitals_during_infusion_every_min,
                "vitals_after_infusion_every_min": a.vitals_after_infusion_every_min,
                "min_observation_after_infusion_min": a.min_observation_after_infusion_min,
            }
            for a in spec.arms
        ],
        "grid": {"horizon_min": st.grid.horizon_min, "dt_min": st.grid.dt_min},
        "dissociation_threshold": st.dissociation_threshold,
        "alarms": [
            {"code": r.spec.code, "message": r.spec.message, "source": r.spec.source}
            for r in st.alarm_rules
        ],
        "discharge": {
            "profile": st.discharge.profile,
            "min_observation_min": st.discharge.min_observation_min,
            "max_dissociation": st.discharge.max_dissociation,
            "sbp_tolerance_mm_hg": st.discharge.sbp_tolerance_mm_hg,
            "dbp_tolerance_mm_hg": st.discharge.dbp_tolerance_mm_hg,
            "hr_tolerance_pct": st.discharge.hr_tolerance_pct,
        },
        "course": {
            "sessions": {a.name: spec.sessions(a) for a in spec.arms},
            "response": spec.course.response.label,
            "cadss_points_per_fraction": spec.course.cadss.points_per_fraction,
        },
        "assumptions": [
            spec.course.response.describe(),
            spec.course.cadss.describe(),
            *ASSUMPTIONS,
            *COURSE_ASSUMPTIONS,
        ],
    }


#: Stated in every report.
ASSUMPTIONS: Final = (
    "Within-session rule suggestions (the protocol's own rules, evaluated by the dosing "
    "package) are applied at the reading that triggers them, exactly as suggested, as if the "
    "clinician confirmed them at once; the most severe of simultaneous suggestions wins.",
    "A paused infusion is re-checked at the rule's re-check time and resumes at its previous "
    "rate when no rule suggests a pause or stop any more.",
    "Slowing the pump stretches the ordered profile in time (the full dose is still given) up to "
    "the arm's maximum infusion time; a pause holds it.",
    "Dissociation, BP and HR rises are predicted from the effect-site concentration with the "
    "shared PD models scaled by individual multipliers; their variability is assumed.",
    "Alarm shares apply the clinic's alarm rules to cuff-time readings of SBP, DBP and HR (the "
    "protocol's cadence, with physiological and measurement noise, no motion artefacts) until "
    "discharge readiness; 'sustained' HR rules need consecutive readings over the sustain time.",
    "Discharge readiness is predicted from PK/PD only; bedside criteria (escort, scores) are not "
    "modelled.",
)


#: Stated in every report (a one-session trial included).
COURSE_ASSUMPTIONS: Final = (
    "Courses: every session of a patient uses the same virtual patient (covariates, PK and PD "
    "parameters); no between-session (inter-occasion) variability is modelled, for lack of a "
    "published estimate in the reference. Sessions are days apart: each starts drug-free (no "
    "carry-over). Cuff and check-in noise is drawn anew for each session.",
    "Between-session doses are chosen by the protocol's own rules (ketaflow.dosing."
    "decide_next_dose_mg_per_kg) exactly as suggested, as if the clinician confirmed them. "
    + TOLERATED_DEFINITION
    + " "
    + STOP_THRESHOLD_DEFINITION,
    "A titrated session scales the protocol's per-kg order by the session dose (same duration "
    "and profile); the drug library's per-session total-mg limits are not applied.",
)


def _json_clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# --- per-patient output -------------------------------------------------------------------------


class PatientWriter:
    """Per-patient rows (one per patient, arm and session) to Parquet, or CSV without pyarrow."""

    def __init__(self, out_dir: Path, *, fmt: Literal["auto", "parquet", "csv"] = "auto") -> None:
        self.out_dir = out_dir
        self._writer: Any = None
        self._csv: Any = None
        use_parquet = fmt == "parquet"
        if fmt == "auto":
            use_parquet = importlib.util.find_spec("pyarrow") is not None
        self.format: Literal["parquet", "csv"] = "parquet" if use_parquet else "csv"
        self.path = out_dir / f"patients.{self.format}"

    def write(self, chunk: ChunkResult) -> None:
        """Append a chunk's rows: one per patient and session, arms in trial order, then
        sessions in order, patients in index order."""
        for name, arm_chunk in chunk.arms.items():
            for session in arm_chunk.sessions:
                columns: dict[str, npt.NDArray[np.generic]] = {
                    "arm": np.full(chunk.stop - chunk.start, name, dtype=object),
                    "session_number": session["session_number"],
                }
                columns.update(chunk.covariates)
                columns.update(session)
                if self.format == "parquet":
                    self._write_parquet(columns)
                else:
                    self._write_csv(columns)

    def _write_parquet(self, columns: dict[str, npt.NDArray[np.generic]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({k: pa.array(v) for k, v in columns.items()})
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table)

    def _write_csv(self, columns: dict[str, npt.NDArray[np.generic]]) -> None:
        import csv

        if self._csv is None:
            handle = self.path.open("w", newline="", encoding="utf-8")
            self._csv = (handle, csv.writer(handle))
            self._csv[1].writerow(list(columns))
        n = len(next(iter(columns.values())))
        cols = [
            [repr(float(x)) if isinstance(x, float | np.floating) else _csv_cell(x) for x in v]
            for v in columns.values()
        ]
        self._csv[1].writerows(zip(*cols, strict=True) if n else [])

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._csv is not None:
            self._csv[0].close()
            self._csv = None


def _csv_cell(x: Any) -> str:
    if isinstance(x, bool | np.bool_):
        return "true" if x else "false"
    return str(x)


# --- the run ------------------------------------------------------------------------------------


@dataclass
class TrialResult:
    """What a run produced: the summary and where the files are."""

    summary: dict[str, Any]
    elapsed_s: float
    files: dict[str, Path]


def run_trial(
    spec: TrialSpec,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    out_dir: Path | None = None,
    write_patients: bool = True,
    patient_format: Literal["auto", "parquet", "csv"] = "auto",
    progress: bool = False,
    report: bool = True,
    scheduler_timeout_s: float = 10.0,
) -> TrialResult:
    """Run ``spec`` locally (``workers`` processes) or on the Dask scheduler at ``scheduler``.

    With ``out_dir`` the per-patient rows (``patients.parquet``, or ``.csv`` without pyarrow),
    ``summary.json`` and ``report.html`` are written there.
    """
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}", field="workers")
    started = time.perf_counter()
    files: dict[str, Path] = {}
    writer: PatientWriter | None = None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create output directory {str(out_dir)!r}: {exc.strerror}", field="out"
            ) from exc
        if write_patients:
            writer = PatientWriter(out_dir, fmt=patient_format)
    if scheduler is not None:
        results = _dask(spec, scheduler, scheduler_timeout_s)
    elif workers > 1 and len(spec.chunks()) > 1:
        results = _process_pool(spec, workers)
    else:
        results = _sequential(spec)
    acc = TrialAccumulator(spec)
    bar = _progress_bar(spec.n_patients) if progress else None
    try:
        for chunk in results:
            acc.add(chunk)
            if writer is not None:
                writer.write(chunk)
            if bar is not None:
                bar[0].advance(bar[1], chunk.stop - chunk.start)
    finally:
        if bar is not None:
            bar[0].stop()
        if writer is not None:
            writer.close()
    summary = acc.summary()
    elapsed = time.perf_counter() - started
    if out_dir is not None:
        if writer is not None:
            files["patients"] = writer.path
        path = out_dir / "summary.json"
        path.write_text(json.dumps(summary, indent=1, allow_nan=False), encoding="utf-8")
        files["summary"] = path
        if report:
            from ketaflow.sim.report import render_report

            html = out_dir / "report.html"
            html.write_text(render_report(summary), encoding="utf-8")
            files["report"] = html
    return TrialResult(summary=summary, elapsed_s=elapsed, files=files)


def _progress_bar(total: int) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("virtual patients"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    progress.start()
    return progress, progress.add_task("trial", total=total)


def default_workers() -> int:
    """CPUs this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not on Linux
        return max(os.cpu_count() or 1, 1)


def make_spec(
    protocols: Sequence[TrialArm],
    *,
    n: int,
    seed: int | None,
    model: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    settings: SessionSettings | None = None,
    course: CourseSettings | None = None,
) -> TrialSpec:
    """Convenience constructor used by the CLI and the benchmark."""
    return TrialSpec(
        population=PopulationSpec.create(seed=seed, model=model),
        arms=tuple(protocols),
        n_patients=n,
        settings=settings or SessionSettings(),
        chunk_size=chunk_size,
        course=course or CourseSettings(),
    )
