"""Shadow scoring (detector.shadow): a registry's shadow version scored on the live stream beside
the current model, its would-be alerts on the shadow topic only; the registry's shadow file."""

import json

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from detector import registry as reg
from detector.artifact import ArtifactError, save
from detector.messages import Decoder
from tests.memory_kafka import MemoryKafka
from detector.service import Service
from tests.test_pipeline import make_model
from tests.test_service_loop import _threshold, committed, run
from tests.test_service_loop import stream as stream  # the fixture: a registry (v1 current, v2) and a topic


def shadow_events(kafka, asset=None):
    return [e for e in kafka.messages("vigil.alerts.shadow") if asset is None or e.get("asset") == asset]


@pytest.mark.slow
def test_a_shadow_scores_the_live_stream_silently(stream, tmp_path):
    kafka, settings = stream
    registry = tmp_path / "models"
    save(make_model(_threshold() * 1e6, version="v3"), registry / "v3")  # a shadow that never alerts
    reg.set_shadow(registry, "v2")
    service = run(kafka, settings, stop_after=40)
    assert committed(kafka) == 301
    current = [e for e in kafka.messages("vigil.alerts") if e.get("type") == "open"]
    shadow = [e for e in shadow_events(kafka) if e.get("type") == "open"]
    assert [(e["asset"], e["model_version"]) for e in current] == [("p1", "v1")]  # alerts: the current model's only
    assert [(e["asset"], e["model_version"]) for e in shadow] == [("p1", "v2")]   # the shadow's go to its topic
    assert shadow[0]["alert_id"] != current[0]["alert_id"]
    r = service.registry
    assert r.get_sample_value("vigil_alert_events_total", {"type": "open"}) == 1
    assert r.get_sample_value("vigil_alert_events_total", {"type": "open", "role": "shadow"}) == 1
    assert r.get_sample_value("vigil_readings_scored_total", {"role": "shadow"}) == \
        r.get_sample_value("vigil_readings_scored_total")
    text = generate_latest(r).decode()
    assert 'vigil_asset_score{asset="p1"}' in text and 'role="shadow",asset' not in text  # no per-asset shadow series
    assert text.count("# TYPE vigil_alert_events_total counter") == 1
    assert len([1 for t, *_ in kafka.produced if t == "vigil.dlq"]) == 1  # the shadow dead-letters nothing


@pytest.mark.slow
def test_after_a_restart_the_shadow_takes_up_its_open_alert_and_does_not_open_it_again(stream, tmp_path):
    kafka, settings = stream
    reg.set_shadow(tmp_path / "models", "v2")
    run(kafka, settings, stop_after=8)  # stopped while p1's fault goes on
    assert committed(kafka) < 301
    opened = [e["alert_id"] for e in shadow_events(kafka, "p1") if e["type"] == "open"]
    assert len(opened) == 1 and [e["type"] for e in kafka.messages("vigil.alerts")].count("open") == 1
    # an alert the shadow's earlier version left open is not this shadow's
    kafka.produced.append(("vigil.alerts.shadow", b"p2", json.dumps(
        {"type": "open", "alert_id": "old", "asset": "p2", "model_version": "v0", "time": "2026-11-23T19:00:00.000Z",
         "opened_at": "2026-11-23T19:00:00.000Z"}).encode(), None))
    service = Service(settings, CollectorRegistry(), kafka.clients())
    service.connect()
    assert set(service.fleet.shadows[0].pipeline.open_alerts_to_restore) == {"p1"}
    service.close()
    run(kafka, settings, stop_after=40)  # the next daemon
    assert committed(kafka) == 301
    shadow = [e for e in shadow_events(kafka, "p1")]
    assert [e["type"] for e in shadow].count("open") == 1               # not opened again
    assert {e["alert_id"] for e in shadow} == set(opened)                # its events keep the alert's id
    assert [e["type"] for e in kafka.messages("vigil.alerts")].count("open") == 1  # the current model's, likewise


