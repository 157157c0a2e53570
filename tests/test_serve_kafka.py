"""`vigil serve` against the real local Kafka broker (started by scripts/test)."""

import json
import signal
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from tests.kafka_util import BOOTSTRAP, T0, TINY, Serve, broker_reachable, reading, train_tiny_model, unique
from vigil import synthetic
from vigil.cli import main

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

NORMAL = {"pump-1": 0, "pump-2": 0}


@pytest.fixture(scope="module", autouse=True)
def broker():
    if not broker_reachable():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run deploy/kafka/broker start (scripts/test does)")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("serve-model"))


@pytest.fixture
def topic():
    name = unique("readings")
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(name, 3, 1), NewTopic(name + ".alerts", 1, 1), NewTopic(name + ".dlq", 1, 1)])
    admin.close()
    return name


def produce(topic, messages) -> dict[bytes, tuple[int, int]]:
    """Send (key, value) pairs; returns (partition, first offset) of each key."""
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    futures = [(key, p.send(topic, key=key, value=value)) for key, value in messages]
    p.flush()
    p.close()
    first = {}
    for key, f in futures:
        meta = f.get(timeout=10)
        first.setdefault(key, (meta.partition, meta.offset))
    return first


def consume_all(topic, expect=1, timeout=30.0):
    c = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", group_id=None,
                      consumer_timeout_ms=1000)
    out, deadline = [], time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=500).values():
            out.extend(batch)
    c.close()
    return out


def fault_stream(asset, rows=500, fault=(("cavitation", 250, 150),), seed=3):
    values, labels = synthetic.generate(rows, seed=seed, faults=fault)
    return [(asset.encode(), reading(asset, i, dict(zip(synthetic.SENSORS, map(float, row)))))
            for i, row in enumerate(values)]


def committed_vs_end(topic, group):
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
    ends = c.end_offsets(tps)
    out = {tp.partition: (c.committed(tp) or 0, ends[tp]) for tp in tps}
    c.close()
    return out


def test_readings_in_alerts_out_metrics_scraped(model, topic, tmp_path):
    group = unique("g")
    produce(topic, fault_stream("pump-1") + fault_stream("pump-2", fault=()))
    serve = Serve(model, topic, group, log_path=tmp_path / "serve.log")
    m = serve.wait_for(lambda m: m.get("vigil_readings_scored_total", 0) >= 2 * (500 - 7), what="all readings scored")
    assert m["vigil_readings_consumed_total"] == 1000
    assert m['vigil_alert_events_total{type="open"}'] >= 1
    assert 'vigil_asset_normalized_score{asset="pump-1"}' in m
    assert any(k.startswith("vigil_model_info{") for k in m)
    assert serve.status("/healthz") == 200 and serve.status("/readyz") == 200
    alerts = [json.loads(r.value) for r in consume_all(serve.topics["alerts"])]
    opened = [a for a in alerts if a["type"] == "open"]
    assert opened and {a["asset"] for a in opened} == {"pump-1"}
    first = opened[0]
    for key in ("alert_id", "asset", "time", "score", "normalized_score", "threshold", "top_sensors", "model_version"):
        assert key in first
    assert first["normalized_score"] > 1 and first["top_sensors"][0]["sensor"] in synthetic.SENSORS
    assert T0 + 250_000 <= _ms(first["time"]) <= T0 + 420_000  # inside the injected fault
    # graceful shutdown commits everything, within 10 s
    assert serve.terminate() < 10
    assert all(c == e for c, e in committed_vs_end(topic, group).values())


