"""Per-asset sliding windows on the model's time grid, with a bound on the number of assets.

Every asset has a slot in shared arrays holding its last W intervals (oldest first; the
rules are detector.grid's: readings in one interval are averaged, an interval without one
is a missing row, a long gap restarts the window), how many intervals its run has had (up
to W), its run's anchor and current interval, and the time of its newest reading. A
micro-batch of readings of many assets is appended with a handful of numpy operations,
whatever the number of assets, as long as each reading starts the asset's next interval
(regular data); an asset with a gap, a skipped interval or two readings in one interval
in the batch goes through the same rules reading by reading. Each reading yields the
window ending at its interval when that window is scored (full and observed enough).
When a new asset would exceed `max_assets`, the asset that has gone longest without a
reading is dropped (its window refills if it comes back) and counted.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from detector.grid import TimeGrid


class Appended(NamedTuple):
    """What a batch of readings yields: the indices of the readings whose window is scored,
    those windows [len(rows), W, sensors] (grouped by asset, each asset's in time order), and
    which of them is the first scored window of its asset's run (after a restart the alert
    rule counts afresh: windows before a gap or a stop do not count)."""

    rows: np.ndarray
    windows: np.ndarray
    first: np.ndarray


class AssetWindows:
    def __init__(self, window: int, sensors: int, max_assets: int = 10_000, grid: TimeGrid | None = None):
        """grid: the model's (default: one row per reading, no restart)."""
        if max_assets < 1:
            raise ValueError(f"max_assets must be >= 1, got {max_assets}")
        self.grid = grid or TimeGrid(window)
        if self.grid.window != window:
            raise ValueError(f"a grid of {self.grid.window} intervals for windows of {window}")
        self.window, self.sensors, self.max_assets = window, sensors, max_assets
        self._need = self.grid.min_observed * window * sensors  # observed cells of a scored window
        self._slots: OrderedDict[str, int] = OrderedDict()  # asset -> slot, longest idle first
        self._free: list[int] = []
        self._rows = np.empty((0, window, sensors), np.float32)  # [slot, W, sensors]: last W intervals
        self._seen_rows = np.empty((0, window), np.int32)        # [slot, W]: observed cells of each
        self._complete = np.empty(0, bool)                       # every cell of the W rows observed
        self._count = np.empty(0, np.int64)                      # intervals of the run, saturating at W
        self._last = np.empty(0, np.int64)                       # time of the newest appended reading (ms; -1: none)
        self._newest = np.empty(0, np.int64)                     # ... of the newest reading, off ones too (touch)
        self._anchor = np.empty(0, np.int64)                     # time of the run's first reading (ms)
        self._interval = np.empty(0, np.int64)                   # the newest reading's interval in its run
        self._sum = np.empty((0, sensors), np.float64)           # the newest interval: sum of observed values
        self._n = np.empty((0, sensors), np.int64)               # ... and how many were observed
        self._seen = np.empty(0, np.float64)                     # time.monotonic() of the newest reading
        self._scored = np.empty(0, bool)                         # a window of the current run was scored
        self.evicted = 0
        self.sparse = 0  # full windows not scored: mostly missing

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, asset: str) -> bool:
        return asset in self._slots

    def last_times(self, assets: list[str]) -> np.ndarray:
        """The newest reading time of each asset, off readings included (touch), -1 for an asset
        without a window: [len(assets)] int64. A reading must come after it, or late within an
        interval of it (detector.pipeline)."""
        slots = np.fromiter((self._slots.get(a, -1) for a in assets), np.int64, len(assets))
        if not len(self._newest):
            return np.full(len(assets), -1, np.int64)
        return np.where(slots >= 0, self._newest[slots], -1)

    def append(self, assets: list[str], times: np.ndarray, values: np.ndarray) -> Appended:
        """Append readings of many assets: reading i is (assets[i], times[i], values[i]); each
        asset's readings must be in strictly increasing time, after its last one (the caller
        checks). Returns the scored windows they complete (Appended)."""
        n = len(assets)
        if n == 0:
            return self._nothing()
        times = np.asarray(times, np.int64)
        values = np.asarray(values, np.float32)
        slot_of = self._allocate(dict.fromkeys(assets))
        slots = np.fromiter(map(slot_of.__getitem__, assets), np.int64, n)
        order = np.argsort(slots, kind="stable")
        starts = _starts(slots[order])
        irregular = self._irregular(slots[order], starts, times[order])
        if not irregular.any():
            out = self._append_regular(order, slots, times, values)
        else:
            by_group = np.repeat(irregular, np.diff(np.r_[starts, n]))
            parts = [self._append_regular(order[~by_group], slots, times, values)]
            for a, b in zip(starts[irregular].tolist(), np.r_[starts, n][1:][irregular].tolist()):
                parts.append(self._append_one(int(slots[order[a]]), order[a:b], times, values))
            out = Appended(*(np.concatenate(field) for field in zip(*parts)))
        self._seen[slots[order][starts]] = time.monotonic()
        while len(self._slots) > self.max_assets:  # only when one batch held more assets than the cap
            self._evict()
        return out

    def _nothing(self) -> Appended:
        return Appended(np.empty(0, np.int64), np.empty((0, self.window, self.sensors), np.float32), np.empty(0, bool))

    def _irregular(self, sorted_slots: np.ndarray, starts: np.ndarray, t: np.ndarray) -> np.ndarray:
        """[assets of the batch] bool: the asset has a reading that does not simply start its next
        interval (a gap that restarts the window, a skipped interval, two in one interval)."""
        grid, n = self.grid, len(t)
        group_slots = sorted_slots[starts]
        group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
        last = self._last[group_slots]
        previous = np.empty_like(t)
        previous[1:] = t[:-1]
        previous[starts] = last
        odd = (t - previous > grid.max_gap_ms) & (previous >= 0)
        if grid.interval_ms is not None:
            new = last < 0
            anchor = np.where(new, t[starts], self._anchor[group_slots])[group]
            interval = grid.slot(t, anchor)
            before = np.empty_like(interval)
            before[1:] = interval[:-1]
            before[starts] = np.where(new, -1, self._interval[group_slots])
            odd |= interval != before + 1
        return np.logical_or.reduceat(odd, starts)

    def _append_regular(self, order: np.ndarray, slots: np.ndarray, times: np.ndarray, values: np.ndarray
                        ) -> Appended:
        """Append readings `order` (grouped by asset, each asset's in time order) that each start
        their asset's next interval: one new row each."""
        n, w = len(order), self.window
        if n == 0:
            return self._nothing()
        sorted_slots = slots[order]
        starts = _starts(sorted_slots)
        group_slots = sorted_slots[starts]
        k = np.diff(np.r_[starts, n])                     # new readings per asset
        # one block per asset: its W stored rows, then its k new ones
        base = np.r_[0, np.cumsum(w + k)[:-1]]
        block = np.empty((int((w + k).sum()), self.sensors), np.float32)
        block[base[:, None] + np.arange(w)] = self._rows[group_slots]
        group = np.repeat(np.arange(len(starts)), k)
        within = np.arange(n) - starts[group]
        position = base[group] + w + within               # where each new reading sits in `block`
        new_values = values[order]
        block[position] = new_values
        full = self._count[group_slots][group] + within + 1 >= w
        observed = np.isfinite(new_values)
        # every cell observed (the usual case): every window is, nothing to count
        complete = bool(self._complete[group_slots].all()) and bool(observed.all())
        if not complete:  # observed cells per row, laid out as `block`: a window's is a difference of running sums
            seen = np.empty(len(block), np.int32)
            seen[base[:, None] + np.arange(w)] = self._seen_rows[group_slots]
            seen[position] = np.count_nonzero(observed, axis=1)
        every = np.lib.stride_tricks.sliding_window_view(block, w, axis=0)  # [i] = block[i:i + w].T, no copy
        windows = np.ascontiguousarray(every[position[full] - w + 1].transpose(0, 2, 1))
        self._rows[group_slots] = every[base + k].transpose(0, 2, 1)
        if complete:
            self._seen_rows[group_slots] = self.sensors
        else:
            kept_seen = np.lib.stride_tricks.sliding_window_view(seen, w)[base + k]
            self._seen_rows[group_slots] = kept_seen
            self._complete[group_slots] = (kept_seen == self.sensors).all(axis=1)
        self._count[group_slots] = np.minimum(self._count[group_slots] + k, w)
        ends = starts + k - 1
        fresh = self._last[group_slots] < 0
        self._anchor[group_slots] = np.where(fresh, times[order[starts]], self._anchor[group_slots])
        self._interval[group_slots] = np.where(fresh, -1, self._interval[group_slots]) + k
        self._last[group_slots] = times[order[ends]]
        self._newest[group_slots] = np.maximum(self._newest[group_slots], self._last[group_slots])
        newest = new_values[ends]
        newest_observed = observed[ends]
        self._sum[group_slots] = np.where(newest_observed, newest, 0.0)
        self._n[group_slots] = newest_observed
        rows, owner = order[full], group[full]
        if self._need > 0 and len(rows) and not complete:
            running = np.r_[0, np.cumsum(seen)]
            ends = position[full] + 1
            enough = running[ends] - running[ends - w] >= self._need
            if not enough.all():
                self.sparse += int(len(enough) - enough.sum())
                rows, windows, owner = rows[enough], windows[enough], owner[enough]
        first = np.r_[True, owner[1:] != owner[:-1]] if len(owner) else np.empty(0, bool)
        first &= ~self._scored[group_slots[owner]]
        self._scored[group_slots[owner]] = True
        return Appended(rows, windows, first)

    def _append_one(self, slot: int, readings: np.ndarray, times: np.ndarray, values: np.ndarray) -> Appended:
        """Append one asset's readings (indices, in time order) one by one under detector.grid's rules."""
        grid, w = self.grid, self.window
        rows, seen_rows, count = self._rows[slot], self._seen_rows[slot], int(self._count[slot])
        last, anchor, interval = int(self._last[slot]), int(self._anchor[slot]), int(self._interval[slot])
        total, seen = self._sum[slot], self._n[slot]
        out_rows, out_windows, out_first = [], [], []
        scored = bool(self._scored[slot])
        for i in readings.tolist():
            t, v = int(times[i]), values[i]
            observed = np.isfinite(v)
            if last < 0 or t - last > grid.max_gap_ms:  # a new run
                rows[:] = np.nan
                seen_rows[:] = 0
                scored = False
                count, anchor, step = 0, t, 1
                interval = 0
            else:
                now = interval + 1 if grid.interval_ms is None else int(grid.slot(t, anchor))
                step, interval = now - interval, now
            if step == 0:  # another reading in the same interval: the mean so far
                total += np.where(observed, v, 0.0)
                seen += observed
                with np.errstate(invalid="ignore", divide="ignore"):
                    rows[-1] = np.where(seen > 0, total / np.maximum(seen, 1), np.nan)
            else:
                if step >= w:
                    rows[:] = np.nan
                    seen_rows[:] = 0
                else:
                    rows[:w - step] = rows[step:]
                    rows[w - step:] = np.nan
                    seen_rows[:w - step] = seen_rows[step:]
                    seen_rows[w - step:] = 0
                rows[-1] = v
                count = min(count + step, w)
                total[:] = np.where(observed, v, 0.0)
                seen[:] = observed
            seen_rows[-1] = np.count_nonzero(seen)
            last = t
            if count >= w:
                if seen_rows.sum() >= self._need:
                    out_rows.append(i)
                    out_windows.append(rows.copy())
                    out_first.append(not scored)
                    scored = True
                else:
                    self.sparse += 1
        self._count[slot], self._last[slot], self._anchor[slot], self._interval[slot] = count, last, anchor, interval
        self._newest[slot] = max(int(self._newest[slot]), last)
        self._scored[slot] = scored
        self._complete[slot] = bool((seen_rows == self.sensors).all())
        if not out_rows:
            return self._nothing()
        return Appended(np.asarray(out_rows, np.int64), np.stack(out_windows), np.asarray(out_first, bool))

    def _allocate(self, batch: dict[str, None]) -> dict[str, int]:
        """Slots of a batch's assets (in first-seen order), marked most recently used; new
        assets evict the longest idle ones not in the batch at the cap."""
        slots = self._slots
        out = {}
        new = []
        for asset in batch:
            slot = slots.get(asset)
            if slot is None:
                new.append(asset)
            else:
                slots.move_to_end(asset)
                out[asset] = slot
        for asset in new:
            if len(slots) >= self.max_assets and next(iter(slots)) not in batch:
                self._evict()
            if not self._free:
                self._grow()
            slot = out[asset] = slots[asset] = self._free.pop()
            self._count[slot] = 0
            self._last[slot] = -1
            self._newest[slot] = -1
            self._interval[slot] = -1
            self._scored[slot] = False
            self._complete[slot] = False
        return out

    def _evict(self) -> None:
        _, slot = self._slots.popitem(last=False)
        self._free.append(slot)
        self.evicted += 1

    def _grow(self) -> None:
        old = len(self._count)
        size = max(min(max(64, 2 * old), self.max_assets), old + 64)
        self._rows = np.concatenate([self._rows, np.empty((size - old, self.window, self.sensors), np.float32)])
        self._seen_rows = np.concatenate([self._seen_rows, np.zeros((size - old, self.window), np.int32)])
        self._count = np.concatenate([self._count, np.zeros(size - old, np.int64)])
        self._last = np.concatenate([self._last, np.full(size - old, -1, np.int64)])
        self._newest = np.concatenate([self._newest, np.full(size - old, -1, np.int64)])
        self._anchor = np.concatenate([self._anchor, np.zeros(size - old, np.int64)])
        self._interval = np.concatenate([self._interval, np.full(size - old, -1, np.int64)])
        self._sum = np.concatenate([self._sum, np.zeros((size - old, self.sensors))])
        self._n = np.concatenate([self._n, np.zeros((size - old, self.sensors), np.int64)])
        self._seen = np.concatenate([self._seen, np.zeros(size - old)])
        self._scored = np.concatenate([self._scored, np.zeros(size - old, bool)])
        self._complete = np.concatenate([self._complete, np.zeros(size - old, bool)])
        self._free.extend(range(size - 1, old - 1, -1))

    def touch(self, assets: list[str], times: list[int]) -> None:
        """Mark known assets as just heard from by a reading at times[i] that is not appended
        (an off one): it is not idle, and later readings must come after it."""
        now = time.monotonic()
        for asset, t in zip(assets, times):
            slot = self._slots.get(asset)
            if slot is not None:
                self._slots.move_to_end(asset)
                self._seen[slot] = now
                self._newest[slot] = max(int(self._newest[slot]), t)

    def forget(self, asset: str) -> None:
        slot = self._slots.pop(asset, None)
        if slot is not None:
            self._free.append(slot)

    def idle(self, seconds: float) -> list[str]:
        """Assets that have had no reading for `seconds` of wall time (longest idle first)."""
        cutoff = time.monotonic() - seconds
        out = []
        for asset, slot in self._slots.items():
            if self._seen[slot] >= cutoff:
                break
            out.append(asset)
        return out


def _starts(sorted_slots: np.ndarray) -> np.ndarray:
    """The first position of every run of equal slots."""
    return np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
