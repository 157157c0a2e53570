"""Batch scoring: one jitted function over fixed bucket shapes.

The score of a window is its reconstruction error from the posterior mean: the mean
over observed cells of the (optionally precision-weighted) squared error in standard
units. contributions[c] is sensor c's part of that mean, so contributions sum to the
score. Batches are padded to a few fixed sizes (buckets) and masked, so a steady
stream of batches of any size never triggers a recompilation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from detector.model import VAE
from detector.preprocessing import Scaler

DEFAULT_BUCKETS = (1, 16, 256, 4096)
SCORE_WEIGHTINGS = ("precision", "none")


@dataclass(frozen=True)
class Scores:
    """score: [n] float32 (NaN where a window has no observed cell); contributions: [n, sensors]."""

    score: np.ndarray
    contributions: np.ndarray


def sensor_weights(model: VAE, weighting: str) -> np.ndarray:
    """Per-sensor weights of the squared error: [sensors]."""
    if weighting == "precision":
        return np.asarray(jnp.exp(-model.observation_logvar()), np.float32)
    if weighting == "none":
        return np.ones(model.sensors, np.float32)
    raise ValueError(f"unsupported score weighting: {weighting!r} (choose from {SCORE_WEIGHTINGS})")


def window_errors(model: VAE, raw: jax.Array, center, scale, weights) -> tuple[jax.Array, jax.Array]:
    """Traceable core. raw: [batch, window, sensors], NaN = missing -> (score [batch], contributions [batch, sensors])."""
    mask = jnp.isfinite(raw)
    x = jnp.where(mask, (raw - center) / scale, 0.0)
    maskf = mask.astype(x.dtype)
    recon = model.reconstruct(x, maskf)
    err = (x - recon) ** 2 * maskf * weights
    observed = jnp.sum(maskf, axis=(1, 2))
    contributions = jnp.sum(err, axis=1) / jnp.maximum(observed, 1.0)[:, None]
    score = jnp.where(observed > 0, jnp.sum(contributions, axis=1), jnp.nan)
    return score, contributions


class Scorer:
    """Scores windows of raw readings with a trained VAE.

    Call with raw windows [n, window, sensors] (float32, NaN for missing) of any n, or
    use `score_series` on a whole series [rows, sensors].
    """

    def __init__(self, model: VAE, scaler: Scaler, weighting: str = "precision",
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS):
        self.window, self.sensors = model.window, model.sensors
        self.buckets = tuple(sorted(buckets))
        self.traces = 0  # number of compilations; a test guards against recompiles
        graphdef, state = nnx.split(model)
        center = jnp.asarray(scaler.center)
        scale = jnp.asarray(scaler.scale)
        weights = jnp.asarray(sensor_weights(model, weighting))

        def score_windows(state, raw):
            self.traces += 1
            return window_errors(nnx.merge(graphdef, state), raw, center, scale, weights)

        def score_block(state, rows):
            # rows: [bucket + window - 1, sensors] -> the bucket's windows, gathered on device
            self.traces += 1
            n = rows.shape[0] - self.window + 1
            index = jnp.arange(n)[:, None] + jnp.arange(self.window)[None, :]
            return window_errors(nnx.merge(graphdef, state), rows[index], center, scale, weights)

        self._state = state
        self._score_windows = jax.jit(score_windows)
        self._score_block = jax.jit(score_block)

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
            pending.append((self._score_windows(self._state, chunk), k))
            start += size

        def result() -> Scores:
            if not pending:
                return Scores(np.empty(0, np.float32), np.empty((0, self.sensors), np.float32))
            scores = [np.asarray(s)[:k] for (s, _), k in pending]
            contributions = [np.asarray(c)[:k] for (_, c), k in pending]
            return Scores(np.concatenate(scores), np.concatenate(contributions))

        return result

    def score_series(self, values: np.ndarray, block: int | None = None) -> Scores:
        """values: [rows, sensors] raw readings of one series, NaN = missing.

        Returns per-row Scores: row t holds the score of the window ending at t; the
        first window-1 rows have NaN scores and zero contributions.
        """
        values = np.asarray(values, np.float32)
        rows = values.shape[0]
        block = block or self.buckets[-1]
        score = np.full(rows, np.nan, np.float32)
        contributions = np.zeros((rows, self.sensors), np.float32)
        span = block + self.window - 1
        for start in range(0, max(rows - self.window + 1, 0), block):
            chunk = values[start:start + span]
            if len(chunk) < span:
                chunk = np.concatenate([chunk, np.full((span - len(chunk), self.sensors), np.nan, np.float32)])
            s, c = self._score_block(self._state, chunk)
            k = min(block, rows - self.window + 1 - start)
            end = start + self.window - 1
            score[end:end + k] = np.asarray(s)[:k]
            contributions[end:end + k] = np.asarray(c)[:k]
        return Scores(score, contributions)


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
