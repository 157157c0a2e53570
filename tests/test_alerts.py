import pytest

from detector.alerts import AlertPolicy, AlertTracker

POLICY = AlertPolicy(k=2, n=3, exit_threshold=0.8, resolve_after=3, update_seconds=5)


def feed(tracker, values, asset="p1", start=1_795_460_400_000):
    return [(i, e) for i, v in enumerate(values)
            if (e := tracker.observe(asset, start + i * 1000, v * 2.0, v, lambda: [("flow", 1.0)])) is not None]


def test_lifecycle_open_update_resolve():
    t = AlertTracker(POLICY, 2.0, "v1")
    events = feed(t, [0.5, 1.5, 0.5, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 0.9, 0.5, 0.5, 0.5, 0.2])
    kinds = [(i, e.type) for i, e in events]
    assert kinds == [(3, "open"), (8, "update"), (13, "resolve")]
    opened, update, resolved = (e for _, e in events)
    assert opened.alert_id == update.alert_id == resolved.alert_id
    assert opened.threshold == 2.0 and opened.model_version == "v1" and opened.time.endswith("Z")
    assert resolved.peak_normalized_score == pytest.approx(1.8)
    assert t.open_alerts == 0


def test_alert_id_is_reproducible():
    a = feed(AlertTracker(POLICY, 2.0, "v1"), [2, 2, 2])
    b = feed(AlertTracker(POLICY, 2.0, "v1"), [2, 2, 2])
    c = feed(AlertTracker(POLICY, 2.0, "v1"), [2, 2, 2], asset="p2")
    assert a[0][1].alert_id == b[0][1].alert_id != c[0][1].alert_id


def test_blip_does_not_open():
    assert feed(AlertTracker(POLICY, 1.0, "v"), [0.1, 3.0, 0.1, 0.1, 3.0, 0.1]) == []


def test_policy_is_validated():
    with pytest.raises(ValueError):
        AlertPolicy(k=4, n=3)


def test_a_restored_alert_keeps_its_id_through_update_and_resolve():
    from detector.alerts import AlertPolicy, AlertTracker

    tracker = AlertTracker(AlertPolicy(k=2, n=3, resolve_after=2, update_seconds=0), 1.0, "v1")
    left_open = {"type": "update", "alert_id": "abc", "asset": "p1", "time": "2026-01-01T00:10:00.000Z",
                 "opened_at": "2026-01-01T00:05:00.000Z", "peak_normalized_score": 4.0}
    assert tracker.restore(left_open) and tracker.is_open("p1")
    assert not tracker.restore(left_open | {"alert_id": "other"})  # already open: kept
    assert not tracker.restore(left_open | {"asset": "p2", "type": "resolve"})
    assert not tracker.restore({"asset": "p3", "alert_id": "x", "type": "open", "time": "garbage", "opened_at": ""})
    t0 = 1_767_226_200_000  # 00:10:00
    update = tracker.observe("p1", t0 + 1000, 5.0, 5.0, lambda: [])
    assert update.type == "update" and update.alert_id == "abc" and update.opened_at == "2026-01-01T00:05:00.000Z"
    assert update.peak_normalized_score == 5.0
    assert tracker.observe("p1", t0 + 2000, 0.1, 0.1, lambda: []) is None
    resolve = tracker.observe("p1", t0 + 3000, 0.1, 0.1, lambda: [])
    assert resolve.type == "resolve" and resolve.alert_id == "abc"
