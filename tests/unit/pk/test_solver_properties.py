"""Physical and algebraic properties of the solver, for random models and schedules.

Tolerances: linear-algebra identities (superposition, batching, chunking) hold to 1e-12
relative (they differ only by rounding); physical limits are stated per test.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketaflow.errors import InputError
from ketaflow.pk import solve
from ketaflow.pk.library import list_models, load_model
from ketaflow.pk.parameters import MetaboliteParameters, PKParameters
from ketaflow.pk.schedule import BatchSchedule, Bolus, Infusion, Schedule
from ketaflow.pk.solve import Prediction, iter_chunks, simulate

FloatArray = npt.NDArray[np.float64]
MODEL_IDS = [m.id for m in list_models()]
PROPS = settings(
    max_examples=30,
    deadline=None,
    # The only function-scoped fixture is the stepping switch below, the same for every example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True, params=["powers", "modal"])
def stepping(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test with both stepping methods of the solver (chosen by batch size)."""
    monkeypatch.setattr(solve, "_POWERS_MAX", 10**9 if request.param == "powers" else 0)
    return str(request.param)


def _close(a: FloatArray, b: FloatArray, rtol: float = 1e-12) -> None:
    scale = float(np.abs(b).max()) or 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def _params(model_id: str, weight_kg: float = 70.0) -> PKParameters:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(model_id).parameters(weight_kg=weight_kg)


rate_constant = st.floats(1e-3, 2.0)


@st.composite
def models(draw: st.DrawFn) -> PKParameters:
    """A random 1-3 compartment model with an effect site, sometimes with a metabolite."""
    n_cmt = draw(st.integers(1, 3))
    kw: dict[str, float] = {
        "v1_l": draw(st.floats(2.0, 150.0)),
        "k10_per_min": draw(rate_constant),
        "ke0_per_min": draw(rate_constant),
    }
    if n_cmt >= 2:
        kw.update(k12_per_min=draw(rate_constant), k21_per_min=draw(rate_constant))
    if n_cmt >= 3:
        kw.update(k13_per_min=draw(rate_constant), k31_per_min=draw(st.floats(1e-3, 0.1)))
    met = None
    if draw(st.booleans()):
        met = MetaboliteParameters(
            name="norketamine",
            fraction_formed=np.array([draw(st.floats(0.1, 1.0))]),
            v1_l=np.array([draw(st.floats(0.5, 100.0))]),
            k10_per_min=np.array([draw(rate_constant)]),
            k12_per_min=np.zeros(1),
            k21_per_min=np.zeros(1),
            n_compartments=1,
        )
    return PKParameters.create(metabolite=met, **kw)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    """1-3 infusions and 0-2 boluses within the first 3 h."""
    events: list[Bolus | Infusion] = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.floats(0.0, 150.0))
        events.append(
            Infusion(start, start + draw(st.floats(0.5, 60.0)), draw(st.floats(0.01, 5.0)))
        )
    for _ in range(draw(st.integers(0, 2))):
        events.append(Bolus(draw(st.floats(0.0, 180.0)), draw(st.floats(0.1, 50.0))))
    return Schedule.from_events(events)


TIMES = np.linspace(0.0, 300.0, 91)


def _all(pred: Prediction) -> list[FloatArray]:
    return [a for a in (pred.cp_mg_per_l, pred.ce_mg_per_l, pred.cm_mg_per_l) if a is not None]


@PROPS
@given(models(), schedules(), schedules())
def test_superposition(params: PKParameters, s1: Schedule, s2: Schedule) -> None:
    both = Schedule.from_events(s1.events + s2.events)
    p1, p2, p12 = (simulate(params, s, TIMES) for s in (s1, s2, both))
    for a, b, ab in zip(_all(p1), _all(p2), _all(p12), strict=True):
        _close(a + b, ab, rtol=1e-11)


@PROPS
@given(models(), schedules(), st.floats(0.1, 100.0))
def test_scaling_the_dose_scales_every_concentration(
    params: PKParameters, s: Schedule, factor: float
) -> None:
    scaled = Schedule.from_events(
        Bolus(e.time_min, e.amount_mg * factor)
        if isinstance(e, Bolus)
        else Infusion(e.start_min, e.end_min, e.rate_mg_per_min * factor)
        for e in s.events
    )
    for a, b in zip(
        _all(simulate(params, s, TIMES)), _all(simulate(params, scaled, TIMES)), strict=True
    ):
        _close(a * factor, b, rtol=1e-11)