@pytest.mark.slow
def test_a_shadow_of_the_same_sensors_shares_its_routes_decode(stream, tmp_path, monkeypatch):
    kafka, settings = stream
    decodes = []
    original = Decoder.decode_batch
    monkeypatch.setattr(Decoder, "decode_batch", lambda self, *a, **k: decodes.append(1) or original(self, *a, **k))
    without = MemoryKafka("r", log=kafka.log)  # the same records, without a shadow
    run(without, settings, stop_after=40)
    alone, alerts = len(decodes), without.messages("vigil.alerts")
    decodes.clear()
    reg.set_shadow(tmp_path / "models", "v2")
    run(kafka, settings, stop_after=40)
    assert len(decodes) == alone                    # one decode per batch for both models
    assert kafka.messages("vigil.alerts") == alerts and alerts  # the route scores as it did alone
    shadow = [(e["type"], e["asset"], e["time"]) for e in shadow_events(kafka)]
    assert shadow == [(e["type"], e["asset"], e["time"]) for e in alerts]  # v2 = v1 but for the version


@pytest.mark.slow
def test_a_shadow_set_cleared_and_promoted_while_serving(stream, tmp_path):
    kafka, settings = stream
    registry = tmp_path / "models"
    events = []

    def at(n, service):
        if n == 3:
            reg.set_shadow(registry, "v2")
        if n == 12:
            events.append(("before promote", service.fleet.shadows[0].pipeline is not None))
            reg.promote(registry, "v2")  # promoting the shadow ends its shadowing

    service = run(kafka, settings, stop_after=40, at=at)
    assert events == [("before promote", True)]
    assert service.fleet.pipelines[0].model.version == "v2" and service.fleet.shadows[0].pipeline is None
    assert reg.shadow_version(registry) is None
    assert service.registry.get_sample_value("vigil_alerts_open", {"role": "shadow"}) is None  # series gone


def test_the_registry_shadow_file(tmp_path):
    registry = tmp_path / "models"
    for v in ("v1", "v2"):
        save(make_model(version=v), registry / v)
    reg.promote(registry, "v1")
    assert reg.shadow_version(registry) is None and reg.shadow_since(registry) is None
    with pytest.raises(ArtifactError, match="v1 is the current version"):
        reg.set_shadow(registry, "v1")
    with pytest.raises(ArtifactError, match="v9"):
        reg.set_shadow(registry, "v9")
    reg.set_shadow(registry, "v2")
    assert reg.shadow_version(registry) == "v2" and reg.shadow_since(registry) is not None
    reg.set_shadow(registry, None)
    assert reg.shadow_version(registry) is None
    assert [line.split()[1:] for line in (registry / "history").read_text().splitlines()] == \
        [["promote", "v1"], ["shadow", "v2"], ["unshadow", "v2"]]
    (registry / "shadow").write_text("../etc\n")
    with pytest.raises(ArtifactError, match="not a version name"):
        reg.shadow_version(registry)


def test_the_shadow_gate_promotes_only_after_its_period_with_no_more_alert_episodes():
    import json
    from types import SimpleNamespace

    from detector.routes import asset_filter
    from training.shadow_gate import alert_opens, compare, decide

    def records(*events):
        return [SimpleNamespace(value=json.dumps(e).encode()) for e in events] + [SimpleNamespace(value=b"{oops")]

    current = alert_opens(records({"type": "open", "asset": "pump-1"}, {"type": "update", "asset": "pump-1"},
                                  {"type": "open", "asset": "pump-2"}, {"type": "open", "asset": "fan-1"},
                                  {"type": "storm_start", "scope": "fleet", "storm_id": "s"}), asset_filter(("pump-*",)))
    shadow = alert_opens(records({"type": "open", "asset": "pump-1"}, {"type": "open", "asset": "pump-3"},
                                 {"type": "open", "asset": "pump-3"}), asset_filter(("pump-*",)))
    c = compare(current, shadow)
    assert (c["current"]["alert_episodes"], c["shadow"]["alert_episodes"]) == (2, 3)
    assert (c["both"], c["current_only"], c["shadow_only"]) == (["pump-1"], ["pump-2"], ["pump-3"])
    assert decide(c, 30.0, 24) == ["the shadow opened 3 alert episode(s) on the live stream, the current model 2"]
    assert decide(compare(current, shadow[:1]), 2.0, 24) == ["the shadow has run 2.0 h of the 24 h required"]
    assert decide(compare(current, shadow[:2]), 24.0, 24) == []  # as many episodes: promoted


