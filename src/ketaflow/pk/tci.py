"""Target-controlled infusion (TCI): plasma and effect-site controllers with pump constraints.

Every update interval Δ (10 s by default) the controller chooses one constant rate for the next
Δ from the exact model state, rounds it as the pump would deliver it, and moves its state
forward with the rate actually delivered:

* **Plasma targeting** (Jacobs 1990; Bailey & Shafer 1991): ``R = max(0, (T - Cp_free(Δ)) /
  Cp_unit(Δ))``, where ``Cp_free`` is the plasma concentration Δ ahead with no more drug and
  ``Cp_unit`` the plasma concentration after a unit rate for Δ from an empty body. Because the
  model is linear this puts Cp exactly on target at every update.
* **Effect-site targeting** (Shafer & Gregg 1992, as in STANPUMP): give R for Δ (then nothing)
  so that the *peak* of the predicted effect-site concentration equals the target:
  ``R = max(0, min over t of (T - b(t)) / h(t))`` with ``b`` the free Ce trajectory and ``h``
  the Ce response to a unit rate over Δ. The minimum is found on a grid (1 s by default) over a
  horizon that covers the peak, vectorised with NumPy, then refined by parabolic interpolation.
  Near steady state it switches to plasma control (STANPUMP: when Ce is within 5 % of target;
  SimTIVA adds ``|Ce - Cp| < 10 % of Ce``), which removes the on/off rate chatter that pure
  Shafer-Gregg shows at steady state.

Pump constraints act inside the loop: a maximum rate, a rate resolution (rounded to nearest)
and the update interval. :meth:`TciController.report_delivered` re-bases the state on the
volume the pump says it delivered, as STANPUMP does.

Targets are written as text, ``"200 ng/mL from 0 min"``, or as a predicted effect,
``"0.3 dissociation from 0 min"``, converted through the inverse of the PD model in
:mod:`ketaflow.pk.effect` (see :func:`parse_target`).

Internals use mg, L and min (so Cp and Ce are mg/L); public names carry their unit. The
single-patient inner loop works on plain Python floats in the model's *modal* coordinates (one
decaying exponential per eigenvalue, the form STANPUMP keeps). The modal step is checked
against the exact matrix exponential of :func:`ketaflow.pk.solve.discretize` when the controller
is built; if the eigenvectors are ill-conditioned (for instance ke0 equal to a disposition rate
constant) the controller falls back to the exact transition matrices themselves.

>>> from ketaflow.pk.library import load_model
>>> params = load_model("domino-1984").parameters(weight_kg=70.0)
>>> ctl = TciController(params, mode="plasma")
>>> result = ctl.run(TargetSchedule.from_texts(["200 ng/mL from 0 min"]), duration_min=5.0)
>>> round(float(result.rate_mg_per_h[0]), 1)  # first 10 s
362.1
>>> round(float(result.cp_ng_per_ml[-1]), 6)
200.0
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from ketaflow.errors import InputError, StateError, UnitError
from ketaflow.pk.effect import PD_MODELS, Enantiomer
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import Infusion, Schedule
from ketaflow.pk.solve import discretize, simulate
from ketaflow.units import (
    MIN_PER_H,
    S_PER_MIN,
    Dimension,
    mg_per_l_to_ng_per_ml,
    ng_per_ml_to_mg_per_l,
    parse_quantity,
)

FloatArray = npt.NDArray[np.float64]
TciMode = Literal["plasma", "effect"]
EngineChoice = Literal["auto", "modal", "matrix"]
Control = Literal["plasma", "effect", "stop"]

#: Upper plausibility bound on a target (ng/mL). Anaesthetic ketamine concentrations are about
#: 1000-3000 ng/mL; a target above 10 µg/mL is almost certainly a unit slip ("200 mg/L" for
#: "200 ng/mL"). This is an input check, not a clinical dose limit (those live in ``dosing``).
MAX_TARGET_NG_PER_ML = 10_000.0

#: Largest accepted update interval, min. STANPUMP and the peers use 10 s; beyond a few minutes
#: the controller stops being a controller.
MAX_UPDATE_MIN = 10.0

#: Longest effect-site search horizon, min. A model whose unit-response peak lies beyond this
#: cannot be effect-targeted with a short bolus.
_MAX_HORIZON_MIN = 24.0 * MIN_PER_H

#: The modal form is used when it reproduces the exact one-step transition to this relative
#: accuracy; otherwise the controller falls back to the exact matrices.
_MODAL_TOLERANCE = 1e-10

#: Times closer than this (min) are the same instant (update times are sums of Δ).
_TIME_EPS_MIN = 1e-9


# --- targets ---------------------------------------------------------------------------------

TARGET_GRAMMAR_HELP = (
    "write e.g. '200 ng/mL from 0 min', '0.4 ug/mL from 60 min' or "
    "'0.3 dissociation from 0 min' (effect keys: " + ", ".join(PD_MODELS) + ")"
)
_FROM_RE = re.compile(r"\bfrom\b", re.IGNORECASE)
_EFFECT_RE = re.compile(
    r"^\s*(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<key>[A-Za-z_][\w ]*?)\s*$"
)


@dataclass(frozen=True, slots=True)
class TargetStep:
    """One parsed target: a concentration (ng/mL) or an effect, from ``start_min`` on.

    ``effect_key`` names the PD model of :data:`ketaflow.pk.effect.PD_MODELS` for an effect
    target (``value`` is then in that model's effect unit); it is ``None`` for a concentration
    target (``value`` in ng/mL).
    """

    start_min: float
    value: float
    effect_key: str | None = None
    text: str = ""

    def concentration_ng_per_ml(self, enantiomer: Enantiomer) -> float:
        """The effect-site (or plasma) concentration this target asks for, ng/mL."""
        if self.effect_key is None:
            return self.value
        return float(PD_MODELS[self.effect_key].inverse(self.value, enantiomer=enantiomer))


def _target_fail(text: str, problem: str) -> InputError:
    return InputError(f"target {text!r}: {problem}; {TARGET_GRAMMAR_HELP}", field="target")


def parse_target(text: str) -> TargetStep:
    """Parse ``"VALUE from TIME"`` where VALUE is a concentration or ``NUMBER <effect key>``.

    Targets are concentrations, not doses, so this is a separate grammar from
    :func:`ketaflow.pk.schedule.parse_dose`. ``from TIME`` may be left out (time 0).

    >>> parse_target("400 ng/mL from 60 min")
    TargetStep(start_min=60.0, value=400.0, effect_key=None, text='400 ng/mL from 60 min')
    >>> parse_target("0.3 dissociation").effect_key
    'dissociation'
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"target is empty; {TARGET_GRAMMAR_HELP}", field="target")
    parts = _FROM_RE.split(text.strip())
    if len(parts) > 2:
        raise _target_fail(text, "'from' appears twice")
    head = parts[0].strip()
    start = 0.0
    if len(parts) == 2:
        if not parts[1].strip():
            raise _target_fail(text, "'from' needs a time such as '60 min'")
        try:
            start = parse_quantity(parts[1], Dimension.TIME, field="target start").value
        except UnitError as exc:
            raise InputError(f"target {text!r}: {exc.message}", field="target") from exc
    if not head:
        raise _target_fail(text, "it does not start with a concentration or an effect")
    value, key = _parse_level(head, text)
    return TargetStep(start, value, key, text.strip())