def _ms(iso):
    from datetime import datetime
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_bad_input_goes_to_the_dead_letter_topic(model, topic, tmp_path):
    good = reading("pump-9", 0, {"flow": 1.0})
    bad = {
        "invalid_json": b"{not json",
        "not_an_object": b"[1,2,3]",
        "missing_asset": json.dumps({"ts": T0, "values": {}}).encode(),
        "missing_time": json.dumps({"asset": "pump-9", "values": {}}).encode(),
        "bad_value_type": json.dumps({"asset": "pump-9", "ts": T0 + 5000, "values": {"flow": "x"}}).encode(),
        "non_finite": b'{"asset": "pump-9", "ts": 1795460405000, "values": {"flow": NaN}}',
        "absurd_magnitude": json.dumps({"asset": "pump-9", "ts": T0 + 5000, "values": {"flow": 1e200}}).encode(),
        "time_out_of_range": json.dumps({"asset": "pump-9", "ts": 5, "values": {}}).encode(),
        "oversized": b'{"asset": "pump-9", "pad": "' + b"x" * 20_000 + b'"}',
    }
    produce(topic, [(b"pump-9", good)] + [(b"pump-9", v) for v in bad.values()]
            + [(b"pump-9", good)])  # a duplicate timestamp
    serve = Serve(model, topic, unique("g"), extra=("--max-message-bytes", "10000"), log_path=tmp_path / "serve.log")
    serve.wait_for(lambda m: sum(v for k, v in m.items() if k.startswith("vigil_dead_letters_total")) >= len(bad) + 1,
                   what="dead letters")
    records = consume_all(serve.topics["dlq"], expect=len(bad) + 1)
    reasons = {}
    for r in records:
        headers = dict(r.headers)
        reasons[headers["vigil.reason"].decode()] = r
        assert headers["vigil.source"].decode().startswith(topic + "/")
    assert set(reasons) == set(bad) | {"duplicate_time"}
    assert reasons["invalid_json"].value == bad["invalid_json"]  # the original bytes
    assert serve.proc.poll() is None  # never dies on data
    serve.terminate()


def test_kill_9_and_restart_processes_every_offset(model, topic, tmp_path):
    group = unique("g")
    assets = [f"pump-{i}" for i in range(6)]
    messages = [m for a in assets for m in fault_stream(a, rows=1000, fault=())]
    first = produce(topic, messages)
    # small batches (each committed) keep the first process busy long enough to be killed mid-stream
    serve = Serve(model, topic, group, extra=("--batch-size", "20"), log_path=tmp_path / "a.log")
    serve.wait_for(lambda m: m.get("vigil_readings_consumed_total", 0) >= 300, what="some progress")
    serve.kill()
    before = committed_vs_end(topic, group)
    assert sum(c for c, _ in before.values()) < len(messages)  # killed mid-stream
    # windows are refilled from history: every reading after the restart point is scored,
    # except the first W-1 of assets the first process never reached (window 8 here)
    fresh = sum(1 for a in assets if first[a.encode()][1] >= before[first[a.encode()][0]][0])
    assert fresh < len(assets)
    rest = sum(e - c for c, e in before.values())
    second = Serve(model, topic, group, log_path=tmp_path / "b.log")
    m = second.wait_for(lambda m: m.get("vigil_readings_consumed_total", 0) >= rest
                        and m.get("vigil_readings_scored_total", 0) >= rest - 7 * fresh, what="the rest scored")
    assert m["vigil_readings_consumed_total"] == rest
    assert m["vigil_readings_scored_total"] == rest - 7 * fresh
    second.terminate()
    assert all(c == e for c, e in committed_vs_end(topic, group).values())


def test_two_consumers_share_partitions_and_take_over(model, topic, tmp_path):
    group = unique("g")
    a = Serve(model, topic, group, log_path=tmp_path / "a.log")
    b = Serve(model, topic, group, log_path=tmp_path / "b.log")

    def partitions(s):  # of the readings topic (the daemon reads the labels topic too)
        return {k for k in s.metrics() if k.startswith("vigil_consumer_lag{") and f'topic="{topic}"' in k}

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        produce(topic, [(f"pump-{i}".encode(), reading(f"pump-{i}", int(time.time()), {"flow": 1.0}))
                        for i in range(12)])
        try:
            pa, pb = partitions(a), partitions(b)
        except OSError:
            pa = pb = set()
        if pa and pb and not pa & pb and len(pa | pb) == 3:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"partitions not split: {pa} / {pb}")
    a.terminate()
    b.wait_for(lambda m: len([k for k in m if k.startswith("vigil_consumer_lag{") and f'topic="{topic}"' in k]) == 3,
               timeout=120, what="takeover of all partitions")
    b.terminate()


