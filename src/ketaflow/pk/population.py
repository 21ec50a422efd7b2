"""Virtual populations: covariates and inter-individual variability, reproducible per patient.

A :class:`PopulationSpec` describes a population (covariate distributions, the PK model, its
between-subject variability and the PD variability) and a seed. ``spec.generate(start, stop)``
draws patients ``start .. stop-1``; ``spec.patient(i)`` rebuilds patient ``i`` alone. Every draw
is vectorised over patients; there is no per-patient Python loop.

Reproducibility contract
------------------------
Patient ``i`` depends only on ``(seed, i)``, never on how a run is cut into chunks or spread over
workers. Patients are grouped into fixed **random blocks** of :data:`BLOCK_SIZE` consecutive
indices. Block ``b`` draws variable group ``g`` (covariates, PK etas, PD etas, ...) from its own
generator, ``PCG64(SeedSequence(seed, spawn_key=(b, g)))`` -- the same child that
``SeedSequence(seed).spawn`` would give, addressed directly. A block is always drawn whole, in the
same order, and sliced; a chunk boundary inside a block only means that the block is drawn by
both neighbouring chunks, with identical results. Separate generators per variable group mean
that adding a variable to one group (or a model with more etas) leaves the others unchanged.
Stream ids below 16 belong to this module; ``ketaflow.sim`` uses 16 and above.

Default covariate distributions (adult outpatients; see ``docs/simulation.md``)
------------------------------------------------------------------------------
Every default below is an **assumption** chosen to resemble adults treated in ketamine clinics;
none is fitted to a clinic population. Each can be replaced in :class:`CovariateDistributions`.

* sex: 50 % female (assumption; the task's suggested default).
* age: normal, mean 45 y, SD 14 y, truncated to 18-75 y (assumption). Bounds follow adult
  outpatient trials (Fava 2020 enrolled 18-70 y); Riva-Posse 2018's clinic cohort had a mean age
  of 56.7 y, so the default is a compromise between trial and clinic populations.
* height: normal by sex, men 176 cm (SD 7.5), women 162 cm (SD 7), truncated to 145-205 and
  140-195 cm (assumption: typical adult anthropometry, not taken from a cited survey).
* weight: from BMI, ``weight = BMI x height^2``; BMI log-normal with median 27 kg/m^2 and SD of
  log(BMI) 0.18, truncated to 17-50 kg/m^2 (assumption: an overweight-centred adult population).
  The resulting weights have a median of 77 kg and a 5-95 % range of 54-110 kg; about 0.1 % fall
  outside 40-150 kg, the validity range of the default model.

Between-subject variability
---------------------------
PK: log-normal, ``P_i = P_typical x exp(eta_i)``, ``eta ~ N(0, Omega)`` with
``Omega = D R D`` (``D`` the omegas, ``R`` the correlation matrix), taken from the model file's
``[variability]`` table. The shipped adult models publish none, so they get
:data:`DEFAULT_PK_CV` (30 % CV) on CL, V1, Q2, Q3 and ke0 for clearance-form models, or on CL,
V1 and ke0 for micro-constant models (whose Q and peripheral volumes then scale with V1),
uncorrelated: an **assumption**, labelled as such in :attr:`Variability.source`. For scale, the
verified adult-paediatric omegas are CL 38 %, V1 64 %, Q 19 % (Herd 2007) and CL 40 %
(Flint 2017).

PD: log-normal multipliers with median 1 (all **assumptions**, no published ketamine PD IIV was
retrieved): ``dissociation_c50`` 50 % CV on the C50 of predicted dissociation (scaling the C50 is
the same as evaluating the shared Emax model at ``Ce / factor``), ``bp_sensitivity`` 50 % CV on
the SBP and DBP rise (one factor for both), ``hr_sensitivity`` 50 % CV on the heart-rate rise.

>>> spec = PopulationSpec.create(seed=7)
>>> pop = spec.generate(0, 3)
>>> bool(np.allclose(spec.patient(2).weight_kg, pop.weight_kg[2:3]))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import special

from ketaflow.errors import InputError, ModelDefinitionError
from ketaflow.pk.library import VARIABLE_PARAMETERS, Model, default_model, load_model
from ketaflow.pk.parameters import PKParameters

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

#: Patients per random block. Part of the reproducibility contract: changing it changes every
#: virtual patient, so it is a constant, not a setting.
BLOCK_SIZE: Final = 1024

#: Coefficient of variation assumed on CL, V1, Q and ke0 when a model publishes no IIV.
DEFAULT_PK_CV: Final = 0.30

#: PD variables that carry between-subject variability (multipliers with median 1).
PD_VARIABLES: Final = ("dissociation_c50", "bp_sensitivity", "hr_sensitivity")


class Stream(IntEnum):
    """Random-stream ids of the variable groups drawn here (second element of spawn_key)."""

    COVARIATES = 0
    PK_IIV = 1
    PD_IIV = 2


def cv_to_omega(cv: float) -> float:
    """SD of log(P) for a log-normal parameter with coefficient of variation ``cv``."""
    return math.sqrt(math.log1p(cv * cv))


def omega_to_cv(omega: float) -> float:
    """Coefficient of variation of a log-normal parameter whose log has SD ``omega``."""
    return math.sqrt(math.expm1(omega * omega))


def block_generator(seed: int, block: int, stream: int) -> np.random.Generator:
    """The generator of random block ``block`` for variable group ``stream``."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(block, stream)))
    )


