"""How the daemon delivers and commits while the broker is away, with in-memory stand-ins
for the Kafka producer and consumer (tests/test_outage.py does it with a real broker)."""

import pytest
from kafka.errors import CommitFailedError, KafkaTimeoutError
from prometheus_client import CollectorRegistry

from detector.artifact import save
from detector.service import Service
from detector.settings import ServeSettings
from tests.memory_kafka import Future
from tests.test_pipeline import make_model


class FlakyProducer:
    """Refuses `outage` sends (no metadata), then fails `lost` deliveries, then delivers."""

    def __init__(self, outage=0, lost=0):
        self.outage, self.lost, self.delivered = outage, lost, []

    def send(self, topic, key=None, value=None, headers=None):
        if self.outage:
            self.outage -= 1
            raise KafkaTimeoutError("Failed to update metadata after 5.0 secs.")
        if self.lost:
            self.lost -= 1
            return Future(False)
        self.delivered.append((topic, key, value))
        return Future(True)

    def flush(self, timeout=None):
        pass


class FlakyConsumer:
    def __init__(self, errors):
        self.errors, self.committed = list(errors), []

    def commit(self, offsets, timeout_ms=None):
        if self.errors:
            raise self.errors.pop(0)
        self.committed.append(dict(offsets))


@pytest.fixture
def service(tmp_path, monkeypatch):
    save(make_model(), tmp_path / "model")
    monkeypatch.setattr("time.sleep", lambda s: None)
    return Service(ServeSettings(model=str(tmp_path / "model")), CollectorRegistry())


def test_messages_are_sent_again_until_delivered_and_the_broker_is_reported(service):
    service.producer = FlakyProducer(outage=2, lost=1)
    service._stop.wait = lambda timeout: False  # no real waiting between rounds
    messages = [("alerts", b"p1", b"open", None), ("alerts", b"p2", b"open", None), ("dlq", b"p3", b"x", None)]
    assert service.deliver(messages)
    assert sorted(service.producer.delivered) == sorted(m[:3] for m in messages)  # each one, once
    assert service.registry.get_sample_value("vigil_broker_up") == 0 and not service.health.broker_ok


def test_stop_while_the_broker_is_away_delivers_nothing_and_says_so(service):
    service.producer = FlakyProducer(outage=10**9)
    service.stop()
    assert not service.deliver([("alerts", b"p1", b"open", None)])


def test_offsets_are_kept_until_the_broker_is_back(service):
    service.consumer = FlakyConsumer([KafkaTimeoutError("commit timed out")])
    service._processed = {"tp": 5}
    service.commit()
    assert service._processed == {"tp": 5} and not service.health.broker_ok
    service._processed["tp"] = 9
    service.commit()
    assert service.consumer.committed == [{"tp": 9}] and not service._processed
    assert service.health.broker_ok and service.registry.get_sample_value("vigil_broker_up") == 1


def test_a_rebalance_during_the_outage_costs_a_re_read_not_the_process(service, caplog):
    service.consumer = FlakyConsumer([CommitFailedError("kicked out of the group")])
    service._processed = {"tp": 5}
    service.commit()
    assert not service._processed and "processed again" in caplog.text


class MovingConsumer:
    """Holds the partitions in `assigned`; every partition is 5 records behind its end."""

    def __init__(self, assigned):
        self.assigned = assigned

    def assignment(self):
        return set(self.assigned)

    def end_offsets(self, partitions, timeout_ms=None):
        return {tp: 105 for tp in partitions}

    def position(self, tp):
        return 100


def test_lag_series_follow_the_assignment(service):
    from kafka import TopicPartition

    def lag(p):
        return service.registry.get_sample_value("vigil_consumer_lag", {"topic": "t", "partition": str(p)})

    service.consumer = MovingConsumer({TopicPartition("t", 0), TopicPartition("t", 1)})
    service.update_lag()
    assert lag(0) == 5 and lag(1) == 5
    service.consumer.assigned = {TopicPartition("t", 1)}  # partition 0 went to another member
    service.update_lag()
    assert lag(0) is None and lag(1) == 5
    service.consumer.assigned = set()
    service.update_lag()
    assert lag(1) is None


