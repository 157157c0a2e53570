"""Per-asset sliding windows of the latest readings, with a bound on the number of assets.

Each asset keeps its last W readings in a double-length ring buffer: every row is written
twice (at i and i + W), so the latest window is always one contiguous slice, with no copy
per reading. When a new asset would exceed `max_assets`, the asset that has gone longest
without a reading is dropped (its window refills if it comes back) and counted.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from detector.messages import BadMessage


@dataclass
class _Asset:
    buffer: np.ndarray       # [2W, C]
    count: int = 0           # readings seen (saturates at W for the "full" test)
    position: int = 0        # next write index in [0, W)
    last_ms: int = -1
    seen: float = 0.0        # time.monotonic() of the last reading


class AssetWindows:
    def __init__(self, window: int, sensors: int, max_assets: int = 10_000):
        if max_assets < 1:
            raise ValueError(f"max_assets must be >= 1, got {max_assets}")
        self.window, self.sensors, self.max_assets = window, sensors, max_assets
        self._assets: OrderedDict[str, _Asset] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._assets)

    def __contains__(self, asset: str) -> bool:
        return asset in self._assets

    def last_time(self, asset: str) -> int | None:
        state = self._assets.get(asset)
        return None if state is None else state.last_ms

    def check(self, asset: str, ts_ms: int) -> None:
        """Raise BadMessage if a reading at ts_ms would not be newer than the asset's last one."""
        state = self._assets.get(asset)
        if state is not None and ts_ms <= state.last_ms:
            reason = "duplicate_time" if ts_ms == state.last_ms else "out_of_order"
            raise BadMessage(reason, f"asset {asset!r}: reading at {ts_ms} ms after one at {state.last_ms} ms")

    def add(self, asset: str, ts_ms: int, values: np.ndarray) -> np.ndarray | None:
        """Append one reading ([sensors]); returns the full window [W, sensors] (a view) or None.

        Raises BadMessage for a timestamp that is not after the asset's previous one.
        """
        self.check(asset, ts_ms)
        state = self._touch(asset)
        w, p = self.window, state.position
        state.buffer[p] = values
        state.buffer[p + w] = values
        state.position = (p + 1) % w
        state.count = min(state.count + 1, w)
        state.last_ms = ts_ms
        state.seen = time.monotonic()
        if state.count < w:
            return None
        return state.buffer[state.position:state.position + w]

    def extend(self, asset: str, times: list[int], values: np.ndarray) -> np.ndarray:
        """Append readings [k, sensors] (times strictly increasing, checked by the caller);
        returns a copy of the full windows they complete: [j, W, sensors], j <= k (the last j readings)."""
        if len(times) == 1:
            window = self.add(asset, times[0], values[0])
            return np.empty((0, self.window, self.sensors), np.float32) if window is None else window[None].copy()
        self.check(asset, times[0])
        state = self._assets.get(asset)
        w = self.window
        if state is None:
            history = np.empty((0, self.sensors), np.float32)
        else:
            history = state.buffer[state.position + w - state.count:state.position + w]
        rows = np.concatenate([history, values.astype(np.float32, copy=False)])
        if len(rows) < w:
            out = np.empty((0, w, self.sensors), np.float32)
        else:  # windows ending at each new reading: full[i] ends at rows[i + w - 1]
            full = np.lib.stride_tricks.sliding_window_view(rows, w, axis=0).transpose(0, 2, 1)
            out = full[max(len(history) - w + 1, 0):].copy()
        self._store(asset, times[-1], rows[-w:])
        return out

    def _store(self, asset: str, last_ms: int, rows: np.ndarray) -> None:
        """Replace an asset's buffer with all its valid rows (at most W, oldest first)."""
        state = self._touch(asset)
        w, k = self.window, len(rows)
        state.buffer[w - k:w] = rows
        state.buffer[2 * w - k:] = rows
        state.position = 0
        state.count = k
        state.last_ms = last_ms
        state.seen = time.monotonic()

    def _touch(self, asset: str) -> _Asset:
        """The asset's state, created (dropping the longest-idle asset at the cap) if new,
        and marked most recently used."""
        state = self._assets.get(asset)
        if state is None:
            if len(self._assets) >= self.max_assets:
                self._assets.popitem(last=False)
                self.evicted += 1
            state = self._assets[asset] = _Asset(np.empty((2 * self.window, self.sensors), np.float32))
        else:
            self._assets.move_to_end(asset)
        return state

    def forget(self, asset: str) -> None:
        self._assets.pop(asset, None)

    def idle(self, seconds: float) -> list[str]:
        """Assets that have had no reading for `seconds` of wall time (longest idle first)."""
        cutoff = time.monotonic() - seconds
        out = []
        for asset, state in self._assets.items():
            if state.seen >= cutoff:
                break
            out.append(asset)
        return out
