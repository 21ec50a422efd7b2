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
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from ketaflow.clinical.alarms import AlarmRules, Phase, VitalRule, load_alarm_rules
from ketaflow.clinical.discharge import discharge_criteria
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
from ketaflow.sim.reducers import unique_rows
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
class DischargeRule:
    """When a patient counts as ready for discharge (predicted, noise-free).

    Ready at the first time, at least ``min_observation_min`` after the infusion ended (or the
    arm's own minimum, whichever is longer), from which on the predicted SBP and DBP stay within
    ``sbp_tolerance_mm_hg`` / ``dbp_tolerance_mm_hg`` of baseline, HR within
    ``hr_tolerance_pct`` % of baseline, and the predicted dissociation below
    ``max_dissociation``. The numbers come from the clinic's discharge profile
    (:func:`ketaflow.clinical.discharge_criteria`, ``iv_ketamine``) except ``max_dissociation``,
    the simulator's stand-in for "mental status back to baseline" (an assumption: no published
    threshold). The clinic's bedside criteria (Aldrete score, escort, no-driving) cannot be
    predicted and are taken as met.
    """

    profile: str = "iv_ketamine"
    min_observation_min: float = 60.0
    sbp_tolerance_mm_hg: float = 20.0
    dbp_tolerance_mm_hg: float = 20.0
    hr_tolerance_pct: float = 20.0
    max_dissociation: float = 0.15

    @classmethod
    def from_clinic(
        cls, profile: str = "iv_ketamine", max_dissociation: float = 0.15
    ) -> DischargeRule:
        """The clinic's discharge profile plus the simulator's dissociation threshold."""
        c = discharge_criteria(profile)
        return cls(
            profile=c.profile,
            min_observation_min=c.min_observation_min,
            sbp_tolerance_mm_hg=c.sbp_tolerance_mmhg,
            dbp_tolerance_mm_hg=c.dbp_tolerance_mmhg,
            hr_tolerance_pct=c.hr_tolerance_pct,
            max_dissociation=max_dissociation,
        )


#: Vital signs read at cuff times in a trial, and the clinic alarm rules evaluated on them.
TRIAL_VITALS: Final = ("sbp", "dbp", "hr")
#: Reading phases, in the clinic's vocabulary (clinical.alarms.Phase values), by code 0-3.
PHASES: Final = ("pre_infusion", "infusing", "paused", "recovery")


def trial_alarm_rules(rules: AlarmRules | None = None) -> tuple[VitalRule, ...]:
    """The clinic's physiological vital-sign rules on SBP, DBP and HR (default rule set)."""
    rs = load_alarm_rules() if rules is None else rules
    return tuple(r for r in rs.rules if isinstance(r, VitalRule) and r.vital.value in TRIAL_VITALS)


