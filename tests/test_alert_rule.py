"""One alert rule everywhere: `vigil serve` alerts by the serving model's persistence rule (the
one `vigil score` flags rows by) unless alert_k / alert_n override it, also after a hot reload.

The key test scores one series with an injected fault both ways, `vigil score` and the
daemon's pipeline fed one reading per Kafka-shaped record, and finds the same rows flagged.
"""

import csv
import dataclasses
import itertools
import json
import logging
import re

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.alerts import AlertPolicy, epoch_ms
from detector.artifact import load, save
from detector.datafiles import read_path
from detector.metrics import ServiceMetrics
from detector.offline import score_table
from detector.pipeline import Pipeline, Record
from detector.registry import promote
from detector.threshold import Persistence
from tests.test_cli import TINY as CLI_TINY
from tests.test_pipeline import make_model, rec
from vigil import synthetic
from vigil.cli import main

TINY = CLI_TINY + """[alerting]
persistence_k = 2    # not the daemon's old default (3 of 5): a daemon ignoring the model fails
persistence_n = 4
"""
ASSET = "pump-1"


def with_rule(model, k, n, version=None):
    return dataclasses.replace(model, persistence=Persistence(k, n), version=version or model.version)


def model_info(registry):
    [family] = [f for f in registry.collect() if f.name == "vigil_model_info"]
    [sample] = family.samples
    return sample.labels


# -- the rule in force: the model's, or the override ---------------------------------------------

@pytest.mark.parametrize("configured, rules, expected", [
    (AlertPolicy(), [(2, 4), (3, 6)], [("2 of 4 (model)", "model"), ("3 of 6 (model)", "model")]),
    (AlertPolicy(k=1, n=2), [(2, 4), (3, 6)],
     [("1 of 2 (override: alert_k, alert_n)", "override"), ("1 of 2 (override: alert_k, alert_n)", "override")]),
    (AlertPolicy(k=3), [(2, 4), (3, 6)],
     [("3 of 4 (override: alert_k)", "override"), ("3 of 6 (override: alert_k)", "override")]),
    (AlertPolicy(n=5), [(2, 4), (3, 6)],
     [("2 of 5 (override: alert_n)", "override"), ("3 of 5 (override: alert_n)", "override")]),
])
@pytest.mark.slow
def test_the_pipeline_follows_the_models_rule_unless_overridden(configured, rules, expected):
    registry = CollectorRegistry()
    base = make_model()
    pipeline = Pipeline(with_rule(base, *rules[0], version="v1"), ServiceMetrics(registry), configured)
    for i, ((k, n), (described, source)) in enumerate(zip(rules, expected)):
        if i:
            pipeline.swap_model(with_rule(base, k, n, version=f"v{i + 1}"))
        in_force = tuple(int(x) for x in described.split(" (")[0].split(" of "))
        assert (pipeline.policy.k, pipeline.policy.n) == in_force
        assert (pipeline.alerts.policy.k, pipeline.alerts.policy.n) == in_force
        assert pipeline.alert_rule == described
        assert model_info(registry) == {"version": f"v{i + 1}", "window": "4", "sensors": "a,b", "threshold": "1",
                                        "alert_k": str(in_force[0]), "alert_n": str(in_force[1]),
                                        "alert_rule_source": source, "interval_seconds": ""}


@pytest.mark.slow
def test_a_swap_to_a_model_the_lone_override_does_not_fit_changes_nothing():
    registry = CollectorRegistry()
    pipeline = Pipeline(with_rule(make_model(), 2, 4, version="v1"), ServiceMetrics(registry), AlertPolicy(k=3))
    info = model_info(registry)
    with pytest.raises(ValueError, match=re.escape("alert_k: 3 is more than the model's n (its rule is 1 of 2)")):
        pipeline.swap_model(with_rule(make_model(), 1, 2, version="v2"))
    assert pipeline.model.version == "v1" and (pipeline.policy.k, pipeline.policy.n) == (3, 4)
    assert model_info(registry) == info