def draw_by_block(
    seed: int,
    start: int,
    stop: int,
    stream: int,
    draw: Callable[[np.random.Generator, int], Mapping[str, npt.NDArray[np.generic]]],
) -> dict[str, npt.NDArray[np.generic]]:
    """Arrays for patients ``start .. stop-1`` drawn block by block with ``draw(rng, n)``.

    ``draw`` must return arrays whose first axis is the patient and must consume the generator
    in a fixed order for a given ``n``; it is always called with ``n = BLOCK_SIZE``.
    """
    _check_range(start, stop)
    first, last = start // BLOCK_SIZE, (stop - 1) // BLOCK_SIZE
    parts: dict[str, list[npt.NDArray[np.generic]]] = {}
    for b in range(first, last + 1):
        values = draw(block_generator(seed, b, stream), BLOCK_SIZE)
        lo = max(start - b * BLOCK_SIZE, 0)
        hi = min(stop - b * BLOCK_SIZE, BLOCK_SIZE)
        for key, arr in values.items():
            parts.setdefault(key, []).append(arr[lo:hi])
    return {key: np.concatenate(arrs) for key, arrs in parts.items()}


def _check_range(start: int, stop: int) -> None:
    if not (0 <= start < stop):
        raise InputError(
            f"patient range must satisfy 0 <= start < stop, got {start} to {stop}",
            field="patients",
        )


# --- distributions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TruncatedNormal:
    """Normal(mean, sd) restricted to [low, high], drawn by inverse CDF (one uniform each)."""

    mean: float
    sd: float
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (self.sd > 0 and self.low < self.high):
            raise InputError(
                f"truncated normal needs sd > 0 and low < high, got sd={self.sd}, "
                f"[{self.low}, {self.high}]",
                field="distribution",
            )
        if not self.low <= self.mean <= self.high:
            raise InputError(
                f"truncated normal mean {self.mean} lies outside [{self.low}, {self.high}]",
                field="distribution",
            )

    def from_uniform(self, u: FloatArray) -> FloatArray:
        """Map uniforms in (0, 1) to draws (vectorised)."""
        a = special.ndtr((self.low - self.mean) / self.sd)
        b = special.ndtr((self.high - self.mean) / self.sd)
        z = special.ndtri(a + u * (b - a))
        return np.asarray(np.clip(self.mean + self.sd * z, self.low, self.high), dtype=np.float64)

    def moments(self) -> tuple[float, float]:
        """Exact mean and SD of the truncated distribution."""
        alpha = (self.low - self.mean) / self.sd
        beta = (self.high - self.mean) / self.sd
        z = float(special.ndtr(beta) - special.ndtr(alpha))
        pa, pb = _pdf(alpha), _pdf(beta)
        mean = self.mean + self.sd * (pa - pb) / z
        var = self.sd**2 * (1 + (alpha * pa - beta * pb) / z - ((pa - pb) / z) ** 2)
        return mean, math.sqrt(var)


