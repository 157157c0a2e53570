"""Off condition: switched-off machines are left out of training, not scored, and counted."""

import json
import re

import numpy as np
import pytest
from flax import nnx
from prometheus_client import CollectorRegistry

from detector.alerts import AlertPolicy
from detector.artifact import TrainedModel, load, save
from detector.table import SensorTable
from detector.metrics import ServiceMetrics
from detector.model import VAE, ModelConfig
from detector.offcondition import ConditionError, OffCondition, OffState
from detector.offline import score_table
from detector.pipeline import Pipeline, Record
from detector.preprocessing import Scaler
from detector.threshold import Persistence, Threshold
from training.dataquality import suggest_off_condition
from vigil import synthetic

SENSORS = ("current", "flow", "Flow rate")
T0 = 1_795_460_400_000


@pytest.mark.parametrize("text, rows", [
    ("current < 0.5", [True, False, False, False]),
    ("current <= 0.5 and flow < 1", [True, True, False, False]),
    ("current < 0.5 or flow >= 3", [True, False, True, False]),
    ('"Flow rate" > 2', [False, False, True, False]),
    ("current<1e-1", [True, False, False, False]),
])
def test_conditions(text, rows):
    values = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 1.0], [2.0, 3.0, 3.0], [np.nan, np.nan, np.nan]], np.float32)
    assert OffCondition.parse(text, SENSORS).holds(values).tolist() == rows


@pytest.mark.parametrize("text, says", [
    ("motor < 1", "no sensor 'motor'"),
    ("current < low", "cannot read"),
    ("current < 1 and flow < 1 or flow > 9", "either 'and' or 'or'"),
    ("Flow rate < 1", "cannot read"),
    ("", "got nothing"),
])
def test_bad_conditions_are_named(text, says):
    with pytest.raises(ConditionError, match=says):
        OffCondition.parse(text, SENSORS)


def _model(off="current < 0.5", interval=1.0, settle=0.0):
    cfg = ModelConfig(window=4, hidden=(8,), latent=2)
    return TrainedModel(SENSORS, cfg, Scaler(np.ones(3, np.float32), np.ones(3, np.float32)),
                        VAE(cfg, 3, rngs=nnx.Rngs(0)), Threshold(2.0, "quantile"), Persistence(2, 3),
                        interval_seconds=interval, version="v1", off_condition=off, off_settle_seconds=settle)


def test_the_condition_is_kept_with_the_model(tmp_path):
    save(_model(), tmp_path / "m")
    assert load(tmp_path / "m").off_condition == "current < 0.5"
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["off_condition"], config["off_settle_seconds"]) == ("current < 0.5", 0.0)
    with pytest.raises(ConditionError, match="no sensor 'pressure'"):
        _model(off="pressure < 1")


def _records(values, start=0):
    return [Record("r", 0, start + i, b"p1", json.dumps({"asset": "p1", "ts": T0 + (start + i) * 1000,
                                                         "values": dict(zip(SENSORS, map(float, v)))}).encode(),
                   T0 + (start + i) * 1000) for i, v in enumerate(values)]


def test_an_alerting_asset_switched_off_resolves_and_is_counted_off():
    registry = CollectorRegistry()
    pipeline = Pipeline(_model(), ServiceMetrics(registry), AlertPolicy(update_heartbeat_seconds=0))
    running = np.ones((10, 3))
    faulty = np.full((10, 3), 40.0)
    stopped = np.zeros((20, 3))
    first = pipeline.process(_records(np.r_[running, faulty]), now_ms=T0)
    assert [e.type for e in first.alerts][:1] == ["open"]
    assert registry.get_sample_value("vigil_assets_off") == 0
    result = pipeline.process(_records(stopped, 20), now_ms=T0)
    assert [(e.type, e.reason) for e in result.alerts] == [("resolve", "switched_off")]
    assert result.alerts[0].time.endswith(":39.000Z")  # the newest (off) reading's time
    assert result.scored == 0 and registry.get_sample_value("vigil_assets_off") == 1
    assert registry.get_sample_value("vigil_alert_events_total", {"type": "resolve"}) == 1
    again = pipeline.process(_records(running, 40), now_ms=T0)  # on again after 20 s (> the 4 s window): refills
    assert registry.get_sample_value("vigil_assets_off") == 0
    assert again.scored == len(running) - 3 and not again.alerts


