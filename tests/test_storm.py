"""Alert storms (detector.storm): when they start and end, their ids and events, the metrics,
and that the other readers of the alerts topic pass storm events by."""

import json

import pytest
from prometheus_client import CollectorRegistry

from detector.alerts import AlertPolicy, AlertTracker
from detector.metrics import ServiceMetrics
from detector.storm import StormEvent, StormPolicy, StormTracker, is_storm_event, open_storms
from training.recent import alert_stretches
from vigil.live_demo import format_event

T0 = 1_795_460_400_000  # 2026-11-23T19:00:00Z
MIN = 60_000


def tracker(assets: int = 20, **policy) -> StormTracker:
    t = StormTracker(StormPolicy(**policy))
    t.set_assets(assets)
    return t


def open_all(t: StormTracker, n: int, start: int = 0, at: int = T0, every: int = 1000) -> list:
    """Open alerts on pump-{start}..pump-{start+n-1}, `every` ms apart; the non-None events."""
    return [e for i in range(n) if (e := t.opened(f"pump-{start + i}", at + i * every)) is not None]


# ---------------------------------------------------------------- settings

@pytest.mark.parametrize("kwargs, setting", [
    ({"share": 0}, "storm_share"), ({"share": 1}, "storm_share"), ({"share": -0.1}, "storm_share"),
    ({"share": float("nan")}, "storm_share"),
    ({"min_assets": 0}, "storm_min_assets"), ({"min_assets": 2.5}, "storm_min_assets"),
    ({"min_assets": True}, "storm_min_assets"),
    ({"window_seconds": 0}, "storm_window_seconds"), ({"window_seconds": float("inf")}, "storm_window_seconds"),
    ({"window_seconds": float("nan")}, "storm_window_seconds"),
    ({"end_share": 0}, "storm_end_share"), ({"end_share": 0.3}, "storm_end_share"),
])
def test_bad_settings_name_the_setting(kwargs, setting):
    with pytest.raises(ValueError, match=f"^{setting}: "):
        StormPolicy(**kwargs)


def test_defaults_and_end_share_equal_to_share_allowed():
    assert StormPolicy() == StormPolicy(share=0.2, min_assets=3, window_seconds=300.0, end_share=0.1)
    StormPolicy(share=0.3, end_share=0.3)  # no hysteresis, but legitimate


@pytest.mark.parametrize("n", [-1, 2.0, True, None])
def test_known_assets_must_be_a_count(n):
    with pytest.raises(ValueError, match="known assets"):
        StormTracker().set_assets(n)


# ---------------------------------------------------------------- start

@pytest.mark.parametrize("assets, opens, starts", [
    (20, 4, False),    # 20 %: not MORE than the share
    (20, 5, True),     # 25 %
    (5, 2, False),     # 40 %, but fewer than min_assets (3)
    (5, 3, True),
    (100, 20, False),  # 20 % exactly
    (100, 21, True),
    (0, 3, True),      # known assets not set: the alerting assets themselves are the fleet
    (2, 3, True),      # fewer known than alerting: shares are of the alerting
])
def test_storm_starts_above_the_share_and_the_minimum(assets, opens, starts):
    t = tracker(assets)
    events = open_all(t, opens)
    assert [e.type for e in events] == (["storm_start"] if starts else [])
    assert t.active is starts
    if starts:  # it starts at the last open, not before
        (e,) = events
        assert e.time == "2026-11-23T19:00:%02d.000Z" % (opens - 1)
        assert (e.assets, e.assets_alerting, e.share) == (max(assets, opens), opens, round(opens / max(assets, opens), 4))


def test_shares_are_exact_decimal_fractions():
    t = tracker(100, share=0.29, min_assets=1)  # 0.29 * 100 is 28.999999999999996 in floating point
    assert open_all(t, 29) == [] and len(open_all(t, 1, start=29)) == 1
    t = tracker(25, share=0.5, end_share=0.28, min_assets=1)  # 0.28 * 25 is 7.000000000000001
    open_all(t, 13)
    assert [t.resolved(f"pump-{i}", T0 + MIN + i) for i in range(6)] == [None] * 6  # 7 of 25: 28 %, not below
    assert t.resolved("pump-6", T0 + 2 * MIN).type == "storm_end"


def test_min_assets_and_share_are_settings():
    t = tracker(10, share=0.5, min_assets=2)
    assert open_all(t, 5) == []
    assert [e.type for e in open_all(t, 1, start=5)] == ["storm_start"]


