"""Alert thresholds calibrated on held-out normal scores, and the persistence rule.

Two calibration methods:
- "quantile": the q-quantile of the validation scores;
- "pot": peaks over threshold (Siffer et al., KDD 2017): a generalised Pareto
  distribution is fitted by maximum likelihood to the excesses over a high initial
  quantile and extrapolated to the score exceeded with probability `risk`.

Both can be multiplied by a margin (training's default is 1: the threshold as calibrated;
training fits it to cross-fitted validation scores, see scoring.cross_fitted_scores).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

THRESHOLD_METHODS = ("pot", "quantile")
MIN_PEAKS = 10


@dataclass(frozen=True)
class Threshold:
    """A calibrated threshold: value in score units, with how it was chosen."""

    value: float
    method: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Threshold:
        return cls(float(d["value"]), str(d["method"]), dict(d.get("details", {})))


def _finite(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size < 2:
        raise ValueError(f"need at least 2 finite validation scores to calibrate a threshold, got {scores.size}")
    return scores


def quantile_threshold(scores: np.ndarray, q: float = 0.999, margin: float = 1.0) -> Threshold:
    """The q-quantile of normal scores times margin."""
    if not 0.0 < q < 1.0 or margin <= 0:
        raise ValueError(f"need 0 < q < 1 and margin > 0, got q={q}, margin={margin}")
    s = _finite(scores)
    base = float(np.quantile(s, q))
    return Threshold(base * margin, "quantile", {"q": q, "margin": margin, "n": int(s.size)})


def fit_gpd(excesses: np.ndarray, min_shape: float = -math.inf) -> tuple[float, float, float]:
    """Maximum-likelihood generalised Pareto fit to positive excesses.

    Uses the profile likelihood in theta = shape/scale (Grimshaw 1993): for a fixed theta
    the optimal shape is mean(log1p(theta * y)). Returns (shape, scale, log_likelihood).
    """
    y = np.asarray(excesses, np.float64)
    n, ymax, ymean = y.size, float(y.max()), float(y.mean())
    # exponential limit (shape 0)
    best = (0.0, ymean, -n * math.log(ymean) - n)
    lo = -1.0 / ymax
    hi = max(2.0 * (ymean - y.min()) / max(y.min(), 1e-12 * ymax) ** 2, 1.0 / ymean)
    hi = min(hi, 1e6 / ymean)
    grid = np.concatenate([
        lo * (1.0 - np.geomspace(1e-6, 0.999, 200)),   # negative theta, towards -1/ymax
        np.geomspace(1e-6 / ymean, hi, 400),             # positive theta
    ])
    for theta in grid:
        shape = float(np.mean(np.log1p(theta * y)))
        if shape == 0.0 or not math.isfinite(shape) or shape < min_shape:
            continue
        scale = shape / theta
        if scale <= 0:
            continue
        ll = -n * math.log(scale) - n * (1.0 + shape)
        if ll > best[2]:
            best = (shape, scale, ll)
    return best


def pot_threshold(scores: np.ndarray, risk: float = 1e-3, init_quantile: float = 0.98,
                  margin: float = 1.0, min_shape: float = 0.0) -> Threshold:
    """Score exceeded with probability `risk` under a GPD tail fitted above init_quantile, times margin.

    With few scores the initial quantile is lowered so that at least MIN_PEAKS excesses
    are fitted. min_shape bounds the fitted shape from below: the default 0 allows an
    exponential or heavier tail only, because a bounded tail (shape < 0) fitted to a few
    dozen peaks of a short validation period ends just above its largest score, and
    normal data a little outside that period then crosses it (-inf: any shape).
    """
    if not 0.0 < risk < 1.0 or not 0.0 < init_quantile < 1.0 or margin <= 0:
        raise ValueError(f"need 0 < risk < 1, 0 < init_quantile < 1 and margin > 0, got {risk}, {init_quantile}, {margin}")
    s = _finite(scores)
    n = s.size
    q0 = min(init_quantile, 1.0 - MIN_PEAKS / n) if n > 2 * MIN_PEAKS else 0.5
    t = float(np.quantile(s, q0))
    excesses = s[s > t] - t
    details = {"risk": risk, "init_quantile": q0, "initial_threshold": t, "n": int(n), "peaks": int(excesses.size),
               "margin": margin, "min_shape": min_shape}
    if excesses.size < 3 or excesses.max() <= 0:
        value = float(s.max())
        return Threshold(value * margin, "pot", details | {"base": value,
                                                           "fallback": "too few distinct peaks: using the maximum score"})
    shape, scale, _ = fit_gpd(excesses, min_shape)
    ratio = risk * n / excesses.size
    if abs(shape) < 1e-9:
        value = t - scale * math.log(ratio)
    else:
        value = t + scale / shape * (ratio ** (-shape) - 1.0)
    # with ratio >= 1 (risk larger than the tail fraction) the formula lands below t
    value = max(value, t)
    return Threshold(float(value) * margin, "pot", details | {"base": float(value), "gpd_shape": shape, "gpd_scale": scale})


def calibrate(scores: np.ndarray, method: str = "pot", **options) -> Threshold:
    """Calibrate a threshold on normal validation scores with the named method."""
    if method == "pot":
        return pot_threshold(scores, **options)
    if method == "quantile":
        return quantile_threshold(scores, **options)
    raise ValueError(f"unsupported threshold method: {method!r} (choose from {THRESHOLD_METHODS})")


@dataclass(frozen=True)
class Persistence:
    """Flag a window when at least k of the last n windows (itself included) are over threshold.

    k = n = 1 flags every window over threshold. The default, 3 of 5, ignores one-off
    and two-off blips and delays a real detection by two windows at most.
    """

    k: int = 3
    n: int = 5

    def __post_init__(self):
        if not 1 <= self.k <= self.n:
            raise ValueError(f"persistence needs 1 <= k <= n, got k={self.k}, n={self.n}")

    def apply(self, over: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        """over: [rows] bool (windows over threshold, in time order) -> flags [rows] bool.
        starts: [rows] bool, windows where the count starts afresh (the first of a run on the
        time grid, after a gap or a stop: windows before it do not count)."""
        over = np.asarray(over, bool).astype(np.int32)
        c = np.concatenate([[0], np.cumsum(over)])
        idx = np.arange(1, over.size + 1)
        lower = np.maximum(idx - self.n, 0)
        if starts is not None and np.any(starts):
            lower = np.maximum(lower, np.maximum.accumulate(np.where(starts, np.arange(over.size), 0)))
        recent = c[idx] - c[lower]
        return recent >= self.k

    def to_dict(self) -> dict:
        return asdict(self)


def flag(score: np.ndarray, threshold: float, persistence: Persistence) -> np.ndarray:
    """score: [rows] (NaN = no score) -> flags [rows] bool under the threshold and persistence rule."""
    with np.errstate(invalid="ignore"):
        over = np.asarray(score) > threshold
    return persistence.apply(over)
