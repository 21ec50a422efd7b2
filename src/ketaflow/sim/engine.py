"""The vectorised session engine of in-silico trials: one arm, many patients, rules applied.

:func:`run_arm` steps every patient of a cohort through one session on a fixed time grid with the
exact transition of the PK engine (:func:`ketaflow.pk.solve.discretize`: ``x <- Phi x + Gamma r``
for piecewise-constant input, no ODE integration error). The rate of each patient may change at
every grid step, which is what within-session rules need: at each patient's cuff reading during
the infusion the rules see an :class:`~ketaflow.sim.arms.Observation` of all patients due at that
time and return new pump settings, applied from that step on. Everything is vectorised over
patients; the only Python loop is over time steps (and over the few patients due a reading at a
step, as one array operation).

Accuracy: with the order running as written and its rate changes and boluses on the grid, the
result equals :func:`ketaflow.pk.solve.simulate` (to rounding; tested). When a rule slows or
pauses the pump, the plan clock may cross a planned rate change inside a step; that step then
gets the exact amount at its average rate (a timing error below one step, 0.5 min by default).
Peaks and threshold durations are read on the grid (error below one step in time).

Within-session noise (cuff readings and check-ins) is drawn per patient on a fixed 5-minute slot
grid from the patient's own block stream (:data:`~ketaflow.sim.cohort.STREAM_TRIAL_NOISE`), so
every arm sees the same noise at the same time: common random numbers, which make paired
differences between arms far more precise than independent runs. Cuff readings carry the
physiological AR(1) and measurement noise of :mod:`ketaflow.sim.virtual_patient`, without
motion artefacts (the clinic would repeat a corrupted cuff reading).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ketaflow.errors import InputError, ProtocolError
from ketaflow.pk.effect import DBP_RISE, HR_RISE, SBP_RISE
from ketaflow.pk.population import draw_by_block
from ketaflow.pk.schedule import BatchSchedule
from ketaflow.pk.solve import discretize
from ketaflow.sim.arms import (
    ACTION_PAUSE,
    ACTION_SLOW,
    Observation,
    TrialArm,
)
from ketaflow.sim.cohort import STREAM_TRIAL_NOISE, Cohort, check_in_scores
from ketaflow.units import NG_PER_ML_PER_MG_PER_L

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

#: Width of the noise slots, minutes (cuff readings are at least 10 min apart).
NOISE_SLOT_MIN: Final = 5.0
# Cuff noise, as in ketaflow.sim.virtual_patient: AR(1) tau 10 min with SD 6 (SBP) and 4 (DBP)
# mmHg, r = 0.6 between them; measurement SD 4 and 3 mmHg. HR readings at cuff times are minutes
# apart, far beyond the 60-s HR time constant, so their noise is independent: SD sqrt(2.5^2+1^2).
_BP_TAU_MIN = 10.0
_SBP_PHYS_SD = 6.0
_DBP_PHYS_SD = 4.0
_BP_R = 0.6
_SBP_MEAS_SD = 4.0
_DBP_MEAS_SD = 3.0
_HR_SD = math.sqrt(2.5**2 + 1.0**2)
_EPS = 1e-9


@dataclass(frozen=True)
class TimeGrid:
    """Output and stepping grid: 0 to ``horizon_min`` every ``dt_min`` minutes."""

    horizon_min: float = 360.0
    dt_min: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dt_min) and 0.01 <= self.dt_min <= 10.0):
            raise InputError(f"dt_min must lie in 0.01-10 min, got {self.dt_min}", field="dt_min")
        if not (math.isfinite(self.horizon_min) and 10.0 <= self.horizon_min <= 24 * 60):
            raise InputError(
                f"horizon_min must lie in 10-1440 min, got {self.horizon_min}",
                field="horizon_min",
            )
        steps = self.horizon_min / self.dt_min
        if abs(steps - round(steps)) > 1e-9:
            raise InputError(
                f"horizon_min ({self.horizon_min:g}) must be a multiple of dt_min "
                f"({self.dt_min:g})",
                field="horizon_min",
            )

    @property
    def n_steps(self) -> int:
        """Number of steps (output times minus one)."""
        return round(self.horizon_min / self.dt_min)

    @property
    def n_times(self) -> int:
        """Number of output times."""
        return self.n_steps + 1

    def times_min(self) -> FloatArray:
        """The output times, minutes."""
        return np.arange(self.n_times, dtype=np.float64) * self.dt_min


@dataclass(frozen=True)
class AlarmThreshold:
    """A single-reading threshold on a cuff-time vital sign (stand-in for clinic alarm rules)."""

    key: str
    kind: str
    above: float
    label: str


@dataclass(frozen=True)
class DischargeCriteria:
    """When a patient counts as ready for discharge (predicted, noise-free).

    Ready at the first time, at least ``min_observation_min`` after the infusion ended, from
    which on the predicted dissociation stays below ``max_dissociation`` and the predicted SBP
    and DBP rises stay at most ``max_sbp_rise_mm_hg`` / ``max_dbp_rise_mm_hg`` above baseline.
    Stand-in until the clinic's discharge criteria are available; the clinic adds bedside
    checks (Aldrete/PADSS scores, escort) that a PK/PD model cannot predict. With these defaults
    the median virtual patient of the standard regimen is ready about 55 min after the end of
    the infusion, in line with BP and HR back to baseline within 1.5 h of the start (Szarmach
    2020, clinical reference section 2.3 of the PK notes); the values are assumptions.
    """

    min_observation_min: float = 30.0
    max_dissociation: float = 0.15
    max_sbp_rise_mm_hg: float = 15.0
    max_dbp_rise_mm_hg: float = 10.0


#: Stand-in alarm thresholds: the "consider stopping" and PRN-protocol values quoted in the
#: clinical reference, section 0 ([?]: attributed to Sanacora 2017, not verified there).
DEFAULT_ALARMS: Final = (
    AlarmThreshold("sbp_gt_180", "sbp", 180.0, "SBP > 180 mmHg"),
    AlarmThreshold("dbp_gt_110", "dbp", 110.0, "DBP > 110 mmHg"),
    AlarmThreshold("sbp_gt_200", "sbp", 200.0, "SBP > 200 mmHg"),
    AlarmThreshold("dbp_gt_120", "dbp", 120.0, "DBP > 120 mmHg"),
    AlarmThreshold("hr_gt_110", "hr", 110.0, "HR > 110 /min"),
)


@dataclass(frozen=True)
class SessionSettings:
    """Everything about a simulated session that is not the arm: grid, cadence, criteria."""

    grid: TimeGrid = TimeGrid()
    cuff_interval_infusing_min: float = 10.0
    cuff_interval_after_min: float = 15.0
    dissociation_threshold: float = 0.5
    alarms: tuple[AlarmThreshold, ...] = DEFAULT_ALARMS
    discharge: DischargeCriteria = DischargeCriteria()

    def __post_init__(self) -> None:
        for name in ("cuff_interval_infusing_min", "cuff_interval_after_min"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= NOISE_SLOT_MIN):
                raise InputError(
                    f"{name} must be >= {NOISE_SLOT_MIN:g} min, got {value}", field=name
                )
        if not 0.0 < self.dissociation_threshold < 1.0:
            raise InputError(
                f"dissociation_threshold must lie in (0, 1), got {self.dissociation_threshold}",
                field="dissociation_threshold",
            )

    @property
    def n_slots(self) -> int:
        """Number of noise slots covering the horizon."""
        return int(self.grid.horizon_min // NOISE_SLOT_MIN) + 1


@dataclass(frozen=True)
class TrialNoise:
    """Per-patient cuff and check-in noise on the 5-min slot grid, shape (n, n_slots)."""

    sbp: FloatArray
    dbp: FloatArray
    hr: FloatArray
    intensity_z: FloatArray
    help_u: FloatArray

    @classmethod
    def generate(cls, seed: int, start: int, stop: int, n_slots: int) -> TrialNoise:
        """Noise of patients ``start .. stop-1`` (reproducible per patient like the cohort)."""

        def draw(rng: np.random.Generator, n: int) -> dict[str, npt.NDArray[np.generic]]:
            z = rng.standard_normal((6, n, n_slots))
            u = rng.random((n, n_slots))
            rho = math.exp(-NOISE_SLOT_MIN / _BP_TAU_MIN)
            innov = math.sqrt(1.0 - rho * rho)
            zs = z[0]
            zd = _BP_R * z[0] + math.sqrt(1.0 - _BP_R**2) * z[1]
            ps = np.empty((n, n_slots))
            pd = np.empty((n, n_slots))
            ps[:, 0] = zs[:, 0]
            pd[:, 0] = zd[:, 0]
            for k in range(1, n_slots):
                ps[:, k] = rho * ps[:, k - 1] + innov * zs[:, k]
                pd[:, k] = rho * pd[:, k - 1] + innov * zd[:, k]
            return {
                "sbp": _SBP_PHYS_SD * ps + _SBP_MEAS_SD * z[2],
                "dbp": _DBP_PHYS_SD * pd + _DBP_MEAS_SD * z[3],
                "hr": _HR_SD * z[4],
                "intensity_z": z[5],
                "help_u": u,
            }

        d = draw_by_block(seed, start, stop, STREAM_TRIAL_NOISE, draw)
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in d.items()})


@dataclass(frozen=True)
class Plan:
    """An arm's order resolved for N patients: rates on breakpoints, boluses, totals."""

    breakpoints_min: FloatArray
    rates_mg_per_min: FloatArray
    bolus_times_min: FloatArray
    bolus_mg: FloatArray
    cum_mg: FloatArray
    end_min: float
    ordered_mg: FloatArray

    @classmethod
    def build(cls, arm: TrialArm, weight_kg: FloatArray, grid: TimeGrid) -> Plan:
        """Resolve ``arm``'s dose texts for the given dosing weights."""
        batch = BatchSchedule.from_instructions(arm.instructions(), weight_kg)
        times = np.concatenate([batch.breakpoints_min, batch.bolus_times_min])
        steps = times / grid.dt_min
        if np.any(np.abs(steps - np.rint(steps)) > 1e-9):
            raise ProtocolError(
                f"arm {arm.name!r}: dose times must be multiples of the trial step "
                f"({grid.dt_min:g} min); choose another --dt",
                field="dt_min",
            )
        bp = batch.breakpoints_min
        rates = batch.rates_mg_per_min
        widths = np.diff(bp) if bp.size > 1 else np.zeros(0)
        cum = np.concatenate([np.zeros((rates.shape[0], 1)), np.cumsum(rates * widths, axis=1)], 1)
        end = float(max(bp[-1] if bp.size else 0.0, batch.bolus_times_min.max(initial=0.0)))
        if end >= grid.horizon_min:
            raise ProtocolError(
                f"arm {arm.name!r}: the order runs to {end:g} min, beyond the trial horizon "
                f"of {grid.horizon_min:g} min; raise --horizon",
                field="horizon_min",
            )
        return cls(
            breakpoints_min=bp,
            rates_mg_per_min=rates,
            bolus_times_min=batch.bolus_times_min,
            bolus_mg=batch.bolus_mg,
            cum_mg=cum,
            end_min=end,
            ordered_mg=cum[:, -1] + batch.bolus_mg.sum(axis=1),
        )

    def amount_at(self, tau_min: FloatArray, rows: IntArray) -> FloatArray:
        """Amount infused by plan time ``tau_min`` for patients ``rows``, mg (no boluses)."""
        bp = self.breakpoints_min
        m = bp.size - 1
        if m < 1:
            return np.zeros(tau_min.shape[0])
        j = np.clip(np.searchsorted(bp, tau_min, side="right") - 1, 0, m - 1)
        t = np.clip(tau_min, bp[0], bp[-1])
        return np.asarray(
            self.cum_mg[rows, j] + self.rates_mg_per_min[rows, j] * (t - bp[j]), dtype=np.float64
        )

    def rate_at(self, time_min: float) -> FloatArray | None:
        """Planned rate of every patient at ``time_min`` (right-continuous); None if zero."""
        bp = self.breakpoints_min
        if bp.size < 2:
            return None
        j = int(np.searchsorted(bp, time_min + _EPS, side="right")) - 1
        if j < 0 or j >= bp.size - 1:
            return None
        return np.ascontiguousarray(self.rates_mg_per_min[:, j])