@dataclass(frozen=True)
class SessionSettings:
    """Everything about a simulated session that is not the arm: grid and clinic criteria."""

    grid: TimeGrid = TimeGrid()
    dissociation_threshold: float = 0.5
    alarm_rules: tuple[VitalRule, ...] = field(default_factory=trial_alarm_rules)
    discharge: DischargeRule = field(default_factory=DischargeRule.from_clinic)

    def __post_init__(self) -> None:
        if not 0.0 < self.dissociation_threshold < 1.0:
            raise InputError(
                f"dissociation_threshold must lie in (0, 1), got {self.dissociation_threshold}",
                field="dissociation_threshold",
            )

    @property
    def n_slots(self) -> int:
        """Number of noise slots covering the horizon."""
        return int(self.grid.horizon_min // NOISE_SLOT_MIN) + 1


#: Block-stream ids of the within-session noise of sessions 2, 3, ... of a course start here.
STREAM_COURSE_NOISE_BASE: Final = 1000


def noise_stream(session_number: int) -> int:
    """Block-stream id of the within-session noise of session ``session_number`` (1-based).

    Session 1 uses :data:`~ketaflow.sim.cohort.STREAM_TRIAL_NOISE` (so a one-session trial is
    unchanged); later sessions get their own streams: cuff and check-in noise is independent
    between sessions days apart (its time constants are minutes).
    """
    if session_number < 1:
        raise InputError(f"session_number must be >= 1, got {session_number}", field="session")
    if session_number == 1:
        return STREAM_TRIAL_NOISE
    return STREAM_COURSE_NOISE_BASE + session_number


@dataclass(frozen=True)
class TrialNoise:
    """Per-patient cuff and check-in noise on the 5-min slot grid, shape (n, n_slots)."""

    sbp: FloatArray
    dbp: FloatArray
    hr: FloatArray
    intensity_z: FloatArray
    help_u: FloatArray

    @classmethod
    def generate(
        cls, seed: int, start: int, stop: int, n_slots: int, session_number: int = 1
    ) -> TrialNoise:
        """Noise of patients ``start .. stop-1`` in session ``session_number`` of a course
        (reproducible per patient like the cohort; see :func:`noise_stream`)."""

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

        d = draw_by_block(seed, start, stop, noise_stream(session_number), draw)
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
    cohort: Cohort,
    arm: TrialArm,
    settings: SessionSettings,
    noise: TrialNoise,
    dose_scale: FloatArray | None = None,
) -> ArmResult:
    """Simulate one session of ``arm`` for every patient of ``cohort``.

    ``dose_scale`` multiplies each patient's order (a titrated session: the session's mg/kg
    dose over the arm's order dose; every rate and bolus scales with it, the timing does not).

    Returns per-patient outcomes (see :func:`ketaflow.sim.trial.outcome_specs` for units and
    meaning) and the traces of Cp, Ce (ng/mL) and predicted dissociation on the grid, (T, n).
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
    weight = arm.dosing_weight_kg(pop)
    if dose_scale is not None:
        weight = weight * dose_scale
    plan = Plan.build(arm, weight, grid)
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
    bp_run = np.zeros(n, dtype=np.int64)  # consecutive readings above the BP confirm thresholds
    hr_since = np.full(n, np.nan)  # time of the first reading of the current high-HR run
    # Every cuff reading is kept (with its phase) so that alarms count only readings taken before
    # discharge and in the phases each clinic rule watches.
    max_readings = int(grid.horizon_min // NOISE_SLOT_MIN) + 2
    readings = {key: np.full((n, max_readings), np.nan) for key in ("time", "phase", *TRIAL_VITALS)}
    n_readings = np.zeros(n, dtype=np.int64)
    n_slow = np.zeros(n, dtype=np.int64)
    n_pause = np.zeros(n, dtype=np.int64)
    need_help = np.zeros(n, dtype=np.bool_)

    # Once every infusion has ended, the pump bookkeeping is skipped: the state only decays.
    all_over = False
    next_due = 0.0
    no_one = np.zeros(0, dtype=np.intp)
    for s in range(grid.n_steps + 1):
        t = s * dt
        # --- cuff readings and decisions due now ----------------------------------------------
        due = np.flatnonzero(next_cuff <= t + _EPS) if t + _EPS >= next_due else no_one
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
            dbp = np.minimum(dbp, sbp - 10.0)
            hr = np.rint(
                cohort.hr0_per_min[due]
                + s_hr[due] * HR_RISE.effect(ce_d, enantiomer=enant)
                + noise.hr[due, slot]
            )
            infusing = ~(done[due] | stopped[due])
            phase = np.where(infusing, np.where(paused[due], 2.0, 1.0), 3.0)
            if t == 0.0:
                phase[:] = 0.0  # the pre-dose baseline reading
            slot_r = np.minimum(n_readings[due], max_readings - 1)
            for key, v in (("time", t), ("phase", phase), ("sbp", sbp), ("dbp", dbp), ("hr", hr)):
                readings[key][due, slot_r] = v
            n_readings[due] += 1
            high_bp = (sbp > arm.confirm_sbp_above) | (dbp > arm.confirm_dbp_above)
            bp_run[due] = np.where(high_bp, bp_run[due] + 1, 0)
            high_hr = hr > arm.sustained_hr_above
            hr_since[due] = np.where(high_hr, np.fmin(hr_since[due], t), np.nan)
            regular = np.where(
                infusing, arm.vitals_during_infusion_every_min, arm.vitals_after_infusion_every_min
            )
            recheck = np.full(due.size, np.nan)
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
                    bp_consecutive=bp_run[rows],
                    hr_sustained_min=np.where(np.isnan(hr_since[rows]), 0.0, t - hr_since[rows]),
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
                recheck[infusing] = adj.recheck_after_min
            # A re-check asked for by a rule comes sooner than the regular reading, never later;
            # readings at least one noise slot apart keep their noise independent.
            interval = np.maximum(np.fmin(regular, recheck), NOISE_SLOT_MIN)
            next_cuff[due] = t + interval
            next_due = float(next_cuff.min())

        if all_over:
            np.multiply(x[0], inv_v1, out=cp_out[s])
            ce_out[s] = x[i_ce]
            if s == grid.n_steps:
                break
            x_new[:] = 0.0
            for j in used:
                np.multiply(cols[j], x[j], out=tmp)
                x_new += tmp
            x, x_new = x_new, x
            continue
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
        all_over = bool(np.all(done | stopped))
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
        arm,
        settings,
        plan,
        cp_out,
        ce_out,
        end_min=end_min,
        delivered=delivered,
        readings=readings,
        n_slow=n_slow,
        n_pause=n_pause,
        stopped=stopped,
        done=done,
        need_help=need_help,
    )
    return ArmResult(arm.name, outcomes, cp_out, ce_out, np.ascontiguousarray(diss))


def _outcomes(
    cohort: Cohort,
    arm: TrialArm,
    settings: SessionSettings,
    plan: Plan,
    cp: FloatArray,
    ce: FloatArray,
    *,
    end_min: FloatArray,
    delivered: FloatArray,
    readings: dict[str, FloatArray],
    n_slow: IntArray,
    n_pause: IntArray,
    stopped: BoolArray,
    done: BoolArray,
    need_help: BoolArray,
) -> dict[str, npt.NDArray[np.generic]]:
    grid = settings.grid
    dt = grid.dt_min
    times = grid.times_min()
    n = ce.shape[1]
    peak_ce = ce.max(axis=0)
    c_thr = cohort.dissociation_threshold_ce(settings.dissociation_threshold)
    time_above = (ce > c_thr).sum(axis=0) * dt
    crit = settings.discharge
    hr_tol = crit.hr_tolerance_pct / 100.0 * cohort.hr0_per_min
    c_ok = np.minimum.reduce(
        [
            cohort.dissociation_threshold_ce(crit.max_dissociation),
            cohort.rise_threshold_ce(SBP_RISE, "bp_sensitivity", crit.sbp_tolerance_mm_hg),
            cohort.rise_threshold_ce(DBP_RISE, "bp_sensitivity", crit.dbp_tolerance_mm_hg),
            _rise_threshold_per_patient(cohort, hr_tol),
        ]
    )
    # Ready from the first grid time after max(end + minimum observation, Ce peak) at which Ce
    # is below the patient's limit: after its peak Ce only falls (no more drug), so it stays so.
    min_obs = max(crit.min_observation_min, arm.min_observation_after_infusion_min)
    end = np.where(np.isnan(end_min), grid.horizon_min, end_min)
    t_peak = times[ce.argmax(axis=0)]
    earliest = np.maximum(end + min_obs, t_peak)
    ok = (ce < c_ok) & (times[:, None] >= earliest - 1e-9)
    first = ok.argmax(axis=0)
    found = ok[first, np.arange(n)] & ~np.isnan(end_min)
    ready_after_end = np.where(found, times[first] - end, np.nan)
    # The session (and its monitoring) lasts until discharge readiness, else to the horizon.
    session_end = np.where(found, times[first], grid.horizon_min)
    in_session = readings["time"] <= session_end[:, None] + 1e-9
    vital = {kind: np.where(in_session, readings[kind], np.nan) for kind in TRIAL_VITALS}
    out: dict[str, npt.NDArray[np.generic]] = {
        "dosing_weight_kg": arm.dosing_weight_kg(cohort.population),
        "peak_cp_ng_per_ml": cp.max(axis=0),
        "peak_ce_ng_per_ml": peak_ce,
        "peak_dissociation": cohort.dissociation(peak_ce),
        "time_above_dissociation_min": time_above,
        "infusion_end_min": end_min,
        "discharge_ready_after_end_min": ready_after_end,
        "total_dose_mg": delivered,
        "ordered_dose_mg": plan.ordered_mg,
        "max_sbp_mm_hg": np.nanmax(vital["sbp"], axis=1),
        "max_dbp_mm_hg": np.nanmax(vital["dbp"], axis=1),
        "max_hr_per_min": np.nanmax(vital["hr"], axis=1),
        "n_cuff_readings": in_session.sum(axis=1),
        "n_slowdowns": n_slow,
        "n_pauses": n_pause,
        "stopped_early": stopped & ~done,
        "need_help": need_help,
    }
    baseline = {kind: readings[kind][:, 0] for kind in TRIAL_VITALS}
    used = int((~np.isnan(readings["time"])).sum(axis=1).max(initial=1))
    pairs = {kind: ReadingPairs(vital[kind][:, :used], baseline[kind]) for kind in TRIAL_VITALS}
    for rule in settings.alarm_rules:
        kind = rule.vital.value
        out[f"alarm_{rule.spec.code}"] = alarm_fired(
            rule,
            readings["time"][:, :used],
            readings["phase"][:, :used],
            vital[kind][:, :used],
            baseline[kind],
            pairs[kind],
        )
    return out


def _rise_threshold_per_patient(cohort: Cohort, hr_tol: FloatArray) -> FloatArray:
    """Per-patient Ce at which the HR rise reaches each patient's tolerance (inf if never)."""
    s = cohort.population.pd_factor("hr_sensitivity")
    frac = hr_tol / (s * HR_RISE.emax)
    out = np.full(cohort.n_patients, np.inf)
    ok = frac < 1.0
    ca = HR_RISE.c50_ng_per_ml * (frac[ok] / (1.0 - frac[ok])) ** (1.0 / HR_RISE.gamma)
    out[ok] = ca / HR_RISE.active_fraction(cohort.enantiomer)
    return out


