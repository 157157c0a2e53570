"""An in-memory Kafka for running Service.run() in a unit test: one topic's partitions, a
consumer group's committed offsets, and what was produced. Hooks let a test act at the
n-th poll (a rebalance, a SIGTERM, a model swap) or make deliveries fail."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from detector.pipeline import Record
from detector.restore import left_open
from detector.service import KafkaClients


class Future:
    def __init__(self, ok: bool):
        self.ok, self.is_done = ok, True

    def failed(self) -> bool:
        return not self.ok


@dataclass
class MemoryKafka:
    topic: str
    partitions: int = 1
    log: dict[int, list[Record]] = field(default_factory=dict)
    committed: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)
    produced: list[tuple[str, bytes | None, bytes, list | None]] = field(default_factory=list)
    fail_sends: int = 0            # the next this many sends are not acknowledged
    on_poll: Callable[[int], None] = lambda n: None  # called before the n-th poll (from 1)
    polls: int = 0
    consumer: MemoryConsumer | None = None

    def append(self, value: bytes, key: bytes | None = None, partition: int = 0, timestamp: int = -1) -> None:
        records = self.log.setdefault(partition, [])
        records.append(Record(self.topic, partition, len(records), key, value, timestamp))

    def clients(self) -> KafkaClients:
        def consumer(settings):
            self.consumer = MemoryConsumer(self, settings.batch_size)
            return self.consumer
        # what a previous daemon left open: read back from what was produced, as from Kafka
        return KafkaClients(lambda s: None, consumer, lambda s: MemoryProducer(self),
                            lambda s, topic: left_open(self.messages(topic)))

    def messages(self, topic: str) -> list[dict]:
        return [json.loads(v) for t, _, v, _ in self.produced if t == topic]


class MemoryProducer:
    def __init__(self, kafka: MemoryKafka):
        self.kafka = kafka

    def send(self, topic, key=None, value=None, headers=None):
        if self.kafka.fail_sends:
            self.kafka.fail_sends -= 1
            return Future(False)
        self.kafka.produced.append((topic, key, value, headers))
        return Future(True)

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


class MemoryConsumer:
    def __init__(self, kafka: MemoryKafka, batch_size: int):
        self.kafka, self.batch_size = kafka, batch_size
        self.listener = None
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.closed = False

    # -- the group
    def subscribe(self, topics, listener=None):
        self.listener = listener
        self.assign_all()

    def assign_all(self) -> None:
        """A (re)assignment of every partition, as the group does after a rebalance: positions
        go back to the committed offsets, and the listener hears of it at the next poll."""
        self.assigned = {TopicPartition(self.kafka.topic, p) for p in range(self.kafka.partitions)}
        for tp in self.assigned:
            c = self.kafka.committed.get(tp)
            self.positions[tp] = c.offset if c is not None else 0
        self._announce = set(self.assigned)

    def assignment(self):
        return set(self.assigned)

    def partitions_for_topic(self, topic):
        return set(range(self.kafka.partitions))

    # -- reading
    def poll(self, timeout_ms=0, max_records=None):
        self.kafka.polls += 1
        self.kafka.on_poll(self.kafka.polls)
        if self._announce and self.listener is not None:
            announce, self._announce = self._announce, set()
            self.listener.on_partitions_assigned(announce)
        out, room = {}, max_records or self.batch_size
        for tp in sorted(self.assigned):
            records = self.kafka.log.get(tp.partition, [])[self.positions[tp]:self.positions[tp] + room]
            if records:
                out[tp] = records
                self.positions[tp] += len(records)
                room -= len(records)
        return out

    def seek(self, tp, offset):
        self.positions[tp] = offset

    def position(self, tp):
        return self.positions[tp]

    def end_offsets(self, partitions, timeout_ms=None):
        return {tp: len(self.kafka.log.get(tp.partition, [])) for tp in partitions}

    def offsets_for_times(self, times, timeout_ms=None):
        from kafka.structs import OffsetAndTimestamp

        out = {}
        for tp, t in times.items():
            records = self.kafka.log.get(tp.partition, [])
            first = next((r for r in records if r.timestamp >= t), None)
            out[tp] = None if first is None else OffsetAndTimestamp(first.offset, first.timestamp, -1)
        return out

    # -- offsets
    def commit(self, offsets, timeout_ms=None):
        self.kafka.committed.update(offsets)

    def committed(self, tp, metadata=False, timeout_ms=None):
        return self.kafka.committed.get(tp)

    def close(self, autocommit=False):
        self.closed = True