def _pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@dataclass(frozen=True, slots=True)
class TruncatedLogNormal:
    """Log-normal with ``median`` and SD of the log ``sd_log``, restricted to [low, high]."""

    median: float
    sd_log: float
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (self.median > 0 and self.sd_log > 0 and 0 < self.low < self.median < self.high):
            raise InputError(
                "truncated log-normal needs 0 < low < median < high and sd_log > 0, got "
                f"median={self.median}, sd_log={self.sd_log}, [{self.low}, {self.high}]",
                field="distribution",
            )

    @property
    def _log(self) -> TruncatedNormal:
        return TruncatedNormal(
            math.log(self.median), self.sd_log, math.log(self.low), math.log(self.high)
        )

    def from_uniform(self, u: FloatArray) -> FloatArray:
        """Map uniforms in (0, 1) to draws (vectorised)."""
        return np.asarray(np.exp(self._log.from_uniform(u)), dtype=np.float64)

    def log_moments(self) -> tuple[float, float]:
        """Exact mean and SD of log(X) under the truncation."""
        return self._log.moments()


@dataclass(frozen=True, slots=True)
class CovariateDistributions:
    """Covariate distributions of a virtual adult outpatient population.

    Defaults and their basis are listed in the module docstring; all are assumptions.
    """

    female_fraction: float = 0.5
    age_y: TruncatedNormal = TruncatedNormal(45.0, 14.0, 18.0, 75.0)
    height_cm_male: TruncatedNormal = TruncatedNormal(176.0, 7.5, 145.0, 205.0)
    height_cm_female: TruncatedNormal = TruncatedNormal(162.0, 7.0, 140.0, 195.0)
    bmi_kg_per_m2: TruncatedLogNormal = TruncatedLogNormal(27.0, 0.18, 17.0, 50.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.female_fraction <= 1.0:
            raise InputError(
                f"female_fraction must lie in [0, 1], got {self.female_fraction}",
                field="female_fraction",
            )

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, npt.NDArray[np.generic]]:
        """Covariates of ``n`` patients from ``rng`` (fixed consumption order)."""
        u = rng.random((n, 4))
        female = u[:, 0] < self.female_fraction
        age = self.age_y.from_uniform(u[:, 1])
        height = np.where(
            female,
            self.height_cm_female.from_uniform(u[:, 2]),
            self.height_cm_male.from_uniform(u[:, 2]),
        )
        bmi = self.bmi_kg_per_m2.from_uniform(u[:, 3])
        weight = bmi * (height / 100.0) ** 2
        return {
            "female": female,
            "age_y": age,
            "height_cm": height,
            "bmi": bmi,
            "weight_kg": weight,
        }


# --- variability --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variability:
    """Log-normal between-subject variability of a set of parameters.

    ``omega[name]`` is the SD of ``log(P)``; ``correlation[(a, b)]`` the correlation of the two
    etas (missing pairs are 0). ``assumed`` marks values that have no published source.
    """

    omega: Mapping[str, float]
    correlation: Mapping[tuple[str, str], float] = field(default_factory=dict)
    source: str = ""
    assumed: bool = False

    def __post_init__(self) -> None:
        for name, value in self.omega.items():
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"omega_{name} must be >= 0, got {value}", field="omega")
        for (a, b), r in self.correlation.items():
            if a not in self.omega or b not in self.omega:
                raise InputError(
                    f"correlation {a},{b} names a parameter without an omega; "
                    f"parameters with omegas: {', '.join(self.omega) or 'none'}",
                    field="correlation",
                )
            if not -1.0 < r < 1.0:
                raise InputError(
                    f"correlation {a},{b} must lie in (-1, 1), got {r}", field="correlation"
                )
        self.cholesky()  # a correlation matrix that is not positive definite fails here

    @property
    def names(self) -> tuple[str, ...]:
        """Parameters with an omega, in a fixed order."""
        return tuple(self.omega)

    def covariance(self) -> FloatArray:
        """The covariance matrix Omega of the etas, in :attr:`names` order."""
        names = self.names
        sd = np.array([self.omega[k] for k in names])
        corr = np.eye(len(names))
        for (a, b), r in self.correlation.items():
            i, j = names.index(a), names.index(b)
            corr[i, j] = corr[j, i] = r
        return np.asarray(corr * np.outer(sd, sd), dtype=np.float64)

    def cholesky(self) -> FloatArray:
        """Lower-triangular L with L L^T = Omega (zero omegas allowed)."""
        names = self.names
        if not names:
            return np.zeros((0, 0))
        sd = np.array([self.omega[k] for k in names])
        corr = self.covariance() / np.where(np.outer(sd, sd) > 0, np.outer(sd, sd), 1.0)
        np.fill_diagonal(corr, 1.0)
        try:
            lc = np.linalg.cholesky(corr)
        except np.linalg.LinAlgError:
            raise InputError(
                "the correlations do not form a valid (positive-definite) correlation matrix",
                field="correlation",
            ) from None
        return np.asarray(sd[:, None] * lc, dtype=np.float64)

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, npt.NDArray[np.generic]]:
        """Etas of ``n`` patients: standard normals (n, p) times L^T."""
        z = rng.standard_normal((n, len(self.names)))
        eta = z @ self.cholesky().T
        return {name: np.ascontiguousarray(eta[:, i]) for i, name in enumerate(self.names)}


