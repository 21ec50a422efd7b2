"""A cohort: a virtual population plus what the bedside sees of each patient.

:class:`Cohort` adds to :class:`~ketaflow.pk.population.VirtualPopulation` the pre-dose vital
signs and the traits that drive check-in answers, drawn with the same block scheme (stream
:data:`STREAM_BASELINE`), so patient ``i`` of a cohort is fixed by ``(seed, i)`` too.

The drug's effects on a patient are the shared PD models of :mod:`ketaflow.pk.effect`, made
individual by the population's PD multipliers: dissociation is the Emax model evaluated at
``Ce / dissociation_c50 factor`` (equivalent to scaling its C50); the SBP, DBP and HR rises are
the shared curves times ``bp_sensitivity`` or ``hr_sensitivity``.

Baseline distributions (pre-dose, seated; every one an **assumption** for adults cleared to
receive a dose, not a fitted distribution):

* SBP: normal, mean ``124 + 0.4 x (age - 45)`` mmHg, SD 13, truncated to 95-175 mmHg; DBP:
  mean ``78 + 0.15 x (age - 45)``, SD 9, truncated to 55-110 mmHg; SBP and DBP correlated
  (Gaussian copula, r = 0.6). Older age raising SBP follows the Yale cohort's finding that age
  predicted surges; the upper bounds reflect that patients far above 140/90 are evaluated before
  dosing (clinical reference, section 0) and rarely dosed.
* HR 74 /min (SD 11, 50-110); SpO2 97.5 % (SD 1, 94-100); RR 15 /min (SD 2.5, 10-22).
* Check-in traits: anxiety 3 of 10 (SD 2, 0-10); 15 % of patients nausea-prone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import special

from ketaflow.pk.effect import DBP_RISE, DISSOCIATION, HR_RISE, SBP_RISE, EmaxModel, Enantiomer
from ketaflow.pk.population import (
    BLOCK_SIZE,
    PopulationSpec,
    TruncatedNormal,
    VirtualPopulation,
    draw_by_block,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp] | npt.NDArray[np.int64]

#: Block-stream id of the baseline vital signs and traits.
STREAM_BASELINE: Final = 16
#: Block-stream id of the within-session noise used by in-silico trials.
STREAM_TRIAL_NOISE: Final = 17
#: Block-stream id whose per-patient children drive a streamed virtual session.
STREAM_SESSION: Final = 18

SBP_SD_MM_HG: Final = 13.0
DBP_SD_MM_HG: Final = 8.0
SBP_DBP_CORRELATION: Final = 0.6
HR_BASELINE = TruncatedNormal(74.0, 11.0, 50.0, 110.0)
SPO2_BASELINE = TruncatedNormal(97.5, 1.0, 94.0, 100.0)
RR_BASELINE = TruncatedNormal(15.0, 2.5, 10.0, 22.0)
ANXIETY_TRAIT = TruncatedNormal(3.0, 2.0, 0.0, 10.0)
NAUSEA_PRONE_FRACTION: Final = 0.15


def sbp_mean_mm_hg(age_y: FloatArray) -> FloatArray:
    """Mean baseline SBP for age (assumption: +0.4 mmHg per year around 124 mmHg at 45 y)."""
    return np.asarray(124.0 + 0.4 * (age_y - 45.0), dtype=np.float64)


def dbp_mean_mm_hg(age_y: FloatArray) -> FloatArray:
    """Mean baseline DBP for age (assumption: +0.15 mmHg per year around 78 mmHg at 45 y)."""
    return np.asarray(76.0 + 0.15 * (age_y - 45.0), dtype=np.float64)


def _truncated(mean: FloatArray, sd: float, low: float, high: float, u: FloatArray) -> FloatArray:
    # Inverse-CDF draw with a per-patient mean (TruncatedNormal holds scalars only).
    a = special.ndtr((low - mean) / sd)
    b = special.ndtr((high - mean) / sd)
    z = special.ndtri(a + u * (b - a))
    return np.asarray(np.clip(mean + sd * z, low, high), dtype=np.float64)


def _draw_baseline_uniforms(rng: np.random.Generator, n: int) -> dict[str, npt.NDArray[np.generic]]:
    z = rng.standard_normal((n, 2))
    u = rng.random((n, 6))
    r = SBP_DBP_CORRELATION
    # Gaussian copula: correlated normals -> uniforms -> truncated margins.
    u_sbp = special.ndtr(z[:, 0])
    u_dbp = special.ndtr(r * z[:, 0] + np.sqrt(1 - r * r) * z[:, 1])
    return {"u_sbp": u_sbp, "u_dbp": u_dbp, "u": u}


@dataclass(frozen=True)
class Cohort:
    """Virtual patients with baseline vital signs and check-in traits (axis 0 = patient)."""

    population: VirtualPopulation
    sbp0_mm_hg: FloatArray
    dbp0_mm_hg: FloatArray
    hr0_per_min: FloatArray
    spo2_0_percent: FloatArray
    rr0_per_min: FloatArray
    anxiety_trait: FloatArray
    nausea_prone: BoolArray

    @classmethod
    def generate(cls, spec: PopulationSpec, start: int, stop: int) -> Cohort:
        """Patients ``start .. stop-1`` of ``spec`` with their baselines."""
        pop = spec.generate(start, stop)
        d = draw_by_block(spec.seed, start, stop, STREAM_BASELINE, _draw_baseline_uniforms)
        u = np.asarray(d["u"], dtype=np.float64)
        return cls(
            population=pop,
            sbp0_mm_hg=_truncated(
                sbp_mean_mm_hg(pop.age_y),
                SBP_SD_MM_HG,
                95.0,
                170.0,
                np.asarray(d["u_sbp"], dtype=np.float64),
            ),
            dbp0_mm_hg=_truncated(
                dbp_mean_mm_hg(pop.age_y),
                DBP_SD_MM_HG,
                55.0,
                105.0,
                np.asarray(d["u_dbp"], dtype=np.float64),
            ),
            hr0_per_min=HR_BASELINE.from_uniform(u[:, 0]),
            spo2_0_percent=SPO2_BASELINE.from_uniform(u[:, 1]),
            rr0_per_min=RR_BASELINE.from_uniform(u[:, 2]),
            anxiety_trait=ANXIETY_TRAIT.from_uniform(u[:, 3]),
            nausea_prone=u[:, 4] < NAUSEA_PRONE_FRACTION,
        )

    @property
    def n_patients(self) -> int:
        """Number of patients."""
        return self.population.n_patients

    @property
    def index(self) -> npt.NDArray[np.int64]:
        """Population index of each patient."""
        return self.population.index

    # --- individual pharmacodynamics -------------------------------------------------------
    # ``ce_ng_per_ml`` is (n,) or (n, T) total effect-site concentration in ng/mL for the
    # patients ``rows`` (all patients when None).

    def _factor(self, name: str, ce_ng_per_ml: FloatArray, rows: IntArray | None) -> FloatArray:
        f = self.population.pd_factor(name)
        if rows is not None:
            f = f[rows]
        return f if ce_ng_per_ml.ndim == 1 else f[:, None]

    def dissociation(self, ce_ng_per_ml: FloatArray, *, rows: IntArray | None = None) -> FloatArray:
        """Predicted dissociation (0-1) at total effect-site concentrations (ng/mL)."""
        f = self._factor("dissociation_c50", ce_ng_per_ml, rows)
        return DISSOCIATION.effect(ce_ng_per_ml / f, enantiomer=self.enantiomer)

    def dissociation_threshold_ce(self, effect: float) -> FloatArray:
        """Per-patient Ce (ng/mL) at which predicted dissociation equals ``effect``."""
        c = float(DISSOCIATION.inverse(effect, enantiomer=self.enantiomer))
        return c * self.population.pd_factor("dissociation_c50")

    def _rise(
        self, model: EmaxModel, factor: str, ce_ng_per_ml: FloatArray, rows: IntArray | None
    ) -> FloatArray:
        s = self._factor(factor, ce_ng_per_ml, rows)
        rise = model.effect(ce_ng_per_ml, enantiomer=self.enantiomer)
        return np.asarray(np.multiply(s, rise), dtype=np.float64)

    def sbp_rise(self, ce_ng_per_ml: FloatArray, *, rows: IntArray | None = None) -> FloatArray:
        """Predicted SBP rise above baseline, mmHg."""
        return self._rise(SBP_RISE, "bp_sensitivity", ce_ng_per_ml, rows)

    def dbp_rise(self, ce_ng_per_ml: FloatArray, *, rows: IntArray | None = None) -> FloatArray:
        """Predicted DBP rise above baseline, mmHg."""
        return self._rise(DBP_RISE, "bp_sensitivity", ce_ng_per_ml, rows)

    def hr_rise(self, ce_ng_per_ml: FloatArray, *, rows: IntArray | None = None) -> FloatArray:
        """Predicted heart-rate rise above baseline, beats/min."""
        return self._rise(HR_RISE, "hr_sensitivity", ce_ng_per_ml, rows)

    def rise_threshold_ce(self, model: EmaxModel, factor: str, rise: float) -> FloatArray:
        """Per-patient Ce (ng/mL) at which ``factor x model`` reaches ``rise``; inf if never."""
        s = self.population.pd_factor(factor)
        frac = rise / (s * model.emax)
        out = np.full(self.n_patients, np.inf)
        ok = frac < 1.0
        # Ca^g/(c50^g + Ca^g) = frac  =>  Ca = c50 (frac/(1-frac))^(1/g).
        ca = model.c50_ng_per_ml * (frac[ok] / (1.0 - frac[ok])) ** (1.0 / model.gamma)
        out[ok] = ca / model.active_fraction(self.enantiomer)
        return out

    @property
    def enantiomer(self) -> Enantiomer:
        """Enantiomer of the population's PK model (``"racemic"`` or ``"S"``)."""
        return self.population.model.enantiomer

    def take(self, sel: npt.ArrayLike | slice) -> Cohort:
        """The patients selected by ``sel``."""
        s: npt.NDArray[np.generic] | slice = sel if isinstance(sel, slice) else np.asarray(sel)
        return Cohort(
            population=self.population.take(s),
            sbp0_mm_hg=np.atleast_1d(self.sbp0_mm_hg[s]),
            dbp0_mm_hg=np.atleast_1d(self.dbp0_mm_hg[s]),
            hr0_per_min=np.atleast_1d(self.hr0_per_min[s]),
            spo2_0_percent=np.atleast_1d(self.spo2_0_percent[s]),
            rr0_per_min=np.atleast_1d(self.rr0_per_min[s]),
            anxiety_trait=np.atleast_1d(self.anxiety_trait[s]),
            nausea_prone=np.atleast_1d(self.nausea_prone[s]),
        )


