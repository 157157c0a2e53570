"""Alert lifecycle per asset: open, update, resolve.

An asset's alert opens when k of its last n scored windows are over threshold
(normalised score > 1), sends an update while it stays open (at most every
`update_seconds` of reading time, and only when the score is still over threshold), and
resolves once the normalised score has stayed under `exit_threshold` for `resolve_after`
consecutive windows. The alert id is derived from the asset, the time of the reading
that opened it and the model version, so re-processing the same readings after a restart
produces events with the same id, which consumers can use to drop duplicates. A restarted
daemon takes up the alerts its predecessor left open (`restore`, from the alerts topic),
so their updates and resolve keep their ids too.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone


@dataclass(frozen=True)
class AlertPolicy:
    k: int = 3                   # open when k of the last n windows are over threshold
    n: int = 5
    exit_threshold: float = 0.8  # normalised score under which a window counts towards resolving
    resolve_after: int = 30      # consecutive windows under exit_threshold that resolve an alert
    update_seconds: float = 10.0 # at most one update event per alert per this much reading time

    def __post_init__(self):
        if not 1 <= self.k <= self.n:
            raise ValueError(f"alert policy needs 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 0 < self.exit_threshold <= 1 or self.resolve_after < 1 or self.update_seconds < 0:
            raise ValueError("alert policy needs 0 < exit_threshold <= 1, resolve_after >= 1, update_seconds >= 0")


@dataclass
class _State:
    recent: deque
    alert_id: str | None = None
    opened_ms: int = 0
    last_event_ms: int = 0
    peak: float = 0.0
    under: int = 0


@dataclass(frozen=True)
class AlertEvent:
    type: str                     # "open" | "update" | "resolve"
    alert_id: str
    asset: str
    time: str                     # ISO 8601 time of the reading
    score: float
    normalized_score: float
    threshold: float
    top_sensors: list = field(default_factory=list)  # [{"sensor": name, "share": 0.42}, ...]
    model_version: str = ""
    opened_at: str = ""
    peak_normalized_score: float = 0.0

    def to_json_dict(self) -> dict:
        return asdict(self)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(iso: str) -> int:
    """The inverse of iso_ms: an event's time as epoch milliseconds."""
    return int(round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000))


class AlertTracker:
    def __init__(self, policy: AlertPolicy, threshold: float, model_version: str):
        self.policy, self.threshold, self.model_version = policy, threshold, model_version
        self._assets: dict[str, _State] = {}

    @property
    def open_alerts(self) -> int:
        return sum(1 for s in self._assets.values() if s.alert_id is not None)

    def is_open(self, asset: str) -> bool:
        s = self._assets.get(asset)
        return s is not None and s.alert_id is not None

    def forget(self, asset: str) -> None:
        self._assets.pop(asset, None)

    def restore(self, event: dict) -> bool:
        """Take up an alert a previous daemon left open, from its last event on the alerts
        topic (an open or update event), so that its updates and resolve keep its id.
        Ignored (False) when the asset already has an open alert or the event is unusable."""
        try:
            asset, alert_id = event["asset"], event["alert_id"]
            opened_ms, last_ms = epoch_ms(event["opened_at"]), epoch_ms(event["time"])
            peak = float(event.get("peak_normalized_score", 0.0))
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        if event.get("type") not in ("open", "update") or not isinstance(asset, str) or not isinstance(alert_id, str):
            return False
        s = self._assets.get(asset)
        if s is None:
            s = self._assets[asset] = _State(deque(maxlen=self.policy.n))
        elif s.alert_id is not None:
            return False
        s.alert_id, s.opened_ms, s.last_event_ms, s.peak, s.under = alert_id, opened_ms, last_ms, peak, 0
        return True

    def set_model(self, threshold: float, model_version: str) -> None:
        self.threshold, self.model_version = threshold, model_version

    def observe_quiet(self, asset: str, windows: int) -> None:
        """Feed `windows` scored windows, none over threshold, of an asset without an open alert:
        the same as observe() on each (which could produce no event), in one step."""
        s = self._assets.get(asset)
        if s is None:
            s = self._assets[asset] = _State(deque(maxlen=self.policy.n))
        s.recent.extend((False,) * min(windows, self.policy.n))

    def observe(self, asset: str, ts_ms: int, score: float, normalized: float,
                top: Callable[[], list[tuple[str, float]]]) -> AlertEvent | None:
        """Feed one scored window; returns the event it causes, if any.

        top: called only when an event is produced, returns the top (sensor, share) pairs."""
        p = self.policy
        s = self._assets.get(asset)
        if s is None:
            s = self._assets[asset] = _State(deque(maxlen=p.n))
        over = normalized > 1.0
        s.recent.append(over)

        def event(kind: str) -> AlertEvent:
            s.last_event_ms = ts_ms
            return AlertEvent(kind, s.alert_id, asset, iso_ms(ts_ms), float(score), float(normalized),
                              float(self.threshold), [{"sensor": n, "share": round(v, 4)} for n, v in top()],
                              self.model_version, iso_ms(s.opened_ms), float(s.peak))

        if s.alert_id is None:
            if sum(s.recent) >= p.k:
                digest = hashlib.sha256(f"{asset}\0{ts_ms}\0{self.model_version}".encode()).hexdigest()[:16]
                s.alert_id, s.opened_ms, s.peak, s.under = digest, ts_ms, normalized, 0
                return event("open")
            return None
        s.peak = max(s.peak, normalized)
        if normalized < p.exit_threshold:
            s.under += 1
            if s.under >= p.resolve_after:
                e = event("resolve")
                s.alert_id, s.under = None, 0
                s.recent.clear()
                return e
            return None
        s.under = 0
        if over and ts_ms - s.last_event_ms >= p.update_seconds * 1000:
            return event("update")
        return None
