"""Alert lifecycle per asset: open, update, resolve.

An asset's alert opens when k of its last n scored windows are over threshold
(normalised score > 1): the serving model's persistence rule (TrainedModel.persistence,
by which `vigil score` flags rows) unless the policy overrides k or n. It resolves once the
normalised score has stayed under `exit_threshold` for `resolve_after` consecutive windows.
`open` and `resolve` are always emitted. The alert id is derived from the asset, the time of
the reading that opened it and the model version, so re-processing the same readings after
a restart produces events with the same id, which consumers can use to drop duplicates. A
restarted daemon takes up the alerts its predecessor left open (`restore`, from the alerts
topic), so their updates and resolve keep their ids too.

Updates carry news, not one event per reading. While an alert is open, a window over
threshold produces an `update` when, compared with the alert's last event (open or update):

- the score rose materially: score / threshold >= `update_rise` (1.5) x the level last
  reported;
- another sensor drives it: the sensor that contributes most now was not among the last
  event's top sensors and contributes at least `lead_margin` (1.5) x as much as any other
  sensor (a near tie between sensors, or the sensors' order inside the reported top three,
  is not news);
- or nothing changed for `update_heartbeat_seconds` (3600) of reading time: the heartbeat
  says the alert is still open and how high, and lets a restarted daemon or a late consumer
  find it within `alert_lookback_seconds`.

and in any case no sooner than `update_seconds` (10) of reading time after the last event,
which caps how often a quickly changing alert speaks. The level an update reports is the new
reference, so a heartbeat at a lower level lets the next rise be reported.

Why these measures, and reading time. The heartbeat is counted in the readings' own time,
not in windows and not by the wall clock: 3600 s is 3,600 windows at 1 s sampling and 60 at
1 min sampling, both one event an hour per open alert, where a count of windows would mean an
hour at one rate and 2.5 days at the other; and because it is the readings' time, the same
readings give the same events after a restart (reprocessed duplicates are identical). A
heartbeat shorter than the sampling interval would emit on every reading (the old
`update_seconds` = 10 s did that to 1-min data); an hour stays above any usual interval.
Rises are relative, so a score that creeps up gives one update per factor 1.5 (about ten
from 1x to 50x threshold), at any sampling rate. An alert that stays about as bad, with the
same sensors, gives one event per hour of readings: 1.7 % of 1-min readings, 0.03 % of 1 s
readings.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from itertools import islice

import orjson

from detector.threshold import Persistence


@dataclass(frozen=True)
class AlertPolicy:
    """How alerts open, update and resolve. k and n are `vigil serve`'s alert_k and alert_n:
    None (the default) takes the serving model's persistence rule, a number overrides it.
    for_model() gives the policy in force for a model (k and n both set)."""

    k: int | None = None         # open when k of the last n windows are over threshold; None: the model's k
    n: int | None = None         # None: the model's n
    exit_threshold: float = 0.8  # normalised score under which a window counts towards resolving
    resolve_after: int = 30      # consecutive windows under exit_threshold that resolve an alert
    update_seconds: float = 10.0 # at most one update event per alert per this much reading time
    update_rise: float = 1.5     # an update when score / threshold reaches this multiple of the last reported
    update_heartbeat_seconds: float = 3600.0  # an update anyway after this much reading time without an event
    lead_margin: float = 1.5     # a newly leading sensor must contribute this multiple of the next one

    def __post_init__(self):
        if any(v is not None and v < 1 for v in (self.k, self.n)) or \
                (self.k is not None and self.n is not None and self.k > self.n):
            raise ValueError(f"alert policy needs 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 0 < self.exit_threshold <= 1 or self.resolve_after < 1 or self.update_seconds < 0:
            raise ValueError("alert policy needs 0 < exit_threshold <= 1, resolve_after >= 1, update_seconds >= 0")
        if not self.update_rise > 1 or not self.lead_margin >= 1 or not self.update_heartbeat_seconds >= 0:
            raise ValueError(f"alert policy needs update_rise > 1, lead_margin >= 1, update_heartbeat_seconds >= 0, "
                             f"got {self.update_rise}, {self.lead_margin}, {self.update_heartbeat_seconds}")

    @property
    def overrides(self) -> tuple[str, ...]:
        """The settings that override the model's rule: ("alert_k", "alert_n"), one of them or ()."""
        return tuple(name for name, v in (("alert_k", self.k), ("alert_n", self.n)) if v is not None)

    def for_model(self, persistence: Persistence) -> AlertPolicy:
        """The policy in force for a model with this persistence rule: its k and n where this
        policy leaves them unset. ValueError (naming the setting) when an override given alone
        does not fit the model's other number."""
        k = persistence.k if self.k is None else self.k
        n = persistence.n if self.n is None else self.n
        if k > n:
            rule = f"its rule is {persistence.k} of {persistence.n}"
            if self.k is None:
                raise ValueError(f"alert_n: {n} is less than the model's k ({rule}); set alert_k too, "
                                 f"or alert_n >= {k}")
            raise ValueError(f"alert_k: {k} is more than the model's n ({rule}); set alert_n too, or alert_k <= {n}")
        return replace(self, k=k, n=n)

    def describe(self, persistence: Persistence) -> str:
        """The rule in force for the model and where it comes from: "3 of 5 (model)",
        "2 of 4 (override: alert_k, alert_n)"."""
        p = self.for_model(persistence)
        return f"{p.k} of {p.n} ({'override: ' + ', '.join(self.overrides) if self.overrides else 'model'})"