#: Rules whose ``sustain_s`` is at most this are taken as met by one violating cuff-time reading
#: (a continuous monitor would show the condition that long); longer ones need consecutive
#: violating readings spanning at least ``sustain_s``.
SINGLE_READING_SUSTAIN_S: Final = 60.0


class ReadingPairs:
    """The distinct (value, baseline) pairs of one vital's readings (n, R), found once.

    The clinic's :meth:`VitalRule.violates` is then called once per distinct pair, not once per
    reading: readings are whole numbers, so there are few distinct pairs.
    """

    def __init__(self, values: FloatArray, baseline: FloatArray) -> None:
        self.shape = values.shape
        self.valid = ~np.isnan(values)
        rows = np.nonzero(self.valid)[0]
        base = np.nan_to_num(baseline[rows])
        v = values[self.valid]
        self.pairs, self.inverse = unique_rows(np.stack([v, base], axis=1))
        self.values, inverse = np.unique(v, return_inverse=True)
        self.value_inverse = inverse.reshape(-1)

    def violations(self, rule: VitalRule) -> BoolArray:
        """Per reading, whether it breaks ``rule`` (False where there is no reading)."""
        if rule.relative:
            verdict = np.array(
                [rule.violates(float(v), float(b)) for v, b in self.pairs], dtype=np.bool_
            )[self.inverse]
        else:
            # A threshold rule ignores the baseline: one call per distinct value suffices.
            verdict = np.array(
                [rule.violates(float(v), None) for v in self.values], dtype=np.bool_
            )[self.value_inverse]
        out = np.zeros(self.shape, dtype=np.bool_)
        out[self.valid] = verdict
        return out


