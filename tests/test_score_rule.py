"""The calibrated scoring rule: each sensor on its own scale, a binary channel does not dominate."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from detector.artifact import TrainedModel, load, save
from detector.table import SensorTable
from detector.model import VAE, ModelConfig
from detector.preprocessing import Scaler
from detector.scoring import ScoreRule, Scorer, calibrate_rule, cross_fitted_scores, normalised_errors, top_shares
from detector.threshold import Persistence, Threshold
from training.config import TrainConfig
from training.job import train_model


def table(values: np.ndarray, name: str = "t") -> SensorTable:
    rows = len(values)
    return SensorTable(name, [str(i) for i in range(rows)], np.arange(rows, dtype=np.float64),
                       ("flow", "valve_open"), values, None)


def binary_and_continuous(rows: int, seed: int) -> np.ndarray:
    """flow: a noisy daily-like cycle; valve_open: 0/1, switching about every 150 readings."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    flow = np.sin(2 * np.pi * t / 100) + 0.1 * rng.normal(size=rows)
    switches = np.cumsum(rng.random(rows) < 1 / 150) % 2
    return np.stack([flow, switches.astype(float)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def models():
    # risk per window as these tests were written for: 50 min of 1 s readings are too little to
    # extrapolate a tail to the default's one window a day (1 in 86,400; see the test below)
    config = TrainConfig(model=ModelConfig(window=10, hidden=(32,), latent=4), epochs=15, batch_size=64,
                         max_steps_per_epoch=40, patience=5, risk=1e-3)
    train = [table(binary_and_continuous(3000, seed=1))]
    calibrated, _ = train_model(train, config)
    legacy, _ = train_model(train, dataclasses.replace(config, normalization="none", focus="window"))
    return calibrated, legacy


def binary_share(model: TrainedModel, values: np.ndarray) -> float:
    """The binary channel's share of the summed score over a series."""
    s = model.scorer().score_series(values)
    ok = np.isfinite(s.score)
    return float(s.contributions[ok, 1].sum() / s.score[ok].sum())


@pytest.mark.slow
def test_a_binary_channel_does_not_dominate(models):
    calibrated, legacy = models
    normal = binary_and_continuous(3000, seed=7)
    # precision-weighted whole-window error (the old scoring): the switches own half the score
    assert binary_share(legacy, normal) > 0.4
    # on its own scale the binary channel weighs less than the continuous one
    assert binary_share(calibrated, normal) < 0.3


def test_a_fault_in_the_continuous_channel_is_flagged_and_named(models):
    calibrated, _ = models
    values = binary_and_continuous(1200, seed=8)
    values[600:700, 0] += np.random.default_rng(9).normal(0, 1, 100)  # flow turns erratic
    s = calibrated.scorer().score_series(values)
    flags = calibrated.persistence.apply(s.score > calibrated.threshold.value)
    assert flags[620:700].mean() > 0.9 and flags[:580].mean() < 0.02
    top, _ = top_shares(s.contributions[620:700], s.score[620:700], k=1)
    assert (top[:, 0] == 0).mean() > 0.9


def test_calibrated_location_and_spread():
    rng = np.random.default_rng(0)
    errors = np.stack([rng.exponential(1.0, 10000), rng.exponential(100.0, 10000), np.zeros(10000)], axis=1)
    rule = calibrate_rule(ScoreRule(), errors, np.ones_like(errors))
    np.testing.assert_allclose(rule.location[:2], [np.log(2), 100 * np.log(2)], rtol=0.05)
    np.testing.assert_allclose(rule.spread[:2], [np.log(100) - np.log(2), 100 * (np.log(100) - np.log(2))], rtol=0.1)
    # a constant sensor gets the floor, a share of the typical spread, not a near-zero scale
    assert rule.spread[2] == pytest.approx(0.1 * np.median(rule.spread), rel=1e-6)
    # another tail quantile (benchmarks/score_study.py): the spread reaches that quantile instead
    q90 = calibrate_rule(ScoreRule(), errors, np.ones_like(errors), quantile=0.9)
    assert q90.location == rule.location
    np.testing.assert_allclose(q90.spread[:2], [np.log(10) - np.log(2), 100 * (np.log(10) - np.log(2))], rtol=0.1)
    # measured from a lower quantile: the interquartile range of an exponential is ln 3 x its mean
    iqr = calibrate_rule(ScoreRule(), errors, np.ones_like(errors), quantile=0.75, lower=0.25)
    assert iqr.location == rule.location
    np.testing.assert_allclose(iqr.spread[:2], [np.log(3), 100 * np.log(3)], rtol=0.05)
    # the old scoring has nothing to calibrate
    legacy = ScoreRule(normalization="none")
    assert calibrate_rule(legacy, errors, np.ones_like(errors)) is legacy


def test_normalised_errors_are_zero_for_unobserved_sensors_and_below_the_median():
    errors = np.array([[0.5, 3.0, 9.0], [2.0, 1.0, 9.0]])
    observed = np.array([[1.0, 1.0, 0.0], [1.0, 0.5, 1.0]])
    n = normalised_errors(errors, observed, np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 4.0]), np)
    np.testing.assert_allclose(n, [[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]])


