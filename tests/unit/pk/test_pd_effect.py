"""PD: sigmoid Emax models, their inverse and the racemic/S-ketamine bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ketaflow.errors import InputError
from ketaflow.pk.effect import (
    DISSOCIATION,
    OLOFSEN_2022_C50_S_NG_PER_ML,
    OLOFSEN_2022_KE0_PER_MIN,
    PD_MODELS,
    EmaxModel,
    Enantiomer,
)

MODELS = list(PD_MODELS.values())
ENANTIOMERS: tuple[Enantiomer, ...] = ("racemic", "S")


def test_olofsen_constants() -> None:
    # 0.51 nmol/mL of ketamine base (237.73 g/mol) and t1/2ke0 = 8.3 min.
    assert pytest.approx(0.51 * 237.73, rel=1e-12) == OLOFSEN_2022_C50_S_NG_PER_ML
    assert pytest.approx(math.log(2) / 8.3, rel=1e-15) == OLOFSEN_2022_KE0_PER_MIN


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(MODELS),
    st.sampled_from(ENANTIOMERS),
    st.floats(min_value=1e-6, max_value=1 - 1e-6),
)
def test_effect_of_inverse_is_identity(
    model: EmaxModel, enantiomer: Enantiomer, frac: float
) -> None:
    target = model.e0 + frac * model.emax
    ce = model.inverse(target, enantiomer=enantiomer)
    back = model.effect(ce, enantiomer=enantiomer)
    assert float(back) == pytest.approx(target, rel=1e-9, abs=1e-12 * abs(model.emax))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(MODELS), st.sampled_from(ENANTIOMERS), st.floats(1e-3, 1e4))
def test_inverse_of_effect_is_identity(model: EmaxModel, enantiomer: Enantiomer, ce: float) -> None:
    e = model.effect(ce, enantiomer=enantiomer)
    frac = (float(e) - model.e0) / model.emax
    if frac >= 1.0 - 1e-12:  # the asymptote itself has no finite inverse
        return
    assert float(model.inverse(e, enantiomer=enantiomer)) == pytest.approx(ce, rel=1e-6)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.key)
def test_racemic_acts_through_its_s_half(model: EmaxModel) -> None:
    ce = np.array([0.0, 10.0, 121.24, 242.48, 800.0])
    np.testing.assert_allclose(
        model.effect(ce, enantiomer="racemic"), model.effect(ce / 2, enantiomer="S"), rtol=1e-15
    )
    mid = model.e0 + 0.5 * model.emax
    assert float(model.inverse(mid, enantiomer="racemic")) == pytest.approx(
        2 * float(model.inverse(mid, enantiomer="S")), rel=1e-15
    )
    # Half of maximum exactly at the S-ketamine C50, i.e. twice that as racemate.
    assert float(model.effect(model.c50_ng_per_ml, enantiomer="S")) == pytest.approx(mid)
    assert float(model.effect(2 * model.c50_ng_per_ml, enantiomer="racemic")) == pytest.approx(mid)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.key)
def test_effect_is_baseline_at_zero_and_rises_monotonically(model: EmaxModel) -> None:
    ce = np.linspace(0.0, 5000.0, 2001)
    e = model.effect(ce, enantiomer="racemic")
    assert e[0] == model.e0
    assert np.all(np.diff(e) > 0)
    assert e[-1] < model.e0 + model.emax
    assert float(model.effect(-5.0, enantiomer="S")) == model.e0  # negatives are clipped


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.key)
def test_unreachable_targets_are_refused(model: EmaxModel) -> None:
    for target in (model.e0 - 0.1 * abs(model.emax), model.e0 + model.emax):
        with pytest.raises(InputError, match="target effect must lie in") as info:
            model.inverse(target, enantiomer="racemic")
        assert info.value.field == "target"


def test_unknown_enantiomer_is_refused() -> None:
    with pytest.raises(InputError, match="enantiomer"):
        DISSOCIATION.effect(100.0, enantiomer="R")  # type: ignore[arg-type]  # the wrong value is the point


def test_models_document_sources_and_assumptions() -> None:
    for m in MODELS:
        assert m.source
        assert m.verification
        assert "assum" in m.assumptions.lower()


def test_invalid_emax_model_is_refused() -> None:
    with pytest.raises(InputError):
        EmaxModel("x", "x", "fraction", 0.0, 1.0, -1.0, 1.0, "s", "v", "a")
