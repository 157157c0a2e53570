import numpy as np
import pytest

from detector.threshold import Persistence, Threshold, calibrate, fit_gpd, flag, pot_threshold, quantile_threshold


def test_quantile_threshold():
    scores = np.arange(1, 1001, dtype=float)
    t = quantile_threshold(scores, q=0.99, margin=2.0)
    assert t.value == pytest.approx(2 * np.quantile(scores, 0.99))
    assert t.method == "quantile" and t.details["n"] == 1000


def test_quantile_ignores_nan():
    t = quantile_threshold(np.array([np.nan, 1.0, 2.0, 3.0]), q=0.5)
    assert t.value == pytest.approx(2.0)


@pytest.mark.parametrize("shape, scale", [(0.2, 1.0), (-0.2, 2.0), (0.0, 1.5)])
def test_gpd_fit_recovers_parameters(shape, scale, rng):
    u = rng.uniform(size=20000)
    y = scale * (-np.log(u)) if shape == 0 else scale / shape * (u ** (-shape) - 1)
    s, sc, _ = fit_gpd(y)
    assert s == pytest.approx(shape, abs=0.05)
    assert sc == pytest.approx(scale, rel=0.08)


def test_pot_matches_the_true_quantile_of_a_known_tail(rng):
    # exponential scores: P(S > z) = exp(-z), so the 1e-4 risk quantile is ln(1e4)
    scores = rng.exponential(size=50000)
    t = pot_threshold(scores, risk=1e-4, init_quantile=0.98)
    assert t.value == pytest.approx(np.log(1e4), rel=0.1)
    # it extrapolates beyond the largest observation, which a quantile cannot do
    small = pot_threshold(scores[:2000], risk=1e-5)
    assert small.value > scores[:2000].max()


def test_pot_margin_multiplies_the_fitted_value(rng):
    scores = rng.exponential(size=5000)
    plain, safe = pot_threshold(scores, risk=1e-3), pot_threshold(scores, risk=1e-3, margin=2.5)
    assert safe.value == pytest.approx(2.5 * plain.value) and safe.details["base"] == pytest.approx(plain.value)


def test_pot_with_few_scores_lowers_its_initial_quantile(rng):
    t = pot_threshold(rng.exponential(size=60), risk=1e-3)
    assert t.details["peaks"] >= 10 and np.isfinite(t.value)


@pytest.mark.parametrize("method", ["pot", "quantile"])
def test_calibrate_dispatches(method, rng):
    assert calibrate(rng.exponential(size=500), method).method == method


def test_calibrate_rejects_unknown_method():
    with pytest.raises(ValueError, match="unsupported threshold method: 'magic'"):
        calibrate(np.ones(10), "magic")


def test_threshold_round_trip():
    t = Threshold(1.5, "pot", {"risk": 1e-3})
    assert Threshold.from_dict(t.to_dict()) == t


@pytest.mark.parametrize("over, k, n, expected", [
    ([1, 0, 0, 1, 1, 1, 0, 0, 0, 0], 3, 5, [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]),
    ([1, 0, 1, 0, 1, 0, 0], 3, 5, [0, 0, 0, 0, 1, 0, 0]),
    ([1, 0, 1], 1, 1, [1, 0, 1]),
])
def test_persistence_k_of_n(over, k, n, expected):
    assert Persistence(k, n).apply(np.array(over, bool)).astype(int).tolist() == expected


def test_persistence_validates():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        Persistence(4, 3)


def test_flag_treats_nan_as_not_over():
    out = flag(np.array([np.nan, 2.0, 2.0]), 1.0, Persistence(2, 2))
    assert out.tolist() == [False, False, True]


def test_persistence_counts_afresh_where_a_run_starts():
    from detector.threshold import Persistence

    over = np.array([1, 1, 0, 1, 1, 1, 0], bool)
    starts = np.array([0, 0, 0, 1, 0, 0, 0], bool)  # a gap before the fourth window
    assert Persistence(3, 5).apply(over).tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert Persistence(3, 5).apply(over, starts).tolist() == [0, 0, 0, 0, 0, 1, 1]
