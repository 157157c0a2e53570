"""Operator labels (detector.labels): the label message, `vigil label`, and `vigil retrain`
using them: a stretch labelled false_alarm is trained on as normal, a confirmed fault must
still be flagged, and the challenger must flag fewer of the false alarms."""

import json
import shutil
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from detector.labels import LABELS, latest_labels, parse_label
from detector.messages import BadMessage
from vigil import synthetic
from vigil.cli import main


def test_a_label_message_is_checked():
    label = parse_label(b'{"alert_id": "a1", "label": "false_alarm", "by": "jo", "note": null}')
    assert (label.alert_id, label.label, label.by, label.note) == ("a1", "false_alarm", "jo", "")
    for value, reason, detail in [(b"{oops", "invalid_json", ""), (b"[1]", "not_an_object", ""),
                                  (b'{"label": "confirmed"}', "bad_label", "alert_id"),
                                  (b'{"alert_id": "a1", "label": "fixed"}', "bad_label", "confirmed, false_alarm"),
                                  (b'{"alert_id": "a1", "label": "confirmed", "by": 7}', "bad_label", "by")]:
        with pytest.raises(BadMessage) as e:
            parse_label(value)
        assert e.value.reason == reason and detail in e.value.detail
    records = [SimpleNamespace(value=json.dumps({"alert_id": "a1", "label": x}).encode()) for x in LABELS]
    assert latest_labels(records + [SimpleNamespace(value=b"bad")])["a1"].label == "maintenance"  # the last counts


