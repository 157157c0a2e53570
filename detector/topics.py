"""Reading a time range of a Kafka topic from start to (then) end, without a consumer group.

Used by `vigil retrain` (recent readings and alerts) and by `vigil serve` at start-up (the
alerts a previous daemon left open).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

POLL_MS = 500


class SourceError(Exception):
    """The topic cannot be read (missing topic, unreachable broker)."""


class MissingTopic(SourceError):
    """The topic does not exist (yet: Kafka makes a topic on its first record)."""


def read_records(consumer_options: dict, topic: str, since_ms: int, until_ms: int,
                 progress: Callable[[int], None] | None = None) -> Iterator:
    """Every record of `topic` with since_ms <= Kafka timestamp < until_ms, up to the end
    offsets at the time of the call (the topic may keep growing meanwhile)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **consumer_options)
    except KafkaError as e:
        raise SourceError(f"cannot reach Kafka at {consumer_options.get('bootstrap_servers')}: {e}") from None
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise MissingTopic(f"topic {topic!r} does not exist on {consumer_options.get('bootstrap_servers')}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.offsets_for_times({tp: since_ms for tp in tps})
        todo = {}
        for tp in tps:
            found = starts.get(tp)
            if found is not None and found.offset < ends[tp]:
                consumer.seek(tp, found.offset)
                todo[tp] = ends[tp]
        count = 0
        while todo:
            batches = consumer.poll(timeout_ms=POLL_MS)
            for tp, records in batches.items():
                if tp not in todo:
                    continue
                for record in records:
                    if record.offset >= todo[tp]:
                        break
                    if since_ms <= record.timestamp < until_ms:
                        count += 1
                        yield record
                if consumer.position(tp) >= todo[tp]:
                    del todo[tp]
                    consumer.pause(tp)
            if progress is not None:
                progress(count)
    finally:
        consumer.close()
