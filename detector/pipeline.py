"""The daemon's processing of one micro-batch of records, independent of Kafka.

record -> decoded readings -> per-asset window -> padded batch -> jitted scoring ->
alert events + metrics. The Kafka wrapper (detector.service) produces what this
returns and commits the offsets only after that.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from detector.alerts import AlertEvent, AlertPolicy, AlertTracker
from detector.artifact import TrainedModel
from detector.messages import MAX_MESSAGE_BYTES, BadMessage, Decoder, Message
from detector.metrics import ServiceMetrics
from detector.scoring import top_sensors
from detector.windows import AssetWindows


@dataclass(frozen=True)
class Record:
    """What the pipeline needs of a Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = -1
    headers: tuple = ()


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    reason: str
    detail: str


@dataclass
class BatchResult:
    alerts: list[AlertEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    scored: int = 0
    scores: list[dict] = field(default_factory=list)  # one per scored window, when Pipeline.emit_scores


class Pipeline:
    def __init__(self, model: TrainedModel, metrics: ServiceMetrics, policy: AlertPolicy = AlertPolicy(),
                 max_assets: int = 10_000, idle_seconds: float = 3600.0, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.metrics, self.policy = metrics, policy
        self.max_assets, self.idle_seconds = max_assets, idle_seconds
        self.max_message_bytes = max_message_bytes
        self.open_alerts_to_restore: dict[str, dict] = {}  # asset -> last event, taken up when the asset is seen
        self.emit_scores = False                            # fill BatchResult.scores
        self.alerts = AlertTracker(policy, model.threshold.value, model.version)
        self._install(model)

    def _install(self, model: TrainedModel) -> None:
        previous = getattr(self, "model", None)
        scorer = model.scorer()
        for size in scorer.buckets:  # compile every batch shape before serving; a failure changes nothing
            scorer(np.zeros((size, model.config.window, len(model.sensors)), np.float32))
        self.model, self.scorer = model, scorer
        self.decoder = Decoder(model.sensors, self.max_message_bytes)
        same_shape = previous is not None and previous.sensors == model.sensors and \
            previous.config.window == model.config.window
        if not same_shape:
            self.windows = AssetWindows(model.config.window, len(model.sensors), self.max_assets)
        self.threshold = np.float32(model.threshold.value)
        self.alerts.set_model(model.threshold.value, model.version)
        self.metrics.set_model(model.version, model.config.window, model.sensors, model.threshold.value,
                               _created_seconds(model))

    def swap_model(self, model: TrainedModel) -> None:
        """Serve another (already verified) model from the next batch on.

        Windows are kept when the sensors and window length are unchanged."""
        self._install(model)

    def process(self, records: Sequence[Record], replay_until: dict[tuple[str, int], int] | None = None,
                now_ms: int | None = None) -> BatchResult:
        """Process records in order. Records with offset < replay_until[(topic, partition)] are
        history re-read after an assignment: their readings (those newer than the asset's
        window) refill windows and are scored silently, to bring the alert state (k of n,
        open alerts) to where it was; they produce no events, dead letters or metrics."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        replay_until = replay_until or {}
        m = self.metrics
        result = BatchResult()
        assets, times, windows, sources, silent = [], [], [], [], []
        messages = readings = unknown = 0
        last_timestamp = -1
        evicted = self.windows.evicted
        for record in records:
            tp = (record.topic, record.partition)
            result.offsets[tp] = record.offset + 1
            replay = record.offset < replay_until.get(tp, -1)
            messages += not replay
            try:
                message = self.decoder.decode(record.value, record.key, now_ms)
            except BadMessage as e:
                if not replay:
                    result.dead_letters.append(DeadLetter(record, e.reason, e.detail))
                continue
            if replay:
                message = self._unseen(message)
                if message is None:
                    continue
            else:
                readings += len(message.times)
                unknown += message.unknown_sensors
            ts = message.times.tolist()
            try:  # extend() refuses a first reading not newer than the asset's last one
                self._check_batch_order(message)
                full = self.windows.extend(message.asset, ts, message.values)
            except BadMessage as e:
                if not replay:
                    result.dead_letters.append(DeadLetter(record, e.reason, e.detail))
                continue
            if len(full):
                k = len(full)
                assets.extend([message.asset] * k)
                times.extend(ts[-k:])
                windows.append(full)
                sources.extend([record.timestamp_ms] * k)
                silent.extend([replay] * k)
            if not replay:
                last_timestamp = max(last_timestamp, record.timestamp_ms)
        m.messages.inc(messages)
        m.readings.inc(readings)
        if unknown:
            m.unknown_sensors.inc(unknown)
        if self.windows.evicted != evicted:
            m.assets_evicted.inc(self.windows.evicted - evicted)
        if last_timestamp > 0:
            m.last_message.set(last_timestamp / 1000)
        if windows:
            self._score(assets, times, np.concatenate(windows), sources, silent, result)
        for dl in result.dead_letters:
            m.dead_letters.labels(dl.reason).inc()
        m.assets.set(len(self.windows))
        m.open_alerts.set(self.alerts.open_alerts)
        return result

    @staticmethod
    def _check_batch_order(message) -> None:
        """Readings within one message must be strictly increasing in time."""
        times = message.times
        if times.size > 1:
            backwards = np.diff(times) <= 0
            if backwards.any():
                i = int(np.argmax(backwards))
                reason = "duplicate_time" if times[i + 1] == times[i] else "out_of_order"
                raise BadMessage(reason, f"asset {message.asset!r}: readings {i} and {i + 1} of the batch are not in time order")

    def _unseen(self, message: Message) -> Message | None:
        """The readings of a re-read message that are newer than the asset's window, if any."""
        last = self.windows.last_time(message.asset)
        if last is None:
            return message
        keep = message.times > last
        if not keep.any():
            return None
        return dataclasses.replace(message, times=message.times[keep], values=message.values[keep])

    def _score(self, assets, times, windows, sources, silent, result: BatchResult) -> None:
        """Score the windows; every row feeds the alert state, only live rows (not silent:
        re-read history) produce events, scores and metrics."""
        m = self.metrics
        t0 = time.perf_counter()
        scores = self.scorer(windows)
        m.batch_seconds.observe(time.perf_counter() - t0)
        done = time.time()
        normalized = scores.score / self.threshold
        live = np.logical_not(silent)
        result.scored = int(live.sum())
        m.scored.inc(result.scored)
        m.normalized_hist.observe_many(normalized[live])
        latest: dict[str, int] = {}
        names = self.model.sensors
        score_list, normalized_list = scores.score.tolist(), normalized.tolist()
        restore = self.open_alerts_to_restore
        for i, (asset, ts) in enumerate(zip(assets, times)):
            if asset in restore:
                self.alerts.restore(restore.pop(asset))
            event = self.alerts.observe(asset, ts, score_list[i], normalized_list[i],
                                        lambda i=i: top_sensors(scores.contributions[i:i + 1], scores.score[i:i + 1],
                                                                names)[0])
            if silent[i]:
                continue
            latest[asset] = i
            if event is not None:
                result.alerts.append(event)
                m.alert_events.labels(event.type).inc()
        if self.emit_scores:
            version = self.model.version
            result.scores.extend({"asset": a, "ts": t, "score": sc, "normalized_score": n, "model_version": version}
                                 for a, t, sc, n, quiet in zip(assets, times, score_list, normalized_list, silent)
                                 if not quiet)
        if not latest:
            return
        rows = list(latest.values())
        shares = (scores.contributions[rows] / np.where(scores.score[rows] > 0, scores.score[rows], 1.0)[:, None]).tolist()
        for (asset, i), asset_shares in zip(latest.items(), shares):
            m.asset_score.labels(asset).set(score_list[i])
            m.asset_normalized.labels(asset).set(normalized_list[i])
            m.asset_alert_open.labels(asset).set(1 if self.alerts.is_open(asset) else 0)
            m.set_shares(asset, names, asset_shares)
            reference = sources[i] if sources[i] > 0 else times[i]
            m.latency.observe(max(done - reference / 1000, 0.0))

    def expire_idle(self) -> list[str]:
        """Drop assets without a reading for idle_seconds (windows, alert state, labels);
        an asset with an open alert is kept."""
        gone = [a for a in self.windows.idle(self.idle_seconds) if not self.alerts.is_open(a)]
        for asset in gone:
            self.windows.forget(asset)
            self.alerts.forget(asset)
            self.metrics.forget_asset(asset, self.model.sensors)
        self.metrics.assets.set(len(self.windows))
        return gone


def _created_seconds(model: TrainedModel) -> float | None:
    """The model's creation time (config.json created_at) as unix seconds, if known."""
    try:
        return datetime.fromisoformat(model.metadata["created_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None
