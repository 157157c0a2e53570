"""A series' sampling interval: the typical time between readings, as training stores it in
the model and the daemon and `vigil models show` report it.

The interval is the median of the spacings between consecutive readings (of every file,
never across two files). The median ignores gaps (a gateway outage is one long spacing
among thousands) and jitter (a logger that writes at 0.98 s and 1.02 s still has a 1 s
interval). Spacings that are not positive do not occur in a table: csvdata leaves such
rows out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# A spacing this far (relatively) from the interval counts as jitter ...
JITTER_TOLERANCE = 0.1
# ... and one longer than this many intervals as a gap (at least one reading missing).
GAP_FACTOR = 1.5
# Data whose interval is more than this many times a model's (or less than its inverse) is at another rate.
OTHER_RATE = 1.5


@dataclass(frozen=True)
class Sampling:
    """interval_seconds: the median spacing (None with fewer than two readings in every file).
    spacings: how many spacings it is measured on; jittered: the share of them more than
    JITTER_TOLERANCE away from the interval (gaps aside); gaps: spacings longer than
    GAP_FACTOR intervals, and the longest spacing."""

    interval_seconds: float | None
    spacings: int = 0
    jittered: float = 0.0
    gaps: int = 0
    longest_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """'5 min (median of 8,639 spacings; 2.0 % jittered by more than 10 %; 1 gap, the longest 2 h)'."""
        if self.interval_seconds is None:
            return "unknown (no file has two readings)"
        parts = [f"median of {self.spacings:,} spacings"]
        if self.jittered:
            parts.append(f"{self.jittered:.1%} jittered by more than {JITTER_TOLERANCE:.0%}")
        if self.gaps:
            parts.append(f"{self.gaps} gap{'s' if self.gaps > 1 else ''}, the longest {duration(self.longest_seconds)}")
        return f"{duration(self.interval_seconds)} ({'; '.join(parts)})"


def other_rate(data_seconds: float | None, model_seconds: float | None) -> bool:
    """The data's readings are more than OTHER_RATE times further apart (or closer) than a
    model's interval (False when either is unknown)."""
    return data_seconds is not None and model_seconds is not None and \
        not 1 / OTHER_RATE <= data_seconds / model_seconds <= OTHER_RATE


def infer_sampling(times: Sequence[np.ndarray]) -> Sampling:
    """The sampling of one or more series of increasing epoch seconds (one array per file)."""
    spacings = np.concatenate([np.diff(np.asarray(t, np.float64)) for t in times if len(t) > 1] or [np.empty(0)])
    spacings = spacings[spacings > 0]
    if spacings.size == 0:
        return Sampling(None)
    interval = float(np.median(spacings))
    gap = spacings > GAP_FACTOR * interval
    off = np.abs(spacings[~gap] - interval) > JITTER_TOLERANCE * interval
    return Sampling(interval, int(spacings.size), float(off.mean()) if off.size else 0.0, int(gap.sum()),
                    float(spacings.max()))


_UNITS = (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0), ("ms", 1e-3))


def duration(seconds: float) -> str:
    """A short human duration: 250 ms, 1 s, 2.5 s, 5 min, 1.5 h, 2 d."""
    for unit, size in _UNITS:
        if seconds >= size or unit == "ms":
            return f"{seconds / size:.3g} {unit}"
    raise AssertionError("unreachable")
