"""Batch scoring: one jitted function over fixed bucket shapes.

The score of a window comes from its reconstruction from the posterior mean: each
sensor's squared error in standard units, averaged over the window's steps with weights
that favour the newest (ScoreRule.focus), is put on that sensor's own scale measured on
normal validation windows (ScoreRule.normalization), and the sensors' normalised errors
are averaged (ScoreRule.aggregate). contributions[c] is sensor c's part of the score, so
contributions sum to the score. Batches are padded to a few fixed sizes (buckets) and masked, so a steady
stream of batches of any size never triggers a recompilation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from detector.model import WindowVAE
from detector.preprocessing import Scaler, model_input

DEFAULT_BUCKETS = (1, 16, 256, 4096)
SCORE_WEIGHTINGS = ("precision", "none")
NORMALIZATIONS = ("tail", "none")
FOCUSES = ("recent", "last", "window")
AGGREGATES = ("mean", "top")
# "recent" focus: each step of the window weighs half as much as the one RECENT_HALF_LIFE
# of the window later, so the newest readings dominate but one noisy reading does not.
RECENT_HALF_LIFE = 1 / 12
# "tail" normalisation: a sensor's error is measured against its own error on normal
# validation windows: 0 at the median, 1 at the TAIL_QUANTILE. A sensor whose tail is
# tiny (a constant or rarely changing channel) would turn any change into an enormous
# number; its spread is floored at SPREAD_FLOOR x the median spread of all sensors.
TAIL_QUANTILE = 0.99
SPREAD_FLOOR = 0.1


@dataclass(frozen=True)
class Scores:
    """score: [n] float32 (NaN where a window has no observed cell); contributions: [n, sensors]."""

    score: np.ndarray
    contributions: np.ndarray


@dataclass(frozen=True)
class ScoreRule:
    """How a window's reconstruction errors become one score; stored in every model.

    focus: which steps of the window the error is measured on: "recent" (exponentially
        more weight on the newest steps), "last" (the newest step only) or "window" (all
        steps alike).
    normalization: "tail" measures each sensor's error on its own scale from normal
        validation windows (location, spread: [sensors]; see calibrate_rule), so a noisy
        sensor and a quiet one weigh alike; "none" is the scoring of models made before
        it: the squared error weighted by `weighting`, averaged over the window's cells.
    aggregate: "mean" of the sensors' normalised errors, or "top": the mean of the top_k
        largest (a fault in few of many sensors is not averaged away).
    contributions[c] is sensor c's part of the score: they add up to it.
    """

    normalization: str = "tail"
    focus: str = "window"
    aggregate: str = "top"
    top_k: int = 3
    weighting: str = "precision"
    location: tuple[float, ...] | None = None
    spread: tuple[float, ...] | None = None

    def __post_init__(self):
        for name, allowed in (("normalization", NORMALIZATIONS), ("focus", FOCUSES), ("aggregate", AGGREGATES),
                              ("weighting", SCORE_WEIGHTINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unsupported score {name}: {getattr(self, name)!r} (choose from {allowed})")
        if self.top_k < 1:
            raise ValueError(f"score top_k must be >= 1, got {self.top_k}")
        if (self.location is None) != (self.spread is None):
            raise ValueError("score location and spread come together")
        if self.spread is not None:
            if len(self.location) != len(self.spread):
                raise ValueError(f"score location has {len(self.location)} sensors, spread {len(self.spread)}")
            if not all(np.isfinite(self.location)) or not all(np.isfinite(s) and s > 0 for s in self.spread):
                raise ValueError("score location must be finite and spread finite and > 0")

    @property
    def legacy(self) -> bool:
        return self.normalization == "none"

    def time_weights(self, window: int) -> np.ndarray:
        """Weight of each step of the window, oldest first: [window], summing to 1."""
        if self.focus == "window":
            w = np.ones(window)
        elif self.focus == "last":
            w = np.zeros(window)
            w[-1] = 1.0
        else:
            age = np.arange(window)[::-1]
            w = 0.5 ** (age / max(RECENT_HALF_LIFE * window, 1.0))
        return (w / w.sum()).astype(np.float32)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d | {k: (list(d[k]) if d[k] is not None else None) for k in ("location", "spread")}

    @classmethod
    def from_dict(cls, d: dict) -> ScoreRule:
        """A stored rule; keys missing from models made before this rule existed mean their scoring."""
        legacy = {"normalization": "none", "focus": "window", "aggregate": "mean", "top_k": 3}
        d = legacy | dict(d)
        for k in ("location", "spread"):
            if d.get(k) is not None:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)


def sensor_weights(model: WindowVAE, weighting: str) -> np.ndarray:
    """Per-sensor weights of the squared error: [sensors]."""
    if weighting == "precision":
        return np.asarray(jnp.exp(-model.observation_logvar()), np.float32)
    if weighting == "none":
        return np.ones(model.sensors, np.float32)
    raise ValueError(f"unsupported score weighting: {weighting!r} (choose from {SCORE_WEIGHTINGS})")


def sensor_errors(model: WindowVAE, raw: jax.Array, center, scale, time_weights) -> tuple[jax.Array, jax.Array]:
    """Traceable. raw: [batch, window, sensors], NaN = missing -> (errors, observed): [batch, sensors].

    errors[b, c] is the time-weighted mean squared error of sensor c's observed cells, in
    standard units (values clipped to +-Z_CLIP, as in training); observed[b, c] is the time weight those cells hold (0: no reading).
    """
    x, maskf = model_input(raw, center, scale, jnp)
    recon = model.reconstruct(x, maskf)
    tw = time_weights[None, :, None] * maskf
    observed = jnp.sum(tw, axis=1)
    errors = jnp.sum((x - recon) ** 2 * tw, axis=1) / jnp.maximum(observed, 1e-12)
    return errors, observed


def normalised_errors(errors, observed, location, spread, xp=jnp):
    """Traceable. Each sensor's error on its own scale: 0 up to its normal median, 1 at its
    tail (location, spread from calibrate_rule), 0 where the sensor was not observed:
    [batch, sensors] (xp: jax.numpy, or numpy)."""
    return xp.where(observed > 0, xp.maximum((errors - location) / spread, 0.0), 0.0)


def combine(errors: jax.Array, observed: jax.Array, rule: ScoreRule, location, spread
            ) -> tuple[jax.Array, jax.Array]:
    """Traceable. Per-sensor errors [batch, sensors] -> (score [batch], contributions [batch, sensors])."""
    return aggregate(normalised_errors(errors, observed, location, spread), observed > 0, rule)


def aggregate(normalised, seen, rule: ScoreRule, xp=jnp):
    """Traceable. Normalised errors [batch, sensors] of the sensors `seen` -> (score [batch],
    contributions [batch, sensors]) under the rule's aggregate (xp: jax.numpy, or numpy)."""
    count = xp.sum(seen, axis=1)
    if rule.aggregate == "top":
        # the k-th largest value: the smallest of those with fewer than k values above them
        # (counting is far cheaper on CPU than lax.top_k for the few sensors of a window)
        above = xp.sum(normalised[:, None, :] > normalised[:, :, None], axis=2)
        kth = xp.min(xp.where(above < rule.top_k, normalised, xp.inf), axis=1, keepdims=True)
        # ties at the k-th value may admit a few more sensors; their shares still add up
        chosen = (normalised >= kth) & seen
        contributions = xp.where(chosen, normalised, 0.0) / xp.maximum(xp.sum(chosen, axis=1), 1)[:, None]
    else:
        contributions = normalised / xp.maximum(count, 1)[:, None]
    score = xp.where(count > 0, xp.sum(contributions, axis=1), xp.nan)
    return score, contributions