def _with_elimination_counter(params: PKParameters) -> PKParameters:
    """The same model plus a 'metabolite' that keeps everything eliminated (k10 ~ 0)."""
    n = params.n_patients
    counter = MetaboliteParameters(
        name="eliminated",
        fraction_formed=np.ones(n),
        v1_l=np.ones(n),
        k10_per_min=np.full(n, 1e-300),
        k12_per_min=np.zeros(n),
        k21_per_min=np.zeros(n),
        n_compartments=1,
    )
    return params.replace(metabolite=counter)


def _body_and_eliminated(params: PKParameters, s: Schedule, times: FloatArray) -> FloatArray:
    """(body amount, eliminated amount) in mg at ``times``, from the state vector."""
    p = _with_elimination_counter(params)
    pred = simulate(p, s, times)
    assert pred.cm_mg_per_l is not None
    eliminated = pred.cm_mg_per_l[0]  # V = 1 L, so mg/L = mg
    given_mg = np.array([_given_by(s, t) for t in times])
    return np.vstack([given_mg - eliminated, eliminated])


def _given_by(s: Schedule, t_min: float) -> float:
    total = 0.0
    for e in s.events:
        if isinstance(e, Bolus):
            total += e.amount_mg if e.time_min <= t_min else 0.0
        else:
            total += e.rate_mg_per_min * max(0.0, min(t_min, e.end_min) - e.start_min)
    return total


@PROPS
@given(models(), schedules())
def test_mass_balance(params: PKParameters, s: Schedule) -> None:
    params = params.replace(metabolite=None)
    p = _with_elimination_counter(params)
    pred = simulate(p, s, TIMES)
    assert pred.cm_mg_per_l is not None
    # Body amount from the final state vector at several end times.
    for t_end in (TIMES[10], TIMES[45], TIMES[-1]):
        end = simulate(p, s, np.array([0.0, t_end]))
        n_parent = params.n_compartments
        body = float(end.state_final[0, :n_parent].sum())
        eliminated = float(end.state_final[0, -1])
        given_mg = _given_by(s, float(t_end))
        assert body + eliminated == pytest.approx(given_mg, rel=1e-11, abs=1e-12)


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_body_amount_falls_monotonically_after_the_infusion_stops(model_id: str) -> None:
    params = _params(model_id).replace(metabolite=None)
    s = Schedule.from_text("0.5 mg/kg over 40 min", 70.0)
    after = np.linspace(40.0, 600.0, 300)
    body, eliminated = _body_and_eliminated(params, s, after)
    assert np.all(np.diff(body) < 0)
    assert body[0] + eliminated[0] == pytest.approx(35.0, rel=1e-12)


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_standard_regimen_concentrations_behave(model_id: str) -> None:
    # Observed for every shipped model (not a theorem for every mammillary model): Cp falls
    # from the end of the infusion; Ce peaks after it, where it meets Cp (dCe/dt = 0).
    params = _params(model_id)
    s = Schedule.from_text("0.5 mg/kg over 40 min", 70.0)
    t = np.linspace(0.0, 300.0, 18001)  # 1-s grid
    pred = simulate(params, s, t)
    cp, ce = pred.cp_ng_per_ml[0], pred.ce_ng_per_ml
    assert ce is not None
    assert np.all(cp[1:] > 0)
    assert np.all(ce[0][1:] > 0)
    assert np.all(np.diff(cp[t >= 40.0]) < 0)
    i_peak = int(np.argmax(ce[0]))
    assert t[i_peak] > 40.0
    slope_per_grid = np.abs(np.diff(cp)).max()
    assert abs(cp[i_peak] - ce[0][i_peak]) < slope_per_grid


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_steady_state_is_rate_over_clearance(model_id: str) -> None:
    params = _params(model_id)
    rate = 0.3  # mg/min
    s = Schedule.from_events([Infusion(0.0, 1e6, rate)])
    # Long enough for every model's slowest mode (Flint's V2 of 545 L: t1/2 about 5.5 h).
    pred = simulate(params, s, np.array([20000.0]))
    cl = float(params.cl_l_per_min[0])
    assert pred.cp_mg_per_l[0, 0] == pytest.approx(rate / cl, rel=1e-9)
    assert pred.ce_mg_per_l is not None
    assert pred.ce_mg_per_l[0, 0] == pytest.approx(rate / cl, rel=1e-9)
    if params.metabolite is not None:
        met = params.metabolite
        cl_m = float(met.k10_per_min[0] * met.v1_l[0])
        assert pred.cm_mg_per_l is not None
        assert pred.cm_mg_per_l[0, 0] == pytest.approx(
            float(met.fraction_formed[0]) * rate / cl_m, rel=1e-9
        )


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_bolus_is_the_limit_of_ever_shorter_infusions(model_id: str) -> None:
    params = _params(model_id)
    t = np.array([1.0, 5.0, 30.0, 120.0])
    bolus = simulate(params, Schedule.from_events([Bolus(0.0, 10.0)]), t).cp_mg_per_l[0]
    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        short = Schedule.from_events([Infusion(0.0, eps, 10.0 / eps)])
        errors.append(np.max(np.abs(simulate(params, short, t).cp_mg_per_l[0] / bolus - 1)))
    # First-order convergence: the error shrinks tenfold with eps (the infusion's mean delay
    # is eps/2), and is small in absolute terms.
    assert errors[1] == pytest.approx(errors[0] / 10, rel=0.05)
    assert errors[2] == pytest.approx(errors[1] / 10, rel=0.05)
    assert errors[2] < 1e-3