def test_storm_starts_once_and_counts_each_asset_once():
    t = tracker(20)
    assert len(open_all(t, 4)) == 0
    for _ in range(3):  # the same asset opening again (a new alert) is still one asset
        assert t.opened("pump-0", T0 + 10_000) is None
    (start,) = open_all(t, 1, start=4, at=T0 + 20_000)
    assert open_all(t, 10, start=5, at=T0 + 30_000) == []  # no second start while it lasts
    assert t.active and t.alerting == 15 and t.storm_id == start.storm_id


def test_start_event_fields():
    t = tracker(20)
    open_all(t, 4, at=T0)
    (e,) = open_all(t, 1, start=4, at=T0 + 90_000)
    d = e.to_json_dict()
    assert d == {"type": "storm_start", "storm_id": e.storm_id, "scope": "fleet",
                 "time": "2026-11-23T19:01:30.000Z", "started_at": "2026-11-23T19:01:30.000Z",
                 "assets": 20, "assets_alerting": 5, "share": 0.25, "assets_opened_in_window": 5,
                 "peak_assets_alerting": 5, "window_seconds": 300.0,
                 "first_assets": ["pump-0", "pump-1", "pump-2", "pump-3", "pump-4"]}
    assert json.loads(json.dumps(d)) == d and e.key == b"storm:fleet"
    assert len(e.storm_id) == 16 and int(e.storm_id, 16) >= 0


def test_first_assets_are_the_earliest_ten():
    t = tracker(50)
    (e,) = open_all(t, 11, start=0, at=T0, every=-1000)  # pump-10 opened first, pump-0 last
    assert e.first_assets == [f"pump-{i}" for i in range(10, 0, -1)]
    assert e.time == "2026-11-23T19:00:00.000Z"  # the newest open among those that started it


# ---------------------------------------------------------------- the window

def test_opens_further_apart_than_the_window_never_start_a_storm():
    t = tracker(10)  # 3 assets would be a storm within 5 minutes
    for i in range(10):
        assert t.opened(f"pump-{i}", T0 + i * 3 * MIN) is None  # each 3 minutes after the last
    assert not t.active and t.alerting == 10 and t.recent == 2


