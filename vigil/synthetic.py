"""A small synthetic pump data set: correlated sensors with faults to find.

Seven sensors driven by one shared load signal (a slow cycle plus a random walk) with
sensor noise; faults injected at chosen rows are labelled in an `anomaly` column.
Used by the demo and the tests; `vigil simulate` builds on the same idea.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

SENSORS = ("vibration_x", "vibration_y", "motor_current", "voltage", "pressure", "temperature", "flow")
FAULTS = ("bearing", "cavitation", "stuck", "step")


def generate(rows: int, seed: int = 0, faults: tuple[tuple[str, int, int], ...] = (),
             cycle_seconds: float = 900.0) -> tuple[np.ndarray, np.ndarray]:
    """Readings [rows, 7] at 1 Hz and labels [rows] (1 inside an injected fault).

    faults: (kind, first_row, length) tuples; kinds are FAULTS.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float64)
    walk = np.cumsum(rng.normal(0, 0.02, rows))
    walk -= np.convolve(walk, np.ones(301) / 301, mode="same")  # keep the walk bounded
    load = 0.6 + 0.25 * np.sin(2 * np.pi * t / cycle_seconds) + 0.1 * walk
    values = np.stack([
        0.8 + 0.5 * load + rng.normal(0, 0.03, rows),          # vibration_x (mm/s RMS)
        0.6 + 0.4 * load + rng.normal(0, 0.03, rows),          # vibration_y
        5.0 + 6.0 * load + rng.normal(0, 0.15, rows),          # motor_current (A)
        230 + rng.normal(0, 1.5, rows),                         # voltage (V)
        2.0 + 1.5 * load + rng.normal(0, 0.05, rows),          # pressure (bar)
        55 + 10 * _lag(load, 120) + rng.normal(0, 0.2, rows),  # temperature (C), follows load slowly
        20 + 25 * load + rng.normal(0, 0.5, rows),             # flow (m3/h)
    ], axis=1)
    labels = np.zeros(rows, np.int8)
    for kind, start, length in faults:
        end = min(start + length, rows)
        ramp = np.linspace(0.0, 1.0, end - start)
        if kind == "bearing":
            values[start:end, 0] += 1.2 * ramp + rng.normal(0, 0.1, end - start) * ramp
            values[start:end, 1] += 0.8 * ramp
            values[start:end, 5] += 6.0 * ramp
        elif kind == "cavitation":
            values[start:end, 4] -= 0.8 + rng.normal(0, 0.3, end - start)
            values[start:end, 6] -= 8.0
            values[start:end, 0] += np.abs(rng.normal(0, 0.4, end - start))
        elif kind == "stuck":
            values[start:end, 4] = values[start, 4]
            values[start:end, 6] = values[start, 6]
        elif kind == "step":
            values[start:end, 2] += 3.0
        else:
            raise ValueError(f"unsupported fault kind: {kind!r} (choose from {FAULTS})")
        labels[start:end] = 1
    return values, labels


def _lag(signal: np.ndarray, span: int) -> np.ndarray:
    """Trailing moving average (a slow sensor), padded with the first value at the start."""
    padded = np.concatenate([np.full(span - 1, signal[0]), signal])
    return np.convolve(padded, np.ones(span) / span, mode="valid")


def write_csv(path: str | Path, values: np.ndarray, labels: np.ndarray | None = None,
              start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)) -> Path:
    """Write readings (and labels) as a CSV with an ISO `timestamp` first column."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["timestamp", *SENSORS] + (["anomaly"] if labels is not None else [])
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for i, row in enumerate(values):
            ts = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            cells = [ts, *(f"{v:.5g}" for v in row)] + ([str(int(labels[i]))] if labels is not None else [])
            f.write(",".join(cells) + "\n")
    return path