def pk_variability(model: Model) -> Variability:
    """The model's published IIV, or the documented 30 % CV default when it has none."""
    published = model.variability
    if published.omega:
        return Variability(
            omega=dict(published.omega),
            correlation=dict(published.correlation),
            source=published.source or f"{model.name} [variability]",
            assumed=False,
        )
    omega = cv_to_omega(DEFAULT_PK_CV)
    if model.form == "clearance":
        names = ["cl", "v1"]
        if "v2_l" in model.values:
            names.append("q2")
        if "v3_l" in model.values:
            names.append("q3")
    else:
        names = ["cl", "v1"]
    if model.has_effect_site:
        names.append("ke0")
    return Variability(
        omega=dict.fromkeys(names, omega),
        source=(
            f"assumption: {model.name} publishes no IIV; {DEFAULT_PK_CV:.0%} CV on "
            f"{', '.join(names)}, uncorrelated"
        ),
        assumed=True,
    )


#: Default PD variability (all assumptions; see the module docstring).
DEFAULT_PD_VARIABILITY: Final = Variability(
    omega={
        "dissociation_c50": cv_to_omega(0.5),
        "bp_sensitivity": cv_to_omega(0.5),
        "hr_sensitivity": cv_to_omega(0.5),
    },
    source="assumption: 50% CV on the dissociation C50 and on the BP and HR rise; uncorrelated",
    assumed=True,
)


# --- populations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VirtualPopulation:
    """Covariates and etas of patients ``index`` (axis 0 = patient) drawn from one spec."""

    model: Model
    seed: int
    index: IntArray
    female: BoolArray
    age_y: FloatArray
    height_cm: FloatArray
    weight_kg: FloatArray
    bmi_kg_per_m2: FloatArray
    eta_pk: Mapping[str, FloatArray]
    eta_pd: Mapping[str, FloatArray]

    @property
    def n_patients(self) -> int:
        """Number of patients."""
        return int(self.index.shape[0])

    @property
    def sex(self) -> npt.NDArray[np.str_]:
        """``"female"`` or ``"male"`` per patient."""
        return np.where(self.female, "female", "male")

    def pd_factor(self, name: str) -> FloatArray:
        """Multiplier exp(eta) of PD variable ``name`` (1 when it has no variability)."""
        if name not in PD_VARIABLES:
            raise InputError(
                f"unknown PD variable {name!r}; choose one of {', '.join(PD_VARIABLES)}",
                field="pd_variable",
            )
        eta = self.eta_pd.get(name)
        return np.ones(self.n_patients) if eta is None else np.exp(eta)

    def pk_parameters(self, *, weight_kg: npt.ArrayLike | None = None) -> PKParameters:
        """Individual PK parameters (typical values x covariates x exp(eta)).

        ``weight_kg`` overrides the drawn weights (a bedside simulator uses the real patient's).
        Covariates outside the model's validity ranges give no warning here: a virtual population
        is drawn on purpose and its ranges are documented.
        """
        w = self.weight_kg if weight_kg is None else np.asarray(weight_kg, dtype=np.float64)
        return self.model.parameters(
            weight_kg=w,
            age_y=self.age_y,
            sex=self.sex,
            height_cm=self.height_cm,
            eta=self.eta_pk,
            warn=False,
        )

    def take(self, sel: npt.ArrayLike | slice) -> VirtualPopulation:
        """The patients selected by ``sel`` (index array, boolean mask or slice)."""
        s: npt.NDArray[np.generic] | slice = sel if isinstance(sel, slice) else np.asarray(sel)
        return VirtualPopulation(
            model=self.model,
            seed=self.seed,
            index=np.atleast_1d(self.index[s]),
            female=np.atleast_1d(self.female[s]),
            age_y=np.atleast_1d(self.age_y[s]),
            height_cm=np.atleast_1d(self.height_cm[s]),
            weight_kg=np.atleast_1d(self.weight_kg[s]),
            bmi_kg_per_m2=np.atleast_1d(self.bmi_kg_per_m2[s]),
            eta_pk={k: np.atleast_1d(v[s]) for k, v in self.eta_pk.items()},
            eta_pd={k: np.atleast_1d(v[s]) for k, v in self.eta_pd.items()},
        )


