"""Body-size descriptors and the dosing weight.

Every function takes body weight in kg and height in cm (convert pounds and inches with
:mod:`ketaflow.units` first) and validates its input at the edge: a weight or height that no
adult could have raises :class:`~ketaflow.errors.InputError` naming the field, the accepted
range and the value received. The formulas are the published ones; each docstring gives the
formula and its citation, and ``tests/unit/dosing/test_body_size.py`` checks them against worked
values computed by hand.

The dosing weight is what a mg/kg dose is multiplied by. Which weight to use for ketamine is not
settled (``ketamine-pkpd.md`` §4.5: trials dosed on actual weight; the APA consensus suggested
ideal weight for BMI >= 30), so it is a policy chosen per protocol
(:class:`DosingWeightRule`), and :func:`dosing_weight` always returns a one-line explanation
that is shown on every order.

>>> round(bmi_kg_per_m2(70.0, 175.0), 2)
22.86
>>> dw = dosing_weight(DosingWeightRule.parse("ideal"), weight_kg=100.0, height_cm=175.0,
...                    sex="male")
>>> round(dw.weight_kg, 1), dw.policy.value
(70.5, 'ideal')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from ketaflow.errors import InputError
from ketaflow.units import CM_PER_IN

Sex = Literal["male", "female"]

# --- Plausibility ranges (adult outpatients) --------------------------------------------------
# These are not clinical limits; they catch typing and unit errors before any arithmetic. They
# are wide on purpose: the lightest and heaviest adults a clinic is likely to see lie well
# inside them, while a weight typed in grams or a height typed in metres or inches does not.

#: Accepted body weight, kg. Below 25 kg or above 350 kg is a typing or unit error for an adult.
WEIGHT_RANGE_KG: Final = (25.0, 350.0)
#: Accepted height, cm. 120-230 cm covers adult heights; "1.75" (metres) or "69" (inches)
#: falls outside and is reported with the conversion.
HEIGHT_RANGE_CM: Final = (120.0, 230.0)
#: Accepted BMI, kg/m². Outside 10-90 the weight and height cannot belong to the same adult.
BMI_RANGE_KG_PER_M2: Final = (10.0, 90.0)

#: Devine 1974 coefficients: base weight at 60 in (kg) and kg per inch above 60 in.
_DEVINE_BASE_KG: Final[dict[str, float]] = {"male": 50.0, "female": 45.5}
_DEVINE_KG_PER_IN: Final = 2.3
_DEVINE_BASE_IN: Final = 60.0
#: Fraction of the excess over ideal weight counted in the adjusted body weight.
DEFAULT_ADJUSTMENT_FACTOR: Final = 0.4


def parse_sex(value: str) -> Sex:
    """Validate a sex entry (``"male"``/``"female"``, also ``"m"``/``"f"``, any case)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in ("male", "m"):
        return "male"
    if text in ("female", "f"):
        return "female"
    raise InputError(
        f"sex: expected 'male' or 'female' (the formulas are sex-specific), got {value!r}",
        field="sex",
    )


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name}: expected a finite number, got {value!r}", field=name)
    return float(value)


def validate_weight_kg(weight_kg: float, *, field: str = "weight_kg") -> float:
    """Return ``weight_kg`` if an adult could weigh it, else raise :class:`InputError`."""
    w = _finite(field, weight_kg)
    lo, hi = WEIGHT_RANGE_KG
    if not lo <= w <= hi:
        fix = "enter the measured weight in kg"
        if w > hi and lo <= w / 1000.0 <= hi:
            fix = f"if it was entered in grams, enter {w / 1000.0:g} kg"
        raise InputError(
            f"{field}: {w:g} kg is outside the plausible adult range {lo:g}-{hi:g} kg; {fix}",
            field=field,
        )
    return w