def _parse_level(head: str, text: str) -> tuple[float, str | None]:
    """``(value, effect_key)``: ng/mL and None, or an effect value and its PD model key."""
    match = _EFFECT_RE.match(head)
    key = match.group("key").strip().lower().replace(" ", "_") if match else ""
    if match is not None and key in PD_MODELS:
        value = float(match.group("num"))
        if not math.isfinite(value) or value < 0:
            raise _target_fail(text, "the effect must be a finite number >= 0")
        return value, key
    try:
        q = parse_quantity(head, Dimension.CONCENTRATION, field="target")
    except UnitError as exc:
        raise _target_fail(text, exc.message) from exc
    return mg_per_l_to_ng_per_ml(q.value), None


def parse_level_ng_per_ml(text: str, *, enantiomer: Enantiomer, field: str) -> float:
    """A concentration (``"150 ng/mL"``) or a predicted effect (``"0.3 dissociation"``) as an
    effect-site concentration in ng/mL, for caps and thresholds."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{field} is empty; {TARGET_GRAMMAR_HELP}", field=field)
    try:
        value, key = _parse_level(text.strip(), text)
        if key is None:
            return value
        return float(PD_MODELS[key].inverse(value, enantiomer=enantiomer))
    except InputError as exc:
        raise InputError(exc.message.replace("target", field, 1), field=field) from exc


@dataclass(frozen=True, slots=True)
class TargetSchedule:
    """Targets as steps: ``targets_ng_per_ml[i]`` holds from ``starts_min[i]`` to the next start.

    Before the first start the target is 0 (no drug). Effect targets are already converted to
    concentrations; ``steps`` keeps what was written.
    """

    starts_min: tuple[float, ...]
    targets_ng_per_ml: tuple[float, ...]
    steps: tuple[TargetStep, ...] = ()

    def __post_init__(self) -> None:
        if len(self.starts_min) != len(self.targets_ng_per_ml) or not self.starts_min:
            raise InputError("a target schedule needs at least one (start, target) pair")
        for a, b in zip(self.starts_min, self.starts_min[1:], strict=False):
            if not b > a:
                raise InputError(
                    f"target start times must increase strictly, got {a:g} then {b:g} min; "
                    "give each start time once",
                    field="target",
                )
        for t, c in zip(self.starts_min, self.targets_ng_per_ml, strict=True):
            if not (math.isfinite(t) and t >= 0):
                raise InputError(f"target start must be >= 0 min, got {t}", field="target")
            if not (math.isfinite(c) and 0 <= c <= MAX_TARGET_NG_PER_ML):
                raise InputError(
                    f"target must be between 0 and {MAX_TARGET_NG_PER_ML:g} ng/mL, got {c:g} "
                    "ng/mL; check the unit (ng/mL, µg/mL)",
                    field="target",
                )

    @classmethod
    def from_texts(
        cls, texts: Iterable[str] | str, *, enantiomer: Enantiomer = "racemic"
    ) -> TargetSchedule:
        """Parse target texts; effect targets use the PD inverse for ``enantiomer``."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise InputError(f"give at least one target; {TARGET_GRAMMAR_HELP}", field="target")
        steps = sorted((parse_target(t) for t in items), key=lambda s: s.start_min)
        return cls(
            tuple(s.start_min for s in steps),
            tuple(s.concentration_ng_per_ml(enantiomer) for s in steps),
            tuple(steps),
        )

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[float, float]]) -> TargetSchedule:
        """From ``(start_min, target_ng_per_ml)`` pairs."""
        ordered = sorted(pairs)
        return cls(tuple(p[0] for p in ordered), tuple(p[1] for p in ordered))

    def target_ng_per_ml_on(self, times_min: npt.ArrayLike) -> FloatArray:
        """Targets in force at each of ``times_min`` (vectorised :meth:`target_ng_per_ml_at`)."""
        t = np.asarray(times_min, dtype=np.float64)
        idx = np.searchsorted(np.asarray(self.starts_min), t + _TIME_EPS_MIN, side="right") - 1
        values = np.asarray(self.targets_ng_per_ml, dtype=np.float64)
        return np.where(idx >= 0, values[np.maximum(idx, 0)], 0.0)

    def target_ng_per_ml_at(self, t_min: float) -> float:
        """Target in force at ``t_min`` (right-continuous; 0 before the first start)."""
        value = 0.0
        for start, target in zip(self.starts_min, self.targets_ng_per_ml, strict=True):
            if start <= t_min + _TIME_EPS_MIN:
                value = target
            else:
                break
        return value


