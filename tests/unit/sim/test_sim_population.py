"""Virtual population: reproducibility per patient, covariate and IIV statistics."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from ketaflow.errors import InputError
from ketaflow.pk.library import load_model
from ketaflow.pk.population import (
    BLOCK_SIZE,
    DEFAULT_PK_CV,
    CovariateDistributions,
    PopulationSpec,
    TruncatedLogNormal,
    TruncatedNormal,
    Variability,
    VirtualPopulation,
    cv_to_omega,
    omega_to_cv,
    pk_variability,
)


def _fields(pop: VirtualPopulation) -> dict[str, np.ndarray]:
    out = {}
    for name in ("index", "female", "age_y", "height_cm", "weight_kg", "bmi_kg_per_m2"):
        out[name] = getattr(pop, name)
    for k, v in pop.eta_pk.items():
        out[f"pk_{k}"] = v
    for k, v in pop.eta_pd.items():
        out[f"pd_{k}"] = v
    return out


@pytest.mark.parametrize("chunk", [1, 7, 333, BLOCK_SIZE, BLOCK_SIZE + 1, 2500, 5000])
def test_patients_identical_whatever_the_chunking(chunk: int) -> None:
    spec = PopulationSpec.create(seed=2024)
    whole = _fields(spec.generate(0, 2500))
    parts = [_fields(spec.generate(a, b)) for a, b in spec.chunks(2500, chunk)]
    for key, arr in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), arr, err_msg=key)


def test_patient_i_rebuilt_alone_from_seed_and_index() -> None:
    spec = PopulationSpec.create(seed=99)
    pop = spec.generate(1000, 3100)  # spans three random blocks
    for i in (1000, 1023, 1024, 2047, 2048, 3099):
        one = _fields(spec.patient(i))
        for key, arr in _fields(pop).items():
            assert one[key][0] == arr[i - 1000], (i, key)


def test_different_seeds_give_different_patients_and_same_seed_the_same() -> None:
    a = PopulationSpec.create(seed=1).generate(0, 50)
    b = PopulationSpec.create(seed=2).generate(0, 50)
    c = PopulationSpec.create(seed=1).generate(0, 50)
    assert not np.array_equal(a.weight_kg, b.weight_kg)
    np.testing.assert_array_equal(a.weight_kg, c.weight_kg)
    np.testing.assert_array_equal(a.eta_pk["cl"], c.eta_pk["cl"])


def test_variable_groups_are_independent_streams() -> None:
    # Changing the PK variability must not move the covariates or the PD etas.
    base = PopulationSpec.create(seed=5)
    other = PopulationSpec.create(
        seed=5, pk_iiv=Variability(omega={"cl": 0.5, "v1": 0.1, "q2": 0.2}, assumed=True)
    )
    a, b = base.generate(0, 300), other.generate(0, 300)
    np.testing.assert_array_equal(a.weight_kg, b.weight_kg)
    np.testing.assert_array_equal(a.eta_pd["dissociation_c50"], b.eta_pd["dissociation_c50"])
    assert not np.array_equal(a.eta_pk["cl"], b.eta_pk["cl"])


def test_unseeded_spec_records_its_seed_for_rebuilding() -> None:
    spec = PopulationSpec.create()
    again = PopulationSpec.create(seed=spec.seed)
    np.testing.assert_array_equal(spec.generate(0, 20).age_y, again.generate(0, 20).age_y)


N_STATS = 200_000


@pytest.fixture(scope="module")
def big() -> VirtualPopulation:
    return PopulationSpec.create(seed=11).generate(0, N_STATS)


def test_covariate_statistics_match_the_distributions(big: VirtualPopulation) -> None:
    pop = big
    cov = CovariateDistributions()
    # Sex: binomial SE at n=2e5 is 0.0011; tolerance 5 SE.
    assert abs(pop.female.mean() - 0.5) < 0.0056
    # Age: exact truncated-normal moments; tolerances ~6 standard errors.
    mean, sd = cov.age_y.moments()
    age = pop.age_y
    assert abs(age.mean() - mean) < 6 * sd / math.sqrt(N_STATS)
    assert abs(age.std() - sd) < 0.1
    assert age.min() >= 18.0
    assert age.max() <= 75.0
    # Height by sex.
    female = pop.female
    for mask, dist in ((female, cov.height_cm_female), (~female, cov.height_cm_male)):
        m, s = dist.moments()
        h = pop.height_cm[mask]
        assert abs(h.mean() - m) < 0.1
        assert abs(h.std() - s) < 0.1
    # BMI: median of the log-normal and SD of log (truncation at 17/50 barely touches it).
    bmi = pop.bmi_kg_per_m2
    log_mean, log_sd = cov.bmi_kg_per_m2.log_moments()
    assert abs(np.log(bmi).mean() - log_mean) < 0.002
    assert abs(np.log(bmi).std() - log_sd) < 0.002
    assert bmi.min() >= 17.0
    assert bmi.max() <= 50.0
    weight = pop.weight_kg
    np.testing.assert_allclose(weight, bmi * (pop.height_cm / 100) ** 2, rtol=1e-12)


def test_pk_iiv_statistics_default_30_percent_cv(big: VirtualPopulation) -> None:
    pop = big
    omega = cv_to_omega(DEFAULT_PK_CV)
    assert set(pop.eta_pk) == {"cl", "v1", "q2", "q3", "ke0"}
    for name, eta in pop.eta_pk.items():
        # SE of the mean omega/sqrt(n) = 0.00066; of the SD about omega/sqrt(2n) = 0.00046.
        assert abs(eta.mean()) < 0.004, name
        assert abs(eta.std() - omega) < 0.003, name
        assert abs(omega_to_cv(float(eta.std())) - DEFAULT_PK_CV) < 0.005, name
    r = np.corrcoef(pop.eta_pk["cl"], pop.eta_pk["v1"])[0, 1]
    assert abs(r) < 0.012  # uncorrelated by default; SE 1/sqrt(n) = 0.0022


def test_pk_parameters_carry_the_etas(big: VirtualPopulation) -> None:
    pop = big.take(slice(0, 5000))
    pk = pop.pk_parameters()
    typical = pop.model.parameters(weight_kg=pop.weight_kg, warn=False)
    np.testing.assert_allclose(
        pk.cl_l_per_min / typical.cl_l_per_min, np.exp(pop.eta_pk["cl"]), rtol=1e-12
    )
    np.testing.assert_allclose(pk.v1_l / typical.v1_l, np.exp(pop.eta_pk["v1"]), rtol=1e-12)
    assert pk.ke0_per_min is not None
    assert typical.ke0_per_min is not None
    np.testing.assert_allclose(
        pk.ke0_per_min / typical.ke0_per_min, np.exp(pop.eta_pk["ke0"]), rtol=1e-12
    )


def test_correlated_iiv_reproduces_the_correlation() -> None:
    iiv = Variability(omega={"cl": 0.4, "v1": 0.3, "q2": 0.2}, correlation={("cl", "v1"): 0.6})
    pop = PopulationSpec.create(seed=3, pk_iiv=iiv).generate(0, 100_000)
    r = np.corrcoef(pop.eta_pk["cl"], pop.eta_pk["v1"])[0, 1]
    assert abs(r - 0.6) < 0.01  # SE (1-r^2)/sqrt(n) = 0.0020
    assert abs(pop.eta_pk["cl"].std() - 0.4) < 0.004
    np.testing.assert_allclose(iiv.cholesky() @ iiv.cholesky().T, iiv.covariance(), atol=1e-15)


def test_pd_iiv_default_statistics(big: VirtualPopulation) -> None:
    omega = cv_to_omega(0.5)
    for name in ("dissociation_c50", "bp_sensitivity", "hr_sensitivity"):
        factor = big.pd_factor(name)
        assert abs(np.median(factor) - 1.0) < 0.01, name
        assert abs(np.log(factor).std() - omega) < 0.004, name


def test_micro_constant_model_default_iiv() -> None:
    iiv = pk_variability(load_model("domino-1984"))
    assert iiv.assumed
    assert set(iiv.omega) == {"cl", "v1", "ke0"}
    assert "assumption" in iiv.source


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: TruncatedNormal(0, -1, -2, 2), "sd > 0"),
        (lambda: TruncatedNormal(5, 1, -2, 2), "outside"),
        (lambda: TruncatedLogNormal(27, 0.2, 30, 50), "low < median"),
        (lambda: CovariateDistributions(female_fraction=1.5), "female_fraction"),
        (lambda: Variability(omega={"cl": 0.3}, correlation={("cl", "v1"): 0.5}), "v1"),
        (
            lambda: Variability(
                omega={"cl": 0.3, "v1": 0.3, "q2": 0.3},
                correlation={("cl", "v1"): 0.9, ("cl", "q2"): 0.9, ("v1", "q2"): -0.9},
            ),
            "positive-definite",
        ),
        (lambda: PopulationSpec.create(seed=-1), "seed"),
        (lambda: PopulationSpec.create(seed=1).generate(5, 5), "start < stop"),
    ],
)
def test_bad_input_names_the_problem(make: Callable[[], object], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        make()