def validate_height_cm(height_cm: float, *, field: str = "height_cm") -> float:
    """Return ``height_cm`` if an adult could be that tall, else raise :class:`InputError`."""
    h = _finite(field, height_cm)
    lo, hi = HEIGHT_RANGE_CM
    if not lo <= h <= hi:
        fix = "enter the height in cm"
        if lo <= h * 100.0 <= hi:
            fix = f"if it was entered in metres, enter {h * 100.0:g} cm"
        elif lo <= h * CM_PER_IN <= hi:
            fix = f"if it was entered in inches, enter {h * CM_PER_IN:.1f} cm"
        raise InputError(
            f"{field}: {h:g} cm is outside the plausible adult range {lo:g}-{hi:g} cm; {fix}",
            field=field,
        )
    return h


def validate_body(weight_kg: float, height_cm: float) -> tuple[float, float]:
    """Validate weight and height together (each range, then their BMI)."""
    w = validate_weight_kg(weight_kg)
    h = validate_height_cm(height_cm)
    bmi = w / (h / 100.0) ** 2
    lo, hi = BMI_RANGE_KG_PER_M2
    if not lo <= bmi <= hi:
        raise InputError(
            f"weight_kg: {w:g} kg at {h:g} cm gives BMI {bmi:.1f} kg/m², outside {lo:g}-{hi:g}; "
            "check that weight is in kg and height in cm",
            field="weight_kg",
        )
    return w, h


def bmi_kg_per_m2(weight_kg: float, height_cm: float) -> float:
    """Body-mass index, kg/m².

    ``BMI = W / (H/100)²`` with W in kg and H in cm (Quetelet; WHO definition).
    """
    w, h = validate_body(weight_kg, height_cm)
    return w / (h / 100.0) ** 2


def ideal_body_weight_kg(height_cm: float, sex: Sex | str) -> float:
    """Ideal body weight (Devine), kg.

    ``IBW = 50 kg (male) or 45.5 kg (female) + 2.3 kg per inch of height over 60 in``.
    Devine BJ. Gentamicin therapy. Drug Intell Clin Pharm 1974;8:650-655. Below 60 in the same
    line is extended (fewer kg than the base), as most calculators do.
    """
    h = validate_height_cm(height_cm)
    s = parse_sex(sex)
    height_in = h / CM_PER_IN
    return _DEVINE_BASE_KG[s] + _DEVINE_KG_PER_IN * (height_in - _DEVINE_BASE_IN)


def adjusted_body_weight_kg(
    weight_kg: float,
    height_cm: float,
    sex: Sex | str,
    *,
    factor: float = DEFAULT_ADJUSTMENT_FACTOR,
) -> float:
    """Adjusted body weight, kg.

    ``AdjBW = IBW + factor x (W - IBW)``, factor 0.4 by default, with IBW from Devine. The 0.4
    correction comes from aminoglycoside dosing in obesity (Bauer LA, Edwards WA, Dellinger EP,
    Simonowitz DA. Eur J Clin Pharmacol 1983;24:643-647). The formula is applied as written; use
    :func:`dosing_weight` for the policy that never doses above the actual weight.
    """
    w, h = validate_body(weight_kg, height_cm)
    f = _finite("factor", factor)
    if not 0.0 <= f <= 1.0:
        raise InputError(f"factor: must be between 0 and 1, got {f:g}", field="factor")
    ibw = ideal_body_weight_kg(h, sex)
    return ibw + f * (w - ibw)


def lean_body_mass_james_kg(weight_kg: float, height_cm: float, sex: Sex | str) -> float:
    """Lean body mass (James), kg.

    ``male: 1.1 W - 128 (W/H)²``, ``female: 1.07 W - 148 (W/H)²``, W in kg, H in cm.
    James WPT. Research on obesity. London: HMSO; 1976.

    The formula has a maximum and then *falls* as weight rises (at BMI ≈ 43 for men, ≈ 36 for
    women); beyond it the value is meaningless, so this raises :class:`InputError` there and
    points to :func:`lean_body_mass_janmahasatian_kg`.
    """
    w, h = validate_body(weight_kg, height_cm)
    s = parse_sex(sex)
    a, b = (1.1, 128.0) if s == "male" else (1.07, 148.0)
    # d/dW (aW - bW²/H²) = 0 at W = aH²/(2b): past this weight the formula decreases.
    w_peak = a * h * h / (2.0 * b)
    if w > w_peak:
        raise InputError(
            f"weight_kg: the James formula is not valid above {w_peak:.0f} kg at {h:g} cm "
            f"({s}); use the Janmahasatian formula instead",
            field="weight_kg",
        )
    return a * w - b * (w / h) ** 2