# --- pump and controller settings ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PumpLimits:
    """What the syringe pump can do.

    ``syringe_mg_per_ml`` is the drug concentration in the syringe; ``max_rate_ml_per_h`` the
    highest rate (None: unlimited); ``resolution_ml_per_h`` the rate step the pump accepts
    (rates are rounded to the nearest step; 0 means continuous).
    """

    syringe_mg_per_ml: float
    max_rate_ml_per_h: float | None = None
    resolution_ml_per_h: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.syringe_mg_per_ml) and self.syringe_mg_per_ml > 0):
            raise InputError(
                f"syringe concentration must be > 0 mg/mL, got {self.syringe_mg_per_ml}",
                field="syringe",
            )
        if self.max_rate_ml_per_h is not None and not (
            math.isfinite(self.max_rate_ml_per_h) and self.max_rate_ml_per_h > 0
        ):
            raise InputError(
                f"maximum rate must be > 0 mL/h, got {self.max_rate_ml_per_h}", field="max_rate"
            )
        if not (math.isfinite(self.resolution_ml_per_h) and self.resolution_ml_per_h >= 0):
            raise InputError(
                f"rate resolution must be >= 0 mL/h, got {self.resolution_ml_per_h}",
                field="resolution",
            )
        if self.max_rate_ml_per_h is not None and self.resolution_ml_per_h > self.max_rate_ml_per_h:
            raise InputError(
                f"rate resolution {self.resolution_ml_per_h:g} mL/h exceeds the maximum rate "
                f"{self.max_rate_ml_per_h:g} mL/h",
                field="resolution",
            )

    @classmethod
    def from_text(
        cls, *, syringe: str, max_rate: str | None = None, resolution: str = "0.1 mL/h"
    ) -> PumpLimits:
        """Parse ``syringe="10 mg/mL"``, ``max_rate="1200 mL/h"`` (or a mass rate such as
        ``"200 mg/min"``) and ``resolution="0.1 mL/h"``."""
        conc = parse_quantity(syringe, Dimension.CONCENTRATION, field="syringe").to("mg/mL")
        pump = cls(conc)
        max_ml_h: float | None = None
        if max_rate is not None:
            q = parse_quantity(
                max_rate, (Dimension.VOLUME_RATE, Dimension.MASS_RATE), field="max_rate"
            )
            if q.dimension is Dimension.VOLUME_RATE:
                max_ml_h = q.to("mL/h")
            else:
                max_ml_h = pump.ml_per_h(q.value)
        res = parse_quantity(resolution, Dimension.VOLUME_RATE, field="resolution").to("mL/h")
        return cls(conc, max_ml_h, res)

    def ml_per_h(self, rate_mg_per_min: float) -> float:
        """Volume rate (mL/h) that delivers ``rate_mg_per_min`` from this syringe."""
        return rate_mg_per_min * MIN_PER_H / self.syringe_mg_per_ml

    def mg_per_min(self, rate_ml_per_h: float) -> float:
        """Drug rate (mg/min) delivered at ``rate_ml_per_h``."""
        return rate_ml_per_h * self.syringe_mg_per_ml / MIN_PER_H

    @property
    def max_rate_mg_per_min(self) -> float:
        """Maximum drug rate, mg/min (infinite when unlimited)."""
        if self.max_rate_ml_per_h is None:
            return math.inf
        return self.mg_per_min(self.max_rate_ml_per_h)

    @property
    def resolution_mg_per_min(self) -> float:
        """Rate step in drug units, mg/min (0: continuous)."""
        return self.mg_per_min(self.resolution_ml_per_h)


@dataclass(frozen=True, slots=True)
class TciConfig:
    """Controller settings.

    ``update_s``: update interval Δ. ``plasma_band``: in effect mode, drive the plasma instead
    when ``|Ce - T| <= plasma_band * T`` (STANPUMP's 5 %; None disables the switch, giving pure
    Shafer-Gregg). ``equilibrium_band``: additionally require ``|Ce - Cp| <= equilibrium_band *
    Ce`` before switching (SimTIVA's 10 %; None disables it). ``search_step_s``: grid step of
    the effect-site peak search. ``horizon_min``: search horizon (None: three times the peak
    time of the unit response, at least 10 min; extended automatically when the minimum falls
    on its end). ``engine``: ``"auto"`` uses the modal form when it reproduces the exact
    transition and the exact matrices otherwise; ``"modal"``/``"matrix"`` force one (forcing
    ``"modal"`` on a model where it is inaccurate is an error). ``cp_limit_factor``: in effect
    mode, never plan a plasma concentration above this multiple of the target at the end of an
    interval (Van Poucke 2004's limited plasma overshoot; None: unlimited, as in STANPUMP).
    With a slow ke0 the unlimited effect-site bolus drives Cp far above the target (about 18
    times for Domino with ke0 0.0835/min), which a limit such as 1.5 trades for a slower rise.
    """

    update_s: float = 10.0
    plasma_band: float | None = 0.05
    equilibrium_band: float | None = 0.10
    search_step_s: float = 1.0
    horizon_min: float | None = None
    engine: EngineChoice = "auto"
    cp_limit_factor: float | None = None

    def __post_init__(self) -> None:
        upd = self.update_s / S_PER_MIN
        if not (math.isfinite(upd) and 0 < upd <= MAX_UPDATE_MIN):
            raise InputError(
                f"update interval must be > 0 s and <= {MAX_UPDATE_MIN:g} min, got "
                f"{self.update_s:g} s",
                field="update",
            )
        for name in ("plasma_band", "equilibrium_band"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and 0 <= v < 1):
                raise InputError(f"{name} must be in [0, 1), got {v}", field=name)
        if not (math.isfinite(self.search_step_s) and 0 < self.search_step_s <= self.update_s):
            raise InputError(
                f"search_step_s must be > 0 and <= the update interval ({self.update_s:g} s), "
                f"got {self.search_step_s:g}",
                field="search_step_s",
            )
        if self.cp_limit_factor is not None and not (
            math.isfinite(self.cp_limit_factor) and self.cp_limit_factor >= 1.0
        ):
            raise InputError(
                f"cp_limit_factor must be >= 1 (a multiple of the target), got "
                f"{self.cp_limit_factor}",
                field="cp_limit_factor",
            )
        if self.engine not in ("auto", "modal", "matrix"):
            raise InputError(
                f"engine must be 'auto', 'modal' or 'matrix', got {self.engine!r}", field="engine"
            )
        if self.horizon_min is not None and not (
            math.isfinite(self.horizon_min) and 0 < self.horizon_min <= _MAX_HORIZON_MIN
        ):
            raise InputError(
                f"horizon_min must be > 0 and <= {_MAX_HORIZON_MIN:g}, got {self.horizon_min}",
                field="horizon_min",
            )

    @property
    def update_min(self) -> float:
        """Update interval, min."""
        return self.update_s / S_PER_MIN


# --- exact single-patient propagation --------------------------------------------------------


class _Engine(ABC):
    """Exact propagation of one patient over one update interval, in some coordinates ``s``.

    The physical state is ``basis @ s`` (amounts in mg, Ce in mg/L, parent compartments only).
    Subclasses implement :meth:`step`; everything else is shared.
    """

    kind: str
    basis: FloatArray
    basis_inv: FloatArray
    cp_coef: list[float]
    ce_coef: list[float]
    cp_next_coef: list[float]
    cp_unit: float

    @abstractmethod
    def step(self, s: list[float], rate_mg_per_min: float) -> list[float]:
        """State after one update interval at a constant rate."""

    # ``sum(map(mul, ...))`` rather than ``math.fsum``: these run a few times per update in
    # the inner loop, on 3-5 terms of one sign pattern, where fsum's extra precision is moot.
    def cp(self, s: list[float]) -> float:
        return float(sum(map(operator.mul, self.cp_coef, s)))

    def ce(self, s: list[float]) -> float:
        return float(sum(map(operator.mul, self.ce_coef, s)))

    def cp_free_next(self, s: list[float]) -> float:
        return float(sum(map(operator.mul, self.cp_next_coef, s)))

    def to_physical(self, s: list[float]) -> FloatArray:
        return np.asarray(self.basis @ np.asarray(s), dtype=np.float64)

    def from_physical(self, x: FloatArray) -> list[float]:
        return [float(v) for v in self.basis_inv @ x]


