import re

import numpy as np
import pytest

from detector.alerts import AlertPolicy, AlertTracker
from detector.threshold import Persistence

T0 = 1_795_460_400_000

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



# -- the alert rule: the model's persistence rule unless overridden ------------------------------

def rule(policy):
    return policy.k, policy.n


def test_policy_takes_the_models_rule_where_it_sets_none():
    model = Persistence(2, 4)
    assert rule(AlertPolicy().for_model(model)) == (2, 4)
    assert AlertPolicy().overrides == () and AlertPolicy().describe(model) == "2 of 4 (model)"
    assert rule(AlertPolicy(k=1, n=3).for_model(model)) == (1, 3)
    assert AlertPolicy(k=1, n=3).describe(model) == "1 of 3 (override: alert_k, alert_n)"
    only_k = AlertPolicy(k=3, resolve_after=7)
    in_force = only_k.for_model(model)
    assert rule(in_force) == (3, 4) and in_force.resolve_after == 7
    assert only_k.describe(model) == "3 of 4 (override: alert_k)"
    assert AlertPolicy(n=6).describe(model) == "2 of 6 (override: alert_n)"


@pytest.mark.parametrize("policy, message", [
    (AlertPolicy(k=5), "alert_k: 5 is more than the model's n (its rule is 2 of 4); set alert_n too"),
    (AlertPolicy(n=1), "alert_n: 1 is less than the model's k (its rule is 2 of 4); set alert_k too"),
])
def test_a_lone_override_must_fit_the_models_other_number(policy, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        policy.for_model(Persistence(2, 4))


@pytest.mark.parametrize("k, n", [(0, None), (None, 0), (3, 2)])
def test_given_numbers_are_validated(k, n):
    with pytest.raises(ValueError, match="1 <= k <= n"):
        AlertPolicy(k=k, n=n)


def test_a_tracker_needs_the_policy_in_force():
    with pytest.raises(ValueError, match="for_model"):
        AlertTracker(AlertPolicy(k=2), 1.0, "v1")


@pytest.mark.parametrize("k, n, resolve_after", [(2, 4, 30), (3, 5, 2), (1, 5, 1), (2, 2, 1), (4, 6, 3)])
def test_flagged_is_the_persistence_rule_window_by_window(k, n, resolve_after):
    """flagged() after each window is Persistence(k, n).apply, i.e. `vigil score`'s is_anomaly,
    also across resolves and while an alert is open; and an alert is open wherever the rule
    holds, unless one resolved within the last n windows."""
    rng = np.random.default_rng(k * 100 + n * 10 + resolve_after)
    normalized = np.where(rng.random(3000) < 0.25, 1.5, 0.5) * rng.choice([0.3, 1.0], 3000, p=[0.1, 0.9])
    tracker = AlertTracker(AlertPolicy(k=k, n=n, resolve_after=resolve_after, update_seconds=0), 1.0, "v1")
    flagged, covered, last_resolve = [], [], -(10**9)
    for i, z in enumerate(normalized.tolist()):
        event = tracker.observe("p1", T0 + i * 1000, z, z, lambda: [])
        if event is not None and event.type == "resolve":
            last_resolve = i
        flagged.append(tracker.flagged("p1"))
        covered.append(tracker.is_open("p1") or i - last_resolve < n)
    expected = Persistence(k, n).apply(normalized > 1.0)
    np.testing.assert_array_equal(flagged, expected)
    assert expected.any() and np.all(np.asarray(covered)[expected])


def test_a_resolved_alert_does_not_reopen_on_the_windows_that_opened_it():
    tracker = AlertTracker(AlertPolicy(k=1, n=5, resolve_after=2, update_seconds=0), 1.0, "v1")
    flags = []
    for i, v in enumerate([2.0, 0.1, 0.1, 0.1, 0.1, 0.1, 2.0]):
        event = tracker.observe("p1", T0 + i * 1000, v, v, lambda: [])
        flags.append((tracker.flagged("p1"), event.type if event else None))
    # the rule holds while the first 2.0 is among the last 5 windows, but only a new one reopens
    assert flags == [(True, "open"), (True, None), (True, "resolve"), (True, None), (True, None), (False, None),
                     (True, "open")]


def test_quiet_means_no_open_alert_and_fewer_than_k_recent_windows_over():
    tracker = AlertTracker(AlertPolicy(k=2, n=3, update_seconds=0), 1.0, "v1")
    assert tracker.quiet("new")
    feed(tracker, [2.0, 0.1])
    assert tracker.quiet("p1")
    tracker.observe_quiet("p1", 10)
    assert tracker.quiet("p1") and not tracker.flagged("p1")
    feed(tracker, [2.0, 2.0], start=T0 + 100_000)
    assert not tracker.quiet("p1") and tracker.is_open("p1")


def test_a_new_policy_keeps_each_assets_last_windows():
    tracker = AlertTracker(AlertPolicy(k=3, n=3, update_seconds=0), 1.0, "v1")
    feed(tracker, [2.0, 2.0, 0.1])
    assert not tracker.is_open("p1") and not tracker.flagged("p1") and tracker.quiet("p1")
    tracker.set_policy(AlertPolicy(k=2, n=4, update_seconds=0))  # e.g. a new model's rule: 2 of 4
    assert tracker.flagged("p1") and not tracker.quiet("p1")
    assert [e.type for _, e in feed(tracker, [0.1], start=T0 + 100_000)] == ["open"]  # 2 of the last 4
    tracker.set_policy(AlertPolicy(k=1, n=1, resolve_after=1, update_seconds=0))
    assert not tracker.flagged("p1")  # only the last window counts now
    with pytest.raises(ValueError, match="for_model"):
        tracker.set_policy(AlertPolicy())
