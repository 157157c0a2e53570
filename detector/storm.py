"""Alert storms: one fleet-level signal when many assets open alerts at once.

A plant-wide upset (a power dip, a control-system fault, a bad model version) opens alerts on
many assets within minutes. Each of them is right, but operators need one signal that says
"this is the fleet, not the assets". A StormTracker follows the alert lifecycle of the assets
of one scope (the whole fleet, or later one route) and reports:

- storm_start when at least `min_assets` assets, and more than `share` of the known assets,
  have an open alert that opened within the last `window_seconds` of reading time (the
  window ends at the newest reading time the tracker has seen; an alert that opened exactly
  `window_seconds` before it no longer counts). Only an open can start a storm.
- storm_end when, at a resolve, fewer than `end_share` of the known assets have an open alert
  (whenever it opened). Only a resolve can end a storm: the end level is below the start
  level (hysteresis), so a storm does not flap while its alerts resolve one by one, and it
  lasts while a sizeable part of the fleet is still alerting.

The known assets are what the caller says (set_assets: the assets the daemon tracks); an
asset counts once however often it opens.

Events of re-read history (`silent`: what a restarted or newly assigned daemon scores again
to rebuild its alert state) update which assets are alerting, but start and end no storm:
the daemon that processed them first decided that, and reported it. Only live events
decide; a restarted daemon takes the storm itself up from the alerts topic (restore). Were
silent events to decide, a storm could end during the replay of one partition while another
is already live, and its storm_end would never be reported. The storm id is derived from the scope and the
start time (the opening time of the newest alert that started it), so processing the same
alert events again gives the same id; a restarted daemon takes up a storm its predecessor
left open (restore, from the alerts topic), so the storm's end keeps its id.

Pure logic: no Kafka, no clock, no global state; one tracker per scope.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from detector.alerts import epoch_ms, iso_ms

STORM_TYPES = ("storm_start", "storm_end")
FLEET = "fleet"          # the scope of a tracker over all assets
FIRST_ASSETS = 10        # assets named in a storm event (the earliest openers), at most


@dataclass(frozen=True)
class StormPolicy:
    """When a storm starts and ends; the names in the errors are `vigil serve`'s settings."""

    share: float = 0.2            # storm_share: start when MORE than this share of the known assets ...
    min_assets: int = 3           # storm_min_assets: ... and at least this many opened an alert within the window
    window_seconds: float = 300.0 # storm_window_seconds: the window, in reading time
    end_share: float = 0.1        # storm_end_share: end when, at a resolve, fewer than this share have an open alert

    def __post_init__(self):
        if isinstance(self.share, bool) or not 0 < self.share < 1:
            raise ValueError(f"storm_share: must be more than 0 and less than 1, got {self.share!r}")
        if isinstance(self.min_assets, bool) or not isinstance(self.min_assets, int) or self.min_assets < 1:
            raise ValueError(f"storm_min_assets: must be a whole number >= 1, got {self.min_assets!r}")
        if isinstance(self.window_seconds, bool) or not (self.window_seconds > 0 and math.isfinite(self.window_seconds)):
            raise ValueError(f"storm_window_seconds: must be a finite number of seconds > 0, got {self.window_seconds!r}")
        if isinstance(self.end_share, bool) or not 0 < self.end_share <= self.share:
            raise ValueError(f"storm_end_share: must be more than 0 and at most storm_share ({self.share!r}), "
                             f"got {self.end_share!r}")


