"""Gentle-start planner: the infusion profile with the lowest effect-site peak for a given dose.

For a total dose D to be given within a duration L as piecewise-constant rates ``r_j`` on
segments of width w (0 <= r_j <= r_max), the effect-site concentration at any time is linear
in the rates, ``Ce(t_k) = sum_j H[k, j] r_j``, with ``H[k, j]`` the Ce response at ``t_k`` to a
unit rate on segment j (computed with the exact engine, :func:`ketaflow.pk.solve.simulate`).
The profile with the lowest predicted peak is therefore the linear programme::

    minimise z  subject to  H r <= z,  sum_j r_j w = D,  0 <= r_j <= r_max

solved with HiGHS (:func:`scipy.optimize.linprog`). Because every PD model of
:mod:`ketaflow.pk.effect` is a monotone function of Ce, the same profile minimises the predicted
peak dissociation. A second LP then picks, among the profiles within a hair (1e-6 relative) of
that peak, the one with the fewest and smallest rate changes (least total variation), so the
pump is not asked to jump between extremes for no gain.

The constraint times ``t_k`` run on a grid of at most 10 s from the start until well after the
end of the infusion (the Ce peak can come after the pump stops); the plan is then replayed in
the exact engine and the horizon extended if the replayed peak is higher than the LP's.

The lowest-peak profile is front-loaded: it raises Ce quickly to the plateau it will hold, then
maintains it (a TCI-like profile), and may pause and give a final burst whose Ce rise comes
after the pump stops. A maximum rate (the pump's, or a clinical one such as 1.5 times the
constant rate) bounds the initial load. With a cap on Ce, :func:`plan_gentle_start` returns
the smoothest profile that stays under the cap (the constant rate when that already does),
and :func:`plan_shortest_under_cap` finds the shortest duration (a whole number of
segments) that does, by bisection: the lowest achievable peak never increases with the duration,
since a shorter plan padded with zero rates is a feasible longer one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linprog
from scipy.sparse import coo_matrix, hstack, vstack

from ketaflow.errors import InputError
from ketaflow.pk.effect import DISSOCIATION, EmaxModel, Enantiomer
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import Infusion, Schedule
from ketaflow.pk.solve import simulate
from ketaflow.units import MIN_PER_H, S_PER_MIN

FloatArray = npt.NDArray[np.float64]

#: Largest spacing of the Ce constraint grid, min (10 s): Ce moves with t1/2ke0 of minutes,
#: so the peak between grid points exceeds the grid maximum by far less than 0.1 %.
MAX_EVAL_STEP_MIN = 10.0 / S_PER_MIN
#: Relative slack on the optimal peak allowed to the smoothing stage.
_SMOOTH_SLACK = 1e-6
#: Replay tolerance: the exact replayed peak may exceed the LP's grid peak by this much.
_REPLAY_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class GentlePlan:
    """A planned rate profile and its comparison with the constant rate of the same dose.

    ``rates_mg_per_min[j]`` holds on ``[j * segment_min, (j + 1) * segment_min)``. Peaks and
    times above threshold come from replaying both profiles in the exact engine on
    ``times_min``; ``feasible`` says whether the peak is within ``cap_ce_ng_per_ml`` (always
    True without a cap). ``lowest_peak_ce_ng_per_ml`` is the lowest peak any profile with this
    dose, duration and maximum rate can reach (the first LP's optimum, on its time grid).
    """

    segment_min: float
    duration_min: float
    total_mg: float
    rates_mg_per_min: FloatArray
    enantiomer: Enantiomer
    times_min: FloatArray
    ce_ng_per_ml: FloatArray
    constant_ce_ng_per_ml: FloatArray
    cap_ce_ng_per_ml: float | None
    threshold_ce_ng_per_ml: float | None
    lowest_peak_ce_ng_per_ml: float
    pd_model: EmaxModel = DISSOCIATION

    @property
    def n_segments(self) -> int:
        """Number of segments."""
        return len(self.rates_mg_per_min)

    @property
    def rate_mg_per_h(self) -> FloatArray:
        """Planned rates, mg/h."""
        return self.rates_mg_per_min * MIN_PER_H

    @property
    def constant_rate_mg_per_min(self) -> float:
        """The constant rate that gives the same dose over the same duration, mg/min."""
        return self.total_mg / self.duration_min

    @property
    def peak_ce_ng_per_ml(self) -> float:
        """Highest predicted Ce of the plan, ng/mL."""
        return float(self.ce_ng_per_ml.max())

    @property
    def peak_time_min(self) -> float:
        """When the plan's Ce peaks, min."""
        return float(self.times_min[int(np.argmax(self.ce_ng_per_ml))])

    @property
    def constant_peak_ce_ng_per_ml(self) -> float:
        """Highest predicted Ce of the constant rate, ng/mL."""
        return float(self.constant_ce_ng_per_ml.max())

    @property
    def constant_peak_time_min(self) -> float:
        """When the constant rate's Ce peaks, min."""
        return float(self.times_min[int(np.argmax(self.constant_ce_ng_per_ml))])

    @property
    def peak_effect(self) -> float:
        """Predicted peak effect of the plan (``pd_model`` unit; a 0-1 fraction for
        dissociation)."""
        return float(self.pd_model.effect(self.peak_ce_ng_per_ml, enantiomer=self.enantiomer))

    @property
    def constant_peak_effect(self) -> float:
        """Predicted peak effect of the constant rate."""
        return float(
            self.pd_model.effect(self.constant_peak_ce_ng_per_ml, enantiomer=self.enantiomer)
        )

    @property
    def feasible(self) -> bool:
        """Whether the plan keeps Ce within the cap (True without a cap)."""
        if self.cap_ce_ng_per_ml is None:
            return True
        return self.peak_ce_ng_per_ml <= self.cap_ce_ng_per_ml * (1.0 + _REPLAY_TOLERANCE)

    @property
    def time_above_min(self) -> float | None:
        """Minutes the plan's Ce spends above the threshold (None without a threshold)."""
        if self.threshold_ce_ng_per_ml is None:
            return None
        return time_above(self.times_min, self.ce_ng_per_ml, self.threshold_ce_ng_per_ml)

    @property
    def constant_time_above_min(self) -> float | None:
        """Minutes the constant rate's Ce spends above the threshold."""
        if self.threshold_ce_ng_per_ml is None:
            return None
        return time_above(self.times_min, self.constant_ce_ng_per_ml, self.threshold_ce_ng_per_ml)

    def schedule(self) -> Schedule:
        """The plan as a :class:`Schedule` (for replay or for the pump programme)."""
        w = self.segment_min
        return Schedule.from_events(
            Infusion(j * w, (j + 1) * w, float(r))
            for j, r in enumerate(self.rates_mg_per_min)
            if r > 0
        )


def time_above(times_min: FloatArray, values: FloatArray, threshold: float) -> float:
    """Time (min) a sampled curve spends above ``threshold``, crossings linearly interpolated."""
    t = np.asarray(times_min, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64) - threshold
    total = 0.0
    for i in range(len(t) - 1):
        a, b = float(v[i]), float(v[i + 1])
        dt = float(t[i + 1] - t[i])
        if a > 0 and b > 0:
            total += dt
        elif a > 0 or b > 0:
            total += dt * max(a, b) / (abs(a) + abs(b))
    return total


def _unit_response(
    params: PKParameters, segment_min: float, step_min: float, n_steps: int
) -> FloatArray:
    """Ce (ng/mL) at ``k * step_min``, k = 0..n_steps, after 1 mg/min over one segment."""
    times = np.arange(n_steps + 1, dtype=np.float64) * step_min
    sched = Schedule.from_events([Infusion(0.0, segment_min, 1.0)])
    ce = simulate(params, sched, times).ce_ng_per_ml
    if ce is None:
        raise InputError(
            "the gentle-start planner needs a model with an effect site (ke0)", field="model"
        )
    return np.asarray(ce[0], dtype=np.float64)


def _replay(
    params: PKParameters, rates: FloatArray, segment_min: float, times: FloatArray
) -> FloatArray:
    sched = Schedule.from_events(
        Infusion(j * segment_min, (j + 1) * segment_min, float(r))
        for j, r in enumerate(rates)
        if r > 0
    )
    ce = simulate(params, sched, times).ce_ng_per_ml
    assert ce is not None  # checked in _unit_response
    return np.asarray(ce[0], dtype=np.float64)


def _solve(
    h: FloatArray,
    width: float,
    total_mg: float,
    r_max: float,
    smooth: bool,
    cap: float | None,
) -> tuple[FloatArray, float]:
    """The two LPs: lowest peak ``z``; then least total variation with Ce <= the cap (when
    ``cap >= z``) or Ce <= z (otherwise). Returns (rates, z)."""
    k, n = h.shape
    ub = None if math.isinf(r_max) else r_max
    # Stage 1: variables [r_0 .. r_{n-1}, z].
    c = np.zeros(n + 1)
    c[-1] = 1.0
    a_ub = np.hstack([h, -np.ones((k, 1))])
    a_eq = np.concatenate([np.full(n, width), [0.0]])[None, :]
    bounds = [(0.0, ub)] * n + [(None, None)]
    res = linprog(
        c, A_ub=a_ub, b_ub=np.zeros(k), A_eq=a_eq, b_eq=[total_mg], bounds=bounds, method="highs"
    )
    if res.status != 0:
        raise InputError(f"the planning LP failed: {res.message}", field="dose")
    rates = np.clip(np.asarray(res.x[:n], dtype=np.float64), 0.0, None)
    z = float(res.x[-1])
    if not smooth or n < 2:
        return rates, z
    # Stage 2: variables [r (n), d (n-1)], minimise sum d with |r_{j+1} - r_j| <= d_j.
    j = np.arange(n - 1)
    diff = coo_matrix(
        (
            np.concatenate([-np.ones(n - 1), np.ones(n - 1)]),
            (np.concatenate([j, j]), np.concatenate([j, j + 1])),
        ),
        shape=(n - 1, n),
    )
    eye = coo_matrix(np.eye(n - 1))
    a2 = vstack(
        [
            hstack([coo_matrix(h), coo_matrix((k, n - 1))]),
            hstack([diff, -eye]),
            hstack([-diff, -eye]),
        ]
    ).tocsr()
    bound = cap if cap is not None and cap >= z else z * (1.0 + _SMOOTH_SLACK)
    b2 = np.concatenate([np.full(k, bound), np.zeros(2 * (n - 1))])
    c2 = np.concatenate([np.zeros(n), np.ones(n - 1)])
    a_eq2 = np.concatenate([np.full(n, width), np.zeros(n - 1)])[None, :]
    res2 = linprog(
        c2,
        A_ub=a2,
        b_ub=b2,
        A_eq=a_eq2,
        b_eq=[total_mg],
        bounds=[(0.0, ub)] * n + [(0.0, None)] * (n - 1),
        method="highs",
    )
    if res2.status != 0:
        return rates, z
    return np.clip(np.asarray(res2.x[:n], dtype=np.float64), 0.0, None), z


def _check_inputs(total_mg: float, duration_min: float, segment_min: float, r_max: float) -> int:
    if not (math.isfinite(total_mg) and total_mg > 0):
        raise InputError(f"total dose must be > 0 mg, got {total_mg}", field="dose")
    if not (math.isfinite(segment_min) and segment_min > 0):
        raise InputError(f"segment must be > 0 min, got {segment_min}", field="segment")
    if not (math.isfinite(duration_min) and duration_min > 0):
        raise InputError(f"duration must be > 0 min, got {duration_min}", field="duration")
    n_float = duration_min / segment_min
    n = round(n_float) if math.isfinite(n_float) else 0
    if n < 1 or abs(n - n_float) > 1e-6:
        raise InputError(
            f"duration ({duration_min:g} min) must be a whole number of segments "
            f"({segment_min:g} min)",
            field="duration",
        )
    if n > 2000:
        raise InputError(
            f"{n} segments is too many for the planner (at most 2000); use longer segments",
            field="segment",
        )
    if not (r_max > 0):
        raise InputError(f"maximum rate must be > 0 mg/min, got {r_max}", field="max_rate")
    if total_mg > r_max * duration_min * (1 + 1e-12):
        raise InputError(
            f"{total_mg:g} mg cannot be given within {duration_min:g} min at the maximum rate "
            f"{r_max * MIN_PER_H:g} mg/h; lengthen the duration or raise the maximum rate",
            field="duration",
        )
    return n


def plan_gentle_start(
    params: PKParameters,
    *,
    total_mg: float,
    duration_min: float,
    segment_min: float = 1.0,
    max_rate_mg_per_min: float = math.inf,
    cap_ce_ng_per_ml: float | None = None,
    threshold_ce_ng_per_ml: float | None = None,
    enantiomer: Enantiomer = "racemic",
    smooth: bool = True,
) -> GentlePlan:
    """The rate profile that gives ``total_mg`` within ``duration_min`` with the lowest
    predicted effect-site peak (see the module docstring), compared with the constant rate.

    With ``cap_ce_ng_per_ml`` the plan is instead the *smoothest* profile (least total rate
    variation) that keeps Ce at or under the cap, which is the constant rate itself when that
    already stays under it; if the cap cannot be met within the duration, the lowest-peak plan
    is returned with :attr:`GentlePlan.feasible` False. ``threshold_ce_ng_per_ml`` enables the
    time-above-threshold figures. ``params`` is one patient.
    """
    if params.n_patients != 1:
        raise InputError("the planner takes one patient", field="params")
    if not params.has_effect_site:
        raise InputError(
            "the gentle-start planner needs a model with an effect site (ke0)", field="model"
        )
    n = _check_inputs(total_mg, duration_min, segment_min, max_rate_mg_per_min)
    for name, value in (("cap", cap_ce_ng_per_ml), ("threshold", threshold_ce_ng_per_ml)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be > 0 ng/mL, got {value}", field=name)
    per_seg = max(1, math.ceil(segment_min / MAX_EVAL_STEP_MIN - 1e-9))
    step = segment_min / per_seg
    # Tail after the infusion: three times the unit response's peak time, at least 20 min.
    probe_steps = math.ceil(6 * 60.0 / step)
    probe = _unit_response(params, segment_min, step, probe_steps)
    tail_min = max(3.0 * float(np.argmax(probe)) * step, 20.0)
    for _ in range(6):
        n_eval = math.ceil((duration_min + tail_min) / step)
        u = probe if n_eval <= probe_steps else _unit_response(params, segment_min, step, n_eval)
        k_idx = np.arange(1, n_eval + 1)[:, None]
        lag = k_idx - per_seg * np.arange(n)[None, :]
        h = np.where(lag >= 0, u[np.clip(lag, 0, len(u) - 1)], 0.0)
        rates, lowest = _solve(
            h, segment_min, total_mg, max_rate_mg_per_min, smooth, cap_ce_ng_per_ml
        )
        times = np.arange(2 * n_eval + 1, dtype=np.float64) * step
        ce = _replay(params, rates, segment_min, times)
        i_peak = int(np.argmax(ce))
        grid_peak = float(np.max(h @ rates))
        if ce[i_peak] <= grid_peak * (1.0 + _REPLAY_TOLERANCE) and i_peak < n_eval:
            break
        tail_min *= 2.0
    constant = np.full(n, total_mg / duration_min)
    return GentlePlan(
        segment_min=segment_min,
        duration_min=duration_min,
        total_mg=total_mg,
        rates_mg_per_min=rates,
        enantiomer=enantiomer,
        times_min=times,
        ce_ng_per_ml=ce,
        constant_ce_ng_per_ml=_replay(params, constant, segment_min, times),
        cap_ce_ng_per_ml=cap_ce_ng_per_ml,
        threshold_ce_ng_per_ml=threshold_ce_ng_per_ml,
        lowest_peak_ce_ng_per_ml=lowest,
    )


def plan_shortest_under_cap(
    params: PKParameters,
    *,
    total_mg: float,
    cap_ce_ng_per_ml: float,
    max_duration_min: float,
    segment_min: float = 1.0,
    max_rate_mg_per_min: float = math.inf,
    threshold_ce_ng_per_ml: float | None = None,
    enantiomer: Enantiomer = "racemic",
) -> GentlePlan:
    """The shortest plan (whole segments, at most ``max_duration_min``) whose lowest achievable
    Ce peak is within ``cap_ce_ng_per_ml``. If even ``max_duration_min`` cannot meet the cap the
    plan for ``max_duration_min`` is returned with ``feasible`` False."""
    n_max = _check_inputs(total_mg, max_duration_min, segment_min, max_rate_mg_per_min)
    n_min = max(1, math.ceil(total_mg / (max_rate_mg_per_min * segment_min) - 1e-9))

    def plan(n_seg: int) -> GentlePlan:
        return plan_gentle_start(
            params,
            total_mg=total_mg,
            duration_min=n_seg * segment_min,
            segment_min=segment_min,
            max_rate_mg_per_min=max_rate_mg_per_min,
            cap_ce_ng_per_ml=cap_ce_ng_per_ml,
            threshold_ce_ng_per_ml=threshold_ce_ng_per_ml,
            enantiomer=enantiomer,
        )

    best = plan(n_max)
    if not best.feasible:
        return best
    lo, hi = n_min, n_max  # invariant: hi is feasible
    while lo < hi:
        mid = (lo + hi) // 2
        candidate = plan(mid)
        if candidate.feasible:
            hi, best = mid, candidate
        else:
            lo = mid + 1
    return best if best.n_segments == hi else plan(hi)