@dataclass(frozen=True)
class PopulationSpec:
    """Everything that defines a virtual population; with the seed, every patient is fixed."""

    model: Model
    seed: int
    covariates: CovariateDistributions = CovariateDistributions()
    pk_iiv: Variability | None = None
    pd_iiv: Variability = DEFAULT_PD_VARIABILITY

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be an integer >= 0, got {self.seed!r}", field="seed")
        iiv = self.pk_variability
        for name in iiv.omega:
            if name not in VARIABLE_PARAMETERS:
                known = ", ".join(VARIABLE_PARAMETERS)
                raise ModelDefinitionError(
                    f"pk_iiv: unknown parameter {name!r}; use one of {known}"
                )
        for name in self.pd_iiv.omega:
            if name not in PD_VARIABLES:
                raise InputError(
                    f"pd_iiv: unknown variable {name!r}; use one of {', '.join(PD_VARIABLES)}",
                    field="pd_iiv",
                )

    @classmethod
    def create(
        cls,
        *,
        seed: int | None = None,
        model: Model | str | None = None,
        covariates: CovariateDistributions | None = None,
        pk_iiv: Variability | None = None,
        pd_iiv: Variability | None = None,
    ) -> PopulationSpec:
        """A spec for ``model`` (id, Model or the library default) and ``seed``.

        Without a seed, one is drawn from the operating system's entropy; read it back from
        :attr:`seed` to rebuild the population later.
        """
        if seed is None:
            entropy = np.random.SeedSequence().entropy
            assert isinstance(entropy, int)
            seed = entropy % (2**63)
        m = (
            default_model()
            if model is None
            else load_model(model)
            if isinstance(model, str)
            else model
        )
        return cls(
            model=m,
            seed=seed,
            covariates=covariates or CovariateDistributions(),
            pk_iiv=pk_iiv,
            pd_iiv=pd_iiv or DEFAULT_PD_VARIABILITY,
        )

    @property
    def pk_variability(self) -> Variability:
        """PK variability in use: the explicit one, else the model's (or the default)."""
        return self.pk_iiv if self.pk_iiv is not None else pk_variability(self.model)

    def generate(self, start: int, stop: int) -> VirtualPopulation:
        """Patients ``start .. stop-1`` (vectorised; identical whatever the chunking)."""
        cov = draw_by_block(self.seed, start, stop, Stream.COVARIATES, self.covariates.draw)
        pk = draw_by_block(self.seed, start, stop, Stream.PK_IIV, self.pk_variability.draw)
        pd = draw_by_block(self.seed, start, stop, Stream.PD_IIV, self.pd_iiv.draw)
        return VirtualPopulation(
            model=self.model,
            seed=self.seed,
            index=np.arange(start, stop, dtype=np.int64),
            female=np.asarray(cov["female"], dtype=np.bool_),
            age_y=np.asarray(cov["age_y"], dtype=np.float64),
            height_cm=np.asarray(cov["height_cm"], dtype=np.float64),
            weight_kg=np.asarray(cov["weight_kg"], dtype=np.float64),
            bmi_kg_per_m2=np.asarray(cov["bmi"], dtype=np.float64),
            eta_pk={k: np.asarray(v, dtype=np.float64) for k, v in pk.items()},
            eta_pd={k: np.asarray(v, dtype=np.float64) for k, v in pd.items()},
        )

    def patient(self, i: int) -> VirtualPopulation:
        """Patient ``i`` alone (a population of one), rebuilt from ``(seed, i)``."""
        return self.generate(i, i + 1)

    def chunks(self, n: int, chunk_size: int) -> Iterable[tuple[int, int]]:
        """``(start, stop)`` of consecutive chunks covering patients 0 .. n-1."""
        if n < 1 or chunk_size < 1:
            raise InputError(
                f"n and chunk_size must be >= 1, got n={n}, chunk_size={chunk_size}",
                field="chunk_size",
            )
        return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