def test_hot_reload_good_and_refused_versions(model, topic, tmp_path):
    import shutil

    from detector.registry import set_current

    registry = tmp_path / "registry"
    registry.mkdir()
    shutil.copytree(model, registry / "v1")
    set_current(registry, "v1")
    serve = Serve(registry, topic, unique("g"), extra=("--reload-seconds", "0.5"), log_path=tmp_path / "s.log")
    version1 = json.loads((model / "config.json").read_text())["version"]
    # the consumer has joined its group and holds partitions before models are swapped
    serve.wait_for(lambda m: any(f'version="{version1}"' in k for k in m)
                   and any(k.startswith("vigil_consumer_lag{") for k in m), what="v1 served, partitions assigned")
    # a good new version: retrain with another seed
    values, _ = synthetic.generate(1500, seed=5)
    synthetic.write_csv(tmp_path / "n.csv", values)
    (tmp_path / "tiny.toml").write_text(TINY)
    assert main(["train", "--data", str(tmp_path / "n.csv"), "--out", str(registry / "v2"),
                 "--config", str(tmp_path / "tiny.toml"), "--seed", "5", "--quiet"]) == 0
    version2 = json.loads((registry / "v2" / "config.json").read_text())["version"]
    set_current(registry, "v2")
    serve.wait_for(lambda m: any(f'version="{version2}"' in k for k in m)
                   and m['vigil_model_reloads_total{result="ok"}'] == 1, what="v2 served")
    # a tampered version is refused and v2 keeps serving
    shutil.copytree(registry / "v2", registry / "v3")
    (registry / "v3" / "params.msgpack").write_bytes(b"tampered")
    set_current(registry, "v3")
    m = serve.wait_for(lambda m: m['vigil_model_reloads_total{result="refused"}'] == 1, what="v3 refused")
    assert any(f'version="{version2}"' in k for k in m)
    # every sensor: a window with less than half of its cells observed is not scored
    produce(topic, [(b"pump-1", reading("pump-1", i, dict.fromkeys(synthetic.SENSORS, 1.0))) for i in range(10)])
    serve.wait_for(lambda m: m.get("vigil_readings_scored_total", 0) >= 3, what="still scoring")
    serve.terminate()


def test_sigint_also_stops_cleanly(model, topic, tmp_path):
    serve = Serve(model, topic, unique("g"), log_path=tmp_path / "s.log")
    serve.wait_for(lambda m: "vigil_readings_consumed_total" in m, what="start-up")
    t0 = time.monotonic()
    serve.proc.send_signal(signal.SIGINT)
    assert serve.proc.wait(timeout=10) == 0 and time.monotonic() - t0 < 10


PLANT = ("--assets", "2", "--seed", "12", "--period", "30d", "--start", "2026-06-01T00:00:00Z")


def _train_kind(kind: str, directory) -> str:
    """A tiny model of the first 40 minutes of the plant's KIND machines (PLANT), all normal."""
    from tests.kafka_util import TINY
    assert main(["simulate", "--kind", kind, *PLANT, "--duration", "40m", "--out", str(directory / kind), "--quiet"]) == 0
    (directory / "tiny.toml").write_text(TINY)
    assert main(["train", "--data", str(directory / kind), "--out", str(directory / f"{kind}-model"),
                 "--config", str(directory / "tiny.toml"), "--quiet"]) == 0
    return str(directory / f"{kind}-model")


def test_a_plant_of_pumps_and_fans_on_one_topic_alerts_under_each_kinds_model(topic, tmp_path):
    """Two machine types from `vigil simulate`, one daemon with two routes: a fault of either kind
    alerts under its own model; an asset of a third, unrouted type is dead-lettered no_model."""
    pumps, fans = _train_kind("pump", tmp_path), _train_kind("fan", tmp_path)
    config = tmp_path / "serve.toml"
    config.write_text(f'[[serve.routes]]\nname = "pumps"\nmodel = "{pumps}"\nassets = ["pump-*"]\n\n'
                      f'[[serve.routes]]\nname = "fans"\nmodel = "{fans}"\nassets = ["fan-*"]\n')
    # the same plant's first hour: the 40 normal minutes the models know, then a fault of each kind
    live = [*PLANT, "--duration", "60m", "--bootstrap-servers", BOOTSTRAP, "--topic", topic, "--speed", "max",
            "--quiet"]
    assert main(["simulate", "--kind", "pump", *live, "--fault", "pump-1:bearing@45m+10m"]) == 0
    assert main(["simulate", "--kind", "fan", *live, "--fault", "fan-2:bearing@45m+10m"]) == 0
    produce(topic, [(b"valve-1", reading("valve-1", i, {"position": 0.5})) for i in range(5)])
    group = unique("g")
    serve = Serve(None, topic, group, extra=["--config", str(config)], log_path=tmp_path / "serve.log")
    m = serve.wait_for(lambda m: m.get('vigil_readings_consumed_total{model="pumps"}', 0) >= 7200 and
                       m.get('vigil_readings_consumed_total{model="fans"}', 0) >= 7200 and
                       m.get('vigil_dead_letters_total{reason="no_model"}', 0) >= 5, what="every reading taken")
    assert m['vigil_dead_letters_total{reason="no_model"}'] == 5
    alerts = [json.loads(r.value) for r in consume_all(serve.topics["alerts"], expect=2)]
    opened = {(a["asset"], a["model"]) for a in alerts if a["type"] == "open"}
    assert opened == {("pump-1", "pumps"), ("fan-2", "fans")}
    fan_alert = next(a for a in alerts if a["asset"] == "fan-2")
    assert {s["sensor"] for s in fan_alert["top_sensors"]} <= set(synthetic.FAN.sensors)
    dead = consume_all(serve.topics["dlq"], expect=5)
    assert {r.key for r in dead} == {b"valve-1"} and all(dict(r.headers)["vigil.reason"] == b"no_model" for r in dead)
    assert serve.terminate() < 10
    assert all(c == e for c, e in committed_vs_end(topic, group).values())


