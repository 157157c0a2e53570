import json

import numpy as np
import pytest
from flax import nnx
from prometheus_client import CollectorRegistry

from detector.alerts import AlertPolicy, epoch_ms
from detector.artifact import TrainedModel
from detector.metrics import ServiceMetrics
from detector.model import VAE, ModelConfig
from detector.pipeline import Pipeline, Record
from detector.preprocessing import Scaler
from detector.threshold import Persistence, Threshold

SENSORS = ("a", "b")
T0 = 1_795_460_400_000


def make_model(threshold=1.0, version="v1"):
    cfg = ModelConfig(window=4, hidden=(8,), latent=2)
    return TrainedModel(SENSORS, cfg, Scaler(np.zeros(2, np.float32), np.ones(2, np.float32)),
                        VAE(cfg, 2, rngs=nnx.Rngs(0)), Threshold(threshold, "quantile"), Persistence(), version=version)


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def pipeline(registry):
    # every window over threshold of an open alert is an update (update_heartbeat_seconds=0): tests count them
    return Pipeline(make_model(), ServiceMetrics(registry),
                    AlertPolicy(k=2, n=3, resolve_after=2, update_seconds=0, update_heartbeat_seconds=0))


def rec(offset, asset, i, a=0.0, b=0.0, partition=0):
    value = json.dumps({"asset": asset, "ts": T0 + i * 1000, "values": {"a": a, "b": b}}).encode()
    return Record("vigil.readings", partition, offset, asset.encode(), value, T0 + i * 1000)


def test_scores_per_asset_and_reports_offsets(pipeline, registry):
    records = [rec(i, "p1", i) for i in range(6)] + [rec(6 + i, "p2", i) for i in range(3)]
    result = pipeline.process(records, now_ms=T0)
    assert result.scored == 3 and result.offsets == {("vigil.readings", 0): 9} and not result.dead_letters
    assert registry.get_sample_value("vigil_readings_consumed_total") == 9
    assert registry.get_sample_value("vigil_readings_scored_total") == 3
    assert registry.get_sample_value("vigil_asset_score", {"asset": "p1"}) is not None
    assert registry.get_sample_value("vigil_asset_score", {"asset": "p2"}) is None
    assert registry.get_sample_value("vigil_assets_tracked") == 2


def test_alerts_open_with_top_sensors(pipeline):
    records = [rec(i, "p1", i, a=50.0 if i >= 4 else 0.0) for i in range(10)]
    result = pipeline.process(records, now_ms=T0)
    kinds = [e.type for e in result.alerts]
    assert kinds[0] == "open"
    assert result.alerts[0].top_sensors[0]["sensor"] == "a"
    assert 0 < result.alerts[0].top_sensors[0]["share"] <= 1


def test_per_asset_alert_state_and_sensor_shares_are_exported(pipeline, registry):
    pipeline.process([rec(i, "p1", i, a=50.0 if i >= 4 else 0.0) for i in range(10)], now_ms=T0)
    assert registry.get_sample_value("vigil_asset_alert_open", {"asset": "p1"}) == 1
    a = registry.get_sample_value("vigil_asset_sensor_share", {"asset": "p1", "sensor": "a"})
    b = registry.get_sample_value("vigil_asset_sensor_share", {"asset": "p1", "sensor": "b"})
    assert a > b >= 0 and a + b == pytest.approx(1.0, abs=1e-5)
    pipeline.process([rec(10 + i, "p1", 10 + i) for i in range(8)], now_ms=T0)
    assert registry.get_sample_value("vigil_asset_alert_open", {"asset": "p1"}) == 0


def test_model_creation_time_is_exported(registry):
    model = make_model()
    model.metadata["created_at"] = "2026-11-20T10:00:00+00:00"
    Pipeline(model, ServiceMetrics(registry), AlertPolicy())
    assert registry.get_sample_value("vigil_model_created_timestamp_seconds") == 1_795_168_800


def test_bad_records_become_dead_letters_and_do_not_stop_the_batch(pipeline, registry):
    records = [rec(0, "p1", 0), Record("vigil.readings", 0, 1, b"x", b"{oops", T0), rec(2, "p1", 0), rec(3, "p1", 1)]
    result = pipeline.process(records, now_ms=T0)
    assert [d.reason for d in result.dead_letters] == ["invalid_json", "duplicate_time"]
    assert result.dead_letters[0].record.offset == 1
    assert result.offsets[("vigil.readings", 0)] == 4
    assert registry.get_sample_value("vigil_dead_letters_total", {"reason": "invalid_json"}) == 1


def test_replayed_records_only_refill_windows(pipeline, registry):
    history = [rec(i, "p1", i) for i in range(3)]
    live = [rec(3 + i, "p1", 3 + i) for i in range(2)]
    result = pipeline.process(history + live, replay_until={("vigil.readings", 0): 3}, now_ms=T0)
    # the first live reading already completes a window of 4: nothing was skipped
    assert result.scored == 2
    assert registry.get_sample_value("vigil_readings_consumed_total") == 2


