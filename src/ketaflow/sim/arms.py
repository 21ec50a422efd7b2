"""Trial arms: what a protocol orders and how staff adjust the pump during a session.

An in-silico trial runs every arm on the same virtual patients. An arm (:class:`TrialArm`) is
the protocol's order (dose texts, the dosing weight) and its within-session rules
(:class:`WithinSessionRules`), which see what a clinician sees at each cuff reading during the
infusion (:class:`Observation`, vectorised over patients) and return the pump settings they
would confirm (:class:`Adjustment`).

**Assumption** (stated in every report): a rule's suggestion is applied at the reading that
triggers it, exactly as suggested, as if the clinician confirmed it at once.

Pump model: the pump follows the order's rate profile on its own *plan clock*. Slowing to a
fraction ``speed`` runs the plan clock (and every planned rate) at that fraction, so the whole
ordered dose is still given, over a longer time; a pause stops the clock; a stop ends the
infusion for good. The infusion also stops at ``max_infusion_factor`` x the planned duration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from ketaflow.errors import InputError, ProtocolError
from ketaflow.pk.schedule import DoseInstruction, parse_dose

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

#: Action codes recorded per patient and decision (for counting what the rules did).
ACTION_NONE: Final = 0
ACTION_SLOW: Final = 1
ACTION_PAUSE: Final = 2
ACTION_RESUME: Final = 3
ACTION_STOP: Final = 4
ACTION_NAMES: Final = {
    ACTION_NONE: "none",
    ACTION_SLOW: "slow",
    ACTION_PAUSE: "pause",
    ACTION_RESUME: "resume",
    ACTION_STOP: "stop",
}


@dataclass(frozen=True)
class Observation:
    """What the clinician sees at a cuff reading during the infusion (arrays over patients).

    Vital signs are the cuff reading just taken (mmHg, /min); ``dissociation`` is the system's
    *predicted* dissociation (0-1) from what was actually given; check-in scores are 0-10.
    ``speed`` is the pump's current fraction of the ordered rate, ``paused`` whether it is held.
    """

    time_min: float
    sbp_mm_hg: FloatArray
    dbp_mm_hg: FloatArray
    hr_per_min: FloatArray
    sbp0_mm_hg: FloatArray
    dbp0_mm_hg: FloatArray
    dissociation: FloatArray
    intensity: IntArray
    need_help: BoolArray
    speed: FloatArray
    paused: BoolArray
    delivered_mg: FloatArray
    ordered_mg: FloatArray

    @property
    def n_patients(self) -> int:
        """Number of patients observed."""
        return int(self.speed.shape[0])


@dataclass(frozen=True)
class Adjustment:
    """The pump settings after a decision, per patient, and what was done (action codes)."""

    speed: FloatArray
    paused: BoolArray
    stopped: BoolArray
    action: IntArray


class WithinSessionRules(Protocol):
    """Vectorised within-session rules: observation in, confirmed pump settings out."""

    @property
    def description(self) -> str:
        """One paragraph saying what the rules do (shown in the trial report)."""
        ...

    def decide(self, obs: Observation) -> Adjustment:
        """The settings a clinician would confirm after ``obs`` (no per-patient loop)."""
        ...


@dataclass(frozen=True)
class StandInRules:
    """Minimal within-session rules used until the dosing package provides the clinic's own.

    In order of precedence, at each cuff reading during the infusion:

    1. "I need help" at the check-in: pause the infusion (staff attend; rule 2 may resume it at
       the next reading).
    2. Paused and the reading is below ``resume_sbp``/``resume_dbp``: resume at
       ``resume_factor`` x the speed before the pause.
    3. SBP above ``pause_sbp`` or DBP above ``pause_dbp``: pause.
    4. Check-in intensity at least ``intense_score`` or predicted dissociation at least
       ``intense_dissociation``: slow by ``slow_fraction`` (not below ``min_speed``).

    Every threshold is a stand-in, not a clinical recommendation: 180/110 mmHg follows the
    "BP > 180/110" hold criterion quoted in the clinical reference (section 0, [?]).
    """

    pause_sbp: float = 180.0
    pause_dbp: float = 110.0
    resume_sbp: float = 160.0
    resume_dbp: float = 100.0
    resume_factor: float = 0.75
    intense_score: int = 8
    intense_dissociation: float = 0.8
    slow_fraction: float = 0.25
    min_speed: float = 0.25

    @property
    def description(self) -> str:
        """What the rules do, in words."""
        return (
            "Stand-in rules (until the clinic's dosing rules are available): 'I need help', "
            f"SBP > {self.pause_sbp:g} or DBP > {self.pause_dbp:g} mmHg pause the infusion, "
            f"resuming at {self.resume_factor:.0%} of the previous rate once below "
            f"{self.resume_sbp:g}/{self.resume_dbp:g}; intensity >= {self.intense_score} or "
            f"predicted dissociation >= {self.intense_dissociation:g} slows it by "
            f"{self.slow_fraction:.0%} (not below {self.min_speed:.0%} of the ordered rate)."
        )

    def decide(self, obs: Observation) -> Adjustment:
        """Apply the four rules above, vectorised."""
        speed = obs.speed.copy()
        paused = obs.paused.copy()
        stopped = np.zeros(obs.n_patients, dtype=np.bool_)
        action = np.zeros(obs.n_patients, dtype=np.int64)
        help_ = obs.need_help
        high = (obs.sbp_mm_hg > self.pause_sbp) | (obs.dbp_mm_hg > self.pause_dbp)
        ok = (obs.sbp_mm_hg < self.resume_sbp) & (obs.dbp_mm_hg < self.resume_dbp)
        resume = ~help_ & paused & ok
        speed[resume] = np.maximum(speed[resume] * self.resume_factor, self.min_speed)
        paused[resume] = False
        action[resume] = ACTION_RESUME
        pause = ~paused & (high | help_)
        paused[pause] = True
        action[pause] = ACTION_PAUSE
        intense = (obs.intensity >= self.intense_score) | (
            obs.dissociation >= self.intense_dissociation
        )
        slow = ~paused & ~resume & intense & (speed > self.min_speed)
        speed[slow] = np.maximum(speed[slow] * (1.0 - self.slow_fraction), self.min_speed)
        action[slow] = ACTION_SLOW
        return Adjustment(speed=speed, paused=paused, stopped=stopped, action=action)


@dataclass(frozen=True)
class NoRules:
    """No within-session adjustments: the order runs as written."""

    @property
    def description(self) -> str:
        """What the rules do, in words."""
        return "No within-session adjustments: the order runs as written."

    def decide(self, obs: Observation) -> Adjustment:
        """Keep every setting."""
        return Adjustment(
            speed=obs.speed.copy(),
            paused=obs.paused.copy(),
            stopped=np.zeros(obs.n_patients, dtype=np.bool_),
            action=np.zeros(obs.n_patients, dtype=np.int64),
        )


@dataclass(frozen=True)
class TrialArm:
    """One protocol as a trial arm: its order and its within-session rules.

    ``doses`` are dose texts (the one grammar of :mod:`ketaflow.pk.schedule`); per-kg doses use
    the actual body weight (the landmark trials' basis, PK reference section 4.5).
    """

    name: str
    doses: tuple[str, ...]
    rules: WithinSessionRules = field(default_factory=StandInRules)
    max_infusion_factor: float = 2.0
    source: str = "stand-in"

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InputError("arm name must not be empty", field="protocol")
        if not self.doses:
            raise ProtocolError(f"arm {self.name!r} has no dose", field="protocol")
        if not self.max_infusion_factor >= 1.0:
            raise ProtocolError(
                f"max_infusion_factor must be >= 1, got {self.max_infusion_factor}",
                field="max_infusion_factor",
            )
        self.instructions()  # parse now, so a bad dose text fails at definition

    def instructions(self) -> list[DoseInstruction]:
        """The parsed dose texts."""
        return [parse_dose(text) for text in self.doses]


#: Stand-in protocols (racemic IV ketamine for depression, clinical and PK references
#: section 4.1) used until the dosing package's protocol files are available.
STAND_IN_PROTOCOLS: Final[dict[str, tuple[str, ...]]] = {
    # 0.5 mg/kg over 40 min: the standard antidepressant regimen.
    "depression-standard": ("0.5 mg/kg over 40 min",),
    # 0.5 mg/kg over 100 min: the slower Mayo variant (Singh 2019 letter, [V1-sec]).
    "depression-slow": ("0.5 mg/kg over 100 min",),
    # 0.75 mg/kg over 40 min: the upper end of the usual titration range (Andrade 2017).
    "depression-high": ("0.75 mg/kg over 40 min",),
}


def stand_in_arm(name: str) -> TrialArm:
    """A stand-in arm by protocol name (see :data:`STAND_IN_PROTOCOLS`)."""
    key = name.strip().lower()
    if key not in STAND_IN_PROTOCOLS:
        raise ProtocolError(
            f"unknown protocol {name!r}; choose one of {', '.join(sorted(STAND_IN_PROTOCOLS))}",
            field="protocol",
        )
    return TrialArm(name=key, doses=STAND_IN_PROTOCOLS[key], rules=StandInRules())


def resolve_arms(names: Sequence[str]) -> list[TrialArm]:
    """Trial arms for protocol names, in order; names must be distinct."""
    if not names:
        raise InputError("give at least one --protocol", field="protocol")
    seen: set[str] = set()
    arms = []
    for n in names:
        arm = stand_in_arm(n)
        if arm.name in seen:
            raise InputError(f"protocol {arm.name!r} is given twice", field="protocol")
        seen.add(arm.name)
        arms.append(arm)
    return arms