def _top_mean(errors: np.ndarray, rule: ScoreRule) -> np.ndarray:
    """The mean of each window's top_k normalised errors (sensors tied with the k-th all count)."""
    normalised = np.maximum((errors - np.array(rule.location)) / np.array(rule.spread), 0.0)
    chosen = normalised >= np.sort(normalised, axis=1)[:, -rule.top_k][:, None]
    return (normalised * chosen).sum(axis=1) / chosen.sum(axis=1)


def test_cross_fitted_scores_score_each_half_on_the_other_halfs_scales():
    rng = np.random.default_rng(3)
    errors = rng.exponential(1.0, size=(400, 5))
    errors[200:, 0] *= 3.0  # sensor 0's error is larger in the second stretch of normal data
    observed = np.ones_like(errors)
    rule = ScoreRule()
    cross = cross_fitted_scores(rule, errors, observed)
    first, second = calibrate_rule(rule, errors[:200], observed[:200]), calibrate_rule(rule, errors[200:], observed[200:])
    np.testing.assert_allclose(cross[:200], _top_mean(errors[:200], second), rtol=1e-5)
    np.testing.assert_allclose(cross[200:], _top_mean(errors[200:], first), rtol=1e-5)
    # on scales measured on all of them, the same windows stay inside the scales by construction
    inside = _top_mean(errors, calibrate_rule(rule, errors, observed))
    assert np.quantile(cross, 0.99) > 1.3 * np.quantile(inside, 0.99)
    with pytest.raises(ValueError, match="at least 4 windows"):
        cross_fitted_scores(rule, errors[:3], observed[:3])
    with pytest.raises(ValueError, match="calibrated rule"):
        cross_fitted_scores(ScoreRule(normalization="none"), errors, observed)


@pytest.mark.parametrize("per_day, risk", [(None, 1e-3), (1.0, 1 / 86400)])
def test_realised_false_alarm_rate_on_fresh_normal_data_is_near_the_requested_one(models, per_day, risk):
    calibrated, _ = models
    if per_day is not None:  # the default: one window a day over threshold, readings 1 s apart
        config = TrainConfig(model=ModelConfig(window=10, hidden=(32,), latent=4), epochs=15, batch_size=64,
                             max_steps_per_epoch=40, patience=5)
        calibrated, _ = train_model([table(binary_and_continuous(3000, seed=1))], config)
        assert calibrated.threshold.details["per_day"] == per_day
    assert calibrated.threshold.details["risk"] == pytest.approx(risk) and calibrated.threshold.details["margin"] == 1.0
    s = calibrated.scorer().score_series(binary_and_continuous(20000, seed=11)).score
    s = s[np.isfinite(s)]
    over = s > calibrated.threshold.value  # no margin on top of the calibrated threshold
    assert over.sum() <= 3 * risk * len(s) + 3  # 3 x the share asked, +3 for chance: 1e-3 -> 63, 1/86400 -> 3


@pytest.mark.parametrize("aggregate", ["mean", "top"])
@pytest.mark.parametrize("focus", ["recent", "last", "window"])
def test_contributions_add_up_to_the_score(aggregate, focus, rng):
    vae = VAE(ModelConfig(window=6, hidden=(8,), latent=2), 5, rngs=nnx.Rngs(0))
    rule = ScoreRule(focus=focus, aggregate=aggregate, top_k=2, location=(0.1,) * 5, spread=(0.5, 1, 2, 1, 1))
    s = Scorer(vae, Scaler(np.zeros(5, np.float32), np.ones(5, np.float32)), rule)(
        rng.normal(size=(9, 6, 5)).astype(np.float32))
    np.testing.assert_allclose(s.contributions.sum(axis=1), s.score, rtol=1e-5)
    assert (s.contributions >= 0).all()
    if aggregate == "top":
        assert ((s.contributions > 0).sum(axis=1) <= 2).all()


def test_time_weights():
    assert ScoreRule(focus="window").time_weights(4).tolist() == [0.25] * 4
    assert ScoreRule(focus="last").time_weights(4).tolist() == [0, 0, 0, 1]
    w = ScoreRule(focus="recent").time_weights(60)
    assert w.sum() == pytest.approx(1.0) and w[-1] == pytest.approx(2 * w[-6])  # half-life 5 steps


def test_rule_round_trip_and_old_models(tmp_path):
    vae = VAE(ModelConfig(window=4, hidden=(8,), latent=2), 2, rngs=nnx.Rngs(0))
    rule = ScoreRule(aggregate="top", top_k=1, location=(0.5, 0.25), spread=(1.0, 2.0))
    model = TrainedModel(("a", "b"), ModelConfig(window=4, hidden=(8,), latent=2),
                         Scaler(np.zeros(2, np.float32), np.ones(2, np.float32)), vae,
                         Threshold(1.0, "quantile"), Persistence(), rule)
    assert load(save(model, tmp_path / "m")).scoring == rule
    # a model description written before the scoring rule existed scores as it always did
    old = ScoreRule.from_dict({"weighting": "precision"})
    assert (old.normalization, old.focus, old.aggregate) == ("none", "window", "mean")
    with pytest.raises(ValueError, match="focus"):
        ScoreRule(focus="middle")
