"""Readings on the model's time grid: what a window is, for training, offline scoring and the daemon.

A model knows the sampling interval of its training data (TrainedModel.interval_seconds).
Its window is W consecutive intervals of an asset's time, not its last W readings:

- A run of readings starts at an asset's first reading (the anchor). A reading at time t
  falls in interval round((t - anchor) / interval) of its run, so jitter of up to half an
  interval keeps every reading in its own interval.
- Several readings in one interval are combined: each sensor's mean of the interval's
  readings so far (missing values left out). A reading's window ends with that mean, so
  the last reading of an interval sees the mean of all of them.
- An interval without a reading is a missing row: masked, as a missing value is.
- A spacing longer than `max_gap` (default: a window's length of intervals) ends the run:
  the window restarts and fills again instead of joining both sides of the gap.
- A reading that is not after the asset's newest one but less than one interval older
  (and not at its very time, a repeat) is late, not lost: it counts at the newest one's
  time, so it joins the newest interval's mean (table.admit_late for files, the
  pipeline's order check for the stream). Older ones are left out (files) or dead-lettered
  (the daemon); a model without an interval takes no late reading.
- A window is scored only when it spans W intervals of one run and at least
  `min_observed` (default MIN_OBSERVED, a half) of its cells are observed: no alert comes
  from a window that is mostly missing (a model trained on 1 s data fed 10 s data sees 10 %).

A model without an interval (made before it was recorded) has one row per reading, as
before; the gap and observed-share rules still apply to it (without a gap, never a restart).

`place` puts a whole series on the grid (training and `vigil score`); the daemon's
AssetWindows applies the same rules reading by reading, and a test checks both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_OBSERVED = 0.5


@dataclass(frozen=True)
class TimeGrid:
    """window: W intervals; interval_ms: the interval (None: one row per reading); max_gap_ms:
    a longer spacing restarts the window (inf: never); min_observed: the share of a window's
    cells that must be observed for it to be scored."""

    window: int
    interval_ms: float | None = None
    max_gap_ms: float = math.inf
    min_observed: float = MIN_OBSERVED

    def __post_init__(self):
        if self.interval_ms is not None and not 0 < self.interval_ms < math.inf:
            raise ValueError(f"interval must be > 0 ms, got {self.interval_ms}")
        if not self.max_gap_ms > 0:
            raise ValueError(f"max gap must be > 0 ms, got {self.max_gap_ms}")
        if not 0 <= self.min_observed <= 1:
            raise ValueError(f"min_observed must be within [0, 1], got {self.min_observed}")

    @classmethod
    def of(cls, window: int, interval_seconds: float | None, max_gap_seconds: float | None = None,
           min_observed: float = MIN_OBSERVED) -> TimeGrid:
        """The grid of a model: max_gap_seconds None means a window's length of intervals."""
        if interval_seconds is None:
            gap = math.inf if max_gap_seconds is None else max_gap_seconds * 1000.0
            return cls(window, None, gap, min_observed)
        interval = interval_seconds * 1000.0
        gap = window * interval if max_gap_seconds is None else max_gap_seconds * 1000.0
        return cls(window, interval, gap, min_observed)

    def slot(self, t_ms, anchor_ms):
        """The interval of a reading within its run (numpy arrays or ints)."""
        return np.floor((np.asarray(t_ms, np.float64) - anchor_ms) / self.interval_ms + 0.5).astype(np.int64)


@dataclass(frozen=True)
class Placed:
    """A series on the grid.

    rows: [slots, sensors] float32, each interval's mean (NaN: nothing observed); the runs
        are laid end to end.
    slot: [readings] int64, the row each reading falls in.
    position: [slots] int64, the row's interval within its run (a window ending at a row
        spans one run when position >= W - 1).
    scorable: [slots] bool, the window ending at the row is scored (full, observed enough).
    partial: [p] readings that are not the last of their interval; partial_rows: [p, sensors]
        the interval's mean up to each; partial_scorable: [p] bool, its window is scored.
    """

    rows: np.ndarray
    slot: np.ndarray
    position: np.ndarray
    scorable: np.ndarray
    partial: np.ndarray
    partial_rows: np.ndarray
    partial_scorable: np.ndarray

    def runs(self) -> np.ndarray:
        """[readings] int64: the run each reading falls in (1, 2, ... in time order)."""
        return np.cumsum(self.position == 0)[self.slot]

    def windows(self, ends: np.ndarray, window: int) -> np.ndarray:
        """The windows ending at rows `ends` [len(ends), W, sensors] (a copy; rows before the
        first are the first row: such windows are not scored anyway)."""
        return self.rows[np.maximum(ends[:, None] - np.arange(window - 1, -1, -1)[None, :], 0)]

    def windows_of_partial(self, window: int) -> np.ndarray:
        """The windows of the partial readings [p, W, sensors]: the rows before their
        interval, then the interval's mean so far."""
        out = self.windows(self.slot[self.partial], window)
        out[:, -1] = self.partial_rows
        return out