def test_a_shadow_challenger_on_the_live_stream_is_compared_and_promoted_only_after_its_period(
        model, topic, tmp_path, capsys):
    """vigil models shadow -> the daemon scores the stream with it too (its alerts on the shadow
    topic only) -> vigil models compare -> vigil retrain --shadow-hours: waits, then promotes the
    shadow that opened no more alert episodes than the current model; the daemon hot-reloads it."""
    import dataclasses
    import shutil
    from datetime import datetime, timedelta, timezone

    from detector import registry as reg
    from detector.artifact import load, save

    registry = tmp_path / "registry"
    registry.mkdir()
    shutil.copytree(model, registry / "v1")
    reg.promote(registry, "v1")
    quiet = load(model)  # the challenger: the same network, a threshold it never reaches here
    quiet.threshold = dataclasses.replace(quiet.threshold, value=quiet.threshold.value * 1e4)
    quiet.version = ""
    save(quiet, registry / "v2")
    assert main(["models", "shadow", "v2", "--registry", str(registry)]) == 0
    produce(topic, fault_stream("pump-1") + fault_stream("pump-2", fault=()))
    serve = Serve(registry, topic, unique("g"), extra=("--reload-seconds", "0.5"), log_path=tmp_path / "s.log")
    m = serve.wait_for(lambda m: m.get("vigil_readings_scored_total", 0) >= 2 * (500 - 7) and
                       m.get('vigil_readings_scored_total{role="shadow"}', 0) >= 2 * (500 - 7), what="both scored")
    assert m['vigil_alert_events_total{type="open"}'] >= 1 and m['vigil_alert_events_total{role="shadow",type="open"}'] == 0
    assert {json.loads(r.value)["model_version"] for r in consume_all(serve.topics["alerts"])} == \
        {load(registry / "v1").version}  # the current model's only
    capsys.readouterr()
    compare = ["--registry", str(registry), "--bootstrap-servers", BOOTSTRAP, "--alerts-topic", serve.topics["alerts"]]
    assert main(["models", "compare", *compare, "--json", str(tmp_path / "c.json")]) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["current"]["alert_episodes"] >= 1 and c["shadow"]["alert_episodes"] == 0
    assert c["current_only"] == ["pump-1"] and c["shadow_version"] == "v2" and "alert episodes" in capsys.readouterr().out
    settle = ["retrain", *compare, "--topic", topic, "--since", "1h", "--shadow-hours", "1", "--quiet"]
    assert main(settle) == 4  # not an hour yet: waiting
    assert reg.current_version(registry) == "v1" and reg.shadow_version(registry) == "v2"
    # an hour and a half of shadowing, as if it had run that long
    history = (registry / "history").read_text()
    earlier = (datetime.now(timezone.utc) - timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (registry / "history").write_text("".join(earlier + line[20:] + "\n" if line.endswith(" shadow v2") else line + "\n"
                                              for line in history.splitlines()))
    assert main(settle) == 0
    assert reg.current_version(registry) == "v2" and reg.shadow_version(registry) is None
    v2 = load(registry / "v2").version
    serve.wait_for(lambda m: [k for k in m if k.startswith("vigil_model_info")] != [] and
                   all(f'version="{v2}"' in k and "role" not in k for k in m if k.startswith("vigil_model_info")),
                   what="v2 served, no shadow")
    serve.terminate()