def legacy_errors(model: WindowVAE, raw: jax.Array, center, scale, weights) -> tuple[jax.Array, jax.Array]:
    """Traceable: the scoring of models made before ScoreRule (normalization "none"): the mean
    over observed cells of the weighted squared error. -> (score [batch], contributions [batch, sensors])."""
    mask = jnp.isfinite(raw)
    x = jnp.where(mask, (raw - center) / scale, 0.0)
    maskf = mask.astype(x.dtype)
    recon = model.reconstruct(x, maskf)
    err = (x - recon) ** 2 * maskf * weights
    observed = jnp.sum(maskf, axis=(1, 2))
    contributions = jnp.sum(err, axis=1) / jnp.maximum(observed, 1.0)[:, None]
    score = jnp.where(observed > 0, jnp.sum(contributions, axis=1), jnp.nan)
    return score, contributions


def window_scores(model: WindowVAE, raw: jax.Array, center, scale, rule: ScoreRule, weights, time_weights,
                  location, spread) -> tuple[jax.Array, jax.Array]:
    """Traceable core. raw: [batch, window, sensors] -> (score [batch], contributions [batch, sensors])."""
    if rule.legacy:
        return legacy_errors(model, raw, center, scale, weights)
    errors, observed = sensor_errors(model, raw, center, scale, time_weights)
    return combine(errors, observed, rule, location, spread)