@pytest.mark.slow
def test_replayed_history_rebuilds_the_alert_state_silently(registry):
    """A restarted daemon re-reads history: an alert open before the restart continues under
    its id, and one that was about to open (k of n) opens where it would have."""
    policy = AlertPolicy(k=2, n=3, resolve_after=2, update_seconds=0)
    records = [rec(i, "p1", i, a=50.0 if i >= 4 else 0.0) for i in range(8)]
    uninterrupted = Pipeline(make_model(), ServiceMetrics(CollectorRegistry()), policy).process(records, now_ms=T0)
    restarted = Pipeline(make_model(), ServiceMetrics(registry), policy)
    for cut in (4, 5, 6):  # history re-read up to the committed offset `cut`, then live records
        result = restarted.process(records, replay_until={("vigil.readings", 0): cut}, now_ms=T0)
        live = [e for e in uninterrupted.alerts if e.time >= result.alerts[0].time] if result.alerts else []
        assert [(e.type, e.alert_id, e.time) for e in result.alerts] == [(e.type, e.alert_id, e.time) for e in live]
        assert result.alerts and not result.dead_letters
        restarted = Pipeline(make_model(), ServiceMetrics(CollectorRegistry()), policy)
    assert registry.get_sample_value("vigil_readings_consumed_total") == 4  # only live records count


def test_model_swap_keeps_windows_and_updates_info(pipeline, registry):
    pipeline.process([rec(i, "p1", i) for i in range(4)], now_ms=T0)
    pipeline.swap_model(make_model(threshold=5.0, version="v2"))
    result = pipeline.process([rec(4, "p1", 4)], now_ms=T0)
    assert result.scored == 1
    samples = [s for s in registry.collect() if s.name == "vigil_model_info"][0].samples
    assert [s.labels["version"] for s in samples] == ["v2"]


def test_idle_assets_are_forgotten(pipeline, registry):
    pipeline.process([rec(i, "p1", i) for i in range(4)], now_ms=T0)
    pipeline.idle_seconds = -1
    assert pipeline.expire_idle() == ["p1"]
    assert registry.get_sample_value("vigil_asset_score", {"asset": "p1"}) is None
    assert registry.get_sample_value("vigil_asset_alert_open", {"asset": "p1"}) is None
    assert registry.get_sample_value("vigil_asset_sensor_share", {"asset": "p1", "sensor": "a"}) is None


def test_model_watcher_reports_a_broken_current_once(tmp_path):
    import shutil

    from detector.artifact import save
    from detector.registry import set_current
    from detector.reload import ModelWatcher

    save(make_model(), tmp_path / "v1")
    set_current(tmp_path, "v1")
    watcher = ModelWatcher(tmp_path, "v1", interval=0)
    assert watcher.poll() == ("", None, None)
    (tmp_path / "current").write_text("v9\n")  # names a missing version
    version, model, error = watcher.poll()
    assert version == "v9" and model is None and "does not exist" in error
    assert watcher.poll() == ("", None, None)  # not retried until `current` changes
    (tmp_path / "current").unlink()
    assert "missing" in watcher.poll()[2]
    assert watcher.poll() == ("", None, None)  # reported once
    shutil.copytree(tmp_path / "v1", tmp_path / "v2")
    set_current(tmp_path, "v2")
    version, model, error = watcher.poll()
    assert version == "v2" and model is not None and error is None


def test_alerts_left_open_are_taken_up_when_the_asset_is_seen(pipeline):
    pipeline.open_alerts_to_restore = {"p1": {"type": "open", "alert_id": "old", "asset": "p1",
                                              "time": "2026-11-23T19:00:00.000Z", "opened_at": "2026-11-23T19:00:00.000Z",
                                              "peak_normalized_score": 3.0}}
    result = pipeline.process([rec(i, "p1", i, a=50.0) for i in range(6)], now_ms=T0)
    assert [(e.type, e.alert_id) for e in result.alerts] == [("update", "old")] * 3  # no new "open"
    assert not pipeline.open_alerts_to_restore


def test_scores_are_listed_only_when_asked(pipeline):
    assert pipeline.process([rec(i, "p1", i) for i in range(5)], now_ms=T0).scores == []
    pipeline.emit_scores = True
    scores = pipeline.process([rec(5 + i, "p1", 5 + i) for i in range(2)], now_ms=T0).scores
    assert [s["ts"] for s in scores] == [T0 + 5000, T0 + 6000] and scores[0]["model_version"] == "v1"


def test_leaders_are_the_sensors_that_clearly_lead():
    from detector.pipeline import _leaders

    contributions = np.array([[3.0, 1.0, 0.0], [1.2, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 1.5]], np.float32)
    assert _leaders(contributions, ("x", "y", "z"), 1.5) == ["x", None, None, "z"]
    assert _leaders(contributions[:, :1], ("x",), 1.5) == ["x"] * 4


def test_a_steady_fault_opens_once_and_its_events_name_the_top_sensors(registry):
    """The product's update policy through the pipeline: a fault that stays the same for 200
    readings a second apart is one open event (no update: no rise, no new sensor, no hour
    passed); its top sensors are those of `vigil score` for the same window."""
    from detector.scoring import top_sensors

    model = make_model()
    pipeline = Pipeline(model, ServiceMetrics(registry), AlertPolicy())
    values = [(50.0 if i >= 4 else 0.0, 3.0 if i >= 4 else 0.0) for i in range(204)]
    records = [rec(i, "p1", i, a=a, b=b) for i, (a, b) in enumerate(values)]
    result = pipeline.process(records, now_ms=T0)
    assert [e.type for e in result.alerts] == ["open"]
    opened = result.alerts[0]
    row = (epoch_ms(opened.time) - T0) // 1000
    offline = model.scorer().score_series(np.array(values, np.float32))
    expected = top_sensors(offline.contributions[row:row + 1], offline.score[row:row + 1], model.sensors)[0]
    assert [(t["sensor"], t["share"]) for t in opened.top_sensors] == [(n, round(v, 4)) for n, v in expected]
    assert registry.get_sample_value("vigil_alert_events_total", {"type": "open"}) == 1
    assert registry.get_sample_value("vigil_alert_events_total", {"type": "update"}) == 0
