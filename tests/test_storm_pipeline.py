"""The storm tracker wired into the pipeline and the settings."""

import pytest
from prometheus_client import CollectorRegistry

from detector.alerts import AlertPolicy
from detector.metrics import ServiceMetrics
from detector.pipeline import Pipeline
from detector.settings import ServeSettings, SettingsError
from detector.storm import StormPolicy
from tests.test_pipeline import make_model, rec


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def pipeline(registry):
    return Pipeline(make_model(), ServiceMetrics(registry), AlertPolicy(k=2, n=3, resolve_after=2, update_seconds=0),
                    storm=StormPolicy(share=0.5, min_assets=3, end_share=0.5))


def batch(start_offset, i0, count, faulty, assets=5):
    """count readings of each of `assets` pumps from step i0; the pumps in `faulty` read a=50."""
    out, offset = [], start_offset
    for i in range(i0, i0 + count):
        for a in range(assets):
            out.append(rec(offset, f"p{a}", i, a=50.0 if a in faulty else 0.0))
            offset += 1
    return out


def test_storm_starts_and_ends_with_the_alerts(pipeline, registry):
    r = pipeline.process(batch(0, 0, 6, faulty=()))
    assert not r.alerts and not r.storms
    r = pipeline.process(batch(100, 6, 6, faulty={0, 1}))  # 2 of 5: fewer than 3
    assert {e.asset for e in r.alerts if e.type == "open"} == {"p0", "p1"} and not r.storms
    r = pipeline.process(batch(200, 12, 6, faulty={0, 1, 2}))  # 3 of 5 = 60 % > 50 %
    (start,) = r.storms
    assert (start.type, start.assets, start.assets_alerting) == ("storm_start", 5, 3)
    assert registry.get_sample_value("vigil_alert_storm", {"scope": "fleet"}) == 1
    assert registry.get_sample_value("vigil_alert_events_total", {"type": "storm_start"}) == 1
    r = pipeline.process(batch(300, 18, 8, faulty={0}))  # p1, p2 resolve: the first leaves 2 of 5 < 50 %
    (end,) = r.storms
    assert (end.type, end.storm_id, end.assets_alerting) == ("storm_end", start.storm_id, 2)
    assert registry.get_sample_value("vigil_alert_storm", {"scope": "fleet"}) == 0


def test_replayed_history_rebuilds_the_storm_silently(pipeline, registry):
    records = batch(0, 0, 6, faulty=()) + batch(30, 6, 6, faulty={0, 1, 2})
    r = pipeline.process(records, replay_until={("vigil.readings", 0): 10_000})
    assert not r.alerts and not r.storms  # history: no events, no storm decided ...
    assert pipeline.storm.alerting == 3 and not pipeline.storm.active  # ... but the alerting assets are known
    r = pipeline.process(batch(100, 12, 6, faulty={0, 1, 2, 3}))  # the next live open decides
    assert [e.type for e in r.storms] == ["storm_start"] and r.storms[0].assets_alerting == 4


def test_alerts_taken_up_count_for_the_storm(pipeline):
    pipeline.open_alerts_to_restore = {f"p{a}": {"type": "open", "alert_id": f"old{a}", "asset": f"p{a}",
                                                 "time": "2026-11-23T19:00:00.000Z",
                                                 "opened_at": "2026-11-23T19:00:00.000Z"} for a in range(3)}
    r = pipeline.process(batch(0, 0, 6, faulty={0, 1, 2}))  # they stay open: no new opens, no storm
    assert not [e for e in r.alerts if e.type == "open"] and not r.storms
    assert pipeline.storm.alerting == 3 and not pipeline.storm.active


@pytest.mark.parametrize("key, value", [("storm_share", 1.5), ("storm_min_assets", 0),
                                        ("storm_window_seconds", 0.0), ("storm_end_share", 0.5)])
def test_bad_storm_settings_are_refused(key, value):
    with pytest.raises(SettingsError, match=f"^{key}: "):
        ServeSettings(model="m", **{key: value}).validate()


def test_a_batch_longer_than_the_storm_window_still_starts_the_storm(registry):
    """Readings 1 s apart, a 5 s storm window and one batch of 30 s: the alerts open within a
    second of each other, early in the batch, and that is a storm (the window must not jump to
    the batch's newest reading before the opens are counted)."""
    p = Pipeline(make_model(), ServiceMetrics(registry), AlertPolicy(k=2, n=3, resolve_after=2, update_seconds=0),
                 storm=StormPolicy(share=0.5, min_assets=3, window_seconds=5.0, end_share=0.5))
    r = p.process(batch(0, 0, 6, faulty=()) + batch(100, 6, 30, faulty={0, 1, 2}))
    assert len([e for e in r.alerts if e.type == "open"]) == 3
    assert [e.type for e in r.storms] == ["storm_start"]