class _ModalEngine(_Engine):
    """Diagonal form: each mode decays on its own, ``s_i <- d_i s_i + g_i R``."""

    kind = "modal"

    def __init__(
        self,
        lam: FloatArray,
        vecs: FloatArray,
        vinv: FloatArray,
        dt_min: float,
        v1_l: float,
        i_ce: int | None,
    ) -> None:
        self.lam = lam
        self.basis = vecs
        self.basis_inv = vinv
        self.dt_min = dt_min
        # Input enters A1: its modal components are the first column of V^-1.
        self.w_in = vinv[:, 0].copy()
        self.decay = [float(v) for v in np.exp(lam * dt_min)]
        self.gain = [float(v) for v in self.w_in * np.expm1(lam * dt_min) / lam]
        self.cp_coef = [float(v) for v in vecs[0] / v1_l]
        self.ce_coef = [0.0] * len(lam) if i_ce is None else [float(v) for v in vecs[i_ce]]
        self.cp_next_coef = [c * d for c, d in zip(self.cp_coef, self.decay, strict=True)]
        self.cp_unit = math.fsum(c * g for c, g in zip(self.cp_coef, self.gain, strict=True))
        self.ce_vec = np.asarray(self.ce_coef)

    def step(self, s: list[float], rate_mg_per_min: float) -> list[float]:
        return [
            d * v + g * rate_mg_per_min
            for d, v, g in zip(self.decay, s, self.gain, strict=False)  # equal by construction
        ]

    def phi_gamma(self) -> tuple[FloatArray, FloatArray]:
        """The one-step transition in physical coordinates (for the accuracy check)."""
        phi = (self.basis * np.exp(self.lam * self.dt_min)) @ self.basis_inv
        gamma = self.basis @ np.asarray(self.gain)
        return np.asarray(phi), np.asarray(gamma)


class _MatrixEngine(_Engine):
    """The exact transition matrices of :func:`discretize`, applied with plain floats."""

    kind = "matrix"

    def __init__(self, phi: FloatArray, gamma: FloatArray, v1_l: float, i_ce: int | None) -> None:
        k = phi.shape[0]
        self.basis = np.eye(k)
        self.basis_inv = np.eye(k)
        self.rows = [[float(v) for v in row] for row in phi]
        self.gamma = [float(v) for v in gamma]
        self.cp_coef = [1.0 / v1_l] + [0.0] * (k - 1)
        self.ce_coef = [0.0] * k
        if i_ce is not None:
            self.ce_coef[i_ce] = 1.0
        self.cp_next_coef = [float(v) / v1_l for v in phi[0]]
        self.cp_unit = float(gamma[0]) / v1_l

    def step(self, s: list[float], rate_mg_per_min: float) -> list[float]:
        return [
            sum(map(operator.mul, row, s)) + g * rate_mg_per_min
            for row, g in zip(self.rows, self.gamma, strict=True)
        ]


def _parent_only(params: PKParameters) -> PKParameters:
    if params.n_patients != 1:
        raise InputError(
            f"TCI controls one patient; the parameter set has {params.n_patients}",
            field="params",
        )
    return params if params.metabolite is None else params.replace(metabolite=None)


def _build_engine(params: PKParameters, dt_min: float, choice: EngineChoice = "auto") -> _Engine:
    """Modal engine if it reproduces the exact transition, else the exact matrices."""
    names = params.state_names()
    i_ce = names.index("Ce") if "Ce" in names else None
    v1 = float(params.v1_l[0])
    phi_b, gamma_b = discretize(params, dt_min)
    phi, gamma = phi_b[0], gamma_b[0]
    if choice == "matrix":
        return _MatrixEngine(phi, gamma, v1, i_ce)
    a = params.system_matrix()[0]
    lam_c, vecs_c = np.linalg.eig(a)
    if np.all(np.abs(lam_c.imag) == 0) and np.all(lam_c.real < 0):
        lam = lam_c.real.astype(np.float64)
        vecs = vecs_c.real.astype(np.float64)
        if np.linalg.cond(vecs) < 1e8:
            vinv = np.asarray(np.linalg.inv(vecs), dtype=np.float64)
            modal = _ModalEngine(lam, vecs, vinv, dt_min, v1, i_ce)
            m_phi, m_gamma = modal.phi_gamma()
            err_phi = np.max(np.abs(m_phi - phi)) / max(np.max(np.abs(phi)), 1e-300)
            err_gamma = np.max(np.abs(m_gamma - gamma)) / max(np.max(np.abs(gamma)), 1e-300)
            if max(err_phi, err_gamma) <= _MODAL_TOLERANCE:
                return modal
    if choice == "modal":
        raise InputError(
            "the modal form does not reproduce this model's exact transition (repeated or "
            "nearly repeated rate constants); use engine 'auto' or 'matrix'",
            field="engine",
        )
    return _MatrixEngine(phi, gamma, v1, i_ce)