def alarm_fired(
    rule: VitalRule,
    times_min: FloatArray,
    phases: FloatArray,
    values: FloatArray,
    baseline: FloatArray,
    pairs: ReadingPairs | None = None,
) -> BoolArray:
    """Whether the clinic alarm ``rule`` would fire on each patient's readings (n, R).

    Violation per reading is decided by the clinic's own :meth:`VitalRule.violates` (once per
    distinct value/baseline pair, see :class:`ReadingPairs`); the rule's phases,
    ``confirm_readings`` within ``confirm_window_s`` and ``sustain_s`` are then applied across
    consecutive readings.
    """
    n, r = values.shape
    phase_ok = np.zeros_like(values, dtype=np.bool_)
    for code, name in enumerate(PHASES):
        if Phase(name) in rule.spec.phases:
            phase_ok |= phases == code
    index = ReadingPairs(values, baseline) if pairs is None else pairs
    violates = index.violations(rule) & phase_ok
    need = max(rule.confirm_readings, 1)
    window_min = rule.confirm_window_s / 60.0
    sustain_min = rule.sustain_s / 60.0
    if need == 1 and rule.sustain_s <= SINGLE_READING_SUSTAIN_S:
        return np.asarray(violates.any(axis=1), dtype=np.bool_)
    fired = np.zeros(n, dtype=np.bool_)
    run = np.zeros(n, dtype=np.int64)
    run_start = np.full(n, np.nan)
    for j in range(r):
        v = violates[:, j]
        t = times_min[:, j]
        run = np.where(v, run + 1, 0)
        run_start = np.where(v, np.where(run == 1, t, run_start), np.nan)
        span = t - run_start
        ok = v & (run >= need)
        if need > 1:
            ok &= span <= window_min + 1e-9
        if rule.sustain_s > SINGLE_READING_SUSTAIN_S:
            ok &= (run >= 2) & (span >= sustain_min - 1e-9)
        fired |= ok
    return fired
