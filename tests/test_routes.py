"""Several models in one daemon (detector.routes, detector.fleet): the routes' settings, which
route serves an asset, and the whole Service.run() loop with two routes on an in-memory
Kafka. tests/test_serve_kafka.py runs two routes against the real broker."""

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from detector.artifact import TrainedModel, save
from detector.model import VAE, ModelConfig
from detector.preprocessing import Scaler
from detector.registry import set_current
from detector.routes import Route, Router, default_route, parse_routes
from detector.service import Service
from detector.settings import ServeSettings, SettingsError, load_settings
from detector.threshold import Persistence, Threshold
from tests.memory_kafka import MemoryKafka
from tests.test_service_loop import run

T0 = 1_795_460_400_000
FAULT_FROM = 60


# -- settings ------------------------------------------------------------------------------
def _toml(tmp_path, body: str):
    path = tmp_path / "vigil.toml"
    path.write_text(body)
    return str(path)


def test_routes_come_from_the_config_file_in_order(tmp_path):
    (tmp_path / "fans.txt").write_text("# the fans of hall 2\nfan-7\nfan-9  # spare\n\nhall3-fan-*\n")
    config = _toml(tmp_path, f"""
[serve]
model = "/models/general"

[[serve.routes]]
name = "pumps"
model = "/models/pumps"
assets = ["pump-*", "p-17"]

[[serve.routes]]
name = "fans"
model = "/models/fans"
assets_file = "{tmp_path / 'fans.txt'}"
""")
    s = load_settings({}, {}, config)
    assert [r.name for r in s.all_routes()] == ["pumps", "fans", "default"]
    assert s.routes[0].assets == ("pump-*", "p-17")
    assert s.routes[1].patterns() == ("fan-7", "fan-9", "hall3-fan-*")
    assert s.all_routes()[-1] == default_route("/models/general")


def test_routes_alone_need_no_model_setting(tmp_path):
    config = _toml(tmp_path, '[[serve.routes]]\nname = "pumps"\nmodel = "/m"\nassets = "pump-*"\n')
    s = load_settings({}, {}, config)
    assert s.model == "" and [r.name for r in s.all_routes()] == ["pumps"]
    with pytest.raises(SettingsError, match=r"model: required .*or \[\[serve.routes\]\]"):
        load_settings({}, {}, None)


@pytest.mark.parametrize("body, message", [
    ('name = "a"\nmodel = "/m"\nassets = ["x"]\ncolour = 1', r"routes\[0\]: colour: unknown key"),
    ('model = "/m"\nassets = ["x"]', r"routes\[0\]: name: required"),
    ('name = "has space"\nmodel = "/m"\nassets = ["x"]', r"routes\[0\]: name: required, letters"),
    ('name = "default"\nmodel = "/m"\nassets = ["x"]', r"name: 'default' is the route of the `model` setting"),
    ('name = "a"\nassets = ["x"]', r"routes\[0\] \(a\): model: required"),
    ('name = "a"\nmodel = "/m"', r"routes\[0\] \(a\): assets or assets_file: required"),
    ('name = "a"\nmodel = "/m"\nassets = [1]', r"routes\[0\] \(a\): assets: expected a list"),
    ('name = "a"\nmodel = "/m"\nassets_file = "/nonexistent/fans.txt"',
     r"route 'a': assets_file: cannot read /nonexistent/fans.txt: No such file"),
])
def test_a_bad_route_stops_with_a_message_naming_the_route_and_key(tmp_path, body, message):
    config = _toml(tmp_path, "[[serve.routes]]\n" + body + "\n")
    with pytest.raises(SettingsError, match=message) as e:
        load_settings({}, {}, config)
    assert str(tmp_path / "vigil.toml") in str(e.value)


def test_a_route_name_used_twice_is_refused():
    table = {"model": "/m", "assets": ["x"]}
    with pytest.raises(ValueError, match=r"routes\[1\]: name: 'a' is used twice"):
        parse_routes([{"name": "a", **table}, {"name": "a", **table}], "f.toml")
    with pytest.raises(ValueError, match="expected \\[\\[serve.routes\\]\\] tables"):
        parse_routes({"name": "a"}, "f.toml")