def session_generator(seed: int, patient_index: int) -> np.random.Generator:
    """The generator of patient ``patient_index``'s streamed session noise."""
    block, offset = divmod(patient_index, BLOCK_SIZE)
    seq = np.random.SeedSequence(seed, spawn_key=(block, STREAM_SESSION, offset))
    return np.random.Generator(np.random.PCG64(seq))


# --- check-ins -----------------------------------------------------------------------------------

#: Probability of "I need help" at one check-in: 0.1 % plus 2 % x dissociation^3 (assumption:
#: rare, rising steeply with intensity).
HELP_BASE_PROBABILITY: Final = 0.001
HELP_EFFECT_PROBABILITY: Final = 0.02


@dataclass(frozen=True)
class CheckInScores:
    """Patient-reported scores (0-10 integers) and the rare request for help, per patient."""

    comfort: npt.NDArray[np.int64]
    intensity: npt.NDArray[np.int64]
    anxiety: npt.NDArray[np.int64]
    nausea: npt.NDArray[np.int64]
    need_help: BoolArray


def check_in_scores(
    dissociation: FloatArray,
    anxiety_trait: FloatArray,
    nausea_prone: BoolArray,
    z: FloatArray,
    u_help: FloatArray,
) -> CheckInScores:
    """Check-in answers from the predicted dissociation (vectorised over patients).

    ``z`` is (n, 4) standard normal noise, ``u_help`` (n,) uniforms. The mapping is an
    **assumption** (no published model links predicted effect to these self-reports):

    * intensity = round(10 x dissociation^1.5 + z0): perceived intensity assumed to grow faster
      than the fraction of maximal effect, so that at the standard 0.5 mg/kg over 40 min a
      minority of patients (about one in six) rate it 5/10 or more, when the clinic's rules
      would slow the infusion
    * anxiety = round(trait + 3 x dissociation + z1)
    * comfort = round(8 - 3 x dissociation - 0.3 x trait + z2)
    * nausea = round(6 x dissociation + z3) for nausea-prone patients, else 0
    * need_help with probability 0.001 + 0.02 x dissociation^3

    all clipped to 0-10.
    """
    e = np.clip(dissociation, 0.0, 1.0)

    def score(x: FloatArray) -> npt.NDArray[np.int64]:
        return np.clip(np.rint(x), 0, 10).astype(np.int64)

    nausea = np.where(nausea_prone, score(6.0 * e + z[:, 3]), 0)
    return CheckInScores(
        comfort=score(8.0 - 3.0 * e - 0.3 * anxiety_trait + z[:, 2]),
        intensity=score(10.0 * e**1.5 + z[:, 0]),
        anxiety=score(anxiety_trait + 3.0 * e + z[:, 1]),
        nausea=np.asarray(nausea, dtype=np.int64),
        need_help=u_help < HELP_BASE_PROBABILITY + HELP_EFFECT_PROBABILITY * e**3,
    )