def _gapped(times_ms: np.ndarray, grid: TimeGrid) -> np.ndarray:
    """[readings] bool: the reading starts a run (the first one, or after a longer spacing than max_gap)."""
    start = np.empty(len(times_ms), bool)
    start[:1] = True
    start[1:] = np.diff(times_ms) > grid.max_gap_ms
    return start


def place(times_ms: np.ndarray, values: np.ndarray, grid: TimeGrid) -> Placed:
    """Put one asset's readings (times never decreasing, ms: late ones at the newest time) on the grid."""
    times_ms = np.asarray(times_ms, np.int64)
    values = np.asarray(values, np.float32)
    n, sensors = values.shape
    starts = _gapped(times_ms, grid)
    run = np.cumsum(starts) - 1
    if grid.interval_ms is None:
        local = np.arange(n) - np.flatnonzero(starts)[run] if n else np.zeros(0, np.int64)
    else:
        local = grid.slot(times_ms, times_ms[np.flatnonzero(starts)][run]) if n else np.zeros(0, np.int64)
    # the runs end to end: each takes as many rows as its last reading's interval + 1
    ends = np.r_[np.flatnonzero(starts)[1:] - 1, n - 1] if n else np.zeros(0, np.int64)
    lengths = local[ends] + 1
    offset = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    slot = offset[run] + local if n else np.zeros(0, np.int64)
    total = int(lengths.sum()) if n else 0
    position = np.arange(total) - np.repeat(offset, lengths)

    observed = np.isfinite(values)
    first = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]]) if n else np.zeros(0, np.int64)
    rows = np.full((total, sensors), np.nan, np.float32)
    if len(first) == n:  # one reading per interval: the usual case
        rows[slot] = values
        partial, running = np.zeros(0, np.int64), None
    else:
        running = _running_means(values, observed, first)
        last = np.r_[first[1:] - 1, n - 1]
        rows[slot[last]] = running[last]
        partial = np.setdiff1d(np.arange(n), last, assume_unique=True)
    seen = np.isfinite(rows).sum(axis=1)
    cells = _window_sums(seen, grid.window)
    full = position >= grid.window - 1
    need = grid.min_observed * grid.window * sensors
    scorable = full & (cells >= need)
    if partial.size:
        partial_rows = running[partial]
        ps = slot[partial]
        partial_cells = cells[ps] - seen[ps] + np.isfinite(partial_rows).sum(axis=1)
        partial_scorable = full[ps] & (partial_cells >= need)
    else:
        partial_rows = np.zeros((0, sensors), np.float32)
        partial_scorable = np.zeros(0, bool)
    return Placed(rows, slot, position, scorable, partial, partial_rows, partial_scorable)


def _running_means(values: np.ndarray, observed: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each reading's interval mean so far [readings, sensors] float32 (NaN: none observed yet);
    first: the first reading of every interval. Sums run in float64 in reading order, as
    AssetWindows adds them, so both give the same bits."""
    n = len(values)
    group = np.repeat(np.arange(len(first)), np.diff(np.r_[first, n]))
    ordinal = np.arange(n) - first[group]
    filled = np.where(observed, values, 0.0).astype(np.float64)
    sums, counts = filled.copy(), observed.astype(np.int64)
    by_ordinal = np.argsort(ordinal, kind="stable")
    bounds = np.searchsorted(ordinal[by_ordinal], np.arange(int(ordinal.max()) + 2))
    for k in range(1, len(bounds) - 1):
        at = by_ordinal[bounds[k]:bounds[k + 1]]
        sums[at] += sums[at - 1]
        counts[at] += counts[at - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)


def _window_sums(x: np.ndarray, window: int) -> np.ndarray:
    """Sum of x over the `window` entries ending at each one (fewer at the start)."""
    c = np.cumsum(np.r_[0, x])
    i = np.arange(1, len(x) + 1)
    return c[i] - c[np.maximum(i - window, 0)]