class _EffectSearch:
    """Free effect-site trajectory and unit response on a search grid ``t_g = δ·(g+1)``."""

    def __init__(
        self,
        params: PKParameters,
        engine: _Engine,
        dt_min: float,
        step_min: float,
        horizon_min: float | None,
    ) -> None:
        self.params = params
        self.engine = engine
        self.dt_min = dt_min
        self.step_min = step_min
        if horizon_min is None:
            horizon_min = self._auto_horizon()
        self._build(horizon_min)

    def _responses(self, times_min: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(rows, h): free Ce at ``times_min`` is ``rows @ s``; h the unit-rate response."""
        eng = self.engine
        dt = self.dt_min
        if isinstance(eng, _ModalEngine):
            ex = np.exp(np.outer(times_min, eng.lam))
            rows = ex * eng.ce_vec
            on = np.minimum(times_min, dt)[:, None]
            off = np.maximum(times_min - dt, 0.0)[:, None]
            unit = (eng.w_in * np.expm1(eng.lam * on) / eng.lam) * np.exp(eng.lam * off)
            return rows, np.asarray(unit @ eng.ce_vec)
        # Exact matrices for every grid time at once (one patient replicated per time).
        names = self.params.state_names()
        i_ce = names.index("Ce")
        rep = self.params.take(np.zeros(len(times_min), dtype=np.intp))
        phi_t, gamma_t = discretize(rep, times_min)
        _, gamma_dt = discretize(self.params, dt)
        phi_off, _ = discretize(rep, np.maximum(times_min - dt, 0.0))
        h = np.where(times_min <= dt, gamma_t[:, i_ce], phi_off[:, i_ce, :] @ gamma_dt[0])
        return np.asarray(phi_t[:, i_ce, :]), np.asarray(h)

    def _auto_horizon(self) -> float:
        # Locate the unit-response peak on a coarse grid first (10 s steps up to 4 h).
        coarse = np.arange(1, 1441, dtype=np.float64) * (10.0 / S_PER_MIN)
        _, h = self._responses(coarse)
        i = int(np.argmax(h))
        if i == len(coarse) - 1 or h[i] <= 0:
            raise InputError(
                "the effect-site response to a short infusion does not peak within 4 h; "
                "effect-site targeting is not possible with this model (use --mode plasma)",
                field="mode",
            )
        return max(3.0 * float(coarse[i]), 10.0)

    def _build(self, horizon_min: float) -> None:
        n = max(math.ceil(horizon_min / self.step_min), 3)
        self.horizon_min = n * self.step_min
        self.times = np.arange(1, n + 1, dtype=np.float64) * self.step_min
        self.rows, self.h = self._responses(self.times)
        if np.any(self.h <= 0):
            raise InputError(
                "the effect-site unit response is not positive on the search grid",
                field="mode",
            )

    def rate_mg_per_min(self, target_mg_per_l: float, s: list[float]) -> float:
        """Rate for one interval so that the predicted Ce peak equals the target (>= 0)."""
        while True:
            b = self.rows @ np.asarray(s)
            ratio = (target_mg_per_l - b) / self.h
            j = int(np.argmin(ratio))
            best = float(ratio[j])
            if best <= 0.0:
                return 0.0
            last = len(ratio) - 1
            if j == last and self.horizon_min < _MAX_HORIZON_MIN:
                self._build(min(2.0 * self.horizon_min, _MAX_HORIZON_MIN))
                continue
            if 0 < j < last:
                # Parabolic vertex through the three grid values around the minimum.
                fm, f0, fp = float(ratio[j - 1]), best, float(ratio[j + 1])
                curv = fm - 2.0 * f0 + fp
                if curv > 0.0:
                    best = min(best, f0 - (fm - fp) ** 2 / (8.0 * curv))
            return max(best, 0.0)


# --- controller ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TciCommand:
    """One update: the rate to run from ``time_min`` for ``duration_min``.

    ``requested_rate_mg_per_min`` is the algorithm's rate before the pump limits;
    ``rate_mg_per_min`` what the pump is told (limited and rounded); ``limited`` says whether
    the maximum rate cut it. ``cp_ng_per_ml``/``ce_ng_per_ml`` are predicted at ``time_min``.
    """

    time_min: float
    duration_min: float
    target_ng_per_ml: float
    rate_mg_per_min: float
    requested_rate_mg_per_min: float
    rate_ml_per_h: float | None
    control: Control
    limited: bool
    cp_ng_per_ml: float
    ce_ng_per_ml: float | None

    @property
    def rate_mg_per_h(self) -> float:
        """Commanded rate, mg/h."""
        return self.rate_mg_per_min * MIN_PER_H


@dataclass(frozen=True, eq=False)
class TciResult:
    """A TCI run: one row per update plus a final row at the end (rate 0, pump stopped).

    Row ``i`` holds from ``time_min[i]`` to ``time_min[i+1]``; concentrations are the
    controller's predictions at ``time_min[i]``; ``volume_ml`` is the cumulative volume infused
    up to ``time_min[i]``. ``initial_state`` is the physical state at ``time_min[0]``.
    """

    mode: TciMode
    update_min: float
    time_min: FloatArray
    target_ng_per_ml: FloatArray
    rate_mg_per_min: FloatArray
    requested_rate_mg_per_min: FloatArray
    cp_ng_per_ml: FloatArray
    ce_ng_per_ml: FloatArray | None
    control: tuple[Control, ...]
    limited: npt.NDArray[np.bool_]
    pump: PumpLimits | None
    initial_state: FloatArray
    engine: str = field(default="modal")

    @property
    def n_updates(self) -> int:
        """Number of update intervals."""
        return len(self.time_min) - 1

    @classmethod
    def from_rates(
        cls,
        params: PKParameters,
        rates_mg_per_min: npt.ArrayLike,
        *,
        update_min: float,
        targets: TargetSchedule,
        mode: TciMode,
        pump: PumpLimits | None = None,
    ) -> TciResult:
        """A result for rates planned elsewhere (another controller, a pump log), from time 0
        with no drug on board, so that :func:`assess` can score them like our own."""
        p = _parent_only(params)
        rates = np.asarray(rates_mg_per_min, dtype=np.float64).reshape(-1)
        if rates.size == 0 or np.any(rates < 0) or not np.all(np.isfinite(rates)):
            raise InputError("rates must be a non-empty list of finite values >= 0", field="rates")
        n = rates.size
        times = np.arange(n + 1, dtype=np.float64) * update_min
        events = [
            Infusion(float(times[i]), float(times[i + 1]), float(r))
            for i, r in enumerate(rates)
            if r > 0
        ]
        pred = simulate(p, Schedule.from_events(events), times)
        ce = pred.ce_ng_per_ml
        all_rates = np.concatenate([rates, [0.0]])
        site: Control = "plasma" if mode == "plasma" else "effect"
        return cls(
            mode=mode,
            update_min=update_min,
            time_min=times,
            target_ng_per_ml=targets.target_ng_per_ml_on(times),
            rate_mg_per_min=all_rates,
            requested_rate_mg_per_min=all_rates.copy(),
            cp_ng_per_ml=np.asarray(pred.cp_ng_per_ml[0]),
            ce_ng_per_ml=None if ce is None else np.asarray(ce[0]),
            control=(*([site] * n), "stop"),
            limited=np.zeros(n + 1, dtype=np.bool_),
            pump=pump,
            initial_state=np.zeros(len(p.state_names())),
            engine="external",
        )

    @property
    def rate_mg_per_h(self) -> FloatArray:
        """Commanded rates, mg/h."""
        return self.rate_mg_per_min * MIN_PER_H

    @property
    def rate_ml_per_h(self) -> FloatArray | None:
        """Commanded rates in mL/h at the syringe concentration (None without a pump)."""
        if self.pump is None:
            return None
        return self.rate_mg_per_min * MIN_PER_H / self.pump.syringe_mg_per_ml

    @property
    def dose_mg(self) -> FloatArray:
        """Cumulative amount infused up to each row's time, mg."""
        amounts = self.rate_mg_per_min[:-1] * np.diff(self.time_min)
        return np.concatenate([[0.0], np.cumsum(amounts)])

    @property
    def volume_ml(self) -> FloatArray | None:
        """Cumulative volume infused up to each row's time, mL (None without a pump)."""
        if self.pump is None:
            return None
        return self.dose_mg / self.pump.syringe_mg_per_ml

    @property
    def total_mg(self) -> float:
        """Total amount infused, mg."""
        return float(self.dose_mg[-1])

    def schedule(self) -> Schedule:
        """The commanded rates as a :class:`Schedule` (equal neighbours merged) for replay."""
        events: list[Infusion] = []
        t = self.time_min
        r = self.rate_mg_per_min
        i = 0
        n = self.n_updates
        while i < n:
            j = i + 1
            while j < n and r[j] == r[i]:
                j += 1
            if r[i] > 0:
                events.append(Infusion(float(t[i]), float(t[j]), float(r[i])))
            i = j
        return Schedule.from_events(events)


class TciController:
    """Plasma- or effect-site-targeted TCI for one patient, with pump limits.

    Use :meth:`command` once per update interval (it plans the next interval and advances the
    prediction as if the command were delivered), :meth:`report_delivered` when the pump tells
    what it really delivered, or :meth:`run` to plan a whole target schedule offline.
    ``initial_state`` (amounts in mg, Ce in mg/L, in the order of
    :meth:`PKParameters.state_names`, metabolite entries excluded) starts from drug already
    given.
    """

    def __init__(
        self,
        params: PKParameters,
        *,
        mode: TciMode = "effect",
        config: TciConfig | None = None,
        pump: PumpLimits | None = None,
        initial_state: npt.ArrayLike | None = None,
        start_time_min: float = 0.0,
    ) -> None:
        if mode not in ("plasma", "effect"):
            raise InputError(f"mode must be 'plasma' or 'effect', got {mode!r}", field="mode")
        self.params = _parent_only(params)
        self.mode: TciMode = mode
        self.config = config if config is not None else TciConfig()
        self.pump = pump
        self.update_min = self.config.update_min
        if mode == "effect" and not self.params.has_effect_site:
            raise InputError(
                "effect-site targeting needs a model with an effect site (ke0); use "
                "mode 'plasma' or a model with ke0_per_min",
                field="mode",
            )
        self._engine = _build_engine(self.params, self.update_min, self.config.engine)
        k = len(self.params.state_names())
        if initial_state is None:
            x0 = np.zeros(k)
        else:
            x0 = np.asarray(initial_state, dtype=np.float64).reshape(-1)
            if x0.shape != (k,) or not np.all(np.isfinite(x0)) or np.any(x0 < 0):
                raise InputError(
                    f"initial_state must be {k} finite amounts >= 0 "
                    f"({', '.join(self.params.state_names())})",
                    field="initial_state",
                )
        if not (math.isfinite(start_time_min) and start_time_min >= 0):
            raise InputError("start_time_min must be >= 0", field="start_time_min")
        self._s = self._engine.from_physical(x0)
        self._time_min = float(start_time_min)
        self._max = math.inf if pump is None else pump.max_rate_mg_per_min
        self._res = 0.0 if pump is None else pump.resolution_mg_per_min
        self._search: _EffectSearch | None = None
        if mode == "effect":
            self._search = _EffectSearch(
                self.params,
                self._engine,
                self.update_min,
                self.config.search_step_s / S_PER_MIN,
                self.config.horizon_min,
            )
        # Re-basing bookkeeping: the last state confirmed by the pump and the commands since.
        self._confirmed_time = self._time_min
        self._confirmed_state = x0.copy()
        self._confirmed_volume_ml = 0.0
        # Commanded (duration_min, rate_mg_per_min) segments since the confirmed time.
        self._since: list[tuple[float, float]] = []
        self._volume_ml = 0.0
        self._transitions: dict[float, tuple[FloatArray, FloatArray]] = {}

    # --- read-outs ---------------------------------------------------------------------------

    @property
    def engine_kind(self) -> str:
        """``"modal"`` or ``"matrix"`` (the exact fallback)."""
        return self._engine.kind

    @property
    def time_min(self) -> float:
        """Time of the next update, min."""
        return self._time_min

    @property
    def state(self) -> FloatArray:
        """Predicted physical state now (amounts in mg, Ce in mg/L)."""
        return self._engine.to_physical(self._s)

    @property
    def cp_ng_per_ml(self) -> float:
        """Predicted plasma concentration now, ng/mL."""
        return mg_per_l_to_ng_per_ml(self._engine.cp(self._s))

    @property
    def ce_ng_per_ml(self) -> float | None:
        """Predicted effect-site concentration now, ng/mL (None without an effect site)."""
        if not self.params.has_effect_site:
            return None
        return mg_per_l_to_ng_per_ml(self._engine.ce(self._s))

    @property
    def volume_ml(self) -> float:
        """Cumulative volume infused so far (reported where known, else commanded), mL."""
        return self._volume_ml

    # --- control -----------------------------------------------------------------------------

    def _plan(self, target_mg_per_l: float, s: list[float]) -> tuple[float, Control]:
        """Requested rate (mg/min, before pump limits) for state ``s`` and the site controlled."""
        if target_mg_per_l <= 0.0:
            return 0.0, "stop"
        search = self._search
        if search is not None:
            eng = self._engine
            ce = eng.ce(s)
            band = self.config.plasma_band
            in_band = band is not None and abs(ce - target_mg_per_l) <= band * target_mg_per_l
            eq_band = self.config.equilibrium_band
            if in_band and eq_band is not None:
                in_band = abs(ce - eng.cp(s)) <= eq_band * ce
            if not in_band:
                req = search.rate_mg_per_min(target_mg_per_l, s)
                factor = self.config.cp_limit_factor
                if factor is not None:
                    room = (factor * target_mg_per_l - eng.cp_free_next(s)) / eng.cp_unit
                    req = min(req, max(room, 0.0))
                return req, "effect"
        req = (target_mg_per_l - self._engine.cp_free_next(s)) / self._engine.cp_unit
        return (req if req > 0.0 else 0.0), "plasma"

    def _deliverable(self, req: float) -> float:
        r = req if req < self._max else self._max
        res = self._res
        if res > 0.0:
            r = math.floor(r / res + 0.5) * res
            if r > self._max:
                r = self._max
        return r if r > 0.0 else 0.0

    def command(self, target_ng_per_ml: float) -> TciCommand:
        """Plan the next interval for ``target_ng_per_ml`` and advance the prediction by Δ."""
        if not (math.isfinite(target_ng_per_ml) and 0 <= target_ng_per_ml <= MAX_TARGET_NG_PER_ML):
            raise InputError(
                f"target must be between 0 and {MAX_TARGET_NG_PER_ML:g} ng/mL, got "
                f"{target_ng_per_ml}",
                field="target",
            )
        s = self._s
        cp = self._engine.cp(s)
        ce = self._engine.ce(s)
        req, control = self._plan(ng_per_ml_to_mg_per_l(target_ng_per_ml), s)
        rate = self._deliverable(req)
        self._advance(rate)
        return TciCommand(
            time_min=self._time_min - self.update_min,
            duration_min=self.update_min,
            target_ng_per_ml=float(target_ng_per_ml),
            rate_mg_per_min=rate,
            requested_rate_mg_per_min=req,
            rate_ml_per_h=None if self.pump is None else self.pump.ml_per_h(rate),
            control=control,
            limited=req > self._max,
            cp_ng_per_ml=mg_per_l_to_ng_per_ml(cp),
            ce_ng_per_ml=mg_per_l_to_ng_per_ml(ce) if self.params.has_effect_site else None,
        )

    def _advance(self, rate: float) -> None:
        self._s = self._engine.step(self._s, rate)
        self._time_min += self.update_min
        self._since.append((self.update_min, rate))
        if self.pump is not None:
            self._volume_ml += rate * self.update_min / self.pump.syringe_mg_per_ml

    def run(self, targets: TargetSchedule, duration_min: float) -> TciResult:
        """Plan ``duration_min`` of TCI from now for a target schedule (times from time 0).

        ``duration_min`` must be a whole number of update intervals.
        """
        n_float = duration_min / self.update_min
        n = round(n_float) if math.isfinite(n_float) else 0
        if not (n >= 1 and abs(n - n_float) < 1e-6):
            raise InputError(
                f"duration must be a positive whole number of update intervals "
                f"({self.update_min * S_PER_MIN:g} s), got {duration_min:g} min",
                field="duration",
            )
        eng = self._engine
        t0 = self._time_min
        dt = self.update_min
        x_start = eng.to_physical(self._s)
        times = t0 + np.arange(n + 1, dtype=np.float64) * dt
        tgt_arr = targets.target_ng_per_ml_on(times)
        tgt = (tgt_arr / mg_per_l_to_ng_per_ml(1.0)).tolist()
        rates: list[float] = []
        reqs: list[float] = []
        states: list[list[float]] = []
        controls: list[Control] = []
        plan = self._plan
        deliver = self._deliverable
        step = eng.step
        s = self._s
        if self._search is None and isinstance(eng, _ModalEngine):
            # Plasma mode in modal form: the rules of ``_plan`` and ``_ModalEngine.step``
            # inlined, because the two calls per update were half of the loop's cost
            # (measured: 1.3 -> 0.8 ms for 720 updates).
            cp_next = eng.cp_next_coef
            cp_unit = eng.cp_unit
            decay = eng.decay
            gain = eng.gain
            mul = operator.mul
            for i in range(n):
                states.append(s)
                target = tgt[i]
                if target > 0.0:
                    req = (target - sum(map(mul, cp_next, s))) / cp_unit
                    if req < 0.0:
                        req = 0.0
                    controls.append("plasma")
                else:
                    req = 0.0
                    controls.append("stop")
                rate = deliver(req)
                # strict=False: the lengths match by construction and the check costs 20 %.
                s = [d * v + g * rate for d, v, g in zip(decay, s, gain, strict=False)]
                rates.append(rate)
                reqs.append(req)
        else:
            for i in range(n):
                states.append(s)
                req, control = plan(tgt[i], s)
                rate = deliver(req)
                s = step(s, rate)
                rates.append(rate)
                reqs.append(req)
                controls.append(control)
        states.append(s)
        rates.append(0.0)
        reqs.append(0.0)
        controls.append("stop")
        # Read-outs for every row at once (they are linear in the state).
        state_arr = np.asarray(states)
        cps = state_arr @ np.asarray(eng.cp_coef)
        ces = state_arr @ np.asarray(eng.ce_coef)
        self._s = s
        self._time_min = t0 + n * dt
        self._since.extend(zip(itertools.repeat(dt, n), rates[:-1], strict=True))
        rate_arr = np.asarray(rates)
        if self.pump is not None:
            self._volume_ml += float(rate_arr.sum()) * dt / self.pump.syringe_mg_per_ml
        req_arr = np.asarray(reqs)
        return TciResult(
            mode=self.mode,
            update_min=dt,
            time_min=times,
            target_ng_per_ml=tgt_arr,
            rate_mg_per_min=rate_arr,
            requested_rate_mg_per_min=req_arr,
            cp_ng_per_ml=np.asarray(cps) * mg_per_l_to_ng_per_ml(1.0),
            ce_ng_per_ml=(
                np.asarray(ces) * mg_per_l_to_ng_per_ml(1.0)
                if self.params.has_effect_site
                else None
            ),
            control=tuple(controls),
            limited=req_arr > self._max,
            pump=self.pump,
            initial_state=x_start,
            engine=eng.kind,
        )

    # --- re-basing on what the pump delivered ------------------------------------------------

    def _propagate(self, x: FloatArray, dt_min: float, rate_mg_per_min: float) -> FloatArray:
        if dt_min <= 0.0:
            return x
        key = round(dt_min, 12)
        cached = self._transitions.get(key)
        if cached is None:
            phi, gamma = discretize(self.params, dt_min)
            cached = (phi[0], gamma[0])
            self._transitions[key] = cached
        return np.asarray(cached[0] @ x + cached[1] * rate_mg_per_min)

    def report_delivered(self, volume_ml: float, at_time_min: float) -> None:
        """Re-base the prediction on the pump's cumulative volume infused at ``at_time_min``.

        ``volume_ml`` is the pump's total since the controller started (its "volume infused"
        counter). The drug delivered since the previous report is spread over the commanded
        intervals in proportion to the commanded amounts (uniformly if nothing was commanded);
        the state at ``at_time_min`` is recomputed exactly from the last confirmed state, and
        the commands issued after ``at_time_min`` are replayed on top. Later commands therefore
        plan from what was really given, as STANPUMP does.
        """
        if self.pump is None:
            raise StateError(
                "report_delivered needs the syringe concentration: create the controller "
                "with pump=PumpLimits(...)"
            )
        if not (math.isfinite(volume_ml) and math.isfinite(at_time_min)):
            raise InputError("delivered volume and time must be finite", field="volume_ml")
        t_c = self._confirmed_time
        if at_time_min < t_c - _TIME_EPS_MIN or at_time_min > self._time_min + _TIME_EPS_MIN:
            raise InputError(
                f"delivery report time must lie between the last report ({t_c:g} min) and the "
                f"current time ({self._time_min:g} min), got {at_time_min:g} min",
                field="at_time_min",
            )
        if volume_ml < self._confirmed_volume_ml - 1e-12:
            raise InputError(
                f"the pump's cumulative volume cannot decrease: last report "
                f"{self._confirmed_volume_ml:g} mL, now {volume_ml:g} mL",
                field="volume_ml",
            )
        # Commanded segments before and after the report time (the one containing it split).
        before: list[tuple[float, float]] = []
        after: list[tuple[float, float]] = []
        a = t_c
        for d, rate in self._since:
            b = a + d
            if b <= at_time_min + _TIME_EPS_MIN:
                before.append((d, rate))
            elif a >= at_time_min - _TIME_EPS_MIN:
                after.append((d, rate))
            else:
                before.append((at_time_min - a, rate))
                after.append((b - at_time_min, rate))
            a = b
        delivered_mg = (volume_ml - self._confirmed_volume_ml) * self.pump.syringe_mg_per_ml
        commanded_mg = sum(d * r for d, r in before)
        x = self._confirmed_state.copy()
        span = at_time_min - t_c
        if commanded_mg > 0.0:
            scale = delivered_mg / commanded_mg
            for d, r in before:
                x = self._propagate(x, d, r * scale)
        elif span > _TIME_EPS_MIN:
            x = self._propagate(x, span, delivered_mg / span)
        else:
            x[0] += delivered_mg  # delivered "at once": the report came with no elapsed time
        self._confirmed_time = at_time_min
        self._confirmed_state = x.copy()
        self._confirmed_volume_ml = volume_ml
        self._volume_ml = volume_ml
        for d, r in after:
            x = self._propagate(x, d, r)
            self._volume_ml += d * r / self.pump.syringe_mg_per_ml
        self._since = after
        self._s = self._engine.from_physical(x)


# --- assessment by replay in the exact engine ------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentMetrics:
    """Performance of one target segment, replayed in the exact engine.

    Errors are ``(C - T) / T`` of the controlled site (Cp in plasma mode, Ce in effect mode), in
    percent. MDPE/MDAPE cover 5 to 60 min after the change (or to the next change).
    ``max_overshoot_pct`` is the largest excursion past the target in the direction of the
    change (negative if it never got there); ``time_to_95_s`` the time until the concentration
    first comes within 5 % of the target (None if it never does);
    ``zero_intervals_30_60`` counts update intervals starting 30-60 min after the change with
    rate zero.
    """

    start_min: float
    end_min: float
    target_ng_per_ml: float
    mdpe_pct: float
    mdape_pct: float
    max_overshoot_pct: float
    time_to_95_s: float | None
    zero_intervals_30_60: int


@dataclass(frozen=True, slots=True)
class TciAssessment:
    """Replay metrics of a whole run."""

    site: TciMode
    segments: tuple[SegmentMetrics, ...]
    total_mg: float
    max_rate_mg_per_h: float
    times_min: FloatArray
    concentration_ng_per_ml: FloatArray


def assess(
    params: PKParameters,
    result: TciResult,
    *,
    site: TciMode | None = None,
    sample_s: float = 1.0,
) -> TciAssessment:
    """Replay ``result``'s rates in :func:`ketaflow.pk.solve.simulate` and score each target
    segment (site defaults to the controller's mode). ``params`` may differ from the
    controller's (a different "true" patient)."""
    site = result.mode if site is None else site
    t0 = float(result.time_min[0])
    t_end = float(result.time_min[-1])
    n_samples = round((t_end - t0) * S_PER_MIN / sample_s)
    times = np.linspace(t0, t_end, n_samples + 1)
    # simulate() starts at time 0 from ``initial_state``: shift a run that started later.
    events = [
        Infusion(e.start_min - t0, e.end_min - t0, e.rate_mg_per_min)
        for e in result.schedule().events
        if isinstance(e, Infusion)
    ]
    pred = simulate(
        _parent_only(params),
        Schedule.from_events(events),
        times - t0,
        initial_state=result.initial_state.reshape(1, -1),
    )
    if site == "effect":
        if pred.ce_ng_per_ml is None:
            raise InputError("effect-site assessment needs a model with ke0", field="site")
        conc = pred.ce_ng_per_ml[0]
    else:
        conc = pred.cp_ng_per_ml[0]
    # Target segments: runs of constant target among the update rows.
    tg = result.target_ng_per_ml
    starts = [0] + [i for i in range(1, result.n_updates) if tg[i] != tg[i - 1]]
    segs: list[SegmentMetrics] = []
    for si, i0 in enumerate(starts):
        i1 = starts[si + 1] if si + 1 < len(starts) else result.n_updates
        a = float(result.time_min[i0])
        b = float(result.time_min[i1])
        target = float(tg[i0])
        if target <= 0:
            continue
        prev = float(tg[i0 - 1]) if i0 > 0 else 0.0
        direction = 1.0 if target >= prev else -1.0
        in_seg = (times >= a - 1e-9) & (times <= b + 1e-9)
        pe = (conc[in_seg] - target) / target
        t_seg = times[in_seg] - a
        window = (t_seg >= 5.0 - 1e-9) & (t_seg <= 60.0 + 1e-9)
        mdpe = float(np.median(pe[window]) * 100) if np.any(window) else math.nan
        mdape = float(np.median(np.abs(pe[window])) * 100) if np.any(window) else math.nan
        reached = np.flatnonzero(direction * pe >= -0.05)
        t95 = float(t_seg[reached[0]] * S_PER_MIN) if reached.size else None
        overshoot = float(np.max(direction * pe) * 100)
        rows = np.arange(i0, i1)
        rel = result.time_min[rows] - a
        zero = int(
            np.sum((rel >= 30.0 - 1e-9) & (rel < 60.0 - 1e-9) & (result.rate_mg_per_min[rows] == 0))
        )
        segs.append(SegmentMetrics(a, b, target, mdpe, mdape, overshoot, t95, zero))
    return TciAssessment(
        site=site,
        segments=tuple(segs),
        total_mg=result.total_mg,
        max_rate_mg_per_h=float(np.max(result.rate_mg_per_h)),
        times_min=times,
        concentration_ng_per_ml=conc,
    )


def run_tci(
    params: PKParameters,
    targets: TargetSchedule | Sequence[str],
    *,
    duration_min: float,
    mode: TciMode = "effect",
    config: TciConfig | None = None,
    pump: PumpLimits | None = None,
    enantiomer: Enantiomer = "racemic",
) -> TciResult:
    """Convenience wrapper: build a controller and plan a target schedule from time 0."""
    sched = (
        targets
        if isinstance(targets, TargetSchedule)
        else TargetSchedule.from_texts(targets, enantiomer=enantiomer)
    )
    ctl = TciController(params, mode=mode, config=config, pump=pump)
    return ctl.run(sched, duration_min)