@dataclass(frozen=True)
class StormEvent:
    """A storm's start or end, for the alerts topic (key: `key`, value: to_json_dict())."""

    type: str                     # "storm_start" | "storm_end"
    storm_id: str                 # the same for the start and end of one storm
    scope: str                    # "fleet" (or a route, once routes exist)
    time: str                     # ISO 8601 reading time: of the newest open that started it / the resolve that ended it
    started_at: str               # ISO 8601 reading time the storm started (= time of its storm_start)
    assets: int                   # known assets: the shares are of these
    assets_alerting: int          # assets with an open alert
    share: float                  # assets_alerting / assets
    assets_opened_in_window: int  # assets whose open alert opened within window_seconds before `time`
    peak_assets_alerting: int     # the most assets alerting at once during the storm, so far
    window_seconds: float
    first_assets: list = field(default_factory=list)  # up to 10 assets whose alerts started it, earliest first

    @property
    def key(self) -> bytes:
        """The record key on the alerts topic: all events of a scope go to one partition, in order."""
        return f"storm:{self.scope}".encode()

    def to_json_dict(self) -> dict:
        return asdict(self)


def is_storm_event(event: object) -> bool:
    """Whether a decoded alerts-topic record is a storm event (not an alert's open/update/resolve)."""
    return isinstance(event, dict) and event.get("type") in STORM_TYPES


def storm_id(scope: str, started_ms: int) -> str:
    return hashlib.sha256(f"storm\0{scope}\0{started_ms}".encode()).hexdigest()[:16]


def open_storms(events: Iterable[dict]) -> dict[str, dict]:
    """The storms left open on the alerts topic: for each scope, its last storm event if that
    is a storm_start. events: decoded records in topic order (alert events are skipped)."""
    last: dict[str, dict] = {}
    for event in events:
        if is_storm_event(event) and isinstance(event.get("scope"), str):
            last[event["scope"]] = event
    return {scope: e for scope, e in last.items() if e["type"] == "storm_start"}


