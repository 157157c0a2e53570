"""The whole `vigil serve` loop (Service.run) against an in-memory Kafka (tests/memory_kafka.py):
delivery that fails, a rebalance, a stop and a model swap in the middle of the stream.
tests/test_serve_kafka.py and tests/test_outage.py do the same against a real broker."""

import json

import numpy as np
import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from detector.artifact import save
from detector.registry import set_current
from detector.service import Service
from detector.settings import ServeSettings
from tests.memory_kafka import MemoryKafka
from tests.test_pipeline import make_model

T0 = 1_795_460_400_000
FAULT_FROM = 120  # readings of p1 from here on are far outside normal


def _threshold() -> float:
    """Between the scores of normal (around 0) and faulty (50) windows of make_model's VAE."""
    scorer = make_model().scorer()
    normal = scorer(np.random.default_rng(0).normal(0, 0.1, (64, 4, 2)).astype(np.float32)).score
    faulty = scorer(np.full((1, 4, 2), 50.0, np.float32)).score
    assert faulty.min() > 10 * normal.max()
    return float(np.sqrt(normal.max() * faulty.min()))


@pytest.fixture
def stream(tmp_path):
    """A registry with v1 current (v2 waiting), and a topic of 300 readings of p1 and p2 (p1
    faulty from FAULT_FROM) with one malformed record."""
    threshold = _threshold()
    for version in ("v1", "v2"):
        save(make_model(threshold, version=version), tmp_path / "models" / version)
    set_current(tmp_path / "models", "v1")
    kafka = MemoryKafka("r")
    rng = np.random.default_rng(1)
    for i in range(150):
        for asset in ("p1", "p2"):
            value = 50.0 if asset == "p1" and i >= FAULT_FROM else float(rng.normal(0, 0.1))
            ts = T0 + i * 1000
            kafka.append(json.dumps({"asset": asset, "ts": ts, "values": {"a": value, "b": value}}).encode(),
                         asset.encode(), timestamp=ts)
        if i == 40:
            kafka.append(b"{not json", b"p9", timestamp=T0 + i * 1000)
    settings = ServeSettings(model=str(tmp_path / "models"), topic="r", metrics_addr="127.0.0.1:0", batch_size=37,
                             max_wait_ms=0, reload_seconds=0, rewind_seconds=60)
    return kafka, settings


def run(kafka: MemoryKafka, settings: ServeSettings, stop_after: int, at=None) -> Service:
    """Service.run() until `stop_after` polls (at(poll, service) acts before each poll)."""
    service = Service(settings, CollectorRegistry(), kafka.clients())

    def on_poll(n):
        if at is not None:
            at(n, service)
        if n >= stop_after:
            service.stop()

    kafka.on_poll = on_poll
    service.run()
    return service


def committed(kafka: MemoryKafka) -> int:
    c = kafka.committed.get(TopicPartition("r", 0))
    return -1 if c is None else c.offset


def alert_types(kafka: MemoryKafka, asset: str) -> list[str]:
    return [e["type"] for e in kafka.messages("vigil.alerts") if e.get("asset") == asset]


def test_the_loop_scores_alerts_dead_letters_and_commits_everything(stream):
    kafka, settings = stream
    service = run(kafka, settings, stop_after=40)
    assert committed(kafka) == len(kafka.log[0]) == 301
    assert alert_types(kafka, "p1")[:1] == ["open"] and alert_types(kafka, "p2") == []
    [dead] = [(k, v, h) for t, k, v, h in kafka.produced if t == "vigil.dlq"]
    assert dead[0] == b"p9" and dead[1] == b"{not json" and ("vigil.source", b"r/0/82") in dead[2]
    assert kafka.consumer.closed and service.health.stopping
    assert service.registry.get_sample_value("vigil_readings_consumed_total") == 300


@pytest.mark.slow
def test_undelivered_messages_are_sent_again_before_their_offsets_are_committed(stream, monkeypatch):
    kafka, settings = stream
    monkeypatch.setattr("detector.service.Service._await", _no_sleep_await(Service._await))
    commits_before_open = []

    def at(n, service):
        if n == 6:
            kafka.fail_sends = 3  # the open alert (reading 120, in the poll-7 batch) is lost at first
        if n > 6 and not alert_types(kafka, "p1"):
            commits_before_open.append(committed(kafka))

    service = run(kafka, settings, stop_after=40, at=at)
    assert kafka.fail_sends == 0  # three sends were lost
    assert alert_types(kafka, "p1").count("open") == 1  # sent again, delivered once
    assert committed(kafka) == 301
    fault_offset = 2 * FAULT_FROM + 1  # p1's first faulty reading (after the malformed record)
    assert all(c <= fault_offset for c in commits_before_open)  # not committed past an undelivered alert
    assert service.registry.get_sample_value("vigil_broker_up") == 1  # reported back once delivered


