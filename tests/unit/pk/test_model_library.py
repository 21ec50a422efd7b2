"""The model library: every shipped TOML file, the loader's checks and validity warnings."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from ketaflow.errors import ModelDefinitionError, ModelValidityWarning
from ketaflow.pk.effect import OLOFSEN_2022_KE0_PER_MIN
from ketaflow.pk.library import Model, default_model, list_models, load_model, load_model_file
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import Schedule
from ketaflow.pk.solve import simulate

SHIPPED = {
    "clements-1981",
    "domino-1984",
    "elkomy-2015",
    "flint-2017",
    "herd-2007",
    "hijazi-2003",
    "hornik-2018",
    "kamp-2020",
    "sherwin-2015",
}


def _quiet(model: Model, **kw: Any) -> PKParameters:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelValidityWarning)
        return model.parameters(**kw)


def _omega(cv: float) -> float:
    return math.sqrt(math.log(1.0 + cv * cv))


# --- the shipped files ---------------------------------------------------------------------


def test_library_ships_the_expected_models_with_kamp_as_default() -> None:
    models = list_models()
    assert {m.id for m in models} == SHIPPED
    assert models[0].id == "kamp-2020"
    assert default_model().id == "kamp-2020"
    assert [m.is_default for m in models].count(True) == 1


@pytest.mark.parametrize("model_id", sorted(SHIPPED))
def test_every_model_documents_its_source(model_id: str) -> None:
    m = load_model(model_id)
    for key in ("citation", "population", "verification", "ke0_source", "allometry"):
        assert m.source.get(key, "").strip(), f"{model_id}: [source] {key} missing"
    assert "Olofsen 2022" in m.source["ke0_source"]
    assert m.validity.note.strip()
    assert m.variability.source.strip(), "say where the IIV comes from, or that none exists"
    if model_id != "domino-1984":  # Domino's DOI could not be verified (see its file)
        assert m.source["doi"].startswith("10.")


@pytest.mark.parametrize("model_id", sorted(SHIPPED))
def test_every_model_uses_the_olofsen_ke0(model_id: str) -> None:
    m = load_model(model_id)
    assert m.values["ke0_per_min"] == pytest.approx(OLOFSEN_2022_KE0_PER_MIN, rel=1e-7)


def test_micro_constants_are_the_published_ones() -> None:
    # Spot checks of each transcription against the team reference (section 1).
    d = load_model("domino-1984").values
    assert (d["v1_l"], d["k10_per_min"], d["k13_per_min"], d["k31_per_min"]) == (
        0.063,
        0.4381,
        0.59,
        0.0146,
    )
    h = load_model("hijazi-2003").values
    assert (h["v1_l"], h["k10_per_min"], h["k12_per_min"], h["k21_per_min"]) == (
        1.08,
        0.0333,
        0.0088,
        0.0030,
    )
    c = load_model("clements-1981").values
    assert (c["v1_l"], c["k10_per_min"], c["k12_per_min"], c["k21_per_min"]) == (
        1.7522,
        0.0109,
        0.0186,
        0.0137,
    )


@pytest.mark.parametrize(
    ("model_id", "v1", "v2", "cl", "q2"),
    [
        ("herd-2007", 38.7, 102.0, 90.0, 215.0),
        ("elkomy-2015", 57.3, 152.0, 60.6, 73.2),
        ("sherwin-2015", 20.5, 220.0, 87.9, 87.3),
        ("hornik-2018", 32.8, 152.0, 38.9, 54.9),
        ("flint-2017", 7.73, 545.0, 112.0, 196.0),
    ],
)
def test_clearance_models_scale_volumes_linearly_and_clearances_to_the_075(
    model_id: str, v1: float, v2: float, cl: float, q2: float
) -> None:
    m = load_model(model_id)
    for w in (70.0, 20.0, 110.0):
        p = _quiet(m, weight_kg=w)
        vol, clf = w / 70.0, (w / 70.0) ** 0.75
        assert p.v1_l[0] == pytest.approx(v1 * vol, rel=1e-12)
        assert p.cl_l_per_min[0] * 60 == pytest.approx(cl * clf, rel=1e-12)
        assert p.k12_per_min[0] == pytest.approx(q2 / 60 * clf / (v1 * vol), rel=1e-12)
        assert p.k21_per_min[0] == pytest.approx(q2 / 60 * clf / (v2 * vol), rel=1e-12)


def test_micro_models_scale_everything_linearly_with_weight() -> None:
    m = load_model("hijazi-2003")
    p50, p100 = _quiet(m, weight_kg=50.0), _quiet(m, weight_kg=100.0)
    assert p100.cl_l_per_min[0] == pytest.approx(2 * p50.cl_l_per_min[0], rel=1e-14)
    assert p100.vss_l[0] == pytest.approx(2 * p50.vss_l[0], rel=1e-14)


# --- variability ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "cvs"),
    [
        ("herd-2007", {"v1": 0.64, "v2": 0.517, "cl": 0.381, "q2": 0.19}),
        ("flint-2017", {"cl": 0.402, "clm": 1.04}),
        ("hijazi-2003", {"cl": 13.3 / 36.0, "v1": 8.6 / 16.0}),
    ],
)
def test_published_cvs_become_log_normal_omegas(model_id: str, cvs: dict[str, float]) -> None:
    var = load_model(model_id).variability
    assert set(var.omega) == set(cvs)
    for name, cv in cvs.items():
        assert var.omega[name] == pytest.approx(_omega(cv), abs=5e-6), name


def test_flint_correlation_gives_the_published_covariance() -> None:
    var = load_model("flint-2017").variability
    assert var.names == ("cl", "clm")
    cov = var.covariance()
    assert cov[0, 1] == pytest.approx(0.506 * _omega(0.402) * _omega(1.04), rel=1e-4)
    assert cov[0, 0] == pytest.approx(math.log(1 + 0.402**2), rel=1e-4)
    assert np.allclose(cov, cov.T)


@pytest.mark.parametrize("model_id", ["kamp-2020", "domino-1984", "clements-1981"])
def test_models_without_published_iiv_say_so(model_id: str) -> None:
    var = load_model(model_id).variability
    assert var.omega == {}
    assert var.covariance().shape == (0, 0)
    assert "default" in var.source


def test_eta_multiplies_the_named_parameter() -> None:
    m = load_model("kamp-2020")
    base = m.parameters(weight_kg=70.0)
    up = m.parameters(weight_kg=70.0, eta={"cl": math.log(2.0), "v2": math.log(3.0)})
    assert up.cl_l_per_min[0] == pytest.approx(2 * base.cl_l_per_min[0], rel=1e-14)
    assert up.vss_l[0] - base.vss_l[0] == pytest.approx(2 * 56.0, rel=1e-12)


def test_micro_form_eta_on_v1_keeps_clearance_and_scales_all_volumes() -> None:
    m = load_model("domino-1984")
    base = m.parameters(weight_kg=70.0)
    big = m.parameters(weight_kg=70.0, eta={"v1": math.log(1.5)})
    assert big.cl_l_per_min[0] == pytest.approx(base.cl_l_per_min[0], rel=1e-14)
    assert big.vss_l[0] == pytest.approx(1.5 * base.vss_l[0], rel=1e-14)


@pytest.mark.parametrize(
    ("model_id", "bad"),
    [("kamp-2020", "k12"), ("kamp-2020", "clm"), ("domino-1984", "v2"), ("herd-2007", "q3")],
)
def test_eta_on_a_parameter_the_model_lacks_is_refused(model_id: str, bad: str) -> None:
    with pytest.raises(ModelDefinitionError, match=bad):
        _quiet(load_model(model_id), weight_kg=70.0, eta={bad: 0.1})


def test_flint_metabolite_volume_is_fixed_and_clearance_allometric() -> None:
    m = load_model("flint-2017")
    assert m.metabolite_name == "norketamine"
    for w in (10.0, 70.0):
        met = _quiet(m, weight_kg=w).metabolite
        assert met is not None
        assert met.v1_l[0] == 1.0
        assert met.fraction_formed[0] == 1.0
        assert met.k10_per_min[0] * met.v1_l[0] * 60 == pytest.approx(
            53.2 * (w / 70) ** 0.75, rel=1e-12
        )


def test_omitting_flints_time_dependent_metabolite_clearance_costs_under_2_percent() -> None:
    # The paper's CL_m/Fm rises 0.870 %/h with time since the first dose; the library omits it
    # (time-invariant solver). Integrate the time-varying system and compare over a 2-h session.
    m = load_model("flint-2017")
    params = _quiet(m, weight_kg=70.0)
    a = params.system_matrix()[0]
    i_m = params.index("M1")
    km0 = float(a[i_m, i_m])
    rate = 0.25 * 70.0 / 40.0  # S-ketamine 0.25 mg/kg over 40 min, mg/min

    def rhs(t: float, x: np.ndarray[Any, np.dtype[np.float64]]) -> Any:
        at = a.copy()
        at[i_m, i_m] = km0 * (1.0 + 0.0087 * t / 60.0)
        u = np.zeros(len(x))
        u[0] = rate if t < 40.0 else 0.0
        return at @ x + u

    t_eval = np.linspace(1.0, 120.0, 120)
    first = solve_ivp(rhs, (0, 40), np.zeros(a.shape[0]), method="DOP853", rtol=1e-11)
    x40 = first.y[:, -1]
    early = solve_ivp(
        rhs, (0, 40), np.zeros(a.shape[0]), method="DOP853", rtol=1e-11, t_eval=t_eval[:40]
    )
    late = solve_ivp(rhs, (40, 120), x40, method="DOP853", rtol=1e-11, t_eval=t_eval[40:])
    varying = np.concatenate([early.y[i_m], late.y[i_m]])
    constant = simulate(params, Schedule.from_text("0.25 mg/kg over 40 min", 70.0), t_eval)
    assert constant.cm_mg_per_l is not None
    rel = constant.cm_mg_per_l[0] / varying - 1.0  # V_m = 1 L: amount = concentration
    assert rel.min() >= 0.0
    assert rel.max() == pytest.approx(0.0173, abs=0.0005)  # the figure quoted in the TOML


# --- validity warnings ---------------------------------------------------------------------


def test_no_warning_inside_the_studied_range() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model("kamp-2020").parameters(weight_kg=70.0, age_y=40.0, sex="female")


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"weight_kg": 30.0}, "weight_kg 30 is outside the studied range 40 to 150"),
        ({"weight_kg": 70.0, "age_y": 12.0}, "age_y 12 is outside the studied range 18 to 80"),
        ({"weight_kg": 200.0}, "weight_kg 200"),
    ],
)
def test_outside_the_range_warns_naming_the_covariate(kw: dict[str, Any], fragment: str) -> None:
    with pytest.warns(ModelValidityWarning, match=fragment):
        load_model("kamp-2020").parameters(**kw)


def test_batch_warning_counts_patients_and_still_predicts() -> None:
    with pytest.warns(ModelValidityWarning, match=r"\(2 patients\)"):
        p = load_model("kamp-2020").parameters(weight_kg=[30.0, 70.0, 35.0])
    assert p.n_patients == 3


def test_warn_false_is_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model("hijazi-2003").parameters(weight_kg=10.0, warn=False)


@pytest.mark.parametrize(
    ("model_id", "fragment"),
    [
        ("hijazi-2003", "not for outpatients"),
        ("hornik-2018", "suspect low clearance"),
        ("herd-2007", "paediatric"),
        ("flint-2017", "paediatric"),
        ("elkomy-2015", "paediatric"),
        ("sherwin-2015", "paediatric"),
    ],
)
def test_cautioned_models_warn_on_every_use(model_id: str, fragment: str) -> None:
    for weight_kg in (20.0, 70.0):
        with pytest.warns(ModelValidityWarning) as record:
            load_model(model_id).parameters(weight_kg=weight_kg)
        assert fragment in str(record[0].message)


def test_paediatric_model_at_adult_size_warns_about_weight_and_age() -> None:
    with pytest.warns(ModelValidityWarning) as record:
        load_model("flint-2017").parameters(weight_kg=70.0, age_y=40.0)
    messages = [str(r.message) for r in record]
    assert any("weight_kg 70 is outside the studied range 3.4 to 35" in m for m in messages)
    assert any("age_y 40 is outside the studied range 0.02 to 12.5" in m for m in messages)


def test_sex_restriction_warns(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + '[validity]\nsex = ["male"]\n')
    with pytest.warns(ModelValidityWarning, match="studied only in male"):
        load_model_file(path).parameters(weight_kg=70.0, sex="female")


# --- loader errors -------------------------------------------------------------------------

MINIMAL = """
name = "Test"
drug = "ketamine"
[parameters]
v1_l = 25.0
v2_l = 56.0
cl_l_per_h = 84.0
q2_l_per_h = 161.0
ke0_per_min = 0.0835
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test-model.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_file_loads(tmp_path: Path) -> None:
    m = load_model_file(_write(tmp_path, MINIMAL))
    assert (m.id, m.n_compartments, m.has_effect_site) == ("test-model", 2, True)
    assert m.variable_parameters == ("v1", "v2", "cl", "q2", "ke0")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("colour = 'red'\n", "unknown key 'colour'"),
        ("[variability]\nomega_v3 = 0.3\n", "omega_v3 does not apply"),
        ("[variability]\nomega_cl = 0.3\n[variability.correlation]\n'cl,v1' = 0.5\n", "omega_v1"),
        (
            "[variability]\nomega_cl = 0.3\nomega_v1 = 0.3\nomega_v2 = 0.3\n"
            "[variability.correlation]\n'cl,v1' = 0.9\n'cl,v2' = 0.9\n'v1,v2' = -0.9\n",
            "positive semi-definite",
        ),
        ("[variability]\nomega_xyz = 0.3\n", "unknown key 'omega_xyz'"),
        ("[metabolite]\nname = 'Nor Ketamine'\nv1_l = 1.0\ncl_l_per_h = 50.0\n", "name must be"),
        ("[metabolite]\nv1_l = 1.0\n", "missing required key 'cl_l_per_h'"),
        (
            "[metabolite]\nv1_l = 1.0\ncl_l_per_h = 5.0\nscale_volume_with_weight = 'no'\n",
            "true or false",
        ),
        ("[validity]\nweight_kg = [100.0, 40.0]\n", "weight_kg must be \\[low, high\\]"),
    ],
)
def test_malformed_files_are_refused_naming_the_problem(
    tmp_path: Path, extra: str, fragment: str
) -> None:
    text = extra + MINIMAL if extra.startswith("colour") else MINIMAL + extra
    with pytest.raises(ModelDefinitionError, match=fragment):
        load_model_file(_write(tmp_path, text))


def test_unknown_model_id_lists_the_choices() -> None:
    with pytest.raises(ModelDefinitionError, match="kamp-2020"):
        load_model("marsh-1991")


def test_missing_file_and_bad_toml_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelDefinitionError, match="cannot read"):
        load_model_file(tmp_path / "nope.toml")
    with pytest.raises(ModelDefinitionError, match="not valid TOML"):
        load_model_file(_write(tmp_path, "name = \n"))


def test_describe_is_plain_data() -> None:
    d = load_model("flint-2017").describe()
    assert d["id"] == "flint-2017"
    assert d["metabolite"] == "norketamine"
    assert d["variability"]["correlation"] == {"cl,clm": 0.506}
    assert d["doi"] == "10.1111/pan.13239"