@pytest.mark.slow
def test_the_alert_state_carries_over_a_swap_to_a_new_rule():
    """Each asset keeps its last windows over a swap: the first window after it opens the alert
    under the new model's 2 of 3 (with the window before the swap), which neither the old rule
    (3 of 3) nor a fresh start would."""
    pipeline = Pipeline(with_rule(make_model(), 3, 3), ServiceMetrics(CollectorRegistry()),
                        AlertPolicy(resolve_after=2, update_seconds=0))
    pipeline.emit_scores = True
    readings = [rec(i, "p1", i, a=50.0 if i == 5 else 0.0) for i in range(7)]  # windows 3..6 (of 4 readings)
    now = readings[-1].timestamp
    result = pipeline.process(readings[:6], now_ms=now)
    assert [s["normalized_score"] > 1 for s in result.scores] == [False, False, True]
    assert not result.alerts and not any(s["is_anomaly"] for s in result.scores)
    pipeline.swap_model(with_rule(make_model(), 2, 3, version="v2"))
    result = pipeline.process(readings[6:], now_ms=now)
    assert result.scores[0]["normalized_score"] > 1 and result.scores[0]["is_anomaly"]
    assert [e.type for e in result.alerts] == ["open"]


# -- the daemon: start-up and hot reload -----------------------------------------------------------

@pytest.fixture
def models(tmp_path):
    """A registry: v1 (rule 2 of 4) current, v2 (rule 3 of 6) and v3 (rule 1 of 2) ready."""
    reg = tmp_path / "models"
    for version, rule in (("v1", (2, 4)), ("v2", (3, 6)), ("v3", (1, 2))):
        save(with_rule(make_model(), *rule, version=version), reg / version)
    promote(reg, "v1")
    return reg


def serve(reg, **settings):
    from detector.service import Service
    from detector.settings import ServeSettings

    return Service(ServeSettings(model=str(reg), reload_seconds=0, **settings), CollectorRegistry())


@pytest.mark.parametrize("settings, first, second", [
    ({}, ("2", "4", "model"), ("3", "6", "model")),
    ({"alert_k": 1, "alert_n": 3}, ("1", "3", "override"), ("1", "3", "override")),
    ({"alert_n": 6}, ("2", "6", "override"), ("3", "6", "override")),
])
@pytest.mark.slow
def test_hot_reload_follows_the_new_models_rule_unless_overridden(models, settings, first, second, caplog):
    service = serve(models, **settings)
    labels = model_info(service.registry)
    assert (labels["alert_k"], labels["alert_n"], labels["alert_rule_source"]) == first
    promote(models, "v2")
    with caplog.at_level(logging.INFO, logger="vigil.serve"):
        service.check_reload()
    labels = model_info(service.registry)
    assert labels["version"] == "v2"
    assert (labels["alert_k"], labels["alert_n"], labels["alert_rule_source"]) == second
    assert (str(service.pipeline.policy.k), str(service.pipeline.policy.n)) == second[:2]
    line = [r.getMessage() for r in caplog.records if "now serving" in r.getMessage()]
    source = "model" if second[2] == "model" else "override: " + ", ".join(sorted(settings))
    assert line == [f"hot reload: now serving model v2 (threshold 1, alert rule {second[0]} of {second[1]} "
                    f"({source}), windows of 4 readings (the model does not record its sampling interval))"]


@pytest.mark.slow
def test_hot_reload_of_a_model_a_lone_override_does_not_fit_is_refused(models, caplog):
    service = serve(models, alert_k=3)  # v1: 3 of 4
    promote(models, "v3")                # rule 1 of 2: alert_k 3 does not fit
    with caplog.at_level(logging.ERROR, logger="vigil.serve"):
        service.check_reload()
    assert service.pipeline.model.version == "v1" and service.pipeline.alert_rule == "3 of 4 (override: alert_k)"
    assert service.registry.get_sample_value("vigil_model_reloads_total", {"result": "refused"}) == 1
    [record] = caplog.records
    assert record.getMessage() == ("hot reload refused for version v3: alert_k: 3 is more than the model's n (its rule "
                                   "is 1 of 2); set alert_n too, or alert_k <= 2; still serving v1")


def test_start_up_refuses_a_lone_override_that_does_not_fit_the_model(models, capsys):
    assert main(["serve", "--model", str(models / "v1"), "--alert-k", "5"]) == 2
    assert capsys.readouterr().err.strip() == ("vigil serve: error: alert_k: 5 is more than the model's n (its rule is "
                                               "2 of 4); set alert_n too, or alert_k <= 4")
    assert main(["serve", "--model", str(models / "v1"), "--alert-n", "1"]) == 2
    assert "alert_n: 1 is less than the model's k" in capsys.readouterr().err


# -- per window: the daemon's rule state is `vigil score`'s is_anomaly ------------------------------