def lean_body_mass_janmahasatian_kg(weight_kg: float, height_cm: float, sex: Sex | str) -> float:
    """Lean body mass (fat-free mass, Janmahasatian), kg.

    ``male: 9270 W / (6680 + 216 BMI)``, ``female: 9270 W / (8780 + 244 BMI)``.
    Janmahasatian S, Duffull SB, Ash S, Ward LC, Byrne NM, Green B. Quantification of lean
    bodyweight. Clin Pharmacokinet 2005;44(10):1051-1065.
    """
    w, h = validate_body(weight_kg, height_cm)
    s = parse_sex(sex)
    bmi = w / (h / 100.0) ** 2
    if s == "male":
        return 9270.0 * w / (6680.0 + 216.0 * bmi)
    return 9270.0 * w / (8780.0 + 244.0 * bmi)


def bsa_mosteller_m2(weight_kg: float, height_cm: float) -> float:
    """Body-surface area (Mosteller), m².

    ``BSA = sqrt(H x W / 3600)``, H in cm, W in kg.
    Mosteller RD. Simplified calculation of body-surface area. N Engl J Med 1987;317:1098.
    """
    w, h = validate_body(weight_kg, height_cm)
    return math.sqrt(h * w / 3600.0)


class DosingWeightPolicy(StrEnum):
    """Which body weight a mg/kg dose is multiplied by."""

    ACTUAL = "actual"
    IDEAL = "ideal"
    ADJUSTED = "adjusted"
    ACTUAL_CAPPED = "actual_capped"


@dataclass(frozen=True, slots=True)
class DosingWeightRule:
    """A dosing-weight policy with its parameters (the cap for ``actual_capped``)."""

    policy: DosingWeightPolicy
    cap_kg: float | None = None
    adjustment_factor: float = DEFAULT_ADJUSTMENT_FACTOR

    def __post_init__(self) -> None:
        if not isinstance(self.policy, DosingWeightPolicy):
            raise InputError(
                f"policy: expected a DosingWeightPolicy, got {self.policy!r}", field="policy"
            )
        if self.policy is DosingWeightPolicy.ACTUAL_CAPPED:
            if self.cap_kg is None:
                raise InputError(
                    "cap_kg: the 'actual_capped' policy needs a ceiling in kg", field="cap_kg"
                )
            validate_weight_kg(self.cap_kg, field="cap_kg")
        elif self.cap_kg is not None:
            raise InputError(
                "cap_kg: only the 'actual_capped' policy takes a ceiling, not "
                f"{self.policy.value!r}",
                field="cap_kg",
            )
        f = _finite("adjustment_factor", self.adjustment_factor)
        if not 0.0 <= f <= 1.0:
            raise InputError(
                f"adjustment_factor: must be between 0 and 1, got {f:g}", field="adjustment_factor"
            )

    @classmethod
    def parse(
        cls, policy: str | DosingWeightPolicy, cap_kg: float | None = None
    ) -> DosingWeightRule:
        """A rule from a policy name: ``actual``, ``ideal``, ``adjusted`` or ``actual_capped``."""
        if isinstance(policy, DosingWeightPolicy):
            return cls(policy, cap_kg)
        key = policy.strip().lower().replace("-", "_") if isinstance(policy, str) else ""
        try:
            p = DosingWeightPolicy(key)
        except ValueError:
            allowed = ", ".join(x.value for x in DosingWeightPolicy)
            raise InputError(
                f"dosing weight policy: expected one of {allowed}, got {policy!r}",
                field="policy",
            ) from None
        return cls(p, cap_kg)

    def describe(self) -> str:
        """The policy in words, e.g. ``"actual body weight, capped at 120 kg"``."""
        if self.policy is DosingWeightPolicy.ACTUAL:
            return "actual body weight"
        if self.policy is DosingWeightPolicy.IDEAL:
            return "ideal body weight (Devine), or actual weight if lower"
        if self.policy is DosingWeightPolicy.ADJUSTED:
            return (
                f"adjusted body weight (IBW + {self.adjustment_factor:g} x excess), "
                "or actual weight if not above ideal"
            )
        return f"actual body weight, capped at {self.cap_kg:g} kg"