@dataclass
class ArmResult:
    """Per-patient outcomes (``outcomes``) and traces (T, n) of one arm on one cohort."""

    arm: str
    outcomes: dict[str, npt.NDArray[np.generic]]
    cp_ng_per_ml: FloatArray
    ce_ng_per_ml: FloatArray
    dissociation: FloatArray


def run_arm(
    cohort: Cohort, arm: TrialArm, settings: SessionSettings, noise: TrialNoise
) -> ArmResult:
    """Simulate one session of ``arm`` for every patient of ``cohort``.

    Returns per-patient outcomes (see :data:`OUTCOME_UNITS` in :mod:`ketaflow.sim.trial`) and
    the traces of Cp, Ce (ng/mL) and predicted dissociation on the grid, laid out (T, n).
    """
    grid = settings.grid
    dt = grid.dt_min
    n = cohort.n_patients
    pop = cohort.population
    params = pop.pk_parameters()
    names = params.state_names()
    if "Ce" not in names:
        raise InputError(f"model {pop.model.id!r} has no effect site (ke0)", field="model")
    i_ce = names.index("Ce")
    k = len(names)
    phi, gamma = discretize(params, dt)
    cols = np.ascontiguousarray(phi.transpose(2, 1, 0))  # cols[j] = column j of every Phi, (k, n)
    used = [j for j in range(k) if np.any(cols[j] != 0.0)]
    gam = np.ascontiguousarray(gamma.T)
    inv_v1 = 1.0 / params.v1_l
    plan = Plan.build(arm, pop.weight_kg, grid)
    max_end = plan.end_min * arm.max_infusion_factor

    s_bp = pop.pd_factor("bp_sensitivity")
    s_hr = pop.pd_factor("hr_sensitivity")
    enant = cohort.enantiomer

    n_t = grid.n_times
    cp_out = np.empty((n_t, n))
    ce_out = np.empty((n_t, n))
    x = np.zeros((k, n))
    x_new = np.empty((k, n))
    tmp = np.empty((k, n))

    tau = np.zeros(n)  # plan clock, min
    speed = np.ones(n)
    paused = np.zeros(n, dtype=np.bool_)
    stopped = np.zeros(n, dtype=np.bool_)
    done = np.zeros(n, dtype=np.bool_)
    modified = np.zeros(n, dtype=np.bool_)
    end_min = np.full(n, np.nan)
    delivered = np.zeros(n)
    next_cuff = np.zeros(n)
    # Every cuff reading, kept so that alarms count only readings taken before discharge.
    max_readings = int(grid.horizon_min // settings.cuff_interval_infusing_min) + 2
    readings = {kind: np.full((n, max_readings), np.nan) for kind in ("time", "sbp", "dbp", "hr")}
    n_readings = np.zeros(n, dtype=np.int64)
    n_slow = np.zeros(n, dtype=np.int64)
    n_pause = np.zeros(n, dtype=np.int64)
    need_help = np.zeros(n, dtype=np.bool_)

    for s in range(grid.n_steps + 1):
        t = s * dt
        # --- cuff readings and decisions due now ----------------------------------------------
        due = np.flatnonzero(next_cuff <= t + _EPS)
        if due.size:
            slot = min(int(t // NOISE_SLOT_MIN), noise.sbp.shape[1] - 1)
            ce_d = x[i_ce, due] * NG_PER_ML_PER_MG_PER_L
            sbp = np.rint(
                cohort.sbp0_mm_hg[due]
                + s_bp[due] * SBP_RISE.effect(ce_d, enantiomer=enant)
                + noise.sbp[due, slot]
            )
            dbp = np.rint(
                cohort.dbp0_mm_hg[due]
                + s_bp[due] * DBP_RISE.effect(ce_d, enantiomer=enant)
                + noise.dbp[due, slot]
            )
            hr = np.rint(
                cohort.hr0_per_min[due]
                + s_hr[due] * HR_RISE.effect(ce_d, enantiomer=enant)
                + noise.hr[due, slot]
            )
            slot_r = np.minimum(n_readings[due], max_readings - 1)
            for kind, v in (("time", t), ("sbp", sbp), ("dbp", dbp), ("hr", hr)):
                readings[kind][due, slot_r] = v
            n_readings[due] += 1
            infusing = ~(done[due] | stopped[due])
            rows = due[infusing]
            if rows.size:
                diss = cohort.dissociation(ce_d[infusing], rows=rows)
                z = np.zeros((rows.size, 4))
                z[:, 0] = noise.intensity_z[rows, slot]
                scores = check_in_scores(
                    diss,
                    cohort.anxiety_trait[rows],
                    cohort.nausea_prone[rows],
                    z,
                    noise.help_u[rows, slot],
                )
                obs = Observation(
                    time_min=t,
                    sbp_mm_hg=sbp[infusing],
                    dbp_mm_hg=dbp[infusing],
                    hr_per_min=hr[infusing],
                    sbp0_mm_hg=cohort.sbp0_mm_hg[rows],
                    dbp0_mm_hg=cohort.dbp0_mm_hg[rows],
                    dissociation=diss,
                    intensity=scores.intensity,
                    need_help=scores.need_help,
                    speed=speed[rows],
                    paused=paused[rows],
                    delivered_mg=delivered[rows],
                    ordered_mg=plan.ordered_mg[rows],
                )
                adj = arm.rules.decide(obs)
                need_help[rows] |= scores.need_help
                changed = (adj.speed != speed[rows]) | (adj.paused != paused[rows]) | adj.stopped
                speed[rows] = adj.speed
                paused[rows] = adj.paused
                newly_stopped = rows[adj.stopped & ~stopped[rows]]
                stopped[rows] |= adj.stopped
                end_min[newly_stopped] = t
                modified[rows[changed]] = True
                n_slow[rows] += adj.action == ACTION_SLOW
                n_pause[rows] += adj.action == ACTION_PAUSE
            interval = np.where(
                done[due] | stopped[due],
                settings.cuff_interval_after_min,
                settings.cuff_interval_infusing_min,
            )
            next_cuff[due] = t + interval

        # --- rates and boluses for [t, t + dt) -----------------------------------------------
        m_eff = np.where(paused | stopped | done, 0.0, speed)
        tau_new = np.where(modified, tau + m_eff * dt, t + dt)
        tau_new = np.where(done, tau, tau_new)
        for b, tb in enumerate(plan.bolus_times_min):
            hit = (tau <= tb + _EPS) & (tb < tau_new) & (tau_new > tau) & ~stopped
            if np.any(hit):
                x[0] += np.where(hit, plan.bolus_mg[:, b], 0.0)
                delivered += np.where(hit, plan.bolus_mg[:, b], 0.0)
        # Outputs at t include a bolus given at t, as in ketaflow.pk.solve.
        np.multiply(x[0], inv_v1, out=cp_out[s])
        ce_out[s] = x[i_ce]
        if s == grid.n_steps:
            break
        planned = plan.rate_at(t)
        rate = np.zeros(n) if planned is None else planned.copy()
        rate[paused | stopped | done] = 0.0
        mod = np.flatnonzero(modified & ~done & ~stopped)
        if mod.size:
            amount = plan.amount_at(tau_new[mod], mod) - plan.amount_at(tau[mod], mod)
            rate[mod] = amount / dt
        delivered += rate * dt
        tau = tau_new
        finished = ~done & ~stopped & (tau >= plan.end_min - _EPS)
        capped = ~done & ~stopped & ~finished & (t + dt >= max_end - _EPS)
        end_min[finished | capped] = t + dt
        done |= finished
        stopped |= capped
        # --- exact step --------------------------------------------------------------------
        np.multiply(gam, rate, out=x_new)
        for j in used:
            np.multiply(cols[j], x[j], out=tmp)
            x_new += tmp
        x, x_new = x_new, x

    cp_out *= NG_PER_ML_PER_MG_PER_L
    ce_out *= NG_PER_ML_PER_MG_PER_L
    diss = cohort.dissociation(ce_out.T).T  # (T, n)
    outcomes = _outcomes(
        cohort,
        settings,
        plan,
        cp_out,
        ce_out,
        end_min=end_min,
        delivered=delivered,
        readings=readings,
        n_readings=n_readings,
        n_slow=n_slow,
        n_pause=n_pause,
        stopped=stopped,
        done=done,
        need_help=need_help,
    )
    return ArmResult(arm.name, outcomes, cp_out, ce_out, np.ascontiguousarray(diss))


def _outcomes(
    cohort: Cohort,
    settings: SessionSettings,
    plan: Plan,
    cp: FloatArray,
    ce: FloatArray,
    *,
    end_min: FloatArray,
    delivered: FloatArray,
    readings: dict[str, FloatArray],
    n_readings: IntArray,
    n_slow: IntArray,
    n_pause: IntArray,
    stopped: BoolArray,
    done: BoolArray,
    need_help: BoolArray,
) -> dict[str, npt.NDArray[np.generic]]:
    grid = settings.grid
    dt = grid.dt_min
    times = grid.times_min()
    peak_ce = ce.max(axis=0)
    c_thr = cohort.dissociation_threshold_ce(settings.dissociation_threshold)
    time_above = (ce > c_thr).sum(axis=0) * dt
    crit = settings.discharge
    c_ok = np.minimum.reduce(
        [
            cohort.dissociation_threshold_ce(crit.max_dissociation),
            cohort.rise_threshold_ce(SBP_RISE, "bp_sensitivity", crit.max_sbp_rise_mm_hg),
            cohort.rise_threshold_ce(DBP_RISE, "bp_sensitivity", crit.max_dbp_rise_mm_hg),
        ]
    )
    # Ready from the first grid time after max(end + minimum observation, Ce peak) at which Ce
    # is below the patient's limit: after its peak Ce only falls (no more drug), so it stays so.
    end = np.where(np.isnan(end_min), grid.horizon_min, end_min)
    t_peak = times[ce.argmax(axis=0)]
    earliest = np.maximum(end + crit.min_observation_min, t_peak)
    ok = (ce < c_ok) & (times[:, None] >= earliest - 1e-9)
    first = ok.argmax(axis=0)
    found = ok[first, np.arange(ce.shape[1])] & ~np.isnan(end_min)
    ready_after_end = np.where(found, times[first] - end, np.nan)
    # The session (and its monitoring) lasts until discharge readiness, else to the horizon.
    session_end = np.where(found, times[first], grid.horizon_min)
    in_session = readings["time"] <= session_end[:, None] + 1e-9
    vital = {kind: np.where(in_session, readings[kind], -np.inf) for kind in ("sbp", "dbp", "hr")}
    out: dict[str, npt.NDArray[np.generic]] = {
        "peak_cp_ng_per_ml": cp.max(axis=0),
        "peak_ce_ng_per_ml": peak_ce,
        "peak_dissociation": cohort.dissociation(peak_ce),
        "time_above_dissociation_min": time_above,
        "infusion_end_min": end_min,
        "discharge_ready_after_end_min": ready_after_end,
        "total_dose_mg": delivered,
        "ordered_dose_mg": plan.ordered_mg,
        "max_sbp_mm_hg": vital["sbp"].max(axis=1),
        "max_dbp_mm_hg": vital["dbp"].max(axis=1),
        "max_hr_per_min": vital["hr"].max(axis=1),
        "n_cuff_readings": in_session.sum(axis=1),
        "n_slowdowns": n_slow,
        "n_pauses": n_pause,
        "stopped_early": stopped & ~done,
        "need_help": need_help,
    }
    for a in settings.alarms:
        out[f"alarm_{a.key}"] = np.any(vital[a.kind] > a.above, axis=1)
    return out
