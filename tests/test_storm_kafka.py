"""An alert storm through `vigil serve` on the real local broker, across a restart."""

import json

import pytest

from tests.kafka_util import Serve, broker_reachable, train_tiny_model, unique
from tests.test_serve_kafka import consume_all, fault_stream, produce, topic  # noqa: F401 (fixture)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
STORM = ["--storm-share", "0.5", "--storm-min-assets", "3", "--storm-end-share", "0.5"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    if not broker_reachable():
        pytest.fail("no Kafka broker: run deploy/kafka/broker start (scripts/test does)")
    return train_tiny_model(tmp_path_factory.mktemp("storm-model"))


def streams():
    """pump-1..3 with cavitation at rows 250-400 of 500, pump-4 and pump-5 normal."""
    out = {f"pump-{a}": fault_stream(f"pump-{a}") for a in (1, 2, 3)}
    out |= {f"pump-{a}": fault_stream(f"pump-{a}", fault=()) for a in (4, 5)}
    return out


def interleave(per_asset, start, stop):
    return [per_asset[a][i] for i in range(start, stop) for a in sorted(per_asset)]


def test_storm_starts_and_a_restarted_daemon_ends_it_under_the_same_id(model, topic, tmp_path):  # noqa: F811
    data, group = streams(), unique("g")
    produce(topic, interleave(data, 0, 330))
    serve = Serve(model, topic, group, extra=STORM, log_path=tmp_path / "serve-1.log")
    serve.wait_for(lambda m: m.get('vigil_alert_storm{scope="fleet"}') == 1, what="a storm")
    serve.wait_for(lambda m: m.get("vigil_readings_consumed_total", 0) >= 5 * 330, what="all readings")
    assert serve.terminate() < 10
    produce(topic, interleave(data, 330, 500))
    serve = Serve(model, topic, group, extra=STORM, log_path=tmp_path / "serve-2.log")
    serve.wait_for(lambda m: m.get("vigil_readings_consumed_total", 0) >= 5 * 170, what="the rest")
    serve.wait_for(lambda m: m.get('vigil_alert_storm{scope="fleet"}') == 0, what="the storm to end")
    assert serve.terminate() < 10
    events = [json.loads(r.value) for r in consume_all(serve.topics["alerts"], expect=1000, timeout=10)]
    storms = [e for e in events if e["type"].startswith("storm_")]
    assert [e["type"] for e in storms] == ["storm_start", "storm_end"], storms
    start, end = storms
    assert start["storm_id"] == end["storm_id"] and start["assets_alerting"] == 3
    assert set(start["first_assets"]) == {"pump-1", "pump-2", "pump-3"}
    opened = {e["asset"] for e in events if e["type"] == "open"}
    assert opened == {"pump-1", "pump-2", "pump-3"}