@dataclass
class _State:
    recent: deque                # over threshold or not, of the last n windows (never cleared)
    fresh: int = 1 << 30         # windows since the last resolve: only these can open a new alert
    alert_id: str | None = None
    opened_ms: int = 0
    opened_at: str = ""          # iso_ms(opened_ms)
    last_event_ms: int = 0
    reported: float = 0.0        # normalised score of the last event
    top: tuple = ()              # its top sensors' names
    peak: float = 0.0
    under: int = 0
    last: tuple = (0.0, 0.0)     # (score, normalised score) of the newest window while the alert is open
    pending: tuple | None = None # (time, score, normalised, top pairs) of an open held back (hold_ms)


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
    reason: str | None = None     # of a resolve: "recovered" (scores back under exit_threshold) or "switched_off"
    model: str = ""               # the route (detector.routes) whose model serves the asset; "" with one model

    def to_json_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> bytes:
        """The event as the alerts topic's JSON (the fields of to_json_dict, in order), encoded
        by orjson from the dataclass directly: no intermediate dict."""
        return orjson.dumps(self)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(iso: str) -> int:
    """The inverse of iso_ms: an event's time as epoch milliseconds."""
    return int(round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000))


class AlertTracker:
    """The alert state of every asset under one policy in force (k and n set: AlertPolicy.for_model).

    Besides opening alerts, it knows per asset whether the k-of-n rule holds at its latest
    window (flagged()): what `vigil score` reports as is_anomaly for the same readings. An
    alert opens when the rule holds and none is open; after an alert resolves, only windows
    seen since then can open the next one (so a resolved alert does not reopen on the
    windows that already opened it)."""

    def __init__(self, policy: AlertPolicy, threshold: float, model_version: str, hold_ms: float = 0.0):
        """hold_ms: an alert whose rule holds opens only once this much reading time has passed
        without the asset being switched off (switch_off); 0: at once. A model with an off
        condition holds alerts for its settle time: a stop's ramp-down is not a fault."""
        _check_resolved(policy)
        self.policy, self.threshold, self.model_version, self.hold_ms = policy, threshold, model_version, hold_ms
        self.route = ""  # the route name its events carry (AlertEvent.model)
        self._assets: dict[str, _State] = {}

    @property
    def open_alerts(self) -> int:
        return sum(1 for s in self._assets.values() if s.alert_id is not None)

    def open_since(self) -> list[tuple[str, int]]:
        """(alert id, opening time ms) of every open alert."""
        return [(s.alert_id, s.opened_ms) for s in self._assets.values() if s.alert_id is not None]

    def is_open(self, asset: str) -> bool:
        s = self._assets.get(asset)
        return s is not None and s.alert_id is not None

    def flagged(self, asset: str) -> bool:
        """Whether the rule holds at the asset's latest window: k of its last n windows over threshold."""
        s = self._assets.get(asset)
        return s is not None and sum(s.recent) >= self.policy.k

    def quiet(self, asset: str) -> bool:
        """No open alert and fewer than k of the last n windows over threshold: windows none of
        which is over threshold can be fed with observe_quiet (no event, the rule holds at none)."""
        s = self._assets.get(asset)
        return s is None or (s.alert_id is None and s.pending is None and sum(s.recent) < self.policy.k)

    def forget(self, asset: str) -> None:
        self._assets.pop(asset, None)

    def restart(self, asset: str) -> None:
        """The asset's windows start a new run (after a gap or a stop, detector.grid): windows
        before it no longer count towards the k-of-n rule. An open alert stays open."""
        s = self._assets.get(asset)
        if s is not None:
            s.recent.clear()

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
        s.opened_at, s.reported, s.top = iso_ms(opened_ms), _reported(event, peak), _top_names(event)
        return True

    def set_model(self, threshold: float, model_version: str, hold_ms: float = 0.0) -> None:
        self.threshold, self.model_version, self.hold_ms = threshold, model_version, hold_ms

    def set_policy(self, policy: AlertPolicy) -> None:
        """Another policy in force from the next window on (e.g. a new model's rule). Every
        asset keeps its last windows (as many as the new n holds) and its open alert."""
        _check_resolved(policy)
        if policy.n != self.policy.n:
            for s in self._assets.values():
                s.recent = deque(s.recent, maxlen=policy.n)
        self.policy = policy

    def observe_quiet(self, asset: str, windows: int) -> None:
        """Feed `windows` scored windows, none over threshold, of a quiet() asset: the same as
        observe() on each (which could produce no event), in one step."""
        s = self._assets.get(asset)
        if s is None:
            s = self._assets[asset] = _State(deque(maxlen=self.policy.n))
        s.recent.extend((False,) * min(windows, self.policy.n))
        s.fresh += windows

    def observe(self, asset: str, ts_ms: int, score: float, normalized: float,
                top: Callable[[], list[tuple[str, float]]], leader: str | None = None) -> AlertEvent | None:
        """Feed one scored window; returns the event it causes, if any.

        top: called only when an event is produced, returns the top (sensor, share) pairs.
        leader: the sensor that clearly leads this window (it contributes at least lead_margin
        x as much as any other), or None; see the module docstring for what makes an update."""
        p = self.policy
        s = self._assets.get(asset)
        if s is None:
            s = self._assets[asset] = _State(deque(maxlen=p.n))
        over = normalized > 1.0
        s.recent.append(over)
        s.fresh += 1
        if s.alert_id is None:
            if s.pending is None:
                recent = s.recent if s.fresh >= len(s.recent) else islice(reversed(s.recent), s.fresh)
                if sum(recent) < p.k:
                    return None
                if self.hold_ms > 0:  # wait: is the machine being switched off?
                    s.pending = (ts_ms, score, normalized, top())
            if s.pending is not None:
                if ts_ms - s.pending[0] < self.hold_ms:
                    return None
                ts_ms, score, normalized, pairs = s.pending
                s.pending, top = None, (lambda: pairs)
            digest = hashlib.sha256(f"{asset}\0{ts_ms}\0{self.model_version}".encode()).hexdigest()[:16]
            s.alert_id, s.opened_ms, s.opened_at, s.peak, s.under = digest, ts_ms, iso_ms(ts_ms), normalized, 0
            return self._event("open", s, asset, ts_ms, score, normalized, top)
        if normalized > s.peak:
            s.peak = normalized
        s.last = (score, normalized)
        if normalized < p.exit_threshold:
            s.under += 1
            if s.under >= p.resolve_after:
                e = self._event("resolve", s, asset, ts_ms, score, normalized, top, "recovered")
                s.alert_id, s.under, s.fresh = None, 0, 0
                return e
            return None
        s.under = 0
        if not over:
            return None
        since = ts_ms - s.last_event_ms
        if since < p.update_seconds * 1000:
            return None
        if since >= p.update_heartbeat_seconds * 1000 or normalized >= p.update_rise * s.reported or \
                (leader is not None and leader not in s.top):
            return self._event("update", s, asset, ts_ms, score, normalized, top)
        return None

    def switch_off(self, asset: str, ts_ms: int) -> AlertEvent | None:
        """The asset was switched off at ts_ms (its model's off condition holds): an open alert
        resolves, reason "switched_off", with the score of its newest window and no top sensors
        (nothing is measured while off). Its last windows stay: the rule's state is as scored."""
        s = self._assets.get(asset)
        if s is not None:
            s.pending = None  # an alert held back: the ramp-down of a stop, not a fault
        if s is None or s.alert_id is None:
            return None
        e = self._event("resolve", s, asset, ts_ms, s.last[0], s.last[1], list, "switched_off")
        s.alert_id, s.under, s.fresh = None, 0, 0
        return e

    def _event(self, kind: str, s: _State, asset: str, ts_ms: int, score: float, normalized: float,
               top: Callable[[], list[tuple[str, float]]], reason: str | None = None) -> AlertEvent:
        """The event, and the alert's reference for the next update: its time, level, top sensors."""
        pairs = top()
        s.last_event_ms, s.reported, s.top = ts_ms, normalized, tuple(name for name, _ in pairs)
        return AlertEvent(kind, s.alert_id, asset, iso_ms(ts_ms), float(score), float(normalized),
                          float(self.threshold), [{"sensor": n, "share": round(v, 4)} for n, v in pairs],
                          self.model_version, s.opened_at, float(s.peak), reason, self.route)


def _reported(event: dict, peak: float) -> float:
    """The level an alert's last event reported (its normalized_score; else its peak)."""
    value = event.get("normalized_score")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else peak


def _top_names(event: dict) -> tuple:
    """The sensor names of an event's top_sensors ((): none or unreadable)."""
    top = event.get("top_sensors")
    if not isinstance(top, list):
        return ()
    return tuple(t["sensor"] for t in top if isinstance(t, dict) and isinstance(t.get("sensor"), str))


def _check_resolved(policy: AlertPolicy) -> None:
    if policy.k is None or policy.n is None:
        raise ValueError("an alert tracker needs the policy in force (k and n set): use policy.for_model(persistence)")