@pytest.mark.parametrize("gap_ms, starts", [(5 * MIN - 1, True), (5 * MIN, False)])
def test_an_open_exactly_window_seconds_old_no_longer_counts(gap_ms, starts):
    t = tracker(10)
    t.opened("pump-0", T0)
    t.opened("pump-1", T0 + gap_ms // 2)
    assert (t.opened("pump-2", T0 + gap_ms) is not None) is starts


def test_the_window_follows_the_newest_reading_time():
    t = tracker(10)
    t.opened("pump-0", T0 + 10 * MIN)  # another partition is ahead
    # late events of assets whose readings are 6 minutes older: alerting, but not recent
    assert t.opened("pump-1", T0 + 4 * MIN) is None and t.opened("pump-2", T0 + 4 * MIN) is None
    assert (t.alerting, t.recent) == (3, 1)
    t.set_assets(10, ts_ms=T0 + 20 * MIN)  # the window slides on with the batches
    assert t.recent == 0


def test_resolved_alerts_do_not_count_towards_a_start():
    t = tracker(10)
    open_all(t, 2)
    t.resolved("pump-0", T0 + 5000)
    assert t.opened("pump-2", T0 + 6000) is None  # 2 open within the window, not 3
    assert t.opened("pump-3", T0 + 7000) is not None


# ---------------------------------------------------------------- end

def test_storm_ends_only_below_the_end_share():
    t = tracker(30)  # start: more than 6 assets; end: fewer than 3 (10 % of 30, exactly)
    (start,) = open_all(t, 7)
    open_all(t, 3, start=7, at=T0 + MIN)
    events = []
    for i in range(7):  # 10 open -> 3 open: 10 % is not below 10 %
        events.append(t.resolved(f"pump-{i}", T0 + 10 * MIN + i))
    assert events == [None] * 7 and t.active and t.alerting == 3
    (end,) = [e for e in [t.resolved("pump-7", T0 + 11 * MIN)] if e]
    assert end.type == "storm_end" and end.storm_id == start.storm_id and not t.active
    assert (end.assets, end.assets_alerting, end.share, end.peak_assets_alerting) == (30, 2, round(2 / 30, 4), 10)
    assert end.time == "2026-11-23T19:11:00.000Z" and end.started_at == start.time
    assert end.first_assets == start.first_assets


def test_hysteresis_no_flapping_between_the_levels():
    t = tracker(20)  # start above 4 of 20 (20 %), end below 2 of 20 (10 %)
    open_all(t, 5)
    assert t.active
    assert t.resolved("pump-0", T0 + MIN) is None  # 4 of 20: below the start level, still a storm
    assert t.opened("pump-0", T0 + 2 * MIN) is None  # re-opening: no second start
    for i in range(3):
        assert t.resolved(f"pump-{i}", T0 + 3 * MIN + i) is None
    assert t.active and t.alerting == 2
    assert t.resolved("pump-3", T0 + 4 * MIN).type == "storm_end"


def test_set_assets_neither_starts_nor_ends():
    t = tracker(100)
    open_all(t, 10)
    t.set_assets(20)  # 10 of 20 would be a storm, but only an open starts one
    assert not t.active
    assert t.opened("pump-10", T0 + 20_000) is not None
    t.set_assets(1000)  # 11 of 1000 is below 10 %, but only a resolve ends it
    assert t.active
    assert t.resolved("pump-0", T0 + 30_000).type == "storm_end"


def test_after_the_end_a_new_storm_needs_new_opens():
    t = tracker(20)
    first = open_all(t, 5)[0]
    for i in range(4):
        t.resolved(f"pump-{i}", T0 + MIN + i)
    assert not t.active
    assert open_all(t, 3, start=10, at=T0 + 2 * MIN) == []  # 4 opened in the window: not above 20 %
    (second,) = open_all(t, 1, start=13, at=T0 + 2 * MIN + 5000)
    assert second.storm_id != first.storm_id and second.peak_assets_alerting == 5


def test_updates_change_nothing_and_unknown_kinds_are_errors():
    t = tracker(20)
    for i in range(4):
        t.observe("open", f"pump-{i}", T0 + i)
    assert t.observe("update", "pump-9", T0 + 10) is None and t.alerting == 4
    assert t.observe("open", "pump-4", T0 + 20).type == "storm_start"
    with pytest.raises(ValueError, match="unknown alert event type 'opened'"):
        t.observe("opened", "pump-5", T0 + 30)


def test_silent_events_count_but_neither_start_nor_end_a_storm():
    t = tracker(10)
    assert [t.observe("open", f"pump-{i}", T0 + i, silent=True) for i in range(5)] == [None] * 5
    assert not t.active and (t.alerting, t.recent) == (5, 5)
    start = t.observe("open", "pump-5", T0 + 10)  # the next live open decides
    assert start.type == "storm_start" and start.assets_alerting == 6
    assert [t.observe("resolve", f"pump-{i}", T0 + MIN + i, silent=True) for i in range(6)] == [None] * 6
    assert t.active and t.alerting == 0  # a storm ends at a live resolve only
    t.observe("open", "pump-0", T0 + 2 * MIN, silent=True)
    assert t.observe("resolve", "pump-0", T0 + 3 * MIN).type == "storm_end"


# ---------------------------------------------------------------- ids, restart, scopes

def run_storm(scope="fleet", at=T0) -> list[StormEvent]:
    t = StormTracker(StormPolicy(), scope)
    t.set_assets(20)
    events = open_all(t, 6, at=at)
    events += [e for i in range(6) if (e := t.resolved(f"pump-{i}", at + MIN + i))]
    return events


def test_ids_are_deterministic_per_scope_and_start_time():
    a, b = run_storm(), run_storm()
    assert [e.to_json_dict() for e in a] == [e.to_json_dict() for e in b]
    assert [e.type for e in a] == ["storm_start", "storm_end"] and a[0].storm_id == a[1].storm_id
    assert run_storm(scope="line-2")[0].storm_id != a[0].storm_id
    assert run_storm(at=T0 + 1)[0].storm_id != a[0].storm_id


def test_a_restarted_daemon_ends_the_storm_its_predecessor_started():
    before = StormTracker()
    before.set_assets(20)
    (start,) = open_all(before, 5)
    records = [{"type": "open", "alert_id": "a1", "asset": "pump-0"}, start.to_json_dict()]
    (left,) = open_storms(records).values()
    after = StormTracker()
    after.set_assets(20)
    assert after.restore(left) and after.active and after.storm_id == start.storm_id
    assert not after.restore(left)  # one storm at a time
    for i in range(5):  # the alerts taken up as their assets are seen again
        after.take_up(f"pump-{i}", T0 + i * 1000)
    assert open_all(after, 3, start=5, at=T0 + 6000) == []  # no second start
    events = [e for i in range(8) if (e := after.resolved(f"pump-{i}", T0 + MIN + i))]
    assert [(e.type, e.storm_id, e.started_at, e.peak_assets_alerting) for e in events] == \
        [("storm_end", start.storm_id, start.started_at, 8)]


def test_take_up_alone_starts_no_storm():
    t = tracker(10)
    for i in range(5):
        t.take_up(f"pump-{i}", T0 + i)
    assert not t.active and (t.alerting, t.recent) == (5, 5)
    assert t.opened("pump-5", T0 + 10).type == "storm_start"  # the next open does


@pytest.mark.parametrize("event", [
    {"type": "storm_end", "storm_id": "x", "scope": "fleet", "started_at": "2026-11-23T19:00:00.000Z"},
    {"type": "storm_start", "storm_id": "x", "scope": "line-2", "started_at": "2026-11-23T19:00:00.000Z"},
    {"type": "storm_start", "storm_id": "", "scope": "fleet", "started_at": "2026-11-23T19:00:00.000Z"},
    {"type": "storm_start", "storm_id": "x", "scope": "fleet", "started_at": "yesterday"},
    {"type": "storm_start", "scope": "fleet", "started_at": "2026-11-23T19:00:00.000Z"},
    {"type": "open", "alert_id": "a", "asset": "pump-1", "time": "2026-11-23T19:00:00.000Z"},
])
def test_restore_ignores_unusable_events(event):
    t = StormTracker()
    assert not t.restore(event) and not t.active


def test_open_storms_keeps_each_scopes_last_storm_if_it_started():
    e = [{"type": "storm_start", "scope": "fleet", "storm_id": "1"}, {"type": "storm_end", "scope": "fleet",
         "storm_id": "1"}, {"type": "storm_start", "scope": "line-2", "storm_id": "2"}, {"type": "resolve"},
         "not a dict", {"type": "storm_start", "scope": 7}]
    assert open_storms(e) == {"line-2": e[2]}


def test_scopes_are_independent_trackers():
    fleet, line = StormTracker(scope="fleet"), StormTracker(scope="line-2")
    fleet.set_assets(100)
    line.set_assets(10)
    events = []
    for i in range(3):
        for t in (fleet, line):
            events.append(t.opened(f"pump-{i}", T0 + i))
    assert [(e.scope, e.type) for e in events if e] == [("line-2", "storm_start")]
    assert not fleet.active and line.active
    with pytest.raises(ValueError, match="scope"):
        StormTracker(scope="")


# ---------------------------------------------------------------- metrics

def test_metrics_follow_the_tracker():
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    assert registry.get_sample_value("vigil_alert_storm", {"scope": "fleet"}) is None  # until a tracker is watched
    t = tracker(20)
    metrics.storms.watch(t)

    def sample(name):
        return registry.get_sample_value(name, {"scope": "fleet"})

    assert (sample("vigil_alert_storm"), sample("vigil_alert_storm_known_assets")) == (0.0, 20.0)
    open_all(t, 5)
    assert sample("vigil_alert_storm") == 1.0
    assert sample("vigil_alert_storm_alerting_assets") == 5.0 and sample("vigil_alert_storm_recent_assets") == 5.0
    for i in range(4):
        t.resolved(f"pump-{i}", T0 + MIN + i)
    assert sample("vigil_alert_storm") == 0.0 and sample("vigil_alert_storm_alerting_assets") == 1.0
    assert registry.get_sample_value("vigil_alert_events_total", {"type": "storm_start"}) == 0.0
    metrics.storms.unwatch("fleet")
    assert sample("vigil_alert_storm") is None


# ---------------------------------------------------------------- other readers of the alerts topic

def storm_event_dict() -> dict:
    t = tracker(20)
    (e,) = open_all(t, 5)
    return e.to_json_dict()


class FakeRecord:
    def __init__(self, value: dict):
        self.value = json.dumps(value).encode()


def test_alert_readers_pass_storm_events_by():
    storm = storm_event_dict()
    assert is_storm_event(storm) and not is_storm_event({"type": "open"}) and not is_storm_event("storm_start")
    # a restarted daemon does not take a storm event up as an alert
    assert AlertTracker(AlertPolicy(k=1, n=1), 1.0, "v1").restore(storm) is False
    # retraining leaves out alert stretches only
    assert alert_stretches([FakeRecord(storm)], 3600, T0 / 1000) == []
    # the live demo prints it
    line = format_event(storm)
    assert "STORM START" in line and "5 of 20 assets" in line and storm["storm_id"] in line