def calibrate_rule(rule: ScoreRule, errors: np.ndarray, observed: np.ndarray,
                   quantile: float = TAIL_QUANTILE, lower: float | None = None) -> ScoreRule:
    """The rule with each sensor's location and spread measured on normal windows.

    errors, observed: [windows, sensors] from Scorer.sensor_errors_series on validation data.
    location = median error, spread = the `quantile` quantile - median (or - the `lower`
    quantile: 0.75 and 0.25 measure the interquartile range), floored (see SPREAD_FLOOR);
    models are calibrated at TAIL_QUANTILE from the median (others: benchmarks/score_study.py).
    """
    if rule.legacy:
        return rule
    e = np.where(observed > 0, np.asarray(errors, np.float64), np.nan)
    sensors = e.shape[1]
    seen = np.isfinite(e).sum(axis=0)
    location, spread = np.zeros(sensors), np.ones(sensors)
    ok = seen >= 2
    if ok.any():
        with np.errstate(all="ignore"):
            location[ok] = np.nanmedian(e[:, ok], axis=0)
            base = location[ok] if lower is None else np.nanquantile(e[:, ok], lower, axis=0)
            spread[ok] = np.nanquantile(e[:, ok], quantile, axis=0) - base
        floor = max(SPREAD_FLOOR * float(np.median(spread[ok])), 1e-6)
        spread = np.maximum(spread, floor)
        spread[~ok] = float(np.median(spread[ok]))
    return dataclasses.replace(rule, location=tuple(location.tolist()), spread=tuple(spread.tolist()))


def cross_fitted_scores(rule: ScoreRule, errors: np.ndarray, observed: np.ndarray,
                        calibrate: Callable[[ScoreRule, np.ndarray, np.ndarray], ScoreRule] = calibrate_rule
                        ) -> np.ndarray:
    """Scores of normal windows for calibrating the threshold, none of them scored under a
    rule calibrated on itself: errors, observed [windows, sensors] in time order are cut in
    two halves, and each half is scored under the rule calibrated on the other -> [windows].

    Scored under the rule calibrated on all of them, the same windows sit inside each
    sensor's measured range by construction, and a threshold fitted to them is exceeded far
    more often by normal data that comes later; the held-out half shows how much a sensor's
    error moves from one stretch of normal data to the next. calibrate: how a half's scales
    are measured (models: calibrate_rule; benchmarks/score_study.py tries others).
    """
    n = len(errors)
    if rule.legacy or n < 4:
        raise ValueError(f"cross-fitted scores need a calibrated rule and at least 4 windows, got {n}")
    half = n // 2
    out = []
    for fit, held in ((slice(half, n), slice(0, half)), (slice(0, half), slice(half, n))):
        r = calibrate(rule, errors[fit], observed[fit])
        score, _ = combine(jnp.asarray(errors[held]), jnp.asarray(observed[held]), r,
                           jnp.asarray(r.location, jnp.float32), jnp.asarray(r.spread, jnp.float32))
        out.append(np.asarray(score))
    return np.concatenate(out)


