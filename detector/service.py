"""`vigil serve`: the Kafka consumer loop around the pipeline.

poll a micro-batch -> pipeline.submit (decode, windows, scoring starts) -> finish the
previous batch (alerts, hand alerts and dead letters to the producer) -> commit the offsets
of the batches whose messages are acknowledged by now -> poll the next one while this one is
scored. The loop does not wait for acknowledgements (one round trip to the broker per batch,
a third of the loop's time at 5,000 readings/s on a busy 2-core machine); offsets are
committed only once everything their records caused is acknowledged (at-least-once), batch
by batch in order, and the loop waits when more than MAX_UNACKED_BATCHES are in flight.
Before a rebalance's rewind everything is acknowledged and committed; on assignment each
partition is rewound by `rewind_seconds` so that every asset's window is full again
before scoring resumes (the re-read records refill windows and the alert state, silently).
While the broker is away nothing is dropped: outgoing messages are sent again until
acknowledged, offsets are committed once it is back, /readyz says not ready.
SIGTERM/SIGINT: stop polling, finish the batch, commit, close.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from detector.fleet import Fleet, FleetBatch
from detector.kafka_client import client_options, preflight
from detector.metrics import Health, ServiceMetrics, serve_http
from detector.pipeline import BatchResult, Pipeline
from detector.restore import alerts_left_open
from detector.settings import ServeSettings, shadow_topic_of

log = logging.getLogger("vigil.serve")
LAG_INTERVAL = 5.0
BLOCK_MS = 5000  # longest a Kafka call may block the loop (then: broker unreachable, try again)
RECONNECT_MAX_MS = 2000  # back-off between reconnection attempts stays short: resume soon after an outage
IDLE_SWEEP_INTERVAL = 60.0
# kafka-python 3.0.12 loses a group assignment when a poll's timeout expires between the
# leader's assignment and the SyncGroup response of a rejoin it started because metadata
# changed (not because the group asked): the member then holds no partitions until the next
# metadata change, minutes later. A fresh daemon hit this when the topic's partitions arrived
# after its first join. So: the topic's metadata is fetched before the first join, and a
# daemon without partitions polls in long rounds, so that a join completes within one poll.
UNASSIGNED_POLL_MS = 1000
# The same client can also lose a rejoin it started while holding partitions (a poll with no
# time to wait, while a batch is scored): its commits then fail with RebalanceInProgressError
# and it is never assigned anything again (seen once in a test: the broker dropped the member
# 10 s later and the group stayed empty). A Vigil daemon completes a rebalance within seconds,
# so a consumer still rebalancing after this long, reading nothing meanwhile, is replaced by a
# new one that joins the group afresh (what it had not committed is read again).
STUCK_REBALANCE_SECONDS = 60.0


# Finished batches whose messages are on their way; beyond this many the loop waits for their
# acknowledgements (the broker is slow or away: do not read further ahead of what is delivered).
MAX_UNACKED_BATCHES = 8
# Acknowledged offsets are committed at most this often (a commit is a round trip to the broker
# that the loop waits for); before a rewind and on close, at once.
COMMIT_INTERVAL = 0.1


@dataclass(frozen=True)
class KafkaClients:
    """How the daemon reaches Kafka, each a function of the settings: the pre-flight check,
    the consumer and producer, and the alerts a previous daemon left open. kafka_clients()
    builds the real ones; tests pass in-memory stand-ins and run the whole loop."""

    preflight: Callable[[ServeSettings], None]
    consumer: Callable[[ServeSettings], KafkaConsumer]
    producer: Callable[[ServeSettings], KafkaProducer]
    left_open: Callable[[ServeSettings, str], tuple[dict[str, dict], dict[str, dict]]]  # (settings, topic)


def _producer(s: ServeSettings) -> KafkaProducer:
    # linger_ms 0: nothing waits for the acknowledgements any more (settle), so holding messages
    # back only delays them (+5 ms produce-to-alert at 5); a batch's messages are handed over
    # together and group up while a request is in flight
    return KafkaProducer(**client_options(
        s.kafka, bootstrap_servers=s.bootstrap_servers, acks="all", linger_ms=0, retries=2147483647,
        max_in_flight_requests_per_connection=5, client_id="vigil-serve", max_block_ms=BLOCK_MS,
        reconnect_backoff_max_ms=RECONNECT_MAX_MS))


def _consumer(s: ServeSettings) -> KafkaConsumer:
    return KafkaConsumer(**client_options(
        s.kafka, bootstrap_servers=s.bootstrap_servers, group_id=s.group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=s.batch_size, client_id="vigil-serve",
        session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=max(s.session_timeout_ms // 4, 100),
        reconnect_backoff_max_ms=RECONNECT_MAX_MS))


def kafka_clients() -> KafkaClients:
    """The real clients (kafka-python), with the settings' security."""
    return KafkaClients(lambda s: preflight(s.kafka, s.bootstrap_servers), _consumer, _producer, alerts_left_open)


