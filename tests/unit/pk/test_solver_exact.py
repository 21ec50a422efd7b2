"""The exact solver against an independent high-precision ODE integration (1e-9 relative).

Every shipped model is checked after a bolus, on both sides of every infusion boundary, through
the effect site and through the metabolite chain (Flint 2017), and for heterogeneous batches.
Tolerance: |solver - reference| <= 1e-9 x |reference| + 1e-12 x max|reference| (the absolute
floor only matters where a concentration is still exactly zero or has decayed 12 decades).
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import pytest
from pk_ode_reference import reference_states

from ketaflow.pk import solve
from ketaflow.pk.library import list_models, load_model
from ketaflow.pk.parameters import MetaboliteParameters, PKParameters
from ketaflow.pk.schedule import BatchSchedule, Schedule, parse_dose
from ketaflow.pk.solve import simulate

FloatArray = npt.NDArray[np.float64]
RTOL = 1e-9
FLOOR = 1e-12
MODEL_IDS = [m.id for m in list_models()]


@pytest.fixture(autouse=True, params=["powers", "modal"])
def stepping(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test with both stepping methods of the solver (chosen by batch size)."""
    monkeypatch.setattr(solve, "_POWERS_MAX", 10**9 if request.param == "powers" else 0)
    return str(request.param)


EPS_MIN = 1e-6  # "just before/after" an event, in minutes (60 us)


def _close(actual: FloatArray, expected: FloatArray) -> None:
    tol = RTOL * np.abs(expected) + FLOOR * float(np.abs(expected).max())
    err = np.abs(actual - expected)
    worst = int(np.argmax(err - tol))
    assert np.all(err <= tol), (
        f"max excess at index {worst}: solver {actual.flat[worst]!r}, "
        f"reference {expected.flat[worst]!r}, error {err.flat[worst]!r}"
    )


def _check_against_reference(
    params: PKParameters, schedule: BatchSchedule, times: FloatArray
) -> None:
    pred = simulate(params, schedule, times)
    names = params.state_names()
    for p in range(params.n_patients):
        ref = reference_states(params, schedule, times, patient=p)
        _close(pred.cp_mg_per_l[p], ref[:, 0] / params.v1_l[p])
        if pred.ce_mg_per_l is not None:
            _close(pred.ce_mg_per_l[p], ref[:, names.index("Ce")])
        if pred.cm_mg_per_l is not None:
            assert params.metabolite is not None
            _close(pred.cm_mg_per_l[p], ref[:, names.index("M1")] / params.metabolite.v1_l[p])


def _params(model_id: str, weight_kg: float = 70.0) -> PKParameters:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(model_id).parameters(weight_kg=weight_kg)


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_standard_regimen_matches_ode(model_id: str) -> None:
    params = _params(model_id)
    schedule = Schedule.from_text("0.5 mg/kg over 40 min", 70.0).to_batch()
    times = np.concatenate(
        [np.arange(0, 120 + 1e-9, 1 / 6), [40 - EPS_MIN, 40 + EPS_MIN, 240.0, 1440.0]]
    )
    _check_against_reference(params, schedule, np.sort(times))


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_bolus_and_infusion_boundaries_match_ode(model_id: str) -> None:
    params = _params(model_id)
    schedule = Schedule.from_text(
        ["bolus 0.1 mg/kg at 5 min", "20 mg/h from 10 min to 70 min", "bolus 5 mg at 70 min"],
        70.0,
    ).to_batch()
    edges = np.array([5.0, 10.0, 70.0])
    times = np.sort(
        np.concatenate(
            [
                [0.0, 1.0, 4.0, 30.0, 90.0, 300.0],
                edges - EPS_MIN,
                edges,
                edges + EPS_MIN,
            ]
        )
    )
    _check_against_reference(params, schedule, times)


