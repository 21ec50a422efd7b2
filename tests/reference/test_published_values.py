"""The model library against published figures (tests/reference/published_values.toml).

Tolerances follow the printed precision: a value printed as "182" is matched within 0.5, one
printed as "0.3" within 0.05. Where a published figure is a mean of patients rather than a
model output, the test says what agreement can be expected and checks that.
"""

from __future__ import annotations

import itertools
import math
import tomllib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ketaflow.pk.effect import DBP_RISE, HR_RISE, SBP_RISE
from ketaflow.pk.library import load_model
from ketaflow.pk.parameters import PKParameters
from ketaflow.pk.schedule import Schedule
from ketaflow.pk.solve import simulate

PUBLISHED: dict[str, Any] = tomllib.loads(
    (Path(__file__).parent / "published_values.toml").read_text(encoding="utf-8")
)
CROSS = PUBLISHED["cross_model"]
STANDARD = "0.5 mg/kg over 40 min"


def _half_unit(printed: str) -> float:
    """Half a unit of the last printed digit (plus rounding slack of the float itself)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 0.5 * 10.0**-decimals + 1e-9


def _params(model_id: str, weight_kg: float = 70.0) -> PKParameters:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(model_id).parameters(weight_kg=weight_kg)


def terminal_half_life_min(params: PKParameters, patient: int = 0) -> float:
    """ln 2 over the slowest disposition rate constant (parent compartments only)."""
    n = params.n_compartments
    a = params.system_matrix()[patient, :n, :n]
    return float(math.log(2.0) / -np.max(np.linalg.eigvals(a).real))


@pytest.mark.parametrize("model_id", sorted(CROSS["models"]))
def test_each_model_reproduces_its_cross_model_row(model_id: str) -> None:
    row = CROSS["models"][model_id]
    params = _params(model_id)
    pred = simulate(params, Schedule.from_text(STANDARD, 70.0), CROSS["times_min"])
    slips = CROSS["discrepancies"].get(model_id, [])
    cells = zip(CROSS["times_min"], row["cp_ng_per_ml"], pred.cp_ng_per_ml[0], strict=True)
    for t, printed, ours in cells:
        if t in slips:  # see [cross_model.discrepancies]: off by more than rounding, within 3%
            assert abs(ours - float(printed)) > _half_unit(printed)
            assert ours == pytest.approx(float(printed), rel=0.03)
            continue
        assert abs(ours - float(printed)) <= _half_unit(printed), f"{t} min: {ours} vs {printed}"
    cl = float(params.cl_l_per_min[0]) * 60.0
    assert abs(cl - float(row["cl_l_per_h"])) <= _half_unit(row["cl_l_per_h"])
    vss = float(params.vss_l[0]) / 70.0
    assert abs(vss - float(row["vss_l_per_kg"])) <= _half_unit(row["vss_l_per_kg"])
    t_half = terminal_half_life_min(params)
    assert abs(t_half - float(row["terminal_half_life_min"])) <= _half_unit(
        row["terminal_half_life_min"]
    )


# --- Hijazi 2003: the micro-constants against the abstract ----------------------------------

HIJAZI = PUBLISHED["hijazi_2003"]


def _hijazi_figures(v1: float, k10: float, k12: float, k21: float) -> tuple[float, float, float]:
    """CL (mL/min/kg), terminal t1/2 (h) and V-beta (L/kg) of the per-kg micro-constants."""
    a = k10 + k12 + k21
    lam_z = (a - math.sqrt((k10 + k12 - k21) ** 2 + 4 * k12 * k21)) / 2.0
    cl = v1 * k10
    return cl * 1000.0, math.log(2.0) / lam_z / 60.0, cl / lam_z


def test_hijazi_constants_reproduce_the_abstracts_clearance_and_half_life() -> None:
    v = load_model("hijazi-2003").values
    cl, t_half, v_beta = _hijazi_figures(
        v["v1_l"], v["k10_per_min"], v["k12_per_min"], v["k21_per_min"]
    )
    # Directly, to the abstract's printed precision: 35.96 -> "36.0", 4.945 h -> "4.9".
    assert abs(cl - float(HIJAZI["cl_ml_per_min_per_kg"])) <= _half_unit("36.0")
    assert abs(t_half - float(HIJAZI["half_life_h"])) <= _half_unit("4.9")
    # V-beta: the abstract's 16.0 L/kg is a mean of 12 individual V-betas; the typical values
    # give 15.4, 4% lower and well inside the between-patient SD of 8.6 L/kg.
    assert v_beta == pytest.approx(15.39, abs=0.01)
    assert abs(v_beta - float(HIJAZI["v_beta_l_per_kg"])) < 0.05 * 16.0


def test_hijazi_agreement_survives_the_rounding_of_the_micro_constants() -> None:
    # Each constant is printed to 2-4 significant digits (k21 = 0.0030 is 0.00295-0.00305).
    # Over that whole box, CL and t1/2 stay within the abstract's rounding interval: the
    # agreement is not an accident of the last digit.
    v = load_model("hijazi-2003").values
    boxes = [
        (v["v1_l"], 0.005),
        (v["k10_per_min"], 0.00005),
        (v["k12_per_min"], 0.00005),
        (v["k21_per_min"], 0.00005),
    ]
    cls, halves = [], []
    for signs in itertools.product((-1, 1), repeat=4):
        args = [c + s * h for (c, h), s in zip(boxes, signs, strict=True)]
        cl, t_half, _ = _hijazi_figures(*args)
        cls.append(cl)
        halves.append(t_half)
    # The abstract's CL 36.0 (35.95-36.05) and t1/2 4.9 (4.85-4.95) overlap the box's ranges
    # (CL 35.9-36.1; t1/2 4.86-5.04 h, wide because k21 has only two significant digits).
    assert min(cls) <= 36.05
    assert max(cls) >= 35.95
    assert min(halves) <= 4.95
    assert max(halves) >= 4.85
    # The box is narrow compared with the patients' spread (SDs 13.3 mL/min/kg and 1.6 h).
    assert max(cls) - min(cls) < 0.1 * HIJAZI["cl_sd_ml_per_min_per_kg"]
    assert max(halves) - min(halves) < 0.15 * HIJAZI["half_life_sd_h"]


# --- the standard antidepressant regimen ------------------------------------------------------

REGIMEN = PUBLISHED["standard_regimen"]


def _end_of_infusion(model_id: str) -> float:
    pred = simulate(_params(model_id), Schedule.from_text(STANDARD, 70.0), [40.0])
    return float(pred.cp_ng_per_ml[0, 0])


def _peak_ce(model_id: str) -> tuple[float, float]:
    t = np.linspace(0.0, 120.0, 7201)
    pred = simulate(_params(model_id), Schedule.from_text(STANDARD, 70.0), t)
    assert pred.ce_ng_per_ml is not None
    i = int(np.argmax(pred.ce_ng_per_ml[0]))
    return float(pred.ce_ng_per_ml[0, i]), float(t[i])


@pytest.mark.parametrize("model_id", REGIMEN["adult_models"])
def test_adult_models_land_in_the_published_end_of_infusion_range(model_id: str) -> None:
    lo, hi = REGIMEN["adult_end_of_infusion_ng_per_ml"]
    assert lo - 0.5 <= _end_of_infusion(model_id) <= hi + 0.5


def test_zarate_cmax_lies_inside_the_adult_models_spread() -> None:
    # Zarate 2006's mean Cmax of 185 ng/mL is a cross-check, not a fit: it lies
    # within the adult models' spread, near its low end. The default model (Kamp 2020, whose
    # central compartment is arterial) is 37% higher, as documented in docs/models.md.
    ends = {m: _end_of_infusion(m) for m in REGIMEN["adult_models"]}
    cmax = REGIMEN["zarate_2006_cmax_ng_per_ml"]
    assert min(ends.values()) <= cmax <= max(ends.values())
    assert ends["kamp-2020"] / cmax == pytest.approx(1.37, abs=0.01)


@pytest.mark.parametrize("model_id", REGIMEN["adult_models"])
def test_effect_site_peak_falls_in_krystals_dissociation_band(model_id: str) -> None:
    lo, hi = REGIMEN["krystal_band_ng_per_ml"]
    peak, t_peak = _peak_ce(model_id)
    assert lo <= peak <= hi
    assert 40.0 < t_peak < 60.0  # just after the infusion ends (t1/2ke0 8.3 min)


# --- PD: the haemodynamic Emax models against Vankawala 2021 ---------------------------------

VANKAWALA = PUBLISHED["vankawala_2021"]


@pytest.mark.parametrize(
    ("pd", "key", "tol"),
    [
        (SBP_RISE, "sbp_rise_mmhg", 0.2),
        (DBP_RISE, "dbp_rise_mmhg", 0.2),
        (HR_RISE, "hr_rise_beats_per_min", 0.1),
    ],
)
def test_rise_at_the_standard_regimens_peak_is_the_meta_analytic_mean(
    pd: Any, key: str, tol: float
) -> None:
    # The Emax values were derived [D] so that the default model's peak effect-site
    # concentration after 0.5 mg/kg over 40 min (typical 70-kg adult) gives Vankawala's mean.
    peak, _ = _peak_ce("kamp-2020")
    rise = float(pd.effect(peak, enantiomer="racemic"))
    assert rise == pytest.approx(VANKAWALA[key], abs=tol)