@pytest.mark.parametrize("resolve_after", [30, 2])
def test_is_anomaly_of_the_scores_is_the_rule_per_asset_across_batches(resolve_after):
    """Many assets interleaved, bursts over threshold, batches of every size: each asset's
    is_anomaly sequence is Persistence.apply of its windows over threshold."""
    rng = np.random.default_rng(resolve_after)
    model = with_rule(make_model(), 2, 4)
    pipeline = Pipeline(model, ServiceMetrics(CollectorRegistry()),
                        AlertPolicy(resolve_after=resolve_after, update_seconds=0))
    pipeline.emit_scores = True
    assets = [f"p{i}" for i in range(6)]
    burst = {a: False for a in assets}
    records, offset = [], 0
    for i in range(400):
        for a in rng.permutation(assets).tolist():
            if rng.random() < 0.1:
                burst[a] = not burst[a]
            records.append(rec(offset, a, i, a=50.0 if burst[a] and rng.random() < 0.7 else 0.0))
            offset += 1
    scores = []
    sizes = itertools.cycle([1, 3, 17, 64, 5, 250])
    start = 0
    while start < len(records):
        size = next(sizes)
        result = pipeline.process(records[start:start + size], now_ms=records[-1].timestamp)
        assert not result.dead_letters
        scores += result.scores
        start += size
    for a in assets:
        mine = [s for s in scores if s["asset"] == a]
        assert [s["ts"] for s in mine] == sorted(s["ts"] for s in mine) and len(mine) == 400 - 3
        over = np.array([s["normalized_score"] > 1.0 for s in mine])
        assert over.any() and not over.all()
        np.testing.assert_array_equal([s["is_anomaly"] for s in mine], Persistence(2, 4).apply(over), err_msg=a)


# -- the key test: `vigil score` and `vigil serve` flag the same rows --------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model with the persistence rule 2 of 4, and a series with injected faults."""
    d = tmp_path_factory.mktemp("one-rule")
    synthetic.write_csv(d / "normal.csv", synthetic.generate(1200, seed=1)[0])
    (d / "tiny.toml").write_text(TINY)
    assert main(["train", "--data", str(d / "normal.csv"), "--out", str(d / "model"), "--config",
                 str(d / "tiny.toml"), "--quiet"]) == 0
    values, labels = synthetic.generate(700, seed=2, faults=(("cavitation", 250, 120), ("bearing", 480, 150)))
    return d / "model", synthetic.write_csv(d / "faulty.csv", values, labels)