# -- acknowledgements in the background: offsets committed in order, once acknowledged ---------------

class Pending:
    """A producer future that completes when the test says so."""

    def __init__(self):
        self.is_done, self.ok = False, None

    def resolve(self, ok=True):
        self.is_done, self.ok = True, ok

    def failed(self):
        return self.is_done and not self.ok


class SlowProducer:
    """Acknowledges only when told (ack_all), or on flush."""

    def __init__(self):
        self.sent, self.flushes = [], 0

    def send(self, topic, key=None, value=None, headers=None):
        future = Pending()
        self.sent.append(((topic, key, value), future))
        return future

    def ack_all(self, ok=True):
        for _, f in self.sent:
            if not f.is_done:
                f.resolve(ok)

    def flush(self, timeout=None):
        self.flushes += 1
        self.ack_all()


class OwningConsumer:
    def __init__(self, owned):
        self.owned, self.committed = set(owned), []

    def assignment(self):
        return set(self.owned)

    def commit(self, offsets, timeout_ms=None):
        self.committed.append(dict(offsets))


def sent_batch(service, n, offset, tp="tp0"):
    from detector.service import _Sent

    service._unacked.append(_Sent(service.send([("alerts", b"p", b"e", None)] * n), {tp: offset}))


def test_offsets_are_committed_once_acknowledged_in_order_without_waiting(service):
    service.producer, service.consumer = SlowProducer(), OwningConsumer({"tp0"})
    sent_batch(service, 2, 10)
    sent_batch(service, 1, 20)
    assert service.settle() and service.consumer.committed == [] and service.producer.flushes == 0
    service.producer.sent[2][1].resolve()  # the second batch's message: it waits for the first
    assert service.settle() and service.consumer.committed == []
    service.producer.sent[0][1].resolve()
    service.producer.sent[1][1].resolve()
    assert service.settle() and service.consumer.committed == [{"tp0": 20}] and not service._unacked
    assert service.producer.flushes == 0  # never waited


def test_a_failed_message_is_sent_again_before_its_offsets_are_committed(service):
    service.producer, service.consumer = SlowProducer(), OwningConsumer({"tp0"})
    service._stop.wait = lambda timeout: False
    sent_batch(service, 1, 10)
    service.producer.ack_all(ok=False)
    assert service.settle()
    assert len(service.producer.sent) == 2 and service.consumer.committed == [{"tp0": 10}]


def test_the_loop_waits_when_too_many_batches_are_unacknowledged(service):
    from detector.service import MAX_UNACKED_BATCHES

    service.producer, service.consumer = SlowProducer(), OwningConsumer({"tp0"})
    for i in range(MAX_UNACKED_BATCHES + 1):
        sent_batch(service, 1, i + 1)
        service.settle(wait=len(service._unacked) > MAX_UNACKED_BATCHES)
    assert service.producer.flushes == 1 and not service._unacked
    assert service.consumer.committed == [{"tp0": MAX_UNACKED_BATCHES + 1}]


def test_offsets_of_a_partition_given_away_are_left_to_its_new_owner(service):
    service.producer, service.consumer = SlowProducer(), OwningConsumer({"tp0"})
    sent_batch(service, 1, 10, tp="tp1")
    sent_batch(service, 1, 11, tp="tp0")
    service.producer.ack_all()
    assert service.settle() and service.consumer.committed == [{"tp0": 11}]


def test_stop_while_unacknowledged_commits_nothing_of_them(service):
    service.producer, service.consumer = FlakyProducer(outage=10**9), OwningConsumer({"tp0"})
    sent_batch(service, 1, 10)
    service.stop()
    assert not service.settle(wait=True) and service.consumer.committed == []