def _no_sleep_await(await_):
    def patched(self, batch):
        self._stop.wait = lambda timeout=None: False  # the retry pause, without sleeping
        return await_(self, batch)
    return patched


@pytest.mark.slow
def test_a_rebalance_mid_stream_rewinds_and_refills_silently(stream, caplog):
    kafka, settings = stream
    caplog.set_level("INFO", "vigil.serve")

    def at(n, service):
        if n == 8:  # the group takes the partition away and gives it back: the position goes back
            kafka.consumer.assign_all()  # to the committed offset, then rewind_seconds earlier

    service = run(kafka, settings, stop_after=40, at=at)
    assert "re-reading offsets" in caplog.text  # rewound by rewind_seconds before the committed offset
    assert committed(kafka) == 301
    assert alert_types(kafka, "p1").count("open") == 1  # re-read records raise nothing again
    assert len([1 for t, *_ in kafka.produced if t == "vigil.dlq"]) == 1
    assert service.registry.get_sample_value("vigil_readings_consumed_total") == 300  # re-reads are not counted


@pytest.mark.slow
def test_a_stop_mid_stream_commits_exactly_what_was_processed(stream):
    kafka, settings = stream
    run(kafka, settings, stop_after=4)
    position = kafka.consumer.positions[TopicPartition("r", 0)]
    assert 0 < committed(kafka) == position < 301
    # the next daemon goes on from there: nothing is lost, every alert is raised once
    run(kafka, settings, stop_after=40)
    assert committed(kafka) == 301 and alert_types(kafka, "p1").count("open") == 1


@pytest.mark.slow
def test_a_model_promoted_mid_stream_is_swapped_in(stream):
    kafka, settings = stream

    def at(n, service):
        if n == 5:
            set_current(settings.model, "v2")

    service = run(kafka, settings, stop_after=40, at=at)
    assert service.pipeline.model.version == "v2"
    assert service.registry.get_sample_value("vigil_model_reloads_total", {"result": "ok"}) == 1
    assert committed(kafka) == 301 and alert_types(kafka, "p1").count("open") == 1


def test_a_consumer_whose_rebalance_never_completes_is_replaced(stream, monkeypatch, caplog):
    """kafka-python can lose a rejoin: the consumer's commits are then refused with
    RebalanceInProgressError and it reads nothing, for good. That is not a broker outage
    (vigil_broker_up stays 1); after STUCK_REBALANCE_SECONDS a new consumer joins instead and
    everything is read, scored and committed."""
    import dataclasses
    import time

    from kafka.errors import RebalanceInProgressError

    import detector.service
    from tests.memory_kafka import MemoryConsumer

    class Stuck(MemoryConsumer):
        def poll(self, timeout_ms=0, max_records=None):
            if self.kafka.polls >= 3:  # two batches read, then the lost rejoin
                self.kafka.polls += 1
                self.kafka.on_poll(self.kafka.polls)
                return {}
            return super().poll(timeout_ms, max_records)

        def commit(self, offsets, timeout_ms=None):
            raise RebalanceInProgressError("Offset commit cannot be completed since the consumer is undergoing a "
                                           "rebalance")

    kafka, settings = stream
    made = []
    clients = kafka.clients()

    def consumer(s):
        kafka.consumer = (Stuck if not made else MemoryConsumer)(kafka, s.batch_size)
        made.append(kafka.consumer)
        return kafka.consumer

    monkeypatch.setattr(detector.service, "STUCK_REBALANCE_SECONDS", 0.3)
    service = Service(settings, CollectorRegistry(), dataclasses.replace(clients, consumer=consumer))
    started, broker_up = time.monotonic(), []

    def on_poll(n):
        broker_up.append(service.metrics.broker_up._value.get())
        if committed(kafka) == len(kafka.log[0]) or time.monotonic() - started > 20:
            service.stop()

    kafka.on_poll = on_poll
    caplog.set_level("INFO", logger="vigil.serve")
    service.run()
    assert len(made) == 2 and made[0].closed
    assert committed(kafka) == len(kafka.log[0]) == 301
    assert set(broker_up) == {1.0}
    assert "has not completed a rebalance" in caplog.text and "the consumer group is rebalancing" in caplog.text
    assert alert_types(kafka, "p1")[:1] == ["open"]
