"""The batched matrix exponential against SciPy's (same algorithm, one matrix at a time)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.linalg import expm

from ketaflow.pk.library import list_models
from ketaflow.pk.solve import _augmented_exp, expm_batch


def _normwise(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum(axis=-2).max() / np.abs(b).sum(axis=-2).max())


# Scales chosen so that each Padé degree (3, 5, 7, 9, and 13 without and with squaring) is
# exercised. Random matrices are not dissipative: at norm 50 exp(A) has entries near e^50 and
# both implementations lose digits to rounding in the squarings, hence the looser bound.
@pytest.mark.parametrize(
    ("norm", "tol"),
    [
        (1e-3, 5e-13),
        (0.01, 5e-13),
        (0.2, 5e-13),
        (0.9, 5e-13),
        (2.0, 5e-13),
        (5.0, 5e-13),
        (50.0, 1e-11),
    ],
)
def test_random_matrices(norm: float, tol: float) -> None:
    rng = np.random.default_rng(int(norm * 1000))
    a = rng.normal(size=(40, 5, 5))
    a *= norm / np.abs(a).sum(axis=1).max(axis=1)[:, None, None]
    ours = expm_batch(a)
    for i in range(len(a)):
        assert _normwise(ours[i], expm(a[i])) < tol


def test_mixed_norms_in_one_batch_get_their_own_scaling() -> None:
    rng = np.random.default_rng(1)
    # Dissipative matrices (shifted left) so that large norms do not overflow.
    a = rng.normal(size=(6, 4, 4)) - 3 * np.eye(4)
    a *= np.array([1e-4, 0.1, 1, 10, 100, 1000])[:, None, None]
    ours = expm_batch(a)
    for i in range(len(a)):
        assert np.abs(ours[i] - expm(a[i])).max() < 1e-13 * max(1.0, np.abs(expm(a[i])).max())


@pytest.mark.parametrize("dt_min", [1e-6, 1 / 6, 1.0, 40.0, 1440.0])
def test_pk_transitions_of_every_model(dt_min: float) -> None:
    for model in list_models():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params = model.parameters(weight_kg=np.array([20.0, 70.0, 120.0]))
        a = params.system_matrix()
        k = a.shape[1]
        ours = _augmented_exp(params, dt_min)
        for i in range(params.n_patients):
            aug = np.zeros((k + 1, k + 1))
            aug[:k, :k] = a[i]
            aug[0, k] = 1.0
            # Entry-wise against SciPy, relative to the largest entry (at 24 h the state
            # entries span many decades; SciPy itself leaves 1e-16 noise in the exact zeros).
            ref = expm(aug * dt_min)
            assert np.abs(ours[i] - ref).max() < 1e-12 * np.abs(ref).max(), model.id


def test_empty_batch() -> None:
    assert expm_batch(np.zeros((0, 3, 3))).shape == (0, 3, 3)