@pytest.mark.kafka
@pytest.mark.slow
def test_retrain_trains_on_a_false_alarm_and_keeps_flagging_a_confirmed_fault(tmp_path, capsys):
    from kafka import KafkaProducer

    from detector import registry as reg
    from tests.kafka_util import BOOTSTRAP, TINY, broker_reachable, train_tiny_model, unique

    if not broker_reachable():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run deploy/kafka/broker start (scripts/test does)")
    registry = tmp_path / "registry"
    registry.mkdir()
    model = train_tiny_model(tmp_path)
    shutil.copytree(model, registry / "v1")
    reg.promote(registry, "v1")
    topic = unique("labels-readings")
    rows, start_ms = 3000, int(time.time() * 1000) - 3_100_000
    shift = slice(1000, 1400)                   # the supply voltage moved: normal, but v1 alerts on it
    fault = (2200, 150)                         # a real bearing fault
    values, _ = synthetic.generate(rows, seed=10, faults=(("bearing", *fault),))
    values[shift, synthetic.SENSORS.index("voltage")] += 12.0
    other, _ = synthetic.generate(rows, seed=11)

    def iso(row):
        return datetime.fromtimestamp((start_ms + row * 1000) / 1000, timezone.utc).isoformat().replace("+00:00", "Z")

    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=20)
    for asset, series in (("pump-1", values), ("pump-2", other)):
        for i, row in enumerate(series.tolist()):
            message = {"asset": asset, "ts": start_ms + i * 1000, "values": dict(zip(synthetic.SENSORS, row))}
            producer.send(topic, key=asset.encode(), value=json.dumps(message).encode(), timestamp_ms=start_ms + i * 1000)
    # the alerts a daemon serving v1 raised there (as it writes them on the alerts topic)
    for alert_id, first, last in (("fa1", shift.start, shift.stop - 1), ("f1", fault[0] + 10, sum(fault) - 1)):
        for kind, row in (("open", first), ("resolve", last)):
            event = {"type": kind, "alert_id": alert_id, "asset": "pump-1", "time": iso(row), "opened_at": iso(first),
                     "model_version": "v1", "model": ""}
            producer.send(topic + ".alerts", key=b"pump-1", value=json.dumps(event).encode())
    producer.flush()
    producer.close()
    labels_topic = topic + ".labels"
    for alert_id, verdict in (("fa1", "false_alarm"), ("f1", "confirmed")):
        assert main(["label", alert_id, verdict, "--by", "test", "--bootstrap-servers", BOOTSTRAP,
                     "--topic", labels_topic, "--alerts-topic", topic + ".alerts"]) == 0
    assert "pump-1" in capsys.readouterr().out  # the alert was found: its asset is in the label
    (tmp_path / "tiny.toml").write_text(TINY)
    code = main(["retrain", "--registry", str(registry), "--bootstrap-servers", BOOTSTRAP, "--topic", topic,
                 "--since", "1h", "--exclude-margin", "30s", "--labels-topic", labels_topic,
                 "--config", str(tmp_path / "tiny.toml"), "--report", str(tmp_path / "r.json"), "--quiet"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["source"]["labels"] == {"false_alarm": 1, "confirmed": 1, "maintenance": 0}
    current, challenger = report["current"], report["challenger"]
    # on the same stretch: v1 alerted, the challenger (trained on it as normal) much less
    assert current["operator_false_alarms"]["false_alarm_rate"] > 0.5
    assert challenger["operator_false_alarms"]["false_alarm_rate"] < 0.1
    assert challenger["labelled"]["events_detected"] == current["labelled"]["events_detected"] == 1  # still flagged
    assert code == 0 and report["decision"] == "promoted", report["reasons"]


@pytest.mark.slow
def test_the_daemon_counts_labels_per_route_and_unlabelled_open_alerts(tmp_path):
    """Fleet.take_labels and the unlabelled gauge: a route's alert, its label, a label of another
    daemon's route, a record that is not a label, and labels re-read after a rebalance."""
    from prometheus_client import CollectorRegistry

    from detector.artifact import save
    from detector.fleet import Fleet
    from detector.metrics import ServiceMetrics
    from detector.pipeline import Record
    from detector.routes import Route
    from detector.settings import ServeSettings
    from tests.test_routes import T0, _model

    save(_model(("a", "b"), "p-v1"), tmp_path / "pumps")
    settings = ServeSettings(routes=(Route("pumps", str(tmp_path / "pumps"), ("pump-*",)),), label_wait_seconds=60)
    registry = CollectorRegistry()
    fleet = Fleet(settings, ServiceMetrics(CollectorRegistry()), registry)

    def reading(offset, i, value):
        body = json.dumps({"asset": "pump-1", "ts": T0 + i * 1000, "values": {"a": value, "b": value}}).encode()
        return Record("r", 0, offset, b"pump-1", body, T0 + i * 1000)

    def label(offset, doc):
        return Record("vigil.labels", 0, offset, None, json.dumps(doc).encode() if isinstance(doc, dict) else doc)

    result = fleet.finish(fleet.submit([reading(i, i, 50.0) for i in range(12)], {}, T0))
    [opened] = [e for e in result.alerts if e.type == "open"]
    fleet.expire_idle()
    assert registry.get_sample_value("vigil_alerts_unlabelled", {"model": "pumps"}) == 1  # opened long ago
    labels = [label(0, {"alert_id": opened.alert_id, "label": "confirmed", "model": "pumps"}),
              label(1, {"alert_id": "zz", "label": "false_alarm", "model": "fans"}), label(2, b"{oops")]
    result = fleet.finish(fleet.submit([reading(12, 12, 50.0)], {}, T0, labels=labels))
    assert [(dl.record.offset, dl.reason) for dl in result.dead_letters] == [(2, "invalid_json")]
    assert result.offsets == {("r", 0): 13, ("vigil.labels", 0): 3}
    assert registry.get_sample_value("vigil_alert_labels_total", {"model": "pumps", "label": "confirmed"}) == 1
    assert registry.get_sample_value("vigil_alert_labels_total", {"label": "false_alarm"}) == 1  # not a route here
    assert registry.get_sample_value("vigil_dead_letters_total", {"reason": "invalid_json"}) == 1
    fleet.expire_idle()
    assert registry.get_sample_value("vigil_alerts_unlabelled", {"model": "pumps"}) == 0
    # re-read history after a rebalance: remembered, not counted again
    fleet.finish(fleet.submit([], {("vigil.labels", 0): 3}, T0, labels=labels))
    assert registry.get_sample_value("vigil_alert_labels_total", {"model": "pumps", "label": "confirmed"}) == 1
