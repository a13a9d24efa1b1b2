"""The quadratic PPM: exact recovery of a known quadratic, its closed forms, cross-validated metrics."""

import numpy as np
import pytest

from hps_core.routing.ppm import QuadraticPPM, cross_validate, fit_ppm, quadratic_features

NAMES = ["a", "b", "c"]


def known(c):
    """f(c) = 0.5 + 0.01 a - 0.02 b + 0.003 a b - 0.0005 c^2 (c: the third count)."""
    c = np.atleast_2d(c)
    return 0.5 + 0.01 * c[:, 0] - 0.02 * c[:, 1] + 0.003 * c[:, 0] * c[:, 1] - 0.0005 * c[:, 2] ** 2


def counts(n, seed):
    return np.random.default_rng(seed).integers(0, 40, size=(n, 3)).astype(float)


def test_quadratic_features_order():
    assert quadratic_features(np.array([[2.0, 3.0]])).tolist() == [[2.0, 3.0, 4.0, 6.0, 9.0]]


def test_recovers_a_known_quadratic_exactly_without_noise():
    x = counts(40, 0)
    ppm = fit_ppm(x, known(x), NAMES, alphas=[1e-10])
    new = counts(20, 1)
    np.testing.assert_allclose(ppm.predict(new), known(new), atol=1e-7)
    b0, w0, q0 = ppm.raw_form()
    assert b0 == pytest.approx(0.5, abs=1e-6)
    np.testing.assert_allclose(w0, [0.01, -0.02, 0.0], atol=1e-7)
    # c^T Q c holds the a*b term split over Q[0,1] and Q[1,0], and the square on the diagonal.
    np.testing.assert_allclose(q0, [[0, 0.0015, 0], [0.0015, 0, 0], [0, 0, -0.0005]], atol=1e-8)


def test_gains_are_differences_of_predictions():
    x = counts(40, 0)
    ppm = fit_ppm(x, known(x), NAMES, alphas=[1e-10])
    inst = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0]], float)
    base = np.array([5.0, 7.0, 2.0])
    expected = ppm.predict(base + inst) - ppm.predict(base)
    np.testing.assert_allclose(ppm.gains(inst, base), expected, atol=1e-10)
    # At all-AI: an instance with tag a alone gains f(1, 0, 0) - f(0) = 0.01.
    assert ppm.tag_gains()["a"] == pytest.approx(0.01, abs=1e-7)


def test_constant_tag_and_json_round_trip():
    x = counts(30, 2)
    x[:, 2] = 7.0  # a tag no mix varies on
    y = 0.3 + 0.01 * x[:, 0]
    ppm = fit_ppm(x, y, NAMES, alphas=[1e-10], n_instances=100)
    np.testing.assert_allclose(ppm.predict(x), y, atol=1e-8)
    again = QuadraticPPM.from_dict(ppm.to_dict())
    np.testing.assert_allclose(again.predict(x), ppm.predict(x))
    assert again.digest() == ppm.digest() and again.n_instances == 100
    with pytest.raises(ValueError, match="hyper-ppm/1"):
        QuadraticPPM.from_dict({"schema": "other"})


def test_cross_validation_metrics():
    """Noise-free: out-of-fold predictions are exact (Spearman 1, RMSE 0). With noise of sd 0.01 the RMSE
    is about the noise (between 0.5 and 2 times it) and the ranking stays strong; the penalty is chosen
    from the grid."""
    x = counts(120, 3)
    exact = cross_validate(x, known(x), NAMES, alphas=[1e-10], folds=5)
    assert exact["spearman"] == pytest.approx(1.0, abs=1e-4) and exact["rmse"] < 1e-6  # (tied targets)
    y = known(x) + np.random.default_rng(4).normal(0, 0.01, len(x))
    noisy = cross_validate(x, y, NAMES, alphas=[1e-3, 1e-1, 10.0], folds=5)
    assert 0.005 < noisy["rmse"] < 0.02 and noisy["spearman"] > 0.9
    assert noisy["predicted"].shape == y.shape
    assert fit_ppm(x, y, NAMES, alphas=[1e-3, 1e-1, 10.0]).alpha in (1e-3, 1e-1, 10.0)
