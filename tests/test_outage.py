"""Broker outage: the broker is stopped for 30 s mid-stream and started again. The daemon
stays up, reports not-ready and vigil_broker_up 0 while it is away, resumes on its own within
30 s of its return, and loses nothing (every reading scored, every alert produced)."""

import os
import subprocess
import multiprocessing
import time

import pytest

from tests.kafka_util import ROOT, Serve, free_port, unique
from tests.soak import POLICY, check, committed_and_end, fleet_messages, make_topics, produce_paced, serve_flags
from tests.test_serve_kafka import model  # noqa: F401 (fixture)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
OUTAGE_SECONDS = 30


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory):
    """A broker instance of its own (other ports, state in a temporary directory): stopping
    it does not disturb the shared one."""
    port, controller = free_port(), free_port()
    env = os.environ | {"VIGIL_KAFKA_STATE_DIR": str(tmp_path_factory.mktemp("outage-broker")),
                        "VIGIL_KAFKA_PORT": str(port), "VIGIL_KAFKA_CONTROLLER_PORT": str(controller)}

    def broker(command):
        subprocess.run([str(ROOT / "deploy/kafka/broker"), command], env=env, check=True, capture_output=True)

    broker("start")
    yield f"127.0.0.1:{port}", broker
    broker("stop")


def test_broker_outage_is_ridden_out(model, own_broker, tmp_path):  # noqa: F811
    bootstrap, broker = own_broker
    assets, per_asset = 5, 500
    topics = make_topics(unique("outage"), partitions=3, bootstrap=bootstrap)
    messages = fleet_messages(assets, per_asset)
    serve = Serve(model, topics["topic"], unique("outage-group"),
                  [*serve_flags(topics), "--bootstrap-servers", bootstrap, "--log-level", "info"],
                  log_path=tmp_path / "serve.log")
    # the producer runs in a process of its own: kafka-python leaks sockets while the broker is away
    spawn = multiprocessing.get_context("spawn")
    done = spawn.Event()
    spawn.Process(target=produce_paced, args=(messages, topics["topic"], 40, done, bootstrap), daemon=True).start()
    serve.wait_for(lambda m: m.get("vigil_readings_scored_total", 0) > 200, what="scoring to start")

    broker("stop")
    stopped = time.monotonic()
    serve.wait_for(lambda m: m["vigil_broker_up"] == 0, timeout=OUTAGE_SECONDS, what="vigil_broker_up 0")
    assert serve.status("/readyz") == 503 and serve.status("/healthz") == 200
    time.sleep(max(OUTAGE_SECONDS - (time.monotonic() - stopped), 0))
    assert serve.proc.poll() is None, "the daemon died while the broker was away"
    scored = serve.metrics()["vigil_readings_scored_total"]

    broker("start")  # returns once the broker answers
    back = time.monotonic()
    serve.wait_for(lambda m: m["vigil_broker_up"] == 1 and m["vigil_readings_scored_total"] > scored,
                   timeout=60, what="scoring to resume")
    recovery = time.monotonic() - back
    assert serve.status("/readyz") == 200
    print(f"outage {OUTAGE_SECONDS} s; scoring resumed {recovery:.1f} s after the broker was back")
    assert recovery <= 30

    assert done.wait(120), "the producer did not finish"
    deadline = time.monotonic() + 120
    while (counts := committed_and_end(topics["topic"], serve.group, bootstrap))[0] != counts[1]:
        assert time.monotonic() < deadline, f"committed offsets {counts[0]} never reached the end {counts[1]}"
        time.sleep(1)
    serve.terminate(timeout=30)
    r = check(model, topics, messages, assets, per_asset, POLICY, *counts, bootstrap=bootstrap)
    assert r.missing_scores == 0, r.summary()
    assert r.reference_alerts and r.alerts_opened == r.reference_alerts, r.summary()
    log = (tmp_path / "serve.log").read_text()
    assert log.count("Kafka unreachable") == 1 and "Kafka is reachable again" in log, log[-3000:]