@PROPS
@given(st.lists(st.tuples(models(), schedules()), min_size=2, max_size=5))
def test_batched_equals_one_by_one(cases: list[tuple[PKParameters, Schedule]]) -> None:
    # Different structures cannot share a batch: use the structure of the first model.
    template = cases[0][0]
    patients = [_like(template, p) for p, _ in cases]
    params = _stack(patients)
    batch = BatchSchedule.from_schedules([s for _, s in cases])
    together = simulate(params, batch, TIMES)
    for i, (p, (_, s)) in enumerate(zip(patients, cases, strict=True)):
        alone = simulate(p, s, TIMES)
        for a, b in zip(_all(alone), _all(together), strict=True):
            _close(a[0], b[i], rtol=1e-12)


def _like(template: PKParameters, other: PKParameters) -> PKParameters:
    """``other``'s values forced into ``template``'s structure (compartments, metabolite)."""
    kw: dict[str, Any] = {
        "v1_l": other.v1_l,
        "k10_per_min": other.k10_per_min,
        "ke0_per_min": other.ke0_per_min,
        "metabolite": template.metabolite,
    }
    if template.n_compartments >= 2:
        kw.update(k12_per_min=other.k12_per_min + 0.01, k21_per_min=other.k21_per_min + 0.01)
    if template.n_compartments >= 3:
        kw.update(k13_per_min=other.k13_per_min + 0.01, k31_per_min=other.k31_per_min + 0.001)
    return PKParameters.create(**kw)


def _stack(ps: list[PKParameters]) -> PKParameters:
    def cat(name: str) -> FloatArray:
        return np.concatenate([getattr(p, name) for p in ps])

    kw: dict[str, Any] = {"v1_l": cat("v1_l"), "k10_per_min": cat("k10_per_min")}
    kw["ke0_per_min"] = cat("ke0_per_min")
    if ps[0].n_compartments >= 2:
        kw.update(k12_per_min=cat("k12_per_min"), k21_per_min=cat("k21_per_min"))
    if ps[0].n_compartments >= 3:
        kw.update(k13_per_min=cat("k13_per_min"), k31_per_min=cat("k31_per_min"))
    kw["metabolite"] = ps[0].metabolite
    return PKParameters.create(**kw)


def _population(n: int, model_id: str = "kamp-2020", seed: int = 3) -> PKParameters:
    model = load_model(model_id)
    rng = np.random.default_rng(seed)
    eta = {p: rng.normal(0.0, 0.3, n) for p in model.variable_parameters}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.parameters(weight_kg=rng.uniform(50, 110, n), eta=eta)


def _keep(sl: slice, pred: Prediction) -> tuple[slice, Prediction]:
    return sl, pred


@pytest.mark.parametrize("model_id", ["kamp-2020", "flint-2017"])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_equals_unchunked(model_id: str, chunk_size: int) -> None:
    params = _population(150, model_id)
    s = Schedule.from_text(["0.5 mg/kg over 40 min", "bolus 5 mg at 3 min"], 70.0)
    t = np.linspace(0.0, 120.0, 73)
    whole = simulate(params, s, t)
    seen = 0
    for sl, part in iter_chunks(params, s, t, reduce=_keep, chunk_size=chunk_size):
        assert sl.start == seen
        seen = sl.stop
        for a, b in zip(_all(part), _all(whole), strict=True):
            _close(a, b[sl], rtol=1e-12)
    assert seen == 150
    chunked = simulate(params, s, t, chunk_size=chunk_size)
    for a, b in zip(_all(chunked), _all(whole), strict=True):
        _close(a, b, rtol=1e-12)


