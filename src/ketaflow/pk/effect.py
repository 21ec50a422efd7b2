"""Pharmacodynamics: sigmoid Emax models on the effect-site concentration, and their inverse.

All shipped models act on **S-ketamine** at the effect site. Olofsen 2022 found that R-ketamine
did not contribute to external perception or antinociception, with the same C50 whether
S-ketamine was given alone or within the racemate. For a racemic model the active
concentration is therefore taken as half the total (``active_fraction = 0.5``), for esketamine
the whole. This assumes equal S and R plasma concentrations after racemic dosing; because
S-ketamine clears somewhat faster than R (Wang 2019, Henthorn 2018), the S share drifts below
one half over hours, so the racemic predictions err slightly high, which is the cautious
direction for adverse effects.

Each :class:`EmaxModel` carries its source, the verification tag from the team's reference
notes, and a plain statement of what is assumed. Numbers tagged [D] are derived by us; numbers
labelled *assumption* have no published source and must be read as such.

>>> m = DISSOCIATION
>>> round(float(m.effect(242.5, enantiomer="racemic")), 3)  # racemic Ce at the S C50
0.5
>>> round(float(m.inverse(0.5, enantiomer="racemic")), 1)
242.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ketaflow.errors import InputError
from ketaflow.units import nmol_per_ml_to_ng_per_ml

FloatArray = npt.NDArray[np.float64]
Enantiomer = Literal["racemic", "S"]

#: Olofsen 2022 S-ketamine C50 for external perception and pressure-pain threshold:
#: 0.51 nmol/mL (95% CI 0.38-0.66) [V1-abs], converted with the ketamine molar mass [D].
OLOFSEN_2022_C50_S_NG_PER_ML = nmol_per_ml_to_ng_per_ml(0.51)
#: Olofsen 2022 blood-effect-site equilibration half-time 8.3 min (5.1-13.0) [V1-abs]:
#: ke0 = ln 2 / 8.3 min [D]. Used as the ke0 of every shipped PK model.
OLOFSEN_2022_KE0_PER_MIN = float(np.log(2.0) / 8.3)

OLOFSEN_2022 = (
    "Olofsen E, Kamp J, Henthorn TK, et al. Ketamine psychedelic and antinociceptive effects "
    "are connected. Anesthesiology 2022;136(5):792-801. DOI 10.1097/ALN.0000000000004176"
)
VANKAWALA_2021 = (
    "Vankawala J, et al. Meta-analysis: hemodynamic responses to sub-anesthetic doses of "
    "ketamine in patients with psychiatric disorders. Front Psychiatry 2021;12:549080. "
    "DOI 10.3389/fpsyt.2021.549080"
)


@dataclass(frozen=True, slots=True)
class EmaxModel:
    """``E = e0 + emax * Ca^gamma / (c50^gamma + Ca^gamma)``, Ca = active effect-site conc.

    ``c50_ng_per_ml`` is for the active enantiomer (S-ketamine); ``effect_unit`` names the unit
    of ``e0`` and ``emax`` (``"fraction"`` for a 0-1 scale, ``"mmHg"``, ``"beats/min"``).
    """

    key: str
    endpoint: str
    effect_unit: str
    e0: float
    emax: float
    c50_ng_per_ml: float
    gamma: float
    source: str
    verification: str
    assumptions: str

    def __post_init__(self) -> None:
        if not (self.c50_ng_per_ml > 0 and self.gamma > 0 and self.emax != 0):
            raise InputError(f"{self.key}: c50 and gamma must be > 0 and emax non-zero")

    @staticmethod
    def active_fraction(enantiomer: Enantiomer) -> float:
        """Share of the modelled (total) concentration that is S-ketamine."""
        if enantiomer == "racemic":
            return 0.5
        if enantiomer == "S":
            return 1.0
        raise InputError(f"enantiomer must be 'racemic' or 'S', got {enantiomer!r}")

    def effect(self, ce_ng_per_ml: npt.ArrayLike, *, enantiomer: Enantiomer) -> FloatArray:
        """Effect at total effect-site concentrations ``ce_ng_per_ml`` of the given drug."""
        ce = np.asarray(ce_ng_per_ml, dtype=np.float64)
        ca = np.clip(ce, 0.0, None) * self.active_fraction(enantiomer)
        # Written as 1 / (1 + (c50/ca)^gamma) to stay finite for ca = 0 and very large ca.
        with np.errstate(divide="ignore"):
            ratio = np.where(ca > 0, (self.c50_ng_per_ml / np.where(ca > 0, ca, 1.0)), np.inf)
        frac = np.where(ca > 0, 1.0 / (1.0 + ratio**self.gamma), 0.0)
        return np.asarray(self.e0 + self.emax * frac, dtype=np.float64)

    def inverse(self, effect: npt.ArrayLike, *, enantiomer: Enantiomer) -> FloatArray:
        """Total effect-site concentration (ng/mL) that gives ``effect``.

        Raises :class:`InputError` when the effect is outside what the model can reach
        (between e0 and e0 + emax, exclusive of the asymptote).
        """
        e = np.asarray(effect, dtype=np.float64)
        frac = (e - self.e0) / self.emax
        if np.any(frac < 0) or np.any(frac >= 1):
            lo, hi = sorted((self.e0, self.e0 + self.emax))
            raise InputError(
                f"{self.endpoint}: target effect must lie in [{lo:g}, {hi:g}) "
                f"{self.effect_unit}, got {np.atleast_1d(e)[0]:g}",
                field="target",
            )
        with np.errstate(divide="ignore"):
            ca = self.c50_ng_per_ml * (frac / (1.0 - frac)) ** (1.0 / self.gamma)
        return np.asarray(ca / self.active_fraction(enantiomer), dtype=np.float64)


DISSOCIATION = EmaxModel(
    key="dissociation",
    endpoint="predicted dissociation (external perception), fraction of maximum",
    effect_unit="fraction",
    e0=0.0,
    emax=1.0,
    c50_ng_per_ml=OLOFSEN_2022_C50_S_NG_PER_ML,
    gamma=1.5,
    source=OLOFSEN_2022,
    verification="C50 and t1/2ke0 [V1-abs]; gamma not retrieved",
    assumptions=(
        "gamma = 1.5 is an assumption (Olofsen 2022's Hill coefficient was not retrieved); it "
        "keeps the curve close to linear over 50-200 ng/mL racemic, as Bowdle 1998 reported "
        "for symptom VAS. There is no published CADSS-concentration model: this is a 0-1 "
        "fraction of the maximal perceptual effect, not a CADSS score."
    ),
)

ANALGESIA = EmaxModel(
    key="analgesia",
    endpoint="predicted antinociception (pressure pain threshold), fraction of maximum",
    effect_unit="fraction",
    e0=0.0,
    emax=1.0,
    c50_ng_per_ml=OLOFSEN_2022_C50_S_NG_PER_ML,
    gamma=1.5,
    source=OLOFSEN_2022,
    verification="C50 and t1/2ke0 shared with external perception [V1-abs]; gamma not retrieved",
    assumptions=(
        "gamma = 1.5 assumed as for dissociation. Simons 2022 found higher S C50s for "
        "electrical, heat and pressure pain (1.2-1.7 nmol/mL); Olofsen's value is used for "
        "consistency with the ke0 of the same study. Chronic-pain relief (Dahan 2011) follows a "
        "days-long time course that this acute model does not describe."
    ),
)

_HAEMO_ASSUMPTION = (
    "C50 (Olofsen 2022 S-ketamine) and gamma = 1 are assumptions: no published ketamine "
    "concentration-haemodynamic model was retrieved. Emax is derived [D] so that a typical "
    "70-kg adult given 0.5 mg/kg over 40 min (Kamp 2020 model, peak Ce 217 ng/mL racemic) "
    "shows the meta-analytic mean rise of Vankawala 2021 at peak effect."
)

SBP_RISE = EmaxModel(
    key="sbp_rise",
    endpoint="systolic blood pressure rise above baseline",
    effect_unit="mmHg",
    e0=0.0,
    emax=26.7,
    c50_ng_per_ml=OLOFSEN_2022_C50_S_NG_PER_ML,
    gamma=1.0,
    source=VANKAWALA_2021,
    verification="mean SBP +12.61 mmHg (10.40-14.82) [V1-abs]; Emax [D]",
    assumptions=_HAEMO_ASSUMPTION,
)
DBP_RISE = EmaxModel(
    key="dbp_rise",
    endpoint="diastolic blood pressure rise above baseline",
    effect_unit="mmHg",
    e0=0.0,
    emax=18.0,
    c50_ng_per_ml=OLOFSEN_2022_C50_S_NG_PER_ML,
    gamma=1.0,
    source=VANKAWALA_2021,
    verification="mean DBP +8.49 mmHg (6.89-10.09) [V1-abs]; Emax [D]",
    assumptions=_HAEMO_ASSUMPTION,
)
HR_RISE = EmaxModel(
    key="hr_rise",
    endpoint="heart rate rise above baseline",
    effect_unit="beats/min",
    e0=0.0,
    emax=8.7,
    c50_ng_per_ml=OLOFSEN_2022_C50_S_NG_PER_ML,
    gamma=1.0,
    source=VANKAWALA_2021,
    verification="mean HR +4.09 beats/min (0.55-7.63) [V1-abs]; Emax [D]",
    assumptions=_HAEMO_ASSUMPTION,
)

#: Every shipped PD model by key.
PD_MODELS: dict[str, EmaxModel] = {
    m.key: m for m in (DISSOCIATION, ANALGESIA, SBP_RISE, DBP_RISE, HR_RISE)
}

#: Plasma range associated with dissociation after 0.5 mg/kg over 40 min (Krystal 1994 as
#: tabulated by Zanos 2018, [V1-sec]); drawn as the "dissociation band" on charts.
DISSOCIATION_BAND_NG_PER_ML = (100.0, 250.0)