class StormTracker:
    """The storm state of one scope's assets. Feed it, in processing order, every alert open and
    resolve of the scope's assets (observe, or opened/resolved; those of re-read history with
    silent=True), the alerts taken up from a predecessor (take_up), and the number of known
    assets (set_assets); opened() and resolved() return the StormEvent they cause, if any."""

    def __init__(self, policy: StormPolicy = StormPolicy(), scope: str = FLEET):
        if not isinstance(scope, str) or not scope:
            raise ValueError(f"storm scope must be a non-empty string, got {scope!r}")
        self.policy, self.scope = policy, scope
        # exact fractions of the decimal settings: 10 % of 30 assets is 3, not 3.0000000000000004
        self._share, self._end_share = Fraction(repr(policy.share)), Fraction(repr(policy.end_share))
        self._window_ms = int(round(policy.window_seconds * 1000))
        self._open: dict[str, int] = {}     # asset -> opening time of its open alert
        self._recent: dict[str, int] = {}   # the open alerts that opened within the window
        self._heap: list[tuple[int, str]] = []  # (opening time, asset) of _recent, stale entries popped lazily
        self._now = -(1 << 62)              # the newest reading time seen
        self.assets = 0                     # known assets, as last set
        self.recent = 0                     # len(_recent) after the last call (read by the metrics thread)
        self.storm_id: str | None = None    # the current storm's id; None: no storm
        self._started_ms = 0
        self._peak = 0
        self._first: list[str] = []

    # -- state, for metrics and the pipeline ------------------------------------------------
    @property
    def active(self) -> bool:
        return self.storm_id is not None

    @property
    def alerting(self) -> int:
        """Assets with an open alert."""
        return len(self._open)

    # -- input ---------------------------------------------------------------------------------
    def set_assets(self, n: int, ts_ms: int | None = None) -> None:
        """The number of known assets (the shares are of max(n, alerting)); ts_ms, if given, a
        reading time the window slides on to (e.g. a batch's newest). Neither starts nor ends
        a storm: only opens and resolves do."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"known assets must be a whole number >= 0, got {n!r}")
        self.assets = n
        if ts_ms is not None:
            self._advance(ts_ms)

    def observe(self, kind: str, asset: str, ts_ms: int, silent: bool = False) -> StormEvent | None:
        """An alert event of the asset: "open" and "resolve" count, "update" changes nothing.
        silent: an event of re-read history (counted, but it starts or ends no storm)."""
        if kind == "open":
            return self.opened(asset, ts_ms, silent)
        if kind == "resolve":
            return self.resolved(asset, ts_ms, silent)
        if kind == "update":
            return None
        raise ValueError(f"unknown alert event type {kind!r}: expected open, update or resolve")

    def opened(self, asset: str, ts_ms: int, silent: bool = False) -> StormEvent | None:
        """The asset's alert opened at reading time ts_ms; a storm_start if that starts a storm
        (never when silent)."""
        self._record_open(asset, ts_ms)
        if self.active:
            self._peak = max(self._peak, len(self._open))
            return None
        if silent:
            return None
        k = len(self._recent)
        if k < self.policy.min_assets or k <= self._share * self._denominator():
            return None
        started = max(self._recent.values())
        self.storm_id, self._started_ms, self._peak = storm_id(self.scope, started), started, len(self._open)
        self._first = [a for _, a in sorted((t, a) for a, t in self._recent.items())[:FIRST_ASSETS]]
        return self._event("storm_start", started)

    def resolved(self, asset: str, ts_ms: int, silent: bool = False) -> StormEvent | None:
        """The asset's alert resolved at reading time ts_ms; a storm_end if that ends the storm
        (never when silent)."""
        self._open.pop(asset, None)
        self._recent.pop(asset, None)
        self._advance(ts_ms)
        if silent or not self.active or len(self._open) >= self._end_share * self._denominator():
            return None
        event = self._event("storm_end", ts_ms)
        self.storm_id, self._started_ms, self._peak, self._first = None, 0, 0, []
        return event

    def take_up(self, asset: str, opened_ms: int) -> None:
        """An alert a previous daemon left open (the pipeline takes it up: AlertTracker.restore),
        opened at opened_ms: counted like an open, but it starts no storm by itself."""
        self.opened(asset, opened_ms, silent=True)

    def restore(self, event: dict) -> bool:
        """Take up a storm a previous daemon left open, from its storm_start on the alerts topic
        (open_storms), so that its end keeps its id. Ignored (False) when a storm is already on,
        or the event is not a usable storm_start of this scope."""
        try:
            if event["type"] != "storm_start" or event["scope"] != self.scope or self.active:
                return False
            sid, started = event["storm_id"], epoch_ms(event["started_at"])
            peak, first = int(event.get("peak_assets_alerting", 0)), event.get("first_assets", [])
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        if not isinstance(sid, str) or not sid or not isinstance(first, list):
            return False
        self.storm_id, self._started_ms, self._peak = sid, started, max(peak, len(self._open))
        self._first = [a for a in first if isinstance(a, str)][:FIRST_ASSETS]
        self._advance(started)
        return True

    # -- internals -----------------------------------------------------------------------------
    def _record_open(self, asset: str, ts_ms: int) -> None:
        self._open[asset] = ts_ms
        self._recent.pop(asset, None)
        self._advance(ts_ms)
        if ts_ms > self._now - self._window_ms:
            self._recent[asset] = ts_ms
            heapq.heappush(self._heap, (ts_ms, asset))
        self.recent = len(self._recent)

    def _advance(self, ts_ms: int) -> None:
        """Slide the window to end at max(ts_ms, the newest time seen); drop the opens it leaves."""
        self._now = max(self._now, int(ts_ms))
        cutoff, heap, recent = self._now - self._window_ms, self._heap, self._recent
        while heap and heap[0][0] <= cutoff:
            t, asset = heapq.heappop(heap)
            if recent.get(asset) == t:
                del recent[asset]
        self.recent = len(recent)

    def _denominator(self) -> int:
        return max(self.assets, len(self._open))

    def _event(self, kind: str, ts_ms: int) -> StormEvent:
        n, alerting = self._denominator(), len(self._open)
        return StormEvent(kind, self.storm_id, self.scope, iso_ms(ts_ms), iso_ms(self._started_ms), n, alerting,
                          round(alerting / n, 4) if n else 0.0, len(self._recent), self._peak,
                          float(self.policy.window_seconds), list(self._first))