@dataclass
class _Sent:
    """A finished batch's outgoing messages and the offsets to commit once all are acknowledged."""

    pending: list  # [((topic, key, value, headers), future or None)]
    offsets: dict  # TopicPartition -> OffsetAndMetadata


class _Rebalance(ConsumerRebalanceListener):
    """Notes assignments for the loop; the loop rewinds them after its next poll. Nothing is
    committed on revocation: the callbacks run inside poll(), where waiting for the producer's
    acknowledgements is not possible, and offsets are committed only once everything their
    records caused is acknowledged. What was processed but not committed yet (acknowledged
    offsets of the last COMMIT_INTERVAL, and up to MAX_UNACKED_BATCHES batches in flight) is
    read again by the partition's next owner: processed twice, its alert events keeping
    their ids (at-least-once)."""

    def __init__(self, service: Service):
        self.service = service

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        self.service.assigned_pending |= set(assigned)


class Service:
    def __init__(self, settings: ServeSettings, registry: CollectorRegistry | None = None,
                 clients: KafkaClients | None = None):
        self.settings = settings
        self.clients = clients or kafka_clients()
        self.registry = registry or CollectorRegistry()
        # the endpoint shows these with every route's and shadow's metrics (detector.fleet, metrics.Merged)
        self.metrics = ServiceMetrics(CollectorRegistry())
        self.health = Health()
        self._stop = threading.Event()
        self._processed: dict[TopicPartition, OffsetAndMetadata] = {}
        self._replay_until: dict[tuple[str, int], int] = {}
        self._broker_lost_at = 0.0
        self._rebalancing_since = 0.0  # time.monotonic() of the first commit refused for a rebalance in progress
        self.assigned_pending: set[TopicPartition] = set()
        self._scoring: FleetBatch | None = None  # submitted to the pipelines, not finished yet
        self._unacked: deque[_Sent] = deque()  # finished, messages sent, offsets not committed yet
        self._next_commit = 0.0  # time.monotonic() before which settle() leaves acknowledged offsets for later
        self._frozen = False  # run() moved the start-up heap out of the garbage collector's way
        self._lag_series: set[TopicPartition] = set()  # partitions with a vigil_consumer_lag series
        self.fleet = Fleet(settings, self.metrics, self.registry)
        self.health.model_loaded = True
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self.http = None

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline of a daemon that serves one model (without routes)."""
        if not self.fleet.single:
            raise AttributeError("a daemon with routes has a pipeline per route: Service.fleet.pipelines")
        return self.fleet.pipelines[0]

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self, *_args) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def connect(self) -> None:
        """Raises KafkaAccessError (refused certificate or credentials, wrong protocol for the
        listener) before anything starts, KafkaError when the brokers cannot be reached."""
        s = self.settings
        self.clients.preflight(s)
        self.http = serve_http(s.metrics_addr, self.registry, self.health)
        self.producer = self.clients.producer(s)
        self.fleet.take_up(*self.clients.left_open(s, s.alerts_topic))
        if self.fleet.shadowing:
            shadow_topic = shadow_topic_of(s.alerts_topic, s.shadow_alerts_topic)
            self.fleet.take_up_shadows(*self.clients.left_open(s, shadow_topic))
        self._join()
        self._broker(True)
        served = f"serving {self.fleet.describe()}" if not self.fleet.single else \
            f"serving {self.fleet.describe()} from {s.model}"
        log.info("%s; on topic %s (group %s); metrics on http://%s/metrics", served, s.topic, s.group, s.metrics_addr)

    def _join(self) -> None:
        """A new consumer in the group, subscribed to the readings (and labels) topic."""
        s = self.settings
        self.consumer = self.clients.consumer(s)
        self.consumer.subscribe([s.topic] + ([s.labels_topic] if s.labels_topic else []), listener=_Rebalance(self))
        try:  # see UNASSIGNED_POLL_MS: the first join should already know every partition
            self.consumer.partitions_for_topic(s.topic)
        except KafkaError as e:
            log.debug("partitions of %s not known yet: %s", s.topic, e)

    def _rejoin_if_stuck(self, now: float) -> None:
        """See STUCK_REBALANCE_SECONDS: replace a consumer whose rebalance never completes."""
        if not self._rebalancing_since or now - self._rebalancing_since < STUCK_REBALANCE_SECONDS:
            return
        log.warning("the Kafka consumer has not completed a rebalance in %.0f s (commits refused, nothing "
                    "read): replacing it with a new member of the group; records not committed are read again",
                    now - self._rebalancing_since)
        self.complete()
        try:
            self.consumer.close(autocommit=False)
        except KafkaError as e:
            log.debug("closing the stuck consumer: %s", e)
        self._processed.clear()  # its partitions' next owner reads them again (at-least-once)
        self._rebalancing_since = 0.0
        self.assigned_pending = set()
        self._join()

    def run(self) -> None:
        """The loop; returns after stop() once the last batch is committed and clients closed."""
        if self.consumer is None:
            self.connect()
        self._freeze_heap()
        next_lag = next_sweep = time.monotonic()
        try:
            while not self._stop.is_set():
                self.health.beat()
                if self._scoring:  # while a batch is being scored, take only what has arrived already
                    wait_ms = 0
                else:
                    wait_ms = self.settings.max_wait_ms if self.consumer.assignment() else UNASSIGNED_POLL_MS
                try:
                    batch = self.consumer.poll(timeout_ms=wait_ms, max_records=self.settings.batch_size)
                except KafkaError as e:
                    self._broker(False, f"poll failed: {e}")
                    self.complete()
                    time.sleep(1)
                    continue
                if batch:
                    self._rebalancing_since = 0.0  # reading: not stuck (a refused commit is retried)
                if self.assigned_pending:
                    self.complete()
                    if not self.settle(wait=True):  # its offsets are committed before the rewind reads them
                        continue  # asked to stop while the broker is away
                    try:
                        rewound = self.rewind(self.assigned_pending)
                    except KafkaError as e:  # retried on the next round; this batch is read again then
                        self._broker(False, f"cannot rewind newly assigned partitions: {e}")
                        for tp, rs in batch.items():
                            self.consumer.seek(tp, rs[0].offset)
                        continue
                    self.assigned_pending = set()
                    batch = {tp: rs for tp, rs in batch.items() if tp not in rewound}  # re-read after the seek
                labels = self.settings.labels_topic
                records = [r for tp, rs in batch.items() if tp.topic != labels for r in rs]  # Record's fields
                label_records = [r for tp, rs in batch.items() if tp.topic == labels for r in rs]
                # this batch is scored while the previous one's alerts are handed to the producer
                # and the next one is polled (the scorer does not hold the GIL)
                scoring = self.fleet.submit(records, self._replay_until, labels=label_records) \
                    if records or label_records else None
                self.complete()
                self._scoring = scoring
                self.settle()  # commit what has been acknowledged meanwhile
                now = time.monotonic()
                if now >= next_lag:
                    self.update_lag()
                    next_lag = now + LAG_INTERVAL
                if now >= next_sweep:
                    self.complete()
                    self.fleet.expire_idle()
                    next_sweep = now + IDLE_SWEEP_INTERVAL
                if self.fleet.reloads:
                    self.check_reload()
                self._rejoin_if_stuck(now)
        finally:
            self.close()

    def _freeze_heap(self) -> None:
        """Move everything alive now (JAX, the model, the clients: a few hundred thousand objects
        kept for the life of the process) out of reach of the cyclic garbage collector, whose full
        passes over them otherwise stopped the loop for 150-350 ms every few seconds under a
        storm (the p99 of produce-to-alert latency). Objects made afterwards are collected as
        usual; a hot reload unfreezes, so that the old model can be collected, and freezes again."""
        gc.collect()
        gc.freeze()
        self._frozen = True

    def close(self) -> None:
        """Commit what is processed, close the clients and the HTTP endpoint (idempotent)."""
        self.health.stopping = True
        try:
            if self.consumer is not None:
                self.complete()
                self.settle(wait=True)
                self.commit()
                self.consumer.close(autocommit=False)
            if self.producer is not None:
                self.producer.close(timeout=5)
        finally:
            if self.http is not None:
                self.http.shutdown()
                self.http.server_close()
            self.consumer = self.producer = self.http = None
            log.info("stopped")

    # -- one batch ---------------------------------------------------------------------------
    def complete(self) -> BatchResult | None:
        """Finish the batch being scored, if any: its alerts, dead letters and scores are handed
        to the producer, and its offsets wait in line until they are acknowledged (settle)."""
        if self._scoring is None:
            return None
        batch, self._scoring = self._scoring, None
        result = self.fleet.finish(batch)
        self._unacked.append(_Sent(self.send(result.messages), result.commits))
        self.settle(wait=len(self._unacked) > MAX_UNACKED_BATCHES)
        return result

    def settle(self, wait: bool = False) -> bool:
        """Commit the offsets of the finished batches whose messages are all acknowledged, in the
        order the batches were finished. Without `wait` it does not block: a batch whose messages
        are still in flight stops the line until a later call. With `wait` (or once a message
        failed) it flushes and sends again until every batch is acknowledged, also while the
        broker is away; False only when asked to stop before that (those records are then not
        committed, so they are read again)."""
        try:
            while self._unacked:
                head = self._unacked[0]
                if not wait:
                    if any(f is not None and not f.is_done for _, f in head.pending):
                        break
                    wait = any(f is None or f.failed() for _, f in head.pending)  # retried below, blocking
                if wait and not self._await(head):
                    return False
                self._unacked.popleft()
                owned = self.consumer.assignment() if self.consumer is not None else None
                for tp, offset in head.offsets.items():
                    if owned is None or tp in owned:  # a partition given away meanwhile is its new owner's to commit
                        self._processed[tp] = offset
        finally:  # also offsets left by a deferred or failed commit
            if self._processed and (wait or time.monotonic() >= self._next_commit):
                self.commit()
        return True

    def send(self, messages: list[tuple]) -> list[tuple]:
        """Hand (topic, key, value, headers) messages to the producer without waiting:
        [(message, future)], future None where the producer refused it (no metadata within
        max_block_ms: the broker is away)."""
        sent, send = [], self.producer.send
        for message in messages:
            topic, key, value, headers = message
            try:
                sent.append((message, send(topic, key=key, value=value, headers=headers)))
            except KafkaError as e:
                self._broker(False, f"cannot produce to {topic}: {e}")
                sent.append((message, None))
        return sent

    def deliver(self, messages: list[tuple]) -> bool:
        """Produce (topic, key, value, headers) messages until every one is acknowledged. While
        the broker is away this keeps trying (reporting not-ready) instead of dropping any;
        returns False only when asked to stop before they could be delivered."""
        return self._await(_Sent(self.send(messages), {}))

    def _await(self, batch: _Sent) -> bool:
        """Flush until every message of `batch` is acknowledged, sending failed ones again."""
        while batch.pending:
            while not all(getattr(future, "is_done", False) for _, future in batch.pending):
                try:
                    self.producer.flush(timeout=BLOCK_MS / 1000)
                    break
                except KafkaError:
                    self._broker(False, "the producer cannot deliver")
                    self.health.beat()  # alive, waiting for the broker
                    if self._stop.is_set():
                        return False
            failed = [m for m, future in batch.pending if future is None or future.failed()]
            batch.pending = []
            if failed:
                self._broker(False, f"{len(failed)} message(s) not delivered; retrying")
                self.health.beat()
                if self._stop.wait(1.0):
                    batch.pending = [(m, None) for m in failed]  # still owed, should this be called again
                    return False
                batch.pending = self.send(failed)
        return True

    def commit(self) -> None:
        """Commit the offsets (and last record time) of everything processed so far. When the
        broker is away the offsets are kept and committed later (settle() retries each second)."""
        if not self._processed or self.consumer is None:
            return
        self._next_commit = time.monotonic() + COMMIT_INTERVAL
        try:
            self.consumer.commit(dict(self._processed), timeout_ms=BLOCK_MS)
        except CommitFailedError as e:
            log.warning("offsets not committed, the group rebalanced meanwhile (%s); the records since the "
                        "last commit will be processed again (their alert events keep their ids)", e)
        except RebalanceInProgressError:  # the broker answered: not an outage; the next poll completes the rebalance
            if not self._rebalancing_since:
                self._rebalancing_since = time.monotonic()
                log.info("offsets not committed yet: the consumer group is rebalancing (committed after it)")
            self._next_commit = time.monotonic() + 1.0  # settle() tries again
            return
        except KafkaError as e:
            self._broker(False, f"cannot commit offsets: {e}")
            self._next_commit = time.monotonic() + 1.0  # settle() tries again
            return
        else:
            self._broker(True)
        self._rebalancing_since = 0.0
        self._processed.clear()

    def _broker(self, up: bool, why: str = "") -> None:
        """Record whether the broker is reachable: /readyz, vigil_broker_up, one log line per change."""
        if up == self.health.broker_ok:
            return
        self.health.broker_ok = up
        self.metrics.broker_up.set(1 if up else 0)
        if up:
            if self._broker_lost_at:
                log.info("Kafka is reachable again after %.0f s", time.monotonic() - self._broker_lost_at)
        else:
            self._broker_lost_at = time.monotonic()
            log.warning("Kafka unreachable (%s); not ready until it is back, nothing is dropped", why)

    def rewind(self, assigned) -> set[TopicPartition]:
        """Seek each newly assigned partition back by rewind_seconds of record time before the
        committed offset; records before the committed offset only refill windows.
        Returns the partitions that were moved."""
        seek_to, moved = {}, set()
        for tp in assigned:
            committed = self.consumer.committed(tp, metadata=True, timeout_ms=BLOCK_MS)
            if committed is None or committed.offset is None or committed.offset <= 0:
                continue
            try:
                ts = int(json.loads(committed.metadata or "{}").get("ts", -1))
            except (ValueError, TypeError, AttributeError):
                ts = -1
            if ts <= 0:
                continue
            seek_to[tp] = (committed.offset, max(ts - int(self.settings.rewind_seconds * 1000), 0))
        if not seek_to:
            return moved
        found = self.consumer.offsets_for_times({tp: t for tp, (_, t) in seek_to.items()}, timeout_ms=BLOCK_MS)
        for tp, (committed, _) in seek_to.items():
            start = found.get(tp)
            offset = committed if start is None else min(start.offset, committed)
            if offset < committed:
                self.consumer.seek(tp, offset)
                moved.add(tp)
                self._replay_until[(tp.topic, tp.partition)] = committed
                log.info("partition %s-%d: re-reading offsets %d..%d to refill windows",
                         tp.topic, tp.partition, offset, committed - 1)
        return moved

    def update_lag(self) -> None:
        """vigil_consumer_lag of each assigned partition; a partition given to another member
        loses its series (a frozen value would look like a stuck consumer)."""
        try:
            assigned = self.consumer.assignment()
            for tp in self._lag_series - assigned:
                self.metrics.lag.remove(tp.topic, str(tp.partition))
            self._lag_series = set(assigned)
            if not assigned:
                return
            ends = self.consumer.end_offsets(list(assigned), timeout_ms=BLOCK_MS)
            for tp in assigned:
                position = self.consumer.position(tp)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(ends.get(tp, position) - position, 0))
        except KafkaError as e:
            self._broker(False, f"cannot read the end offsets: {e}")
        else:
            self._broker(True)

    def check_reload(self) -> None:
        """Serve a newly promoted model (detector.reload); the batch being scored is finished with
        the model that was asked first."""
        if self.fleet.check_reload(before_swap=self.complete) and self._frozen:
            gc.unfreeze()  # the old model may now be garbage: let the collector see it, once
            self._freeze_heap()
