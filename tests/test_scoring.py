import numpy as np
import pytest
from flax import nnx

from detector.model import VAE, ModelConfig
from detector.preprocessing import Scaler, windows
from detector.scoring import Scorer, top_sensors


@pytest.fixture
def scorer():
    vae = VAE(ModelConfig(window=5, hidden=(8,), latent=2), 3, rngs=nnx.Rngs(0))
    scaler = Scaler(np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 0.5, 2.0], np.float32))
    return Scorer(vae, scaler, buckets=(1, 4, 16))


def test_contributions_sum_to_the_score(scorer, rng):
    raw = rng.normal(size=(7, 5, 3)).astype(np.float32)
    s = scorer(raw)
    assert s.score.shape == (7,) and s.contributions.shape == (7, 3)
    np.testing.assert_allclose(s.contributions.sum(axis=1), s.score, rtol=1e-5)
    assert (s.contributions >= 0).all()


def test_scores_are_deterministic(scorer, rng):
    raw = rng.normal(size=(9, 5, 3)).astype(np.float32)
    a, b = scorer(raw), scorer(raw)
    assert a.score.tobytes() == b.score.tobytes()
    assert a.contributions.tobytes() == b.contributions.tobytes()


def test_steady_state_scoring_never_recompiles(scorer, rng):
    before = scorer.traces  # other scorers of this shape may have traced some buckets already
    for n in (1, 4, 16):  # warm up every bucket once
        scorer(rng.normal(size=(n, 5, 3)))
    warm = scorer.traces
    assert warm - before <= 3
    for n in (1, 2, 3, 4, 5, 9, 16, 17, 40, 3, 1):
        scorer(rng.normal(size=(n, 5, 3)))
    assert scorer.traces == warm


def test_missing_cells_are_masked_not_zero_filled(scorer, rng):
    raw = rng.normal(size=(1, 5, 3)).astype(np.float32)
    missing = raw.copy()
    missing[0, 2, 1] = np.nan
    s = scorer(missing)
    assert np.isfinite(s.score).all()
    # not the same as filling the cell with 0 (raw units) or with the sensor's centre (0 in
    # standard units): the cell is left out of the model's input and of the error
    for fill in (0.0, 2.0):  # sensor 1's centre is 2.0
        filled = raw.copy()
        filled[0, 2, 1] = fill
        other = scorer(filled)
        assert abs(float(other.score[0]) - float(s.score[0])) > 1e-4 * max(abs(float(s.score[0])), 1e-3)
    # and whatever value stood in the cell before it went missing, the score is the same
    again = raw.copy()
    again[0, 2, 1] = 1e6
    again[0, 2, 1] = np.nan
    assert scorer(again).score.tobytes() == s.score.tobytes()
    # a window with no observation at all has no score
    assert np.isnan(scorer(np.full((1, 5, 3), np.nan, np.float32)).score[0])


def test_series_scoring_matches_window_scoring(scorer, rng):
    values = rng.normal(size=(40, 3)).astype(np.float32)
    values[10, 0] = np.nan
    series = scorer.score_series(values, block=16)
    direct = scorer(np.ascontiguousarray(windows(values, 5)))
    assert np.isnan(series.score[:4]).all()
    np.testing.assert_allclose(series.score[4:], direct.score, rtol=1e-5)
    np.testing.assert_allclose(series.contributions[4:], direct.contributions, rtol=1e-5, atol=1e-7)


def test_window_shape_is_checked(scorer):
    with pytest.raises(ValueError, match=r"\[n, 5, 3\].*\[2, 4, 3\]"):
        scorer(np.zeros((2, 4, 3), np.float32))


def test_top_sensors_shares():
    c = np.array([[1.0, 3.0, 0.0, 6.0]], np.float32)
    top = top_sensors(c, c.sum(axis=1), ("a", "b", "c", "d"))
    assert [n for n, _ in top[0]] == ["d", "b", "a"]
    assert [round(s, 2) for _, s in top[0]] == [0.6, 0.3, 0.1]


def test_a_models_numbers_are_arguments_of_the_compiled_code_not_constants(rng):
    """Two versions of one model shape (other weights, scaler and per-sensor scales) lower to
    the same program, so JAX's persistent cache holds one entry for both and a new version
    loads without compiling again."""
    from detector.scoring import ScoreRule

    def version(seed: int) -> Scorer:
        vae = VAE(ModelConfig(window=5, hidden=(8,), latent=2), 3, rngs=nnx.Rngs(seed))
        scaler = Scaler(rng.normal(size=3).astype(np.float32), rng.uniform(0.5, 2, size=3).astype(np.float32))
        rule = ScoreRule(location=tuple(rng.uniform(0, 1, 3)), spread=tuple(rng.uniform(1, 2, 3)))
        return Scorer(vae, scaler, rule, buckets=(4,))

    rows = np.zeros((4 + 5 - 1, 3), np.float32)
    a, b = version(0), version(1)
    assert a.score_series(rows).score.tobytes() != b.score_series(rows + 1).score.tobytes()
    programs = [s._score_block.lower(*s._state, rows).as_text() for s in (a, b)]
    assert programs[0] == programs[1]
    windows = np.zeros((4, 5, 3), np.float32)
    assert a._score_windows.lower(*a._state, windows).as_text() == b._score_windows.lower(*b._state, windows).as_text()


def test_models_of_one_shape_share_the_compiled_code(rng):
    """A second model of the same shape and rule (a new version, another route's model)
    scores without tracing again, and with its own numbers."""
    from detector.scoring import ScoreRule, sensor_weights, window_scores

    config = ModelConfig(window=6, hidden=(8,), latent=2)
    scaler = Scaler(np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 0.5, 2.0], np.float32))
    raw = rng.normal(size=(4, 6, 3)).astype(np.float32)
    a = Scorer(VAE(config, 3, rngs=nnx.Rngs(1)), scaler, buckets=(1, 4))
    first = a(raw)
    a(raw[:1])
    traced = a.traces  # both buckets (and whatever other tests traced for this shape)
    vae = VAE(config, 3, rngs=nnx.Rngs(2))
    b = Scorer(vae, scaler, buckets=(1, 4))
    second = b(raw)
    assert traced >= 2 and b.traces == traced  # (a scorer of its own would count 1 here)
    assert not np.allclose(first.score, second.score)
    rule = ScoreRule()
    own, _ = window_scores(vae, raw, scaler.center, scaler.scale, rule, sensor_weights(vae, rule.weighting),
                           rule.time_weights(6), np.zeros(3, np.float32), np.ones(3, np.float32))
    np.testing.assert_allclose(second.score, np.asarray(own), rtol=1e-5)
