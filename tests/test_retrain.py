import json
from types import SimpleNamespace

import numpy as np
import pytest

from detector.table import SensorTable
from detector.registry import current_version, versions
from tests.test_cli import TINY
from training.config import ConfigError
from training.recent import Stretch, alert_stretches, cut_stretches, readings_by_asset
from training.retrain import Gate, decide, load_gate, split_holdout
from vigil import synthetic
from vigil.cli import main
from vigil.durations import parse_duration

SENSORS = ("a", "b")


def record(value, key=b"", ts=0):
    return SimpleNamespace(value=value if isinstance(value, bytes) else json.dumps(value).encode(), key=key,
                           timestamp=ts)


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800 and parse_duration("7d") == 604800
    assert parse_duration("1.5h") == 5400 and parse_duration("2w") == 1209600 and parse_duration("45") == 45
    for bad in ("", "7 days", "-1d", "d"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_alert_stretches_span_open_to_resolve_plus_margin():
    events = [
        {"type": "open", "alert_id": "x", "asset": "p1", "time": "2026-01-01T00:10:00Z", "opened_at": "2026-01-01T00:10:00Z"},
        {"type": "update", "alert_id": "x", "asset": "p1", "time": "2026-01-01T00:12:00Z", "opened_at": "2026-01-01T00:10:00Z"},
        {"type": "resolve", "alert_id": "x", "asset": "p1", "time": "2026-01-01T00:20:00Z", "opened_at": "2026-01-01T00:10:00Z"},
        {"type": "open", "alert_id": "y", "asset": "p2", "time": "2026-01-01T01:00:00Z", "opened_at": "2026-01-01T01:00:00Z"},
    ]
    records = [record(e) for e in events] + [record(b"{not json"), record({"type": "open"})]
    t0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    got = sorted(alert_stretches(records, margin_seconds=60, until_s=t0 + 7200), key=lambda s: s.asset)
    assert got == [Stretch("p1", t0 + 540, t0 + 1260, "x", 60), Stretch("p2", t0 + 3540, t0 + 7260, "y", 60)]  # p2 open


def test_cut_stretches_keeps_the_parts_outside():
    times = (np.arange(100) * 1000).astype(np.int64)
    values = np.arange(200, dtype=np.float32).reshape(100, 2)
    stretches = [Stretch("p1", 30, 39), Stretch("p2", 0, 99), Stretch("p1", 90, 200)]
    tables = cut_stretches("p1", times, values, SENSORS, stretches, min_rows=10, source="t")
    assert [(t.time[0], t.time[-1]) for t in tables] == [(0, 29), (40, 89)]
    assert tables[1].values[0].tolist() == [80, 81]
    assert cut_stretches("p1", times, values, SENSORS, stretches, min_rows=31, source="t")[0].time[0] == 40


def test_readings_by_asset_sorts_dedups_and_counts_bad_records():
    def reading(asset, ts, a):
        return record({"asset": asset, "ts": ts, "values": {"a": a, "b": None}}, asset.encode())

    t0 = 1_767_225_600_000
    records = [reading("p1", t0 + 2000, 2.0), reading("p1", t0, 0.0), reading("p2", t0, 5.0),
               reading("p1", t0 + 2000, 9.0), record(b"oops", b"p1")]
    series, bad = readings_by_asset(records, SENSORS)
    assert bad == 1 and sorted(series) == ["p1", "p2"]
    times, values = series["p1"]
    assert times.tolist() == [t0, t0 + 2000] and values[:, 0].tolist() == [0.0, 2.0] and np.isnan(values[0, 1])


def test_readings_by_asset_takes_only_the_assets_asked_for():
    from detector.routes import asset_filter
    t0 = 1_767_225_600_000
    records = [record({"asset": a, "ts": t0, "values": {"a": 1.0}}, a.encode()) for a in ("pump-1", "fan-1", "pump-2")]
    records.append(record({"asset": "fan-2", "ts": t0, "values": {"a": 1.0}}, None))  # no key: its asset counts
    series, bad = readings_by_asset(records, SENSORS, asset_filter(("pump-*",)))
    assert sorted(series) == ["pump-1", "pump-2"] and bad == 0


def test_split_holdout_takes_the_end_of_each_series():
    t = SensorTable("f", [str(i) for i in range(100)], np.arange(100.0), SENSORS, np.zeros((100, 2)), None)
    short = SensorTable("g", ["0"] * 20, np.arange(20.0), SENSORS, np.zeros((20, 2)), None)
    train, held = split_holdout([t, short], 0.2, window=8)
    assert [x.rows for x in train] == [80, 20] and [x.rows for x in held] == [20]
    assert held[0].time[0] == 80


def test_gate_decision():
    gate = Gate(max_false_alarm_rate=0.01, false_alarm_tolerance=0.002, recall_tolerance=0.0)

    def result(far, recall=None):
        r = {"normal": {"false_alarm_rate": far}}
        return r | ({"labelled": {"event_recall": recall}} if recall is not None else {})

    assert decide(result(0.2), result(0.001), gate) == []  # a drifted current model is replaced
    assert decide(result(0.0), result(0.0015), gate) == []  # within the tolerance
    assert "current 0.0000 + gate.false_alarm_tolerance" in decide(result(0.0), result(0.005), gate)[0]
    assert "gate.max_false_alarm_rate" in decide(result(0.5), result(0.02), gate)[0]
    assert "event recall 0.500 < current 1.000" in decide(result(0, 1.0), result(0, 0.5), gate)[0]


def test_gate_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[gate]\nmax_false_alarm_rate = 0.05\n[training]\nepochs = 3\n")
    assert load_gate(path, holdout_fraction=0.3) == Gate(holdout_fraction=0.3, max_false_alarm_rate=0.05)
    path.write_text("[gate]\nmax_false_alarm = 0.05\n")
    with pytest.raises(ConfigError, match="gate.max_false_alarm: unknown key"):
        load_gate(path)
    with pytest.raises(ConfigError, match="gate.recall_tolerance must be between 0 and 1"):
        load_gate(None, recall_tolerance=2.0)


@pytest.fixture
def registry(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    normal = synthetic.write_csv(tmp_path / "normal.csv", synthetic.generate(1500, seed=1)[0])
    reg = tmp_path / "models"
    assert main(["train", "--data", str(normal), "--registry", str(reg), "--promote",
                 "--config", str(tmp_path / "tiny.toml"), "--quiet"]) == 0
    return reg


@pytest.mark.slow
def test_retrain_promotes_a_challenger_when_the_current_model_has_drifted(registry, tmp_path, capsys):
    values = synthetic.generate(2000, seed=5)[0]
    values[:, 3] += 12.0  # the supply voltage moved: the current model flags everything
    recent = synthetic.write_csv(tmp_path / "recent" / "p1.csv", values)
    before = current_version(registry)
    code = main(["retrain", "--registry", str(registry), "--data", str(recent.parent),
                 "--report", str(tmp_path / "r.json"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["decision"] == "promoted" and report["current"]["version"] == before
    assert report["current"]["normal"]["false_alarm_rate"] > 0.5
    assert report["challenger"]["normal"]["false_alarm_rate"] <= 0.01
    assert current_version(registry) == report["challenger"]["version"] != before
    assert (registry / current_version(registry) / "retrain.json").is_file()
    assert "promoted" in out


@pytest.mark.slow
def test_retrain_keeps_the_current_model_when_the_gate_fails(registry, tmp_path, capsys):
    # an unlabelled fault in the held-out tail: any model flags it, and the gate allows no flags
    values = synthetic.generate(2000, seed=6)[0]
    values[1800:1950, 0] += 10.0  # vibration far beyond anything seen
    recent = synthetic.write_csv(tmp_path / "recent.csv", values)
    before = current_version(registry)
    code = main(["retrain", "--registry", str(registry), "--data", str(recent), "--max-false-alarm-rate", "0",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 3, out
    assert current_version(registry) == before and len(versions(registry)) == 2  # registered, not promoted
    assert "kept" in out and "gate.max_false_alarm_rate 0" in out


@pytest.mark.slow
def test_retrain_leaves_out_labelled_rows_and_compares_detection(registry, tmp_path):
    values, labels = synthetic.generate(2000, seed=7, faults=(("cavitation", 500, 200),))
    recent = synthetic.write_csv(tmp_path / "recent.csv", values, labels)
    incidents = synthetic.write_csv(tmp_path / "incidents.csv",
                                    *synthetic.generate(800, seed=8, faults=(("cavitation", 400, 150),)))
    code = main(["retrain", "--registry", str(registry), "--data", str(recent), "--labels", str(incidents),
                 "--report", str(tmp_path / "r.json"), "--quiet"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert code in (0, 3)
    assert report["train_rows"] + report["holdout_rows"] == 2000 - 200  # the labelled fault was left out
    for name in ("current", "challenger"):
        assert report[name]["labelled"]["events"] == 1
    assert (code == 0) == (report["decision"] == "promoted")


@pytest.mark.slow
def test_retrain_errors(registry, tmp_path, capsys):
    assert main(["retrain", "--registry", str(registry)]) == 2
    assert "exactly one source" in capsys.readouterr().err
    assert main(["retrain", "--registry", str(registry), "--bootstrap-servers", "x:1"]) == 2
    assert "needs --topic and --since" in capsys.readouterr().err
    assert main(["retrain", "--registry", str(tmp_path / "nothing"), "--data", "x.csv"]) == 2
    assert "no current model" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("timestamp,x\n" + "".join(f"{i},1\n" for i in range(100)))
    assert main(["retrain", "--registry", str(registry), "--data", str(other)]) == 2
    assert "missing" in capsys.readouterr().err


@pytest.mark.kafka
@pytest.mark.slow
def test_retrain_from_kafka_leaves_out_alert_stretches(registry, tmp_path):
    import time
    from datetime import datetime, timezone

    from kafka import KafkaProducer

    from tests.kafka_util import BOOTSTRAP, broker_reachable, unique

    if not broker_reachable():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run deploy/kafka/broker start (scripts/test does)")
    topic = unique("retrain")
    start_ms = int(time.time() * 1000) - 3_000_000

    def iso(ms):
        return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z")

    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=20)
    for seed, asset in enumerate(("pump-1", "pump-2")):
        values = synthetic.generate(1500, seed=10 + seed)[0]
        for i, row in enumerate(values.tolist()):
            message = {"asset": asset, "ts": start_ms + i * 1000, "values": dict(zip(synthetic.SENSORS, row))}
            producer.send(topic, key=asset.encode(), value=json.dumps(message).encode())
    for i in range(300):  # another machine type on the same topic: none of the model's sensors
        message = {"asset": "fan-1", "ts": start_ms + i * 1000, "values": dict.fromkeys(synthetic.FAN.sensors, 1.0)}
        producer.send(topic, key=b"fan-1", value=json.dumps(message).encode())
    producer.send(topic, key=b"pump-1", value=b"{broken")
    for kind, at in (("open", 500), ("resolve", 699)):
        event = {"type": kind, "alert_id": "a1", "asset": "pump-1", "time": iso(start_ms + at * 1000),
                 "opened_at": iso(start_ms + 500 * 1000)}
        producer.send(topic + ".alerts", key=b"pump-1", value=json.dumps(event).encode())
    producer.flush()
    producer.close()
    code = main(["retrain", "--registry", str(registry), "--bootstrap-servers", BOOTSTRAP, "--topic", topic,
                 "--since", "10m", "--exclude-margin", "0s", "--report", str(tmp_path / "r.json"), "--quiet"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert code in (0, 3) and (code == 0) == (report["decision"] == "promoted")
    assert report["source"]["assets"] == 2 and report["source"]["undecodable_records"] == 1
    assert report["source"]["assets_without_the_models_sensors"] == 1  # fan-1, left out
    assert report["source"]["alert_stretches_left_out"] == 1
    assert report["train_rows"] + report["holdout_rows"] == 3000 - 200  # readings 500..699 of pump-1 left out