class _Kernels:
    """The jitted scoring functions of one model shape and score rule (without its numbers),
    shared by every Scorer of that shape: a new model version, another route's model of the
    same shape, or the next file's model in a benchmark scores without tracing again."""

    def __init__(self, graphdef, structure: ScoreRule, window: int):
        self.traces = 0

        def score(vae, k, raw):
            return window_scores(vae, raw, k["center"], k["scale"], structure, k["weights"], k["time_weights"],
                                 k["location"], k["spread"])

        def errors(vae, k, raw):
            return sensor_errors(vae, raw, k["center"], k["scale"], k["time_weights"])

        def on_windows(kernel):
            def run(state, k, raw):
                self.traces += 1
                return kernel(nnx.merge(graphdef, state), k, raw)
            return jax.jit(run)

        def on_block(kernel):
            def run(state, k, rows):
                # rows: [bucket + window - 1, sensors] -> the bucket's windows, gathered on device
                self.traces += 1
                n = rows.shape[0] - window + 1
                index = jnp.arange(n)[:, None] + jnp.arange(window)[None, :]
                return kernel(nnx.merge(graphdef, state), k, rows[index])
            return jax.jit(run)

        self.functions = (on_windows(score), on_block(score), on_block(errors))


@functools.lru_cache(maxsize=32)
def _kernels(graphdef, structure: ScoreRule, window: int) -> _Kernels:
    return _Kernels(graphdef, structure, window)


