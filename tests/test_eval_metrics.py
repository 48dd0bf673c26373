"""Fréchet distance against closed forms and SciPy, streaming statistics, Inception Score."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvideo.eval.frechet import frechet_distance, trace_sqrt_product
from kvideo.eval.stats import FeatureStats, inception_score


def random_spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1 * np.eye(d))


def test_one_dimensional_closed_form():
    # FD of N(m1, s1²) and N(m2, s2²) is (m1 - m2)² + (s1 - s2)².
    fd = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert fd == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_diagonal_closed_form():
    rng = np.random.default_rng(0)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    l1, l2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    expected = np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(expected, rel=1e-9)


def test_identical_distributions_give_zero_even_rank_deficient():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 64))  # fewer samples than dimensions: rank 19
    stats = FeatureStats(64).update(x)
    mu, sigma = stats.mean_cov()
    assert np.linalg.matrix_rank(sigma) < 64
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)


def test_symmetric_and_shift_adds_d_c_squared():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) * 1.5 + 0.2
    mx, sx = FeatureStats(8).update(x).mean_cov()
    my, sy = FeatureStats(8).update(y).mean_cov()
    assert frechet_distance(mx, sx, my, sy) == pytest.approx(frechet_distance(my, sy, mx, sx), rel=1e-10)
    c = 0.7
    ms, ss = FeatureStats(8).update(x + c).mean_cov()
    assert frechet_distance(mx, sx, ms, ss) == pytest.approx(8 * c**2, rel=1e-9)


@pytest.mark.parametrize("rank", [None, 3])
def test_trace_sqrt_matches_scipy(rank):
    scipy_linalg = pytest.importorskip("scipy.linalg", reason="scipy is a test dependency")
    rng = np.random.default_rng(4)
    s1, s2 = random_spd(rng, 10, rank), random_spd(rng, 10)
    root = scipy_linalg.sqrtm(s1 @ s2)
    assert trace_sqrt_product(s1, s2) == pytest.approx(float(np.real(np.trace(root))), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 12))
def test_frechet_against_scipy_random_spd(seed, d):
    scipy_linalg = pytest.importorskip("scipy.linalg", reason="scipy is a test dependency")
    rng = np.random.default_rng(seed)
    mu1, mu2, s1, s2 = rng.normal(size=d), rng.normal(size=d), random_spd(rng, d), random_spd(rng, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy_linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


# -- statistics --------------------------------------------------------------------------------
def test_streaming_stats_equal_numpy_and_merge_equals_one_pass():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(101, 7)) * 3 + 1
    one = FeatureStats(7).update(x)
    parts = FeatureStats(7).update(x[:30]).merge(FeatureStats(7).update(x[30:64]).update(x[64:]))
    mu, sigma = one.mean_cov()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, bias=True), rtol=1e-10, atol=1e-12)
    assert parts.count == 101
    np.testing.assert_allclose(parts.mean_cov()[1], sigma, rtol=1e-12, atol=1e-12)


def test_stats_file_round_trip(tmp_path):
    stats = FeatureStats(4).update(np.random.default_rng(6).normal(size=(9, 4)))
    stats.save(tmp_path / "s.safetensors", {"num_videos": 9})
    loaded, protocol = FeatureStats.load(tmp_path / "s.safetensors")
    assert protocol == {"num_videos": 9} and loaded.count == 9
    np.testing.assert_array_equal(loaded.outer, stats.outer)


def test_stats_reject_wrong_width_and_nan():
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        FeatureStats(3).update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        FeatureStats(2).update(np.array([[np.nan, 0.0]]))


# -- Inception Score ---------------------------------------------------------------------------
def test_is_uniform_predictions_is_one():
    mean, std = inception_score(np.full((40, 101), 1 / 101), splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 5, 17])
def test_is_one_hot_spread_over_k_classes_is_k(k):
    probs = np.eye(101)[np.arange(10 * k) % k]  # each split holds every class equally often
    mean, _ = inception_score(probs, splits=10)
    assert mean == pytest.approx(k, rel=1e-12)


def test_is_rejects_non_probabilities():
    with pytest.raises(ValueError, match="softmax"):
        inception_score(np.random.default_rng(0).normal(size=(20, 5)), splits=2)
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.full((3, 2), 0.5), splits=10)


# -- the cases -------------------------------------------------------------------------
def ill_conditioned_features(seed: int, n: int = 2048, d: int = 400, decades: float = 8) -> np.ndarray:
    """n samples whose covariance spans `decades` orders of magnitude (condition ~10^(2·decades))."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * np.logspace(0, -decades / 2, d)) @ rotation.T + rng.normal(size=d)


def scipy_frechet(mu1, s1, mu2, s2) -> float:
    scipy_linalg = pytest.importorskip("scipy.linalg", reason="scipy is a test dependency")
    root = scipy_linalg.sqrtm(s1 @ s2)
    return float(np.real(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)))


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("decades", [8, 16])
def test_frechet_equals_scipy_on_ill_conditioned_covariances(ddof, decades):
    x, y = ill_conditioned_features(0, decades=decades), 1.1 * ill_conditioned_features(1, decades=decades)
    (m1, s1), (m2, s2) = (FeatureStats(400).update(f).mean_cov(ddof) for f in (x, y))
    assert np.linalg.cond(s1) > 10 ** (0.9 * decades)
    expected = scipy_frechet(m1, s1, m2, s2)
    assert abs(frechet_distance(m1, s1, m2, s2) - expected) <= 1e-6 * abs(expected)


def test_frechet_equals_scipy_on_rank_deficient_features():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2048, 360)) @ rng.normal(size=(360, 400))  # rank 360 of 400
    y = 0.9 * x[:, ::-1] + 0.1
    (m1, s1), (m2, s2) = (FeatureStats(400).update(f).mean_cov(1) for f in (x, y))
    expected = scipy_frechet(m1, s1, m2, s2)
    assert abs(frechet_distance(m1, s1, m2, s2) - expected) <= 1e-6 * abs(expected)


def test_frechet_of_identical_sets_is_exactly_zero():
    mu, sigma = FeatureStats(400).update(ill_conditioned_features(2)).mean_cov()
    assert frechet_distance(mu, sigma, mu.copy(), sigma.copy()) == 0.0


def test_covariance_normalisation_follows_ddof():
    x = np.random.default_rng(8).normal(size=(50, 6))
    stats = FeatureStats(6).update(x)
    np.testing.assert_allclose(stats.mean_cov(0)[1], np.cov(x, rowvar=False, bias=True), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(stats.mean_cov(1)[1], np.cov(x, rowvar=False), rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="ddof"):
        stats.mean_cov(2)