def test_vigil_models_shadow_and_list(tmp_path, capsys):
    from vigil.cli import main
    registry = tmp_path / "models"
    for v in ("v1", "v2"):
        save(make_model(version=v), registry / v)
    reg.promote(registry, "v1")
    assert main(["models", "shadow", "v2", "--registry", str(registry)]) == 0
    assert main(["models", "list", "--registry", str(registry)]) == 0
    out = capsys.readouterr().out
    assert "* v1" in out and "s v2" in out
    assert main(["models", "shadow", "--registry", str(registry)]) == 2
    assert "shadow needs a VERSION, or --clear" in capsys.readouterr().err
    assert main(["models", "shadow", "--clear", "--registry", str(registry)]) == 0
    assert "shadow v2 cleared" in capsys.readouterr().out and reg.shadow_version(registry) is None
    assert main(["models", "compare", "--registry", str(registry)]) == 2
    assert "has no shadow version" in capsys.readouterr().err
    reg.set_shadow(registry, "v2")
    assert main(["models", "promote", "v2", "--registry", str(registry)]) == 0
    assert reg.shadow_version(registry) is None  # promoting the shadow ends shadowing


def test_retrain_counts_the_shadow_gate_on_the_alerts_topic_it_trains_around(tmp_path, monkeypatch, capsys):
    """Without --alerts-topic, `vigil retrain --topic plant7.readings --shadow-hours N` leaves out
    of its training data the alerts on plant7.alerts, and its shadow gate counts the current
    model's alert episodes there too (it read vigil.alerts), the shadow's on plant7.alerts.shadow."""
    from datetime import datetime, timedelta, timezone

    import training.shadow_gate
    from vigil import cli

    registry = tmp_path / "models"
    for v in ("v1", "v2"):
        save(make_model(version=v), registry / v)
    reg.promote(registry, "v1")

    def shadow_since_three_hours(version):
        reg.set_shadow(registry, version)
        earlier = (datetime.now(timezone.utc) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = (registry / "history").read_text().splitlines()
        (registry / "history").write_text("".join((earlier + line[20:] if line.endswith(f" shadow {version}") else line)
                                                  + "\n" for line in lines))

    shadow_since_three_hours("v2")
    read = []
    monkeypatch.setattr(cli, "_kafka_options", lambda servers, client_id: {})
    monkeypatch.setattr(training.shadow_gate, "read_opens",
                        lambda options, alerts, shadow, *a, **k: read.append((alerts, shadow)) or ([], []))
    common = ["retrain", "--registry", str(registry), "--bootstrap-servers", "kafka:9092", "--since", "7d",
              "--shadow-hours", "2", "--quiet"]
    assert cli.main([*common, "--topic", "plant7.readings"]) == 0  # as many episodes (none): promoted
    shadow_since_three_hours("v1")
    assert cli.main([*common, "--topic", "plant7.readings", "--alerts-topic", "a.x"]) == 0
    assert read == [("plant7.alerts", "plant7.alerts.shadow"), ("a.x", "a.x.shadow")]
    args = cli.build_parser().parse_args(["retrain", "--registry", "r", "--topic", "plant7.readings"])
    assert (cli._beside_readings(args, "alerts"), cli._beside_readings(args, "labels")) == \
        ("plant7.alerts", "plant7.labels")  # what the training data's exclusions read
    args = cli.build_parser().parse_args(["models", "compare", "--registry", "r"])
    assert cli._beside_readings(args, "alerts") == "vigil.alerts"
