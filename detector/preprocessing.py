"""Preprocessing shared by training and the detector: scaling and sliding windows.

Missing readings are NaN in raw arrays. They are never filled with a value that the
model is asked to reproduce: every array handed to the model comes with a mask
(1.0 = observed, 0.0 = missing) and the loss and the score ignore masked cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A sensor whose training spread is (almost) zero would turn the smallest change into
# an enormous z-score. Its scale is floored at this fraction of its typical magnitude
# (and at an absolute minimum), so a constant sensor does not dominate every score.
RELATIVE_SCALE_FLOOR = 1e-3
ABSOLUTE_SCALE_FLOOR = 1e-6
# Standardised values are clipped to +-Z_CLIP before the model sees them (training and
# scoring alike): a sensor that was constant in training gets a tiny scale, and its first
# real change would otherwise be millions of standard deviations, one reading outweighing
# every other sensor and every later window. 10 standard deviations is far beyond normal.
Z_CLIP = 10.0


@dataclass(frozen=True)
class Scaler:
    """Per-sensor standardisation: z = (x - center) / scale.

    center, scale: [sensors] float32.
    """

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        """Fit on raw values [rows, sensors] with NaN for missing readings."""
        values = np.asarray(values, dtype=np.float64)
        observed = np.isfinite(values)
        counts = observed.sum(axis=0)
        if values.ndim != 2 or (counts < 2).any():
            bad = [i for i, n in enumerate(counts) if n < 2]
            raise ValueError(f"cannot fit scaler: sensors {bad} have fewer than 2 observed values")
        center = np.nanmean(values, axis=0)
        spread = np.nanstd(values, axis=0)
        floor = np.maximum(RELATIVE_SCALE_FLOOR * np.abs(center), ABSOLUTE_SCALE_FLOOR)
        return cls(center.astype(np.float32), np.maximum(spread, floor).astype(np.float32))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Raw values [..., sensors] -> standardised values clipped to +-Z_CLIP (NaN stays NaN)."""
        return standardise(values, self.center, self.scale)

    def to_dict(self) -> dict[str, list[float]]:
        return {"center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(np.asarray(d["center"], np.float32), np.asarray(d["scale"], np.float32))


def standardise(values, center, scale, xp=np):
    """(values - center) / scale clipped to +-Z_CLIP, NaN kept. xp: numpy, or jax.numpy in
    the scoring kernel, so training and scoring standardise alike."""
    return xp.clip((values - center) / scale, -Z_CLIP, Z_CLIP)


def model_input(values, center, scale, xp=np):
    """What the model sees of raw readings (NaN = missing): the standardised values with
    missing cells set to 0, and the mask (1.0 observed, 0.0 missing), both float32. The one
    way training and scoring prepare readings (xp: numpy, or jax.numpy in the kernel)."""
    mask = xp.isfinite(values)
    z = xp.where(mask, standardise(values, center, scale, xp), 0.0).astype(xp.float32)
    return z, mask.astype(xp.float32)


def windows(values: np.ndarray, window: int) -> np.ndarray:
    """All sliding windows of a series, as a zero-copy view.

    values: [rows, sensors] -> [rows - window + 1, window, sensors]
    (empty first axis when rows < window).
    """
    rows, sensors = values.shape
    if rows < window:
        return np.empty((0, window, sensors), values.dtype)
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)
    return view.transpose(0, 2, 1)