@dataclass(frozen=True, slots=True)
class DosingWeight:
    """The weight a dose is computed with, the weights it came from, and why."""

    weight_kg: float
    rule: DosingWeightRule
    actual_weight_kg: float
    ideal_weight_kg: float | None
    bmi_kg_per_m2: float | None
    explanation: str

    @property
    def policy(self) -> DosingWeightPolicy:
        """The policy applied."""
        return self.rule.policy


def dosing_weight(
    rule: DosingWeightRule,
    *,
    weight_kg: float,
    height_cm: float | None,
    sex: Sex | str,
) -> DosingWeight:
    """The dosing weight under ``rule``, with a one-line explanation for the order.

    ``ideal`` and ``adjusted`` need the height. Neither doses above the actual weight: when the
    patient weighs less than the ideal weight, the actual weight is used (and the explanation
    says so). ``actual_capped`` uses the actual weight up to ``rule.cap_kg``.
    """
    s = parse_sex(sex)
    if height_cm is None:
        if rule.policy in (DosingWeightPolicy.IDEAL, DosingWeightPolicy.ADJUSTED):
            raise InputError(
                f"height_cm: the '{rule.policy.value}' dosing-weight policy needs the height",
                field="height_cm",
            )
        w = validate_weight_kg(weight_kg)
        bmi: float | None = None
        ibw: float | None = None
    else:
        w, h = validate_body(weight_kg, height_cm)
        bmi = w / (h / 100.0) ** 2
        ibw = ideal_body_weight_kg(h, s)
    policy = rule.policy
    if policy is DosingWeightPolicy.ACTUAL:
        return DosingWeight(
            w, rule, w, ibw, bmi, f"Dosing weight {w:.1f} kg = actual body weight (policy: actual)."
        )
    if policy is DosingWeightPolicy.ACTUAL_CAPPED:
        assert rule.cap_kg is not None
        if w > rule.cap_kg:
            text = (
                f"Dosing weight {rule.cap_kg:.1f} kg = actual body weight {w:.1f} kg capped at "
                f"{rule.cap_kg:g} kg (policy: actual_capped)."
            )
            return DosingWeight(rule.cap_kg, rule, w, ibw, bmi, text)
        text = (
            f"Dosing weight {w:.1f} kg = actual body weight, below the {rule.cap_kg:g} kg cap "
            "(policy: actual_capped)."
        )
        return DosingWeight(w, rule, w, ibw, bmi, text)
    assert ibw is not None
    assert bmi is not None
    assert height_cm is not None
    where = f"{s}, {height_cm:g} cm"
    if w <= ibw:
        text = (
            f"Dosing weight {w:.1f} kg = actual body weight, because it is not above the ideal "
            f"body weight {ibw:.1f} kg (Devine, {where}) (policy: {policy.value})."
        )
        return DosingWeight(w, rule, w, ibw, bmi, text)
    if policy is DosingWeightPolicy.IDEAL:
        text = (
            f"Dosing weight {ibw:.1f} kg = ideal body weight (Devine, {where}); actual "
            f"{w:.1f} kg, BMI {bmi:.1f} (policy: ideal)."
        )
        return DosingWeight(ibw, rule, w, ibw, bmi, text)
    adj = ibw + rule.adjustment_factor * (w - ibw)
    text = (
        f"Dosing weight {adj:.1f} kg = adjusted body weight: ideal {ibw:.1f} kg (Devine, "
        f"{where}) + {rule.adjustment_factor:g} x ({w:.1f} - {ibw:.1f}) kg; BMI {bmi:.1f} "
        "(policy: adjusted)."
    )
    return DosingWeight(adj, rule, w, ibw, bmi, text)
