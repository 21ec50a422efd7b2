"""Courses of sessions in in-silico trials: between-session titration on simulated outcomes.

A protocol prescribes a course (e.g. six infusions over two to three weeks) and, when it
titrates, between-session rules that set the next dose from how the last session went. A trial
simulates the whole course for every virtual patient: session 1 at the protocol dose, then for
each following session the dose chosen by
:func:`ketaflow.dosing.titration.decide_next_dose_mg_per_kg` (the function the clinic uses,
vectorised over patients) fed with each patient's simulated session outcome
(:func:`titration_inputs`).

The patient is the same in every session (same covariates, PK and PD parameters: no
between-session variability is modelled, there is no published inter-occasion variability of
ketamine PK/PD in the reference), and sessions are days apart, so no drug carries over: every
session starts drug-free. Cuff and check-in noise is new in every session (its time constants
are minutes; see :func:`ketaflow.sim.engine.noise_stream`).

Two inputs of the rules have no model in the reference and are explicit **assumptions** of a
trial, printed in every report:

* :class:`ResponseAssumption`: the % improvement of depression scores after each session.
  Default ``none`` (0 %): every patient responds inadequately, so a titrating protocol raises
  the dose whenever the session was tolerated. That is the worst case for exposure and safety,
  the question an in-silico safety trial asks.
* :class:`CadssMapping`: the CADSS total (the dissociation scale the protocols' rules use) from
  the predicted dissociation fraction of :data:`ketaflow.pk.effect.DISSOCIATION` (no published
  CADSS-concentration model exists).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from ketaflow.clinical.alarms import SuggestedAction, VitalRule
from ketaflow.dosing.titration import BatchTitration, decide_next_dose_mg_per_kg
from ketaflow.errors import InputError
from ketaflow.sim.arms import TrialArm

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Largest number of sessions a trial course may have.
MAX_SESSIONS: Final = 100
#: CADSS: 23 items scored 0-4, total 0-92 (Bremner 1998; the "scale maximum" mapping).
CADSS_MAX_POINTS: Final = 92.0
#: Mean CADSS total after IV ketamine 0.5 mg/kg over 40 min in 110 mood-disorder patients
#: (J Affect Disord 2018;227:11-16, doi 10.1016/j.jad.2017.09.023, abstract; cited by the
#: depression-titration protocol for its > 17 hold rule).
CADSS_MEAN_AT_0_5_MG_PER_KG: Final = 7.7
#: Mean predicted peak dissociation fraction of depression-standard (0.5 mg/kg over 40 min,
#: actual weight) in the default virtual population and model, from a 100,000-patient
#: one-session trial (seed 7, 360-min horizon): 0.450 (95 % CI 0.449 to 0.451).
MEAN_PEAK_DISSOCIATION_AT_0_5_MG_PER_KG: Final = 0.450
#: Default CADSS points per unit of predicted dissociation fraction: calibrated so that the
#: mean predicted CADSS at 0.5 mg/kg equals the published mean (7.7 / 0.450 = 17.1).
DEFAULT_CADSS_POINTS_PER_FRACTION: Final = round(
    CADSS_MEAN_AT_0_5_MG_PER_KG / MEAN_PEAK_DISSOCIATION_AT_0_5_MG_PER_KG, 1
)


@dataclass(frozen=True)
class ResponseAssumption:
    """Assumed % improvement of the depression score after every session (no model exists).

    ``none``: 0 % for everyone (inadequate response, the worst case for exposure); ``fixed``:
    ``pct`` % for every patient after every session.
    """

    kind: Literal["none", "fixed"] = "none"
    pct: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("none", "fixed"):
            raise InputError(
                f"response must be none or fixed:PCT, got {self.kind!r}", field="response"
            )
        if not (math.isfinite(self.pct) and 0.0 <= self.pct <= 100.0):
            raise InputError(
                f"response: the improvement must lie in 0-100 %, got {self.pct!r}",
                field="response",
            )
        if self.kind == "none" and self.pct != 0.0:
            raise InputError("response none means 0 % improvement", field="response")

    @classmethod
    def parse(cls, text: str) -> ResponseAssumption:
        """``none`` or ``fixed:PCT`` (e.g. ``fixed:60``)."""
        t = text.strip().lower()
        if t == "none":
            return cls()
        if t.startswith("fixed:"):
            try:
                pct = float(t.split(":", 1)[1])
            except ValueError:
                pct = math.nan
            if not math.isfinite(pct):
                raise InputError(
                    f"--response fixed:PCT needs a number 0-100, got {text!r}", field="response"
                )
            return cls("fixed", pct)
        raise InputError(
            f"--response must be none or fixed:PCT (e.g. fixed:60), got {text!r}",
            field="response",
        )

    @property
    def label(self) -> str:
        """Short form, as on the command line."""
        return "none" if self.kind == "none" else f"fixed:{self.pct:g}"

    def describe(self) -> str:
        """The assumption in words (printed in reports)."""
        if self.kind == "none":
            return (
                "ASSUMPTION (response): no antidepressant response model exists in the "
                "reference; every patient is assumed to improve 0 % after every session "
                "(inadequate response), so a titrating protocol raises the dose after every "
                "tolerated session its rules allow. This is the worst case for exposure and "
                "safety, not a prediction of efficacy."
            )
        return (
            f"ASSUMPTION (response): no antidepressant response model exists in the reference; "
            f"every patient is assumed to improve {self.pct:g} % from baseline after every "
            "session, whatever the dose. Not a prediction of efficacy."
        )

    def response_pct(self, session_number: int, n: int) -> FloatArray:
        """% improvement of ``n`` patients after session ``session_number``."""
        del session_number  # the same after every session under both assumptions
        return np.full(n, self.pct)


@dataclass(frozen=True)
class CadssMapping:
    """CADSS total from predicted dissociation: ``points_per_fraction`` x fraction (0-92).

    No published model links the CADSS to ketamine concentration; this linear map is an
    assumption. The default (17.1 points per unit) is calibrated on the published mean CADSS
    at 0.5 mg/kg (see :data:`DEFAULT_CADSS_POINTS_PER_FRACTION`); 92 reads the model's
    fraction of maximum effect as a fraction of the scale's maximum.
    """

    points_per_fraction: float = DEFAULT_CADSS_POINTS_PER_FRACTION

    def __post_init__(self) -> None:
        p = self.points_per_fraction
        if not (math.isfinite(p) and 0.0 < p <= CADSS_MAX_POINTS):
            raise InputError(
                f"cadss points per fraction must lie in (0, {CADSS_MAX_POINTS:g}], got {p!r}",
                field="cadss_per_fraction",
            )

    def score(self, dissociation: FloatArray) -> FloatArray:
        """CADSS points (0-92) for predicted dissociation fractions (0-1)."""
        return np.asarray(
            np.clip(self.points_per_fraction * dissociation, 0.0, CADSS_MAX_POINTS),
            dtype=np.float64,
        )

    def describe(self) -> str:
        """The assumption in words (printed in reports)."""
        calibrated = (
            f" This value is calibrated so that the mean predicted CADSS after 0.5 mg/kg over "
            f"40 min equals the published mean {CADSS_MEAN_AT_0_5_MG_PER_KG:g} in mood-disorder "
            f"patients (J Affect Disord 2018;227:11-16) given the mean predicted peak "
            f"dissociation {MEAN_PEAK_DISSOCIATION_AT_0_5_MG_PER_KG:g}; with it, a CADSS above "
            "17 needs a predicted fraction near 1, so dissociation-based hold rules rarely fire."
            if self.points_per_fraction == DEFAULT_CADSS_POINTS_PER_FRACTION
            else ""
        )
        return (
            "ASSUMPTION (dissociation scale): no published CADSS-concentration model exists; "
            f"the session's CADSS total is taken as {self.points_per_fraction:g} x the peak "
            f"predicted dissociation fraction (capped at {CADSS_MAX_POINTS:g}, the scale "
            f"maximum: 23 items x 0-4).{calibrated} The peak is used, not the value at the "
            "protocol's CADSS time (40 min, near the peak)."
        )


@dataclass(frozen=True)
class CourseSettings:
    """How a trial runs courses: number of sessions (None: each protocol's own course) and the
    two assumptions the between-session rules need."""

    sessions: int | None = None
    response: ResponseAssumption = ResponseAssumption()
    cadss: CadssMapping = CadssMapping()

    def __post_init__(self) -> None:
        if self.sessions is not None and not 1 <= self.sessions <= MAX_SESSIONS:
            raise InputError(
                f"sessions must lie in 1-{MAX_SESSIONS}, got {self.sessions}", field="sessions"
            )

    def sessions_for(self, arm: TrialArm) -> int:
        """Sessions of ``arm``'s course in this trial."""
        return arm.course_sessions if self.sessions is None else self.sessions


#: How the simulator decides "tolerated" and "stop threshold crossed" (printed in reports).
TOLERATED_DEFINITION: Final = (
    "A session counts as tolerated when the whole ordered dose was given (the infusion was not "
    "stopped by an in-session rule nor cut at the protocol's maximum infusion time) and no stop "
    "threshold was crossed."
)
STOP_THRESHOLD_DEFINITION: Final = (
    "The stop threshold counts as crossed when any of the clinic's blood-pressure alarm rules "
    "whose action is 'stop the infusion' fired on the session's cuff readings (pre-dose to "
    "discharge readiness), as evaluated by the trial's alarm reducer."
)


def stop_alarm_codes(rules: Sequence[VitalRule]) -> tuple[str, ...]:
    """Codes of the clinic's BP rules whose action is to stop the infusion."""
    return tuple(
        r.spec.code
        for r in rules
        if r.vital.value in ("sbp", "dbp") and r.spec.action is SuggestedAction.STOP_INFUSION
    )


@dataclass(frozen=True)
class TitrationInputs:
    """One session's outcome as the between-session rules see it (arrays over patients)."""

    tolerated: BoolArray
    stop_threshold_crossed: BoolArray
    cadss: FloatArray
    max_sbp_mm_hg: FloatArray
    max_dbp_mm_hg: FloatArray


def titration_inputs(
    outcomes: Mapping[str, npt.NDArray[np.generic]],
    stop_codes: Sequence[str],
    cadss: CadssMapping,
) -> TitrationInputs:
    """Derive the rules' inputs from a session's simulated per-patient outcomes."""
    stopped = np.asarray(outcomes["stopped_early"], dtype=np.bool_)
    crossed = np.zeros(stopped.shape[0], dtype=np.bool_)
    for code in stop_codes:
        crossed |= np.asarray(outcomes[f"alarm_{code}"], dtype=np.bool_)
    return TitrationInputs(
        tolerated=~stopped & ~crossed,
        stop_threshold_crossed=crossed,
        cadss=cadss.score(np.asarray(outcomes["peak_dissociation"], dtype=np.float64)),
        max_sbp_mm_hg=np.asarray(outcomes["max_sbp_mm_hg"], dtype=np.float64),
        max_dbp_mm_hg=np.asarray(outcomes["max_dbp_mm_hg"], dtype=np.float64),
    )


def next_doses(
    arm: TrialArm,
    dose_mg_per_kg: FloatArray,
    session_number: int,
    inputs: TitrationInputs,
    response_pct: FloatArray,
) -> BatchTitration:
    """The next session's dose of every patient by the arm's protocol rules (dosing package).

    A fixed-dose arm (no titration bounds) keeps the dose; the deciding rule is still reported.
    Missing BP maxima (no reading) are passed as NaN, which no threshold condition matches.
    """
    return decide_next_dose_mg_per_kg(
        dose_mg_per_kg,
        float(session_number),
        inputs.tolerated,
        response_pct,
        inputs.cadss,
        inputs.max_sbp_mm_hg,
        inputs.max_dbp_mm_hg,
        inputs.stop_threshold_crossed,
        rules=arm.between_sessions,
        bounds=arm.titration,
    )
