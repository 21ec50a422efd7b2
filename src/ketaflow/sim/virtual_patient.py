"""A virtual patient's session: bedside-monitor readings and check-ins, streamed in time order.

:class:`VirtualSession` holds one virtual patient (rebuilt from a population seed and index),
the infusion's rate history and the session's noise. :meth:`VirtualSession.stream` yields
:class:`Reading` and :class:`CheckIn` events in time order; between two events the consumer may
call :meth:`VirtualSession.set_rate` (a staff rate change), after which every later value is
computed from a fresh prediction of the *actual* rate history by the exact PK engine
(:func:`ketaflow.pk.solve.simulate`). Events already yielded are not rewritten.

Signal model (every number an **assumption** unless tagged; see ``docs/simulation.md``)
---------------------------------------------------------------------------------------
value(t) = baseline + individual drug effect at Ce(t) + physiological variability (AR(1))
+ measurement noise, then rounded as a monitor displays it.

* Drug effects: :class:`~ketaflow.sim.cohort.Cohort` (shared Emax curves of
  :mod:`ketaflow.pk.effect`, scaled per patient).
* Physiological variability, AR(1) with time constant tau and stationary SD: HR tau 60 s,
  SD 2.5 /min; SpO2 tau 120 s, SD 0.6 %; RR tau 60 s, SD 1.5 /min; SBP tau 10 min, SD 6 mmHg;
  DBP tau 10 min, SD 4 mmHg (correlated with SBP, r = 0.6).
* Measurement noise: HR SD 1 /min, SpO2 SD 0.5 %, RR SD 1 /min; cuff SBP SD 4 mmHg and DBP SD
  3 mmHg, inside the ISO 81060-2 acceptance limit for cuff devices (mean error within 5 mmHg,
  SD at most 8 mmHg) [R].
* Artefacts: motion episodes at 3 per hour (Poisson), 3-10 s long, HR +20 to +50 /min and
  SpO2 -3 to -12 %; sensor dropouts at 1 per hour, 5-60 s long, during which no HR, SpO2 or RR
  is reported; 3 % of cuff cycles are motion-corrupted (+10 to +30 mmHg SBP, +5 to +15 DBP).
  Artefactual readings carry ``artefact=True`` (ground truth for testing alarm logic; a real
  monitor does not know).
* Cadence: HR and SpO2 every second, RR every 5 s; cuff BP (SBP, DBP, MAP = DBP + (SBP-DBP)/3)
  at 0 min, then every 10 min while the infusion runs and every 15 min after it (academic
  practice in the clinical reference, section 0); check-ins every 10 min.

Determinism: all noise is drawn when the session is built, from the patient's own stream
(seed, index), indexed by the second it belongs to. The same seed, index and rate history give
the same events, and a rate change alters only the drug-driven part.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import signal

from ketaflow.errors import InputError
from ketaflow.pk.population import PopulationSpec
from ketaflow.pk.schedule import Bolus, Event, Infusion, Schedule, parse_dose
from ketaflow.pk.solve import simulate
from ketaflow.sim.cohort import Cohort, check_in_scores, session_generator
from ketaflow.units import MIN_PER_H, S_PER_MIN

FloatArray = npt.NDArray[np.float64]

VitalKind = Literal["hr", "spo2", "rr", "sbp", "dbp", "map"]

#: UCUM unit of every vital-sign kind (clinical reference, section 6.2).
UCUM_UNITS: Final[dict[str, str]] = {
    "hr": "/min",
    "spo2": "%",
    "rr": "/min",
    "sbp": "mm[Hg]",
    "dbp": "mm[Hg]",
    "map": "mm[Hg]",
}

# (tau s, stationary SD) of the AR(1) physiological variability.
_AR_HR = (60.0, 2.5)
_AR_SPO2 = (120.0, 0.6)
_AR_RR = (60.0, 1.5)
_AR_SBP = (600.0, 6.0)
_AR_DBP = (600.0, 4.0)
_BP_AR_CORRELATION = 0.6
_MEAS_SD = {"hr": 1.0, "spo2": 0.5, "rr": 1.0, "sbp": 4.0, "dbp": 3.0}
_MOTION_PER_H = 3.0
_DROPOUT_PER_H = 1.0
_CUFF_ARTEFACT_P = 0.03


@dataclass(frozen=True, slots=True)
class Reading:
    """One value reported by the monitor at ``time_s`` seconds after the session start."""

    time_s: float
    kind: VitalKind
    value: float
    artefact: bool = False

    @property
    def unit(self) -> str:
        """UCUM unit of the value."""
        return UCUM_UNITS[self.kind]


@dataclass(frozen=True, slots=True)
class CheckIn:
    """A patient check-in at ``time_s``: scores 0-10 and the rare request for help."""

    time_s: float
    comfort: int
    intensity: int
    anxiety: int
    nausea: int
    need_help: bool


SessionEvent = Reading | CheckIn


@dataclass(frozen=True, slots=True)
class RateStep:
    """From ``time_min`` on, the infusion runs at ``rate_mg_per_h`` (until the next step)."""

    time_min: float
    rate_mg_per_h: float


@dataclass(frozen=True)
class SessionConfig:
    """Cadence and options of a streamed session (times in minutes unless named otherwise)."""

    duration_min: float = 180.0
    cuff_interval_infusing_min: float = 10.0
    cuff_interval_after_min: float = 15.0
    check_in_interval_min: float = 10.0
    rr_interval_s: int = 5
    prediction_step_s: float = 5.0
    artefacts: bool = True

    def __post_init__(self) -> None:
        checks = {
            "duration_min": self.duration_min,
            "cuff_interval_infusing_min": self.cuff_interval_infusing_min,
            "cuff_interval_after_min": self.cuff_interval_after_min,
            "check_in_interval_min": self.check_in_interval_min,
            "rr_interval_s": self.rr_interval_s,
            "prediction_step_s": self.prediction_step_s,
        }
        for name, value in checks.items():
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be > 0, got {value}", field=name)
        if self.duration_min > 24 * 60:
            raise InputError(
                f"duration_min must be at most 1440 (24 h), got {self.duration_min}",
                field="duration_min",
            )


def _ar1(eps: FloatArray, tau_s: float, sd: float, dt_s: float = 1.0) -> FloatArray:
    """Stationary AR(1) with time constant ``tau_s`` and SD ``sd`` from standard normals."""
    rho = math.exp(-dt_s / tau_s)
    b = sd * math.sqrt(1.0 - rho * rho)
    x0 = sd * eps[0]
    y, _ = signal.lfilter([b], [1.0, -rho], eps[1:], zi=[rho * x0])
    return np.concatenate([[x0], np.asarray(y, dtype=np.float64)])


@dataclass
class _Noise:
    """Every random number of a session, drawn up front (one entry per second)."""

    hr: FloatArray
    spo2: FloatArray
    rr: FloatArray
    sbp: FloatArray
    dbp: FloatArray
    motion_hr: FloatArray
    motion_spo2: FloatArray
    motion: npt.NDArray[np.bool_]
    dropout: npt.NDArray[np.bool_]
    cuff_artefact_sbp: FloatArray
    cuff_artefact_dbp: FloatArray
    check_in_z: FloatArray
    check_in_u: FloatArray

    @classmethod
    def draw(cls, rng: np.random.Generator, n_s: int, n_check_ins: int, artefacts: bool) -> _Noise:
        e = rng.standard_normal((10, n_s))
        phys_sbp = _ar1(e[3], *_AR_SBP)
        r = _BP_AR_CORRELATION
        phys_dbp = _ar1(r * e[3] + math.sqrt(1 - r * r) * e[4], *_AR_DBP)
        motion_hr = np.zeros(n_s)
        motion_spo2 = np.zeros(n_s)
        motion = np.zeros(n_s, dtype=np.bool_)
        dropout = np.zeros(n_s, dtype=np.bool_)
        hours = n_s / 3600.0
        # Episode draws come after the fixed-size ones, so their number cannot shift them.
        n_motion = int(rng.poisson(_MOTION_PER_H * hours))
        starts = rng.integers(0, n_s, n_motion)
        lengths = rng.integers(3, 11, n_motion)
        amp_hr = rng.uniform(20.0, 50.0, n_motion)
        amp_spo2 = rng.uniform(3.0, 12.0, n_motion)
        n_drop = int(rng.poisson(_DROPOUT_PER_H * hours))
        d_starts = rng.integers(0, n_s, n_drop)
        d_lengths = rng.integers(5, 61, n_drop)
        cuff_u = rng.random(n_s)
        cuff_sbp = rng.uniform(10.0, 30.0, n_s)
        cuff_dbp = rng.uniform(5.0, 15.0, n_s)
        check_in_z = rng.standard_normal((n_check_ins + 1, 4))
        check_in_u = rng.random(n_check_ins + 1)
        if artefacts:
            for s0, ln, ah, ao in zip(starts, lengths, amp_hr, amp_spo2, strict=True):
                motion_hr[s0 : s0 + ln] = ah
                motion_spo2[s0 : s0 + ln] = ao
                motion[s0 : s0 + ln] = True
            for s0, ln in zip(d_starts, d_lengths, strict=True):
                dropout[s0 : s0 + ln] = True
        cuff_hit = (cuff_u < _CUFF_ARTEFACT_P) if artefacts else np.zeros(n_s, dtype=np.bool_)
        return cls(
            hr=_ar1(e[0], *_AR_HR) + _MEAS_SD["hr"] * e[5],
            spo2=_ar1(e[1], *_AR_SPO2) + _MEAS_SD["spo2"] * e[6],
            rr=_ar1(e[2], *_AR_RR) + _MEAS_SD["rr"] * e[7],
            sbp=phys_sbp + _MEAS_SD["sbp"] * e[8],
            dbp=phys_dbp + _MEAS_SD["dbp"] * e[9],
            motion_hr=motion_hr,
            motion_spo2=motion_spo2,
            motion=motion,
            dropout=dropout,
            cuff_artefact_sbp=np.where(cuff_hit, cuff_sbp, 0.0),
            cuff_artefact_dbp=np.where(cuff_hit, cuff_dbp, 0.0),
            check_in_z=check_in_z,
            check_in_u=check_in_u,
        )


@dataclass
class _Prediction:
    times_s: FloatArray
    cp_ng_per_ml: FloatArray
    ce_ng_per_ml: FloatArray


@dataclass
class VirtualSession:
    """One virtual patient's session; build it with :meth:`create`."""

    cohort: Cohort
    weight_kg: float
    config: SessionConfig
    seed: int
    patient_index: int
    _steps: list[RateStep] = field(default_factory=list)
    _boluses: list[Bolus] = field(default_factory=list)
    _vtbi_mg: float | None = None
    _noise: _Noise | None = None
    _prediction: _Prediction | None = None
    _stream_time_s: float = 0.0

    @classmethod
    def create(
        cls,
        spec: PopulationSpec,
        patient_index: int,
        *,
        doses: Sequence[str] = (),
        weight_kg: float | None = None,
        config: SessionConfig | None = None,
    ) -> VirtualSession:
        """Virtual patient ``patient_index`` of ``spec`` receiving ``doses`` (dose texts).

        ``weight_kg`` replaces the drawn body weight (a bedside simulator uses the real
        patient's weight, with which the order was computed). Infusions in ``doses`` become the
        initial rate history; their total is the volume-to-be-infused, after which the pump stops
        by itself even if staff change the rate (pump semantics).
        """
        cohort = Cohort.generate(spec, patient_index, patient_index + 1)
        w = float(cohort.population.weight_kg[0]) if weight_kg is None else float(weight_kg)
        if not (math.isfinite(w) and 1.0 <= w <= 400.0):
            raise InputError(f"weight_kg must lie in 1-400 kg, got {weight_kg}", field="weight_kg")
        cfg = config or SessionConfig()
        session = cls(
            cohort=cohort, weight_kg=w, config=cfg, seed=spec.seed, patient_index=patient_index
        )
        events: list[Event] = []
        for text in doses:
            events.extend(parse_dose(text).resolve(w))
        schedule = Schedule.from_events(events)
        infusions = [e for e in schedule.events if isinstance(e, Infusion)]
        session._boluses = [e for e in schedule.events if isinstance(e, Bolus)]
        session._steps = _steps_from_infusions(infusions)
        session._vtbi_mg = sum(e.amount_mg for e in infusions) if infusions else None
        n_s = round(cfg.duration_min * S_PER_MIN) + 1
        n_check = int(cfg.duration_min // cfg.check_in_interval_min)
        session._noise = _Noise.draw(
            session_generator(spec.seed, patient_index), n_s, n_check, cfg.artefacts
        )
        return session

    # --- the rate history ----------------------------------------------------------------------

    @property
    def rate_history(self) -> tuple[RateStep, ...]:
        """The rate steps as set (before the volume-to-be-infused cut-off)."""
        return tuple(self._steps)

    def effective_rate_history(self) -> tuple[RateStep, ...]:
        """The rate steps the patient actually receives, with the pump's automatic stop."""
        return tuple(_apply_vtbi(self._steps, self._vtbi_mg))

    def set_rate(self, rate_mg_per_h: float, at_time_min: float) -> None:
        """Staff set the rate to ``rate_mg_per_h`` from ``at_time_min`` on.

        Later steps of the history are replaced; the next values streamed come from a new
        prediction of the whole actual rate history. A time before the last streamed event is
        accepted (a change learnt late) and recorded exactly, but events already streamed stay.
        """
        if not (math.isfinite(rate_mg_per_h) and 0.0 <= rate_mg_per_h <= 10_000.0):
            raise InputError(
                f"rate_mg_per_h must lie in 0-10000, got {rate_mg_per_h}", field="rate_mg_per_h"
            )
        if not (math.isfinite(at_time_min) and 0.0 <= at_time_min <= self.config.duration_min):
            raise InputError(
                f"at_time_min must lie in 0-{self.config.duration_min:g}, got {at_time_min}",
                field="at_time_min",
            )
        kept = [s for s in self._steps if s.time_min < at_time_min]
        kept.append(RateStep(float(at_time_min), float(rate_mg_per_h)))
        self._steps = kept
        self._prediction = None

    def replace_rate_history(self, steps: Sequence[RateStep], *, vtbi_mg: float | None) -> None:
        """Replace the whole rate history (e.g. with the one a service reports)."""
        ordered = sorted(steps, key=lambda s: s.time_min)
        for s in ordered:
            if not (math.isfinite(s.rate_mg_per_h) and s.rate_mg_per_h >= 0 and s.time_min >= 0):
                raise InputError(
                    f"rate step {s} must have time_min >= 0 and rate_mg_per_h >= 0",
                    field="rate_history",
                )
        self._steps = list(ordered)
        self._vtbi_mg = vtbi_mg
        self._prediction = None

    # --- predictions ---------------------------------------------------------------------------

    def schedule(self) -> Schedule:
        """The actual dosing as PK events (effective rate history plus boluses)."""
        steps = _apply_vtbi(self._steps, self._vtbi_mg)
        end = self.config.duration_min
        events: list[Event] = list(self._boluses)
        for i, s in enumerate(steps):
            stop = steps[i + 1].time_min if i + 1 < len(steps) else end
            if s.rate_mg_per_h > 0 and stop > s.time_min:
                events.append(Infusion(s.time_min, stop, s.rate_mg_per_h / MIN_PER_H))
        return Schedule.from_events(events)

    def _predict(self) -> _Prediction:
        if self._prediction is None:
            step = self.config.prediction_step_s
            times_s = np.arange(0.0, self.config.duration_min * S_PER_MIN + step, step)
            params = self.cohort.population.pk_parameters(weight_kg=[self.weight_kg])
            pred = simulate(params, self.schedule(), times_s / S_PER_MIN)
            ce = pred.ce_ng_per_ml
            assert ce is not None, "the population model has an effect site"
            self._prediction = _Prediction(times_s, pred.cp_ng_per_ml[0], ce[0])
        return self._prediction

    def predicted_ce_ng_per_ml(self, time_s: npt.ArrayLike) -> FloatArray:
        """Predicted effect-site concentration (ng/mL) at ``time_s`` (linear between points)."""
        p = self._predict()
        return np.asarray(
            np.interp(np.asarray(time_s, dtype=np.float64), p.times_s, p.ce_ng_per_ml),
            dtype=np.float64,
        )

    def predicted_cp_ng_per_ml(self, time_s: npt.ArrayLike) -> FloatArray:
        """Predicted plasma concentration (ng/mL) at ``time_s``."""
        p = self._predict()
        return np.asarray(
            np.interp(np.asarray(time_s, dtype=np.float64), p.times_s, p.cp_ng_per_ml),
            dtype=np.float64,
        )

    def expected_vitals(self, time_s: float) -> dict[str, float]:
        """Noise-free vital signs at ``time_s`` (baseline plus the individual drug effect)."""
        ce = self.predicted_ce_ng_per_ml(np.array([float(time_s)]))
        c = self.cohort
        sbp = float(c.sbp0_mm_hg[0] + c.sbp_rise(ce)[0])
        dbp = float(c.dbp0_mm_hg[0] + c.dbp_rise(ce)[0])
        return {
            "hr": float(c.hr0_per_min[0] + c.hr_rise(ce)[0]),
            "spo2": float(c.spo2_0_percent[0]),
            "rr": float(c.rr0_per_min[0]),
            "sbp": sbp,
            "dbp": dbp,
            "map": dbp + (sbp - dbp) / 3.0,
            "dissociation": float(c.dissociation(ce)[0]),
        }

    @property
    def stream_time_s(self) -> float:
        """Time of the last streamed event, seconds after the session start."""
        return self._stream_time_s

    def infusing_at(self, time_min: float) -> bool:
        """Whether the pump runs at ``time_min`` (effective history)."""
        rate = 0.0
        for s in _apply_vtbi(self._steps, self._vtbi_mg):
            if s.time_min <= time_min:
                rate = s.rate_mg_per_h
        return rate > 0.0

    # --- the stream ----------------------------------------------------------------------------

    def stream(self, *, start_s: float = 0.0) -> Iterator[SessionEvent]:
        """Readings and check-ins in time order, reacting to rate changes between events.

        ``start_s`` skips the events before it (a monitor connected to a running session); the
        cuff cadence is still counted from time 0.
        """
        noise = self._noise
        assert noise is not None, "build sessions with VirtualSession.create"
        cfg = self.config
        n_s = noise.hr.shape[0]
        c = self.cohort
        next_cuff_s = 0
        check_in_every_s = cfg.check_in_interval_min * S_PER_MIN
        next_check_in = 1
        first = max(math.ceil(start_s), 0)
        for s in range(n_s):
            if s < first:
                # Keep the cuff cadence of the skipped part without computing any value.
                if s == next_cuff_s:
                    interval = (
                        cfg.cuff_interval_infusing_min
                        if self.infusing_at(s / S_PER_MIN)
                        else cfg.cuff_interval_after_min
                    )
                    next_cuff_s = s + round(interval * S_PER_MIN)
                if s == round(next_check_in * check_in_every_s):
                    next_check_in += 1
                continue
            self._stream_time_s = float(s)
            ce = self.predicted_ce_ng_per_ml(np.array([float(s)]))
            if not noise.dropout[s]:
                hr = c.hr0_per_min[0] + c.hr_rise(ce)[0] + noise.hr[s] + noise.motion_hr[s]
                yield Reading(float(s), "hr", float(np.rint(hr)), bool(noise.motion[s]))
                spo2 = c.spo2_0_percent[0] + noise.spo2[s] - noise.motion_spo2[s]
                yield Reading(
                    float(s), "spo2", float(min(np.rint(spo2), 100.0)), bool(noise.motion[s])
                )
                if s % cfg.rr_interval_s == 0:
                    rr = max(c.rr0_per_min[0] + noise.rr[s], 4.0)
                    yield Reading(float(s), "rr", float(np.rint(rr)), False)
            if s == next_cuff_s:
                yield from self._cuff(s, ce)
                interval = (
                    cfg.cuff_interval_infusing_min
                    if self.infusing_at(s / S_PER_MIN)
                    else cfg.cuff_interval_after_min
                )
                next_cuff_s = s + round(interval * S_PER_MIN)
            if s == round(next_check_in * check_in_every_s):
                yield self._check_in(s, ce, next_check_in)
                next_check_in += 1

    def _cuff(self, s: int, ce: FloatArray) -> Iterator[Reading]:
        noise = self._noise
        assert noise is not None
        c = self.cohort
        art = bool(noise.cuff_artefact_sbp[s] > 0)
        sbp = float(
            np.rint(c.sbp0_mm_hg[0] + c.sbp_rise(ce)[0] + noise.sbp[s] + noise.cuff_artefact_sbp[s])
        )
        dbp = float(
            np.rint(c.dbp0_mm_hg[0] + c.dbp_rise(ce)[0] + noise.dbp[s] + noise.cuff_artefact_dbp[s])
        )
        dbp = min(dbp, sbp - 10.0)
        yield Reading(float(s), "sbp", sbp, art)
        yield Reading(float(s), "dbp", dbp, art)
        yield Reading(float(s), "map", float(np.rint(dbp + (sbp - dbp) / 3.0)), art)

    def _check_in(self, s: int, ce: FloatArray, k: int) -> CheckIn:
        noise = self._noise
        assert noise is not None
        c = self.cohort
        scores = check_in_scores(
            c.dissociation(ce),
            c.anxiety_trait,
            c.nausea_prone,
            noise.check_in_z[k : k + 1],
            noise.check_in_u[k : k + 1],
        )
        return CheckIn(
            time_s=float(s),
            comfort=int(scores.comfort[0]),
            intensity=int(scores.intensity[0]),
            anxiety=int(scores.anxiety[0]),
            nausea=int(scores.nausea[0]),
            need_help=bool(scores.need_help[0]),
        )


def _steps_from_infusions(infusions: Sequence[Infusion]) -> list[RateStep]:
    """Step function of the summed infusion rates (mg/h)."""
    times = sorted({t for e in infusions for t in (e.start_min, e.end_min)})
    steps: list[RateStep] = []
    for t in times:
        rate = sum(e.rate_mg_per_min for e in infusions if e.start_min <= t < e.end_min)
        rate_h = rate * MIN_PER_H
        if not steps or steps[-1].rate_mg_per_h != rate_h:
            steps.append(RateStep(t, rate_h))
    return steps


def _apply_vtbi(steps: Sequence[RateStep], vtbi_mg: float | None) -> list[RateStep]:
    """Steps cut to zero once ``vtbi_mg`` has been delivered (pump volume-to-be-infused)."""
    if vtbi_mg is None:
        return list(steps)
    out: list[RateStep] = []
    delivered = 0.0
    for i, s in enumerate(steps):
        out.append(s)
        if s.rate_mg_per_h <= 0:
            continue
        stop = steps[i + 1].time_min if i + 1 < len(steps) else math.inf
        need_min = (vtbi_mg - delivered) / s.rate_mg_per_h * MIN_PER_H
        if s.time_min + need_min < stop - 1e-9:
            out.append(RateStep(s.time_min + need_min, 0.0))
            return out
        delivered += s.rate_mg_per_h / MIN_PER_H * (stop - s.time_min)
    return out