def vigil_score(model_dir, data, out) -> np.ndarray:
    """is_anomaly of every row, from the CSV `vigil score` writes."""
    assert main(["score", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--quiet"]) == 0
    with open(out) as f:
        return np.array([row["is_anomaly"] == "1" for row in csv.DictReader(f)])


def messages(table, model):
    """One Kafka-shaped record per row (one reading per message, one asset, in order), carrying
    exactly the float32 values `vigil score` reads from the CSV."""
    values = table.select(model.sensors)
    stamps = np.rint(table.time * 1000).astype(np.int64).tolist()
    def value(ts, row):
        readings = {s: float(v) for s, v in zip(model.sensors, row.tolist()) if v == v}  # NaN: not sent
        return json.dumps({"asset": ASSET, "ts": ts, "values": readings}).encode()

    return [Record("vigil.readings", 0, i, ASSET.encode(), value(ts, row), ts)
            for i, (ts, row) in enumerate(zip(stamps, values))], stamps


def run_daemon(model, table, policy, batch_sizes):
    """The daemon's pipeline over the table's readings: per row, its normalised score and whether
    the alert rule holds (NaN / False before the first full window), and the alert events."""
    pipeline = Pipeline(model, ServiceMetrics(CollectorRegistry()), policy)
    pipeline.emit_scores = True
    records, stamps = messages(table, model)
    row = {ts: i for i, ts in enumerate(stamps)}
    normalized, flagged, alerts = np.full(table.rows, np.nan), np.zeros(table.rows, bool), []
    start, sizes = 0, itertools.cycle(batch_sizes)
    while start < len(records):
        size = next(sizes)
        result = pipeline.process(records[start:start + size], now_ms=stamps[-1])
        assert not result.dead_letters
        for s in result.scores:
            normalized[row[s["ts"]]], flagged[row[s["ts"]]] = s["normalized_score"], s["is_anomaly"]
        alerts += [(row[epoch_ms(e.time)], e.type) for e in result.alerts]
        start += size
    window = model.config.window
    assert np.isnan(normalized[:window - 1]).all() and not np.isnan(normalized[window - 1:]).any()
    return normalized, flagged, alerts


@pytest.mark.slow
@pytest.mark.parametrize("batch_sizes", [[1], [7, 64, 1, 250, 3]], ids=["one-per-batch", "mixed-batches"])
def test_the_daemon_flags_exactly_the_rows_vigil_score_flags(trained, tmp_path, batch_sizes):
    model_dir, data = trained
    model = load(model_dir)
    assert model.persistence == Persistence(2, 4)
    is_anomaly = vigil_score(model_dir, data, tmp_path / "scores.csv")
    [table] = read_path(data)
    offline = score_table(model, table)
    np.testing.assert_array_equal(is_anomaly, offline.flags)

    normalized, flagged, alerts = run_daemon(model, table, AlertPolicy(), batch_sizes)

    # the same scores (to float32 rounding) and the same windows over threshold
    w = model.config.window
    np.testing.assert_allclose(normalized[w - 1:], offline.normalized[w - 1:], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(normalized[w - 1:] > 1.0, offline.normalized[w - 1:] > 1.0)
    # the rows where the daemon's k-of-n rule holds are exactly the rows `vigil score` flags
    assert set(np.flatnonzero(flagged).tolist()) == set(np.flatnonzero(is_anomaly).tolist())
    # ... which would not be so under the daemon's old default rule (3 of 5): the test can tell
    over = np.nan_to_num(offline.normalized) > 1.0
    assert not np.array_equal(Persistence(3, 5).apply(over), is_anomaly)

    # alerts: each opens at the first row of a flagged run, and every flagged row is under an open alert
    starts = set(np.flatnonzero(is_anomaly & ~np.r_[False, is_anomaly[:-1]]).tolist())
    opens = [r for r, kind in alerts if kind == "open"]
    assert opens and set(opens) <= starts and opens[0] == min(starts)
    open_rows = np.zeros(table.rows, bool)
    for r, kind in alerts:
        if kind == "open":
            open_rows[r:] = True
        elif kind == "resolve":
            open_rows[r:] = False  # resolved at row r: it no longer covers r
    assert np.all(open_rows[is_anomaly])


@pytest.mark.slow  # trains a model or runs `vigil` through the CLI
def test_an_override_replaces_the_models_rule_in_the_daemon_only(trained, tmp_path):
    model_dir, data = trained
    model = load(model_dir)
    is_anomaly = vigil_score(model_dir, data, tmp_path / "scores.csv")
    [table] = read_path(data)
    normalized, flagged, _ = run_daemon(model, table, AlertPolicy(k=3, n=5), [50])
    expected = Persistence(3, 5).apply(np.nan_to_num(normalized) > 1.0)
    np.testing.assert_array_equal(flagged, expected)
    assert not np.array_equal(flagged, is_anomaly)


@pytest.mark.kafka
@pytest.mark.slow
def test_vigil_serve_on_kafka_flags_the_rows_vigil_score_flags(trained, tmp_path):
    """The same through a real broker: readings produced one per message, `vigil serve` with a
    scores topic, whose is_anomaly is compared with `vigil score`'s."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    from tests.kafka_util import BOOTSTRAP, Serve, broker_reachable, unique

    if not broker_reachable():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run deploy/kafka/broker start (scripts/test does)")
    model_dir, data = trained
    model = load(model_dir)
    [table] = read_path(data)
    is_anomaly = vigil_score(model_dir, data, tmp_path / "scores.csv")
    topic = unique("one-rule")
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(topic + suffix, 1, 1) for suffix in ("", ".alerts", ".dlq", ".scores")])
    admin.close()
    records, stamps = messages(table, model)
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    for r in records:
        producer.send(topic, key=r.key, value=r.value)
    producer.flush()
    producer.close()

    expected = table.rows - (model.config.window - 1)
    serve = Serve(model_dir, topic, unique("g"), extra=("--scores-topic", topic + ".scores", "--log-level", "info"),
                  log_path=tmp_path / "serve.log")
    try:
        m = serve.wait_for(lambda m: m.get("vigil_readings_scored_total", 0) >= expected, what="every window scored")
        [info] = [k for k in m if k.startswith("vigil_model_info{")]
        assert 'alert_k="2"' in info and 'alert_n="4"' in info and 'alert_rule_source="model"' in info
        consumer = KafkaConsumer(topic + ".scores", bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest",
                                 group_id=None, consumer_timeout_ms=5000)
        scores = [json.loads(r.value) for r in consumer]
        consumer.close()
        serve.terminate()
    finally:
        serve.cleanup()
    row = {ts: i for i, ts in enumerate(stamps)}
    assert sorted(row[s["ts"]] for s in scores) == list(range(model.config.window - 1, table.rows))
    assert {row[s["ts"]] for s in scores if s["is_anomaly"]} == set(np.flatnonzero(is_anomaly).tolist())
    assert "alert rule 2 of 4 (model)" in (tmp_path / "serve.log").read_text()
