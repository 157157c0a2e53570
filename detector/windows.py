"""Per-asset sliding windows of the latest readings, with a bound on the number of assets.

Every asset has a slot in shared arrays holding its last W readings (oldest first), how
many readings it has had (up to W) and the time of the newest. A micro-batch of readings
of many assets is appended with a handful of numpy operations, whatever the number of
assets, and yields the full windows ending at each new reading. When a new asset would
exceed `max_assets`, the asset that has gone longest without a reading is dropped (its
window refills if it comes back) and counted.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np

from detector.messages import not_after


class AssetWindows:
    def __init__(self, window: int, sensors: int, max_assets: int = 10_000):
        if max_assets < 1:
            raise ValueError(f"max_assets must be >= 1, got {max_assets}")
        self.window, self.sensors, self.max_assets = window, sensors, max_assets
        self._slots: OrderedDict[str, int] = OrderedDict()  # asset -> slot, longest idle first
        self._free: list[int] = []
        self._rows = np.empty((0, window, sensors), np.float32)  # [slot, W, sensors]: last W readings
        self._count = np.empty(0, np.int64)                      # readings seen, saturating at W
        self._last = np.empty(0, np.int64)                       # time of the newest reading (ms)
        self._seen = np.empty(0, np.float64)                     # time.monotonic() of the newest reading
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, asset: str) -> bool:
        return asset in self._slots

    def last_time(self, asset: str) -> int | None:
        slot = self._slots.get(asset)
        return None if slot is None else int(self._last[slot])

    def last_times(self, assets: list[str]) -> np.ndarray:
        """The newest reading time of each asset (-1 for an asset without a window): [len(assets)] int64."""
        slots = np.fromiter((self._slots.get(a, -1) for a in assets), np.int64, len(assets))
        return np.where(slots >= 0, self._last[slots], -1) if len(self._last) else np.full(len(assets), -1, np.int64)

    def check(self, asset: str, ts_ms: int) -> None:
        """Raise BadMessage if a reading at ts_ms would not be newer than the asset's last one."""
        last = self.last_time(asset)
        if last is not None and ts_ms <= last:
            raise not_after(asset, ts_ms, last)

    def add(self, asset: str, ts_ms: int, values: np.ndarray) -> np.ndarray | None:
        """Append one reading ([sensors]); returns the full window [W, sensors] it completes, or None.
        Raises BadMessage for a timestamp that is not after the asset's previous one."""
        windows = self.extend(asset, [ts_ms], np.asarray(values, np.float32)[None])
        return windows[0] if len(windows) else None

    def extend(self, asset: str, times: list[int], values: np.ndarray) -> np.ndarray:
        """Append one asset's readings [k, sensors] (times strictly increasing, the first checked
        here); returns the full windows they complete: [j, W, sensors], j <= k (the last j readings)."""
        self.check(asset, times[0])
        _, windows = self.append([asset] * len(times), np.asarray(times, np.int64), values)
        return windows

    def append(self, assets: list[str], times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append readings of many assets: reading i is (assets[i], times[i], values[i]); each
        asset's readings must be in strictly increasing time, after its last one (the caller
        checks). Returns (rows, windows): the indices of the readings that complete a full
        window and those windows [len(rows), W, sensors], grouped by asset, each asset's in time order."""
        n, w = len(assets), self.window
        if n == 0:
            return np.empty(0, np.int64), np.empty((0, w, self.sensors), np.float32)
        slot_of = self._allocate(dict.fromkeys(assets))
        slots = np.fromiter(map(slot_of.__getitem__, assets), np.int64, n)
        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
        group_slots = sorted_slots[starts]
        k = np.diff(np.r_[starts, n])                     # new readings per asset
        # one block per asset: its W stored rows, then its k new ones
        base = np.r_[0, np.cumsum(w + k)[:-1]]
        block = np.empty((int((w + k).sum()), self.sensors), np.float32)
        block[base[:, None] + np.arange(w)] = self._rows[group_slots]
        group = np.repeat(np.arange(len(starts)), k)
        within = np.arange(n) - starts[group]
        position = base[group] + w + within               # where each new reading sits in `block`
        block[position] = np.asarray(values, np.float32)[order]
        full = self._count[group_slots][group] + within + 1 >= w
        every = np.lib.stride_tricks.sliding_window_view(block, w, axis=0)  # [i] = block[i:i + w].T, no copy
        windows = np.ascontiguousarray(every[position[full] - w + 1].transpose(0, 2, 1))
        self._rows[group_slots] = every[base + k].transpose(0, 2, 1)
        self._count[group_slots] = np.minimum(self._count[group_slots] + k, w)
        self._last[group_slots] = np.asarray(times, np.int64)[order][starts + k - 1]
        self._seen[group_slots] = time.monotonic()
        while len(self._slots) > self.max_assets:  # only when one batch held more assets than the cap
            self._evict()
        return order[full], windows

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
        return out

    def _evict(self) -> None:
        _, slot = self._slots.popitem(last=False)
        self._free.append(slot)
        self.evicted += 1

    def _grow(self) -> None:
        old = len(self._count)
        size = max(min(max(64, 2 * old), self.max_assets), old + 64)
        self._rows = np.concatenate([self._rows, np.empty((size - old, self.window, self.sensors), np.float32)])
        self._count = np.concatenate([self._count, np.zeros(size - old, np.int64)])
        self._last = np.concatenate([self._last, np.full(size - old, -1, np.int64)])
        self._seen = np.concatenate([self._seen, np.zeros(size - old)])
        self._free.extend(range(size - 1, old - 1, -1))

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