class Scorer:
    """Scores windows of raw readings with a trained VAE under a ScoreRule.

    Call with raw windows [n, window, sensors] (float32, NaN for missing) of any n, or
    use `score_series` on a whole series [rows, sensors].
    """

    def __init__(self, model: WindowVAE, scaler: Scaler, rule: ScoreRule | str = ScoreRule(),
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS):
        if isinstance(rule, str):  # a weighting name: the scoring of models made before ScoreRule
            rule = ScoreRule(normalization="none", focus="window", weighting=rule)
        self.window, self.sensors, self.rule = model.window, model.sensors, rule
        self.buckets = tuple(sorted(buckets))
        graphdef, state = nnx.split(model)
        # the model's own numbers go in as arguments, not as constants of the compiled code:
        # models of one shape and rule share it (_kernels: in a process, a new version scores
        # without tracing again; JAX's persistent cache keeps one entry for every version a
        # registry publishes, not one per version)
        consts = {
            "center": jnp.asarray(scaler.center), "scale": jnp.asarray(scaler.scale),
            "weights": jnp.asarray(sensor_weights(model, rule.weighting)),
            "time_weights": jnp.asarray(rule.time_weights(self.window)),
            "location": jnp.asarray(rule.location if rule.location is not None else np.zeros(self.sensors),
                                    jnp.float32),
            "spread": jnp.asarray(rule.spread if rule.spread is not None else np.ones(self.sensors), jnp.float32),
        }
        structure = dataclasses.replace(rule, location=None, spread=None)  # what shapes the code
        self._kernels = _kernels(graphdef, structure, self.window)
        self._state = (state, consts)
        self._score_windows, self._score_block, self._errors_block = self._kernels.functions

    @property
    def traces(self) -> int:
        """How many times this scorer's code was traced (compiled), counted over every scorer of
        the same model shape and rule, which share it; a test guards against recompiles."""
        return self._kernels.traces

    def _chunks(self, n: int) -> list[int]:
        """Bucket sizes that hold n windows with little padding: the largest bucket while it
        fills, then for the rest the smallest bucket that holds it, or several of the next
        smaller one when that pads less (904 windows: 4 x 256, not 4096)."""
        sizes, rest, largest = [], n, self.buckets[-1]
        while rest >= largest:
            sizes.append(largest)
            rest -= largest
        if rest:
            fit = next(b for b in self.buckets if b >= rest)
            smaller = [b for b in self.buckets if b < fit]
            if smaller and -(-rest // smaller[-1]) * smaller[-1] < fit:
                sizes += [smaller[-1]] * -(-rest // smaller[-1])
            else:
                sizes.append(fit)
        return sizes

    def __call__(self, raw: np.ndarray) -> Scores:
        """raw: [n, window, sensors] -> Scores of n windows."""
        return self.start(raw)()

    def start(self, raw: np.ndarray) -> Callable[[], Scores]:
        """Hand the windows to the scorer and return at once; the returned function waits for
        and returns their Scores (the computation runs meanwhile, outside the GIL)."""
        raw = np.asarray(raw, np.float32)
        if raw.ndim != 3 or raw.shape[1:] != (self.window, self.sensors):
            raise ValueError(
                f"expected windows of shape [n, {self.window}, {self.sensors}], got {list(raw.shape)}"
            )
        pending, start = [], 0
        for size in self._chunks(raw.shape[0]):
            chunk = raw[start:start + size]
            k = len(chunk)
            if k < size:
                chunk = np.concatenate([chunk, np.full((size - k, self.window, self.sensors), np.nan, np.float32)])
            pending.append((self._score_windows(*self._state, chunk), k))
            start += size

        def result() -> Scores:
            if not pending:
                return Scores(np.empty(0, np.float32), np.empty((0, self.sensors), np.float32))
            scores = [np.asarray(s)[:k] for (s, _), k in pending]
            contributions = [np.asarray(c)[:k] for (_, c), k in pending]
            return Scores(np.concatenate(scores), np.concatenate(contributions))

        return result

    def _blocks(self, values: np.ndarray, block: int | None):
        """Yield (first window, windows in the block, rows [block + window - 1, sensors]) over
        every full window of values [rows, sensors], padding the last block with NaN rows."""
        block = block or self.buckets[-1]
        span = block + self.window - 1
        windows = values.shape[0] - self.window + 1
        for start in range(0, max(windows, 0), block):
            chunk = values[start:start + span]
            if len(chunk) < span:
                chunk = np.concatenate([chunk, np.full((span - len(chunk), self.sensors), np.nan, np.float32)])
            yield start, min(block, windows - start), chunk

    def score_series(self, values: np.ndarray, block: int | None = None) -> Scores:
        """values: [rows, sensors] raw readings of one series, NaN = missing.

        Returns per-row Scores: row t holds the score of the window ending at t; the
        first window-1 rows have NaN scores and zero contributions.
        """
        values = np.asarray(values, np.float32)
        rows = values.shape[0]
        score = np.full(rows, np.nan, np.float32)
        contributions = np.zeros((rows, self.sensors), np.float32)
        pending = []  # a few blocks in flight: JAX computes one while the next is handed over
        for start, k, chunk in self._blocks(values, block):
            pending.append((start, k, self._score_block(*self._state, chunk)))
            if len(pending) > 2:
                self._take(pending.pop(0), score, contributions)
        for item in pending:
            self._take(item, score, contributions)
        return Scores(score, contributions)

    def _take(self, item, score: np.ndarray, contributions: np.ndarray) -> None:
        start, k, (s, c) = item
        end = start + self.window - 1
        score[end:end + k] = np.asarray(s)[:k]
        contributions[end:end + k] = np.asarray(c)[:k]

    def sensor_errors_series(self, values: np.ndarray, block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-sensor errors and observed weights of every full window of a series (see
        sensor_errors): values [rows, sensors] -> (errors, observed): [rows - window + 1, sensors]."""
        values = np.asarray(values, np.float32)
        windows = max(values.shape[0] - self.window + 1, 0)
        errors = np.zeros((windows, self.sensors), np.float32)
        observed = np.zeros((windows, self.sensors), np.float32)
        for start, k, chunk in self._blocks(values, block):
            e, o = self._errors_block(*self._state, chunk)
            errors[start:start + k], observed[start:start + k] = np.asarray(e)[:k], np.asarray(o)[:k]
        return errors, observed


def top_shares(contributions: np.ndarray, score: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The k largest contributors of each row: sensor indices [n, k] and their shares of the score [n, k]."""
    k = min(k, contributions.shape[1])
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    shares = np.take_along_axis(contributions, order, axis=1) / np.where(score > 0, score, 1.0)[:, None]
    return order, shares


def top_sensors(contributions: np.ndarray, score: np.ndarray, names: tuple[str, ...], k: int = 3
                ) -> list[list[tuple[str, float]]]:
    """The k largest contributors of each row as (name, share of the score)."""
    order, shares = top_shares(contributions, score, k)
    return [[(names[i], float(s)) for i, s in zip(o, sh)] for o, sh in zip(order, shares)]