def test_heterogeneous_batch_matches_ode_patient_by_patient() -> None:
    model = load_model("kamp-2020")
    rng = np.random.default_rng(7)
    n = 6
    eta = {p: rng.normal(0.0, 0.4, n) for p in model.variable_parameters}
    weights = rng.uniform(45.0, 120.0, n)
    params = model.parameters(weight_kg=weights, eta=eta)
    schedule = BatchSchedule.from_instructions(
        [parse_dose("0.5 mg/kg over 40 min"), parse_dose("bolus 0.05 mg/kg at 20 min")], weights
    )
    times = np.linspace(0.0, 180.0, 37)
    _check_against_reference(params, schedule, times)


def test_flint_metabolite_chain_matches_ode_at_several_weights() -> None:
    model = load_model("flint-2017")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = model.parameters(
            weight_kg=np.array([8.0, 20.0, 70.0]), eta={"cl": [0.3, -0.2, 0.0], "clm": [-1, 0.5, 0]}
        )
    batch = BatchSchedule.from_instructions(
        [parse_dose("1 mg/kg/h for 60 min"), parse_dose("bolus 0.5 mg/kg at 0 min")],
        [8.0, 20.0, 70.0],
    )
    times = np.sort(np.concatenate([np.linspace(0, 240, 49), [60 - EPS_MIN, 60 + EPS_MIN]]))
    _check_against_reference(params, batch, times)


def test_two_compartment_metabolite_matches_ode() -> None:
    # No shipped model has a two-compartment metabolite; the loader and solver support one.
    met = MetaboliteParameters(
        name="norketamine",
        fraction_formed=np.array([0.8]),
        v1_l=np.array([30.0]),
        k10_per_min=np.array([0.02]),
        k12_per_min=np.array([0.05]),
        k21_per_min=np.array([0.01]),
        n_compartments=2,
    )
    params = PKParameters.from_clearances(
        v1_l=25.0,
        cl_l_per_min=1.4,
        v2_l=56.0,
        q2_l_per_min=2.68,
        ke0_per_min=0.0835,
        metabolite=met,
    )
    batch = Schedule.from_text("35 mg over 40 min", 70.0).to_batch()
    _check_against_reference(params, batch, np.linspace(0, 600, 61))


@pytest.mark.parametrize("rel_gap", [0.0, 1e-12, 1e-8, 1e-5, 1e-2])
def test_ke0_equal_or_close_to_a_disposition_eigenvalue_is_exact(rel_gap: float) -> None:
    base = _params("kamp-2020")
    a = base.system_matrix()[0][:3, :3]
    lam = np.sort(-np.linalg.eigvals(a).real)
    for target in lam:  # each disposition rate constant in turn
        params = base.replace(ke0_per_min=target * (1.0 + rel_gap))
        batch = Schedule.from_text("0.5 mg/kg over 40 min", 70.0).to_batch()
        _check_against_reference(params, batch, np.array([0.5, 10.0, 40.0, 41.0, 120.0, 600.0]))


def test_repeated_disposition_eigenvalues_are_exact() -> None:
    # k12 = k21 = 0 limit is excluded by validation; a 1-compartment model whose k10 equals
    # ke0 gives a double eigenvalue with a Jordan block (Ce = t e^{-kt} shape).
    params = PKParameters.create(v1_l=20.0, k10_per_min=0.1, ke0_per_min=0.1)
    batch = Schedule.from_text(["bolus 10 mg", "1 mg/min for 30 min"], 70.0).to_batch()
    _check_against_reference(params, batch, np.array([0.0, 0.1, 5.0, 30.0, 31.0, 100.0]))


def test_the_comparison_detects_a_tiny_model_error() -> None:
    # The tolerance is not vacuous: a 1e-7 relative change of k10 is caught.
    params = _params("kamp-2020")
    wrong = params.replace(k10_per_min=params.k10_per_min * (1 + 1e-7))
    batch = Schedule.from_text("0.5 mg/kg over 40 min", 70.0).to_batch()
    times = np.array([10.0, 40.0, 120.0])
    ref = reference_states(params, batch, times)
    with pytest.raises(AssertionError):
        _close(simulate(wrong, batch, times).cp_mg_per_l[0], ref[:, 0] / params.v1_l[0])