# -- which route serves an asset -----------------------------------------------------------
def test_the_first_matching_route_serves_an_asset(tmp_path):
    (tmp_path / "ids.txt").write_text("pump-special\n")
    router = Router([Route("special", "/m1", assets_file=str(tmp_path / "ids.txt")),
                     Route("pumps", "/m2", ("pump-*", "P[0-9]")), Route("fans", "/m3", ("fan-?",))])
    assert [router(a) for a in ("pump-special", "pump-1", "P7", "fan-1", "fan-10", "valve-1", "Pump-1")] == \
        [0, 1, 1, 2, None, None, None]  # globs are case-sensitive and match the whole id
    assert Router([Route("pumps", "/m2", ("pump-*",)), default_route("/m")])("valve-1") == 1


# -- the daemon with two routes ------------------------------------------------------------
def _model(sensors: tuple[str, ...], version: str) -> TrainedModel:
    cfg = ModelConfig(window=4, hidden=(8,), latent=2)
    n = len(sensors)
    model = TrainedModel(sensors, cfg, Scaler(np.zeros(n, np.float32), np.ones(n, np.float32)),
                         VAE(cfg, n, rngs=nnx.Rngs(0)), Threshold(1.0, "quantile"), Persistence(), version=version)
    scorer = model.scorer()
    normal = scorer(np.random.default_rng(0).normal(0, 0.1, (64, 4, n)).astype(np.float32)).score
    faulty = scorer(np.full((1, 4, n), 50.0, np.float32)).score
    assert faulty.min() > 10 * normal.max()
    model.threshold = Threshold(float(np.sqrt(normal.max() * faulty.min())), "quantile")
    return model


@pytest.fixture
def plant(tmp_path):
    """Pumps (sensors a, b; a registry with v1 current) and fans (x, y, z; a model directory)
    on one topic: pump-1 and fan-1 turn faulty at FAULT_FROM, valve-1 has no model."""
    for version in ("p-v1", "p-v2"):
        save(_model(("a", "b"), version), tmp_path / "pumps" / version)
    set_current(tmp_path / "pumps", "p-v1")
    save(_model(("x", "y", "z"), "f-v1"), tmp_path / "fans")
    kafka = MemoryKafka("r")
    rng = np.random.default_rng(1)
    for i in range(100):
        ts = T0 + i * 1000
        for asset, sensors in (("pump-1", "ab"), ("pump-2", "ab"), ("fan-1", "xyz"), ("valve-1", "ab")):
            faulty = asset in ("pump-1", "fan-1") and i >= FAULT_FROM
            values = {s: 50.0 if faulty else float(rng.normal(0, 0.1)) for s in sensors}
            kafka.append(json.dumps({"asset": asset, "ts": ts, "values": values}).encode(), asset.encode(),
                         timestamp=ts)
    routes = (Route("pumps", str(tmp_path / "pumps"), ("pump-*",)), Route("fans", str(tmp_path / "fans"), ("fan-*",)))
    settings = ServeSettings(routes=routes, topic="r", metrics_addr="127.0.0.1:0", batch_size=29, max_wait_ms=0,
                             reload_seconds=0, scores_topic="vigil.scores")
    return kafka, settings, tmp_path


@pytest.mark.slow
def test_each_route_scores_its_assets_and_an_unrouted_asset_is_dead_lettered(plant):
    kafka, settings, _ = plant
    service = run(kafka, settings, stop_after=25)
    alerts = [e for e in kafka.messages("vigil.alerts") if e.get("type") == "open"]
    assert {(e["asset"], e["model"], e["model_version"]) for e in alerts} == \
        {("pump-1", "pumps", "p-v1"), ("fan-1", "fans", "f-v1")}
    assert {e["sensor"] for e in next(e for e in alerts if e["asset"] == "fan-1")["top_sensors"]} <= set("xyz")
    dead = [(k, dict(h)) for t, k, v, h in kafka.produced if t == "vigil.dlq"]
    assert len(dead) == 100 and all(k == b"valve-1" and h["vigil.reason"] == b"no_model" for k, h in dead)
    assert "matches no route (pumps, fans)" in dead[0][1]["vigil.detail"].decode()
    scores = kafka.messages("vigil.scores")
    assert {(s["asset"], s["model"]) for s in scores} == {("pump-1", "pumps"), ("pump-2", "pumps"), ("fan-1", "fans")}
    assert kafka.committed[next(iter(kafka.committed))].offset == 400  # everything, the dead letters too

    r = service.registry
    assert r.get_sample_value("vigil_readings_consumed_total", {"model": "pumps"}) == 200
    assert r.get_sample_value("vigil_readings_consumed_total", {"model": "fans"}) == 100
    assert r.get_sample_value("vigil_dead_letters_total", {"reason": "no_model"}) == 100
    assert r.get_sample_value("vigil_alerts_open", {"model": "fans"}) == 1
    assert r.get_sample_value("vigil_broker_up") == 1  # the daemon's own metrics have no model label
    assert r.get_sample_value("vigil_asset_score", {"model": "fans", "asset": "fan-1"}) > 1
    assert r.get_sample_value("vigil_alert_storm", {"model": "pumps", "scope": "pumps"}) == 0
    text = generate_latest(r).decode()
    assert text.count("# TYPE vigil_readings_consumed_total counter") == 1  # one family, a series per route
    info = [line for line in text.splitlines() if line.startswith("vigil_model_info{")]
    assert len(info) == 2 and any('model="fans"' in x and 'sensors="x,y,z"' in x and 'version="f-v1"' in x
                                  for x in info)