def test_settling_after_a_switch_on_counts_as_off_the_same_in_files_and_the_stream():
    condition = OffCondition.parse("current < 0.5", SENSORS, settle_seconds=3.0)
    rng = np.random.default_rng(1)
    values = rng.normal(1.0, 0.2, size=(400, 3)).astype(np.float32)
    values[rng.random(400) < 0.1, 0] = 0.0  # off now and then
    times = T0 + np.cumsum(rng.integers(200, 2000, 400))
    whole = condition.off_rows(times, values)
    state, got = OffState(condition), []
    for lo in range(0, 400, 23):
        got += state.mask(["p"] * len(times[lo:lo + 23]), times[lo:lo + 23], values[lo:lo + 23]).tolist()
    assert got == whole.tolist()
    assert whole.sum() > condition.holds(values).sum()  # settling readings are off too
    i = int(np.flatnonzero(condition.holds(values))[0])
    after = np.flatnonzero((times > times[i]) & (times - times[i] < 3000))
    assert whole[after].all()


def test_an_alert_is_held_back_while_the_machine_may_be_switching_off():
    registry = CollectorRegistry()
    pipeline = Pipeline(_model(settle=10.0), ServiceMetrics(registry), AlertPolicy(update_heartbeat_seconds=0))
    running, faulty = np.ones((10, 3)), np.full((6, 3), 40.0)
    ramp_down = pipeline.process(_records(np.r_[running, faulty, np.zeros((5, 3))]), now_ms=T0)
    assert not ramp_down.alerts  # over threshold for 6 s, then off: no alert at all
    pipeline = Pipeline(_model(settle=10.0), ServiceMetrics(CollectorRegistry()), AlertPolicy(update_heartbeat_seconds=0))
    fault = pipeline.process(_records(np.r_[running, np.full((20, 3), 40.0)]), now_ms=T0)
    [opened] = [e for e in fault.alerts if e.type == "open"]
    assert opened.time.endswith(":11.000Z")  # the reading the rule held at (2 of 3 from 10 s), sent 10 s later


def test_off_rows_are_not_scored_offline_and_agree_with_the_daemon():
    rng = np.random.default_rng(5)
    values = rng.normal(1.0, 0.3, size=(300, 3)).astype(np.float32)
    values[100:130, 0] = 0.0  # 30 s off
    values[200:202, 0] = 0.0  # 2 s off: inside windows, not a restart
    times = T0 + np.arange(300) * 1000
    model = _model(settle=2.0)  # and 2 s settling after each
    table = SensorTable("p.csv", [str(t) for t in times], times / 1000, SENSORS, values, None)
    offline = score_table(model, table)
    # off 100-129, settling to 130 (131 is 2 s after the last off one); the window refills from 131
    assert np.isnan(offline.score[100:134]).all() and np.isfinite(offline.score[134])
    # off 200-201, settling 202; the window over 200-203 is mostly missing, over 201-204 half observed
    assert np.isnan(offline.score[200:204]).all() and np.isfinite(offline.score[204])
    pipeline = Pipeline(model, ServiceMetrics(CollectorRegistry()))
    pipeline.emit_scores = True
    scores = {}
    for lo in range(0, 300, 50):
        scores.update({s["ts"]: s["score"] for s in pipeline.process(_records(values[lo:lo + 50], lo),
                                                                      now_ms=T0).scores})
    scored = np.flatnonzero(np.isfinite(offline.score))
    assert sorted(scores) == (times[scored]).tolist()
    np.testing.assert_allclose([scores[t] for t in times[scored].tolist()], offline.score[scored], rtol=1e-5)


def _stopping_pump(rows=3000, stops=((1000, 1400), (2200, 2500))):
    values, _ = synthetic.generate(rows, seed=2)
    run = np.ones(rows)
    for a, b in stops:
        run[a:b] = 0.0
    synthetic.stopped(values, run, np.random.default_rng(0).normal(size=values.shape))
    return SensorTable("pump.csv", [str(i) for i in range(rows)], 1_767_225_600 + np.arange(rows, dtype=float),
                       synthetic.SENSORS, values, None)