def _peak_cp(sl: slice, pred: Prediction) -> FloatArray:
    return np.asarray(pred.cp_mg_per_l.max(axis=1))


def test_worker_processes_give_the_same_answer() -> None:
    params = _population(300)
    s = Schedule.from_text("0.5 mg/kg over 40 min", 70.0)
    t = np.linspace(0.0, 120.0, 121)
    serial = np.concatenate(list(iter_chunks(params, s, t, reduce=_peak_cp, chunk_size=64)))
    parallel = np.concatenate(
        list(iter_chunks(params, s, t, reduce=_peak_cp, chunk_size=64, workers=2))
    )
    _close(parallel, serial, rtol=1e-12)


def test_initial_state_continues_a_simulation() -> None:
    params = _params("flint-2017")
    s = Schedule.from_text("0.5 mg/kg over 40 min", 70.0)
    first = simulate(params, s, np.array([0.0, 25.0]))
    rest = Schedule.from_events([Infusion(0.0, 15.0, 0.875)])
    second = simulate(params, rest, np.array([0.0, 35.0]), initial_state=first.state_final)
    direct = simulate(params, s, np.array([60.0]))
    for a, b in zip(_all(second), _all(direct), strict=True):
        _close(a[:, -1], b[:, 0], rtol=1e-12)


@pytest.mark.parametrize(
    "times",
    [[], [-1.0, 2.0], [3.0, 1.0], [0.0, float("nan")]],
    ids=["empty", "neg", "unsorted", "nan"],
)
def test_bad_output_times_are_input_errors(times: list[float]) -> None:
    with pytest.raises(InputError, match="times_min"):
        simulate(_params("kamp-2020"), Schedule.from_text("1 mg bolus", 70.0), times)


def test_repeated_output_times_and_a_bolus_at_the_last_time() -> None:
    params = _params("kamp-2020")
    s = Schedule.from_events([Infusion(0.0, 10.0, 1.0), Bolus(10.0, 5.0), Bolus(30.0, 5.0)])
    t = np.array([5.0, 5.0, 10.0, 10.0, 10.0, 20.0, 30.0, 30.0])
    pred = simulate(params, s, t)
    single = simulate(params, s, np.array([5.0, 10.0, 20.0, 30.0]))
    for a, b in zip(_all(pred), _all(single), strict=True):
        _close(a[:, [0, 2, 5, 6]], b, rtol=1e-13)
        _close(a[:, [1, 3, 4, 7]], b[:, [0, 1, 1, 3]], rtol=0.0)
    # Output times equal to a bolus time report the state just after the bolus.
    before = simulate(params, s, np.array([30.0 - 1e-9])).cp_mg_per_l[0, 0]
    assert pred.cp_mg_per_l[0, -1] - before == pytest.approx(5.0 / params.v1_l[0], rel=1e-6)


def test_first_output_time_after_zero() -> None:
    params = _params("domino-1984")
    s = Schedule.from_text("0.5 mg/kg over 40 min", 70.0)
    late = simulate(params, s, np.array([30.0, 60.0]))
    full = simulate(params, s, np.linspace(0.0, 60.0, 7))
    for a, b in zip(_all(late), _all(full), strict=True):
        _close(a, b[:, [3, 6]], rtol=1e-12)


def _cp(sl: slice, pred: Prediction) -> FloatArray:
    return np.asarray(pred.cp_mg_per_l)


def test_float32_outputs_keep_single_precision() -> None:
    params = _population(40, "flint-2017")
    s = Schedule.from_text("0.5 mg/kg over 40 min", 70.0)
    t = np.linspace(0.0, 120.0, 61)
    (single,) = iter_chunks(params, s, t, reduce=_cp, dtype=np.float32, chunk_size=100)
    assert single.dtype == np.float32
    _close(single.astype(np.float64), simulate(params, s, t).cp_mg_per_l, rtol=1e-6)


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(InputError, match="chunk_size"):
        simulate(_params("kamp-2020"), Schedule.from_text("1 mg bolus", 70.0), [1.0], chunk_size=0)