@pytest.mark.slow
def test_a_route_reloads_its_own_model(plant):
    kafka, settings, tmp_path = plant

    def at(n, service):
        if n == 8:
            set_current(tmp_path / "pumps", "p-v2")

    service = run(kafka, settings, stop_after=25, at=at)
    pumps, fans = service.fleet.pipelines
    assert (pumps.model.version, fans.model.version) == ("p-v2", "f-v1")
    assert service.registry.get_sample_value("vigil_model_reloads_total", {"model": "pumps", "result": "ok"}) == 1
    assert service.registry.get_sample_value("vigil_model_reloads_total", {"model": "fans", "result": "ok"}) == 0
    with pytest.raises(AttributeError, match="a pipeline per route"):
        service.pipeline  # noqa: B018


@pytest.mark.slow
def test_open_alerts_left_by_a_previous_daemon_go_to_their_route(plant):
    kafka, settings, _ = plant
    left = {"fan-1": {"type": "open", "alert_id": "abc", "asset": "fan-1", "time": "2026-11-23T19:00:00.000Z",
                      "opened_at": "2026-11-23T19:00:00.000Z", "peak_normalized_score": 3.0}}
    clients = dataclasses.replace(kafka.clients(),
                                  left_open=lambda s, topic: (left, {}) if topic == s.alerts_topic else ({}, {}))
    service = Service(settings, CollectorRegistry(), clients)
    service.connect()
    pumps, fans = service.fleet.pipelines
    assert fans.open_alerts_to_restore == left and pumps.open_alerts_to_restore == {}
    service.close()


def test_a_route_whose_model_cannot_be_loaded_stops_the_daemon_naming_the_route(tmp_path):
    from detector.artifact import ArtifactError
    settings = ServeSettings(routes=(Route("fans", str(tmp_path / "missing"), ("fan-*",)),), metrics_addr="127.0.0.1:0")
    with pytest.raises(ArtifactError, match=r"^route fans: .*missing: not a model directory"):
        Service(settings, CollectorRegistry(), MemoryKafka("r").clients())


@pytest.mark.slow
def test_records_without_a_key_are_routed_by_their_asset_and_undecodable_ones_say_why(plant):
    from detector.fleet import Fleet
    from detector.metrics import ServiceMetrics
    from detector.pipeline import Record
    _, settings, _ = plant
    registry = CollectorRegistry()
    fleet = Fleet(settings, ServiceMetrics(CollectorRegistry()), registry)

    def rec(offset, value, key=None):
        return Record("r", 0, offset, key, value, T0)

    fan = json.dumps({"asset": "fan-3", "ts": T0, "values": {"x": 0.0, "y": 0.0, "z": 0.0}}).encode()
    valve = json.dumps({"asset": "valve-2", "ts": T0, "values": {"a": 0.0}}).encode()
    result = fleet.finish(fleet.submit([rec(0, fan), rec(1, b"{not json"), rec(2, valve), rec(3, b"[]", b"fan-4")],
                                       {}, T0))
    assert sorted((dl.record.offset, dl.reason) for dl in result.dead_letters) == \
        [(1, "invalid_json"), (2, "no_model"), (3, "not_an_object")]
    assert registry.get_sample_value("vigil_readings_consumed_total", {"model": "fans"}) == 1
    assert result.offsets == {("r", 0): 4}
    assert len([m for m in result.messages if m[0] == "vigil.dlq"]) == 3


def test_the_labels_topic_must_be_a_topic_of_its_own():
    with pytest.raises(SettingsError, match="labels_topic: 'vigil.readings' is also the readings"):
        load_settings({"model": "/m", "labels_topic": "vigil.readings"}, {}, None)
    assert load_settings({"model": "/m", "labels_topic": ""}, {}, None).labels_topic == ""