def test_training_data_with_stops_suggests_an_off_condition():
    off = suggest_off_condition([_stopping_pump()])
    assert off is not None and off.rows == 700 and "motor_current" in off.sensors
    condition = OffCondition.parse(off.condition, synthetic.SENSORS)
    table = _stopping_pump()
    assert condition.holds(table.values).sum() == 700
    assert suggest_off_condition([_stopping_pump(stops=())]) is None


def _write(table, path):
    from vigil import csvformat

    path.write_bytes(synthetic.header(False) + synthetic.csv_rows(csvformat.timestamps(table.time), table.values, None))
    return path


TINY = "[model]\nwindow = 8\nhidden = [16]\nlatent = 4\n[training]\nepochs = 3\nbatch_size = 32\nmax_steps_per_epoch = 10\n"


@pytest.mark.slow
def test_vigil_train_suggests_then_uses_an_off_condition(tmp_path, capsys):
    from vigil.cli import main

    data = _write(_stopping_pump(), tmp_path / "pump.csv")
    (tmp_path / "tiny.toml").write_text(TINY)
    common = ["train", "--data", str(data), "--config", str(tmp_path / "tiny.toml")]
    assert main(common + ["--out", str(tmp_path / "a"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "look switched off" in err and "consider off_condition = " in err

    assert main(common + ["--out", str(tmp_path / "b"), "--off-condition", "motor_current < 1"]) == 0
    err = capsys.readouterr().err
    assert "look switched off" not in err and "off condition 'motor_current < 1': 818 of 3,000 rows left out" in err
    assert load(tmp_path / "b").off_condition == "motor_current < 1"

    assert main(common + ["--out", str(tmp_path / "c"), "--off-condition", "current < 1"]) == 2
    assert "training.off_condition" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_vigil_inspect_finds_the_off_state(tmp_path, capsys):
    from vigil.cli import main

    data = _write(_stopping_pump(), tmp_path / "pump.csv")
    main(["inspect", "--data", str(data), "--window", "8"])
    out = capsys.readouterr().out
    assert "warning" in out and "look switched off" in out and "vibration_x, vibration_y, motor_current" in out


@pytest.mark.slow
def test_training_suggests_a_longer_settle_when_the_warm_up_alerts(tmp_path, capsys):
    """The pumps' temperature cools during a stop: after a restart it is low for minutes."""
    from vigil.cli import main

    table = _stopping_pump(rows=4000, stops=((1000, 1600), (2500, 3100)))
    cold = np.zeros(4000)
    for start in (1600, 3100):  # 300 s of warm-up after each restart, temperature far below normal
        cold[start:start + 300] = np.linspace(25.0, 0.0, 300)
    table.values[:, synthetic.SENSORS.index("temperature")] -= cold.astype(np.float32)
    data = _write(table, tmp_path / "pump.csv")
    (tmp_path / "tiny.toml").write_text(TINY + "off_settle_seconds = 10.0\n")
    assert main(["train", "--data", str(data), "--config", str(tmp_path / "tiny.toml"), "--out", str(tmp_path / "m"),
                 "--off-condition", "motor_current < 1", "--quiet"]) == 0
    err = capsys.readouterr().err
    found = re.search(r"over threshold for up to (\d+) s .* consider off_settle_seconds = (\d+)", err)
    assert found, err
    assert 60 <= int(found.group(1)) <= 320 and int(found.group(2)) >= int(found.group(1))


def test_a_model_without_an_off_condition_counts_no_asset_off():
    registry = CollectorRegistry()
    pipeline = Pipeline(_model(), ServiceMetrics(registry))
    pipeline.process(_records(np.zeros((3, 3))), now_ms=T0)
    assert registry.get_sample_value("vigil_assets_off") == 1
    pipeline.swap_model(_model(off=None))
    assert registry.get_sample_value("vigil_assets_off") == 0
    assert pipeline.process(_records(np.ones((8, 3)), 3), now_ms=T0).scored == 5  # its readings count again
