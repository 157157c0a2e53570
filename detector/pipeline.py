"""The daemon's processing of one micro-batch of records, independent of Kafka.

record -> decoded readings -> per-asset window -> padded batch -> jitted scoring ->
alert events + metrics. The Kafka wrapper (detector.service) produces what this
returns and commits the offsets only after that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import numpy as np
import orjson
from kafka.structs import OffsetAndMetadata, TopicPartition

from detector.alerts import AlertEvent, AlertPolicy, AlertTracker, epoch_ms
from detector.artifact import TrainedModel
from detector.messages import MAX_MESSAGE_BYTES, BadMessage, Decoded, Decoder, not_after
from detector.metrics import EVENT_TYPES, ServiceMetrics
from detector.offcondition import OffState
from detector.sampling import duration
from detector.scoring import Scores, top_shares
from detector.storm import FLEET, StormEvent, StormPolicy, StormTracker
from detector.windows import AssetWindows


class Record(NamedTuple):
    """What the pipeline needs of a Kafka record (kafka-python's ConsumerRecord has these fields too)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = -1  # Kafka timestamp, ms
    headers: tuple = ()


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    reason: str
    detail: str


@dataclass(frozen=True)
class Topics:
    """Where a batch's messages go: alert and storm events, dead letters, and (when named)
    every window's score."""

    alerts: str = "vigil.alerts"
    dlq: str = "vigil.dlq"
    scores: str = ""


@dataclass
class BatchResult:
    """Everything a batch produces. messages: (topic, key, value, headers) to produce, built
    from alerts, storms, dead letters and scores; commits: the offsets to commit once they
    are all acknowledged (TopicPartition -> OffsetAndMetadata with the last record's time,
    which a rewind after a rebalance starts from)."""

    alerts: list[AlertEvent] = field(default_factory=list)
    storms: list[StormEvent] = field(default_factory=list)  # storm_start / storm_end, also for the alerts topic
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    scored: int = 0
    scores: list[dict] = field(default_factory=list)  # one per scored window, when Pipeline.emit_scores
    messages: list[tuple] = field(default_factory=list)
    commits: dict = field(default_factory=dict)


@dataclass
class Submitted:
    """A batch decoded and handed to the scorer, waiting for finish()."""

    records: Sequence[Record]
    replay: np.ndarray           # [records] bool: re-read history
    result: BatchResult          # offsets and dead letters so far
    assets: list[str]            # of each window: grouped by asset, each asset's in time order
    times: np.ndarray            # [windows] int64: time of the window's last reading
    source: np.ndarray           # [windows] index of the record of the window's last reading
    scores: Callable[[], Scores] | None
    submitted: float             # time.perf_counter() when handed to the scorer
    switched_off: list = field(default_factory=list)  # (asset, time ms, re-read) of assets switched off
    first: np.ndarray = field(default_factory=lambda: np.empty(0, bool))  # [windows] the first of its run


def batch_offsets(last: dict[tuple[str, int], Record]) -> tuple[dict, dict]:
    """From each partition's last record of a batch: the next offsets ((topic, partition) -> offset)
    and what to commit (BatchResult.commits)."""
    offsets = {tp: r.offset + 1 for tp, r in last.items()}
    commits = {TopicPartition(*tp): OffsetAndMetadata(r.offset + 1, json.dumps({"ts": r.timestamp}), -1)
               for tp, r in last.items()}
    return offsets, commits


def dead_letter_message(topic: str, dl: DeadLetter) -> tuple:
    """The dead-letter topic's message of a record: its key, value and headers, plus vigil.reason,
    vigil.detail and vigil.source (topic/partition/offset)."""
    r = dl.record
    headers = [("vigil.reason", dl.reason.encode()), ("vigil.detail", dl.detail[:500].encode()),
               ("vigil.source", f"{r.topic}/{r.partition}/{r.offset}".encode()),
               *[(k, v) for k, v in (r.headers or ()) if isinstance(k, str) and isinstance(v, bytes)]]
    return topic, r.key, r.value if r.value is not None else b"", headers


class Pipeline:
    def __init__(self, model: TrainedModel, metrics: ServiceMetrics, policy: AlertPolicy = AlertPolicy(),
                 max_assets: int = 10_000, idle_seconds: float = 3600.0, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 storm: StormPolicy = StormPolicy(), topics: Topics = Topics(), name: str = ""):
        """policy: as configured; its k and n, where unset, follow the serving model's persistence
        rule (self.policy is the policy in force). topics: where the batches' messages go.
        name: the route this pipeline serves (detector.routes; "" when the daemon serves one
        model): its alert events and scores carry it, and it is the scope of its storms."""
        self.metrics, self.configured_policy, self.topics, self.name = metrics, policy, topics, name
        self.max_assets, self.idle_seconds = max_assets, idle_seconds
        self.max_message_bytes = max_message_bytes
        self.open_alerts_to_restore: dict[str, dict] = {}  # asset -> last event, taken up when the asset is seen
        self.off_assets: dict[str, float] = {}              # assets whose newest reading is off -> time.monotonic()
        self.emit_scores = bool(topics.scores)              # fill BatchResult.scores
        self.policy = policy.for_model(model.persistence)
        self.alerts = AlertTracker(self.policy, model.threshold.value, model.version)
        self.alerts.route = name
        self.storm = StormTracker(storm, name or FLEET)  # the fleet-level condition (detector.storm)
        metrics.storms.watch(self.storm)
        self._install(model)

    @property
    def alert_rule(self) -> str:
        """The alert rule in force and where it comes from, e.g. "3 of 5 (model)"."""
        return self.configured_policy.describe(self.model.persistence)

    @property
    def window_span(self) -> str:
        """The serving model's window in time, e.g. "32 x 1 s intervals (gaps over 32 s restart it)"."""
        grid, model = self.model.grid, self.model
        off = "" if model.off_condition is None else f"; off when {model.off_condition}"
        if grid.interval_ms is None:
            return f"{grid.window} readings (the model does not record its sampling interval){off}"
        return (f"{grid.window} x {duration(grid.interval_ms / 1000)} intervals "
                f"(gaps over {duration(grid.max_gap_ms / 1000)} restart it){off}")

    def _install(self, model: TrainedModel) -> None:
        policy = self.configured_policy.for_model(model.persistence)  # an override that does not fit: refused
        previous = getattr(self, "model", None)
        scorer = model.scorer()
        for size in scorer.buckets:  # compile every batch shape before serving; a failure changes nothing
            scorer(np.zeros((size, model.config.window, len(model.sensors)), np.float32))
        self.model, self.scorer = model, scorer
        self.decoder = Decoder(model.sensors, self.max_message_bytes)
        same_shape = previous is not None and previous.sensors == model.sensors and previous.grid == model.grid and \
            previous.config.window == model.config.window
        if not same_shape:
            self.windows = AssetWindows(model.config.window, len(model.sensors), self.max_assets, model.grid)
        self.threshold = np.float32(model.threshold.value)
        self.policy = policy
        self.alerts.set_model(model.threshold.value, model.version,
                              hold_ms=0.0 if model.off is None else model.off.hold_ms)
        self.off_state = None if model.off is None else OffState(model.off)
        if model.off is None:  # a model without an off condition: no asset counts as off
            self.off_assets.clear()
            self.metrics.assets_off.set(0)
        self.alerts.set_policy(policy)
        self.metrics.set_model(model.version, model.config.window, model.sensors, model.threshold.value,
                               _created_seconds(model), alert_k=policy.k, alert_n=policy.n,
                               alert_rule_source="override" if self.configured_policy.overrides else "model",
                               interval_seconds=model.interval_seconds)

    def take_up(self, open_alerts: dict[str, dict], storms: dict[str, dict]) -> None:
        """What a previous daemon left open on the alerts topic (detector.restore): its open alerts
        (asset -> last event, taken up when the asset is next seen) and the storm of this scope."""
        self.open_alerts_to_restore = dict(open_alerts)
        if self.storm.scope in storms:
            self.storm.restore(storms[self.storm.scope])

    def describe(self) -> str:
        """The start-up line's part about this pipeline's model."""
        return (f"model {self.model.version}, alert rule {self.alert_rule}, windows of {self.window_span}")

    def swap_model(self, model: TrainedModel) -> None:
        """Serve another (already verified) model from the next batch on; the alert rule follows
        its persistence rule where the configured policy does not override it. ValueError (and
        nothing changes) when an override does not fit the new model's rule.

        Windows are kept when the sensors, window length and time grid are unchanged."""
        self._install(model)

    def process(self, records: Sequence[Record], replay_until: dict[tuple[str, int], int] | None = None,
                now_ms: int | None = None) -> BatchResult:
        """Process records in order. Records with offset < replay_until[(topic, partition)] are
        history re-read after an assignment: their readings (those newer than the asset's
        window) refill windows and are scored silently, to bring the alert state (k of n,
        open alerts) to where it was; they produce no events, dead letters or metrics."""
        return self.finish(self.submit(records, replay_until, now_ms))

    def decode(self, records: Sequence[Record], now_ms: int) -> Decoded:
        """The records' readings of this model's sensors (submit() takes them as they are)."""
        return self.decoder.decode_batch([r.value for r in records], [r.key for r in records], now_ms)

    def reads_like(self, other: Pipeline) -> bool:
        """Whether other decodes records exactly as this pipeline does (same sensors, same size
        limit), so that one decode serves both (a route and its shadow)."""
        return (self.decoder.sensors, self.decoder.max_bytes) == (other.decoder.sensors, other.decoder.max_bytes)

    def submit(self, records: Sequence[Record], replay_until: dict[tuple[str, int], int] | None = None,
               now_ms: int | None = None, decoded: Decoded | None = None) -> Submitted:
        """The first half of process(): decode, refill windows, hand the windows to the scorer.
        The scorer works while the caller goes on (e.g. polls the next batch); finish() then
        takes the scores. Batches must be finished in the order they were submitted, and the
        model must not be swapped in between. decoded: the records already decoded (decode(),
        for this pipeline's own use: its times may be changed)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        replay_until = replay_until or {}
        m = self.metrics
        result = BatchResult()
        last = {(r.topic, r.partition): r for r in records}  # each partition's last record
        result.offsets, result.commits = batch_offsets(last)
        if replay_until:
            replay = np.array([r.offset < replay_until.get((r.topic, r.partition), -1) for r in records], bool)
        else:
            replay = np.zeros(len(records), bool)
        live = ~replay
        if decoded is None:
            decoded = self.decode(records, now_ms)
        refused = dict(decoded.errors)
        keep = self._in_order(decoded, replay, refused)
        evicted, sparse = self.windows.evicted, self.windows.sparse
        if keep.all():
            assets, times, values, source = decoded.assets, decoded.times, decoded.values, decoded.record
        else:
            kept = np.flatnonzero(keep)
            assets = [decoded.assets[i] for i in kept.tolist()]
            times, values, source = decoded.times[kept], decoded.values[kept], decoded.record[kept]
        switched_off = []
        if self.off_state is not None and len(times):
            off = self.off_state.mask(assets, times, values)
            if off.any() or self.off_assets:
                switched_off = self._switch(assets, times, off, replay[source])
                if off.any():  # an off reading is left out as if it had not come (detector.offcondition)
                    on = np.flatnonzero(~off)
                    assets = [assets[i] for i in on.tolist()]
                    times, values, source = times[on], values[on], source[on]
        rows, windows, first = self.windows.append(assets, times, values)
        m.messages.inc(int(live.sum()))
        m.readings.inc(int(live[decoded.record].sum()))
        unknown = int(decoded.unknown[live].sum())
        if unknown:
            m.unknown_sensors.inc(unknown)
        if self.windows.evicted != evicted:
            m.assets_evicted.inc(self.windows.evicted - evicted)
        if self.windows.sparse != sparse:
            m.windows_sparse.inc(self.windows.sparse - sparse)
        last_timestamp = max((r.timestamp for tp, r in last.items() if r.offset >= replay_until.get(tp, -1)),
                             default=-1)
        if last_timestamp > 0:
            m.last_message.set(last_timestamp / 1000)
        for i in sorted(refused):
            if not replay[i]:
                e = refused[i]
                result.dead_letters.append(DeadLetter(records[i], e.reason, e.detail))
                m.dead_letters.labels(e.reason).inc()
        m.assets.set(len(self.windows))
        m.assets_off.set(len(self.off_assets))
        return Submitted(records, replay, result, [assets[i] for i in rows.tolist()], times[rows], source[rows],
                         self.scorer.start(windows) if len(rows) else None, time.perf_counter(), switched_off, first)

    def _switch(self, assets: list[str], times: np.ndarray, off: np.ndarray, silent: np.ndarray) -> list:
        """Follow which assets are off (their newest reading is); returns (asset, time, re-read) of
        those switched off in this batch, whose open alert finish() resolves."""
        newest = {}
        for asset, is_off, t, quiet in zip(assets, off.tolist(), times.tolist(), silent.tolist()):
            newest[asset] = (is_off, t, quiet)
        now, switched, known = time.monotonic(), [], self.off_assets
        for asset, (is_off, t, quiet) in newest.items():
            if not is_off:
                known.pop(asset, None)
                continue
            if asset not in known:
                switched.append((asset, t, quiet))
            known[asset] = now
        off_now = [(a, t) for a, (is_off, t, _) in newest.items() if is_off]
        self.windows.touch([a for a, _ in off_now], [t for _, t in off_now])  # off is not idle
        return switched

    def finish(self, batch: Submitted) -> BatchResult:
        """The second half of process(): scores -> alert state, events and metrics."""
        if batch.scores is not None:
            self._score(batch)
        if batch.switched_off:
            counts = dict.fromkeys(EVENT_TYPES, 0)
            for asset, t, silent in batch.switched_off:
                event = self.alerts.switch_off(asset, t)
                if event is not None:
                    self._take(event, asset, t, silent, batch.result, counts)
            self._count(counts)
        self.metrics.open_alerts.set(self.alerts.open_alerts)
        self._outgoing(batch)
        return batch.result

    def _outgoing(self, batch: Submitted) -> None:
        """The batch's messages (BatchResult.messages; its commits are known from submit())."""
        result, topics = batch.result, self.topics
        out = [(topics.alerts, e.asset.encode(), e.to_json(), None) for e in result.alerts]
        out += [(topics.alerts, e.key, orjson.dumps(e.to_json_dict()), None) for e in result.storms]
        out += [dead_letter_message(topics.dlq, dl) for dl in result.dead_letters]
        if topics.scores:
            out += [(topics.scores, x["asset"].encode(), orjson.dumps(x), None) for x in result.scores]
        result.messages = out

    def _in_order(self, decoded: Decoded, replay: np.ndarray, refused: dict[int, BadMessage]) -> np.ndarray:
        """Which readings to keep: every asset's readings must come after its newest one. A live
        message whose first reading does not is refused (added to `refused`), unless it is late
        by less than one of the model's intervals (and not at the newest reading's very time, a
        repeat): then its readings up to the newest one's time count at that time (they join
        the newest interval's mean, as table.admit_late puts such rows of a file back;
        decoded.times is changed in place) and one at that very time is dropped. Of a re-read
        message, only the readings newer than the asset's window are kept (the others were
        taken before)."""
        n = len(decoded.times)
        keep = np.ones(n, bool)
        if n == 0:
            return keep
        assets = decoded.assets
        distinct = dict.fromkeys(assets)
        code = {a: i for i, a in enumerate(distinct)}
        codes = np.fromiter(map(code.__getitem__, assets), np.int64, n)
        last = self.windows.last_times(list(distinct))
        order = np.argsort(codes, kind="stable")
        c, t = codes[order], decoded.times[order]
        previous = np.empty_like(t)
        previous[1:] = t[:-1]
        first = np.r_[True, c[1:] != c[:-1]]
        previous[first] = last[c[first]]
        bad = t <= previous
        if not bad.any():  # the usual case
            return keep
        # the assets with a reading out of order: their messages one by one, in record order
        flagged = np.flatnonzero(np.isin(codes, c[bad]))
        lasts = dict(zip(distinct, last.tolist()))
        tolerance = self.windows.grid.interval_ms or 0.0
        record = decoded.record[flagged]
        bounds = np.flatnonzero(np.r_[True, record[1:] != record[:-1], True]).tolist()
        for a, b in zip(bounds[:-1], bounds[1:]):
            span = flagged[a:b]
            i, asset = int(record[a]), assets[span[0]]
            ts, before = decoded.times[span], lasts[asset]
            if ts[0] > before:
                lasts[asset] = int(ts[-1])
            elif replay[i]:
                keep[span[ts <= before]] = False
                lasts[asset] = max(before, int(ts[-1]))
            elif ts[0] < before and before - ts[0] < tolerance:  # late within an interval
                keep[span[ts == before]] = False
                decoded.times[span[ts < before]] = before
                lasts[asset] = max(before, int(ts[-1]))
            else:
                keep[span] = False
                refused[i] = not_after(asset, int(ts[0]), before)
        return keep

    def _score(self, batch: Submitted) -> None:
        """Take the scores of a batch's windows; every window feeds the alert state, only live
        ones (not re-read history) produce events, scores and metrics."""
        m = self.metrics
        records, assets, times, source, result = batch.records, batch.assets, batch.times, batch.source, batch.result
        scores = batch.scores()
        m.batch_seconds.observe(time.perf_counter() - batch.submitted)
        done = time.time()
        normalized = scores.score / self.threshold
        silent = batch.replay[source]
        live = ~silent
        result.scored = int(live.sum())
        m.scored.inc(result.scored)
        m.normalized_hist.observe_many(normalized[live])
        n = len(assets)
        starts = [0] + [i for i in range(1, n) if assets[i] != assets[i - 1]]
        ends = starts[1:] + [n]
        hot = np.logical_or.reduceat((normalized > 1.0) | batch.first, starts).tolist()  # or a run starts afresh
        restore, tracker = self.open_alerts_to_restore, self.alerts
        self.storm.set_assets(len(self.windows))  # the window slides with the events' own times
        flagged = [False] * n if self.emit_scores else None  # the rule holds at the window (is_anomaly)
        attend = []  # (start, end) of the assets whose windows go to the tracker one by one
        for s, e, over in zip(starts, ends, hot):
            asset = assets[s]
            if restore and asset in restore:
                left = restore.pop(asset)
                if tracker.restore(left):
                    self.storm.take_up(asset, epoch_ms(left["opened_at"]))
            if not over and tracker.quiet(asset):
                tracker.observe_quiet(asset, e - s)
            else:
                attend.append((s, e))
        if attend:
            self._observe(attend, assets, times, scores, normalized, silent, batch.first, flagged, result)
        if n:  # then on to the batch's newest reading (opens older than the storm window age out)
            self.storm.set_assets(len(self.windows), int(times.max()))
        if flagged is not None:
            version, route = self.model.version, {"model": self.name} if self.name else {}
            result.scores.extend({"asset": a, "ts": t, "score": sc, "normalized_score": z, "is_anomaly": f,
                                  "model_version": version, **route}
                                 for a, t, sc, z, f, quiet in zip(assets, times.tolist(), scores.score.tolist(),
                                                                  normalized.tolist(), flagged, silent.tolist())
                                 if not quiet)
        latest = np.asarray(ends) - 1
        latest = latest[live[latest]]  # re-read windows come before live ones
        if not len(latest):
            return
        latest_assets = [assets[i] for i in latest.tolist()]
        score = scores.score[latest]
        shares = scores.contributions[latest] / np.where(score > 0, score, 1.0)[:, None]
        m.per_asset.update(latest_assets, score, normalized[latest],
                           np.array([tracker.is_open(a) for a in latest_assets], np.float64), shares)
        sent = np.array([records[i].timestamp for i in source[latest].tolist()], np.float64)
        reference = np.where(sent > 0, sent, times[latest]) / 1000
        m.latency.observe_many(np.maximum(done - reference, 0.0))

    def _observe(self, spans: list[tuple[int, int]], assets: list[str], times: np.ndarray, scores: Scores,
                 normalized: np.ndarray, silent: np.ndarray, first: np.ndarray, flagged: list[bool] | None,
                 result: BatchResult) -> None:
        """Feed the windows of `spans` (each one asset's, with an open alert or a window over
        threshold) to the alert tracker one by one; live events go into result.alerts. What the
        tracker needs of each window is worked out for these windows only, at once (under a
        storm: all of them; otherwise a few)."""
        tracker = self.alerts
        if len(spans) == 1 or spans[-1][1] - spans[0][0] == sum(e - s for s, e in spans):
            rows = np.arange(spans[0][0], spans[-1][1])
        else:
            rows = np.concatenate([np.arange(s, e) for s, e in spans])
        contributions, score = scores.contributions[rows], scores.score[rows]
        score_list, normalized_list, time_list = score.tolist(), normalized[rows].tolist(), times[rows].tolist()
        silent_list, first_list = silent[rows].tolist(), first[rows].tolist()
        leaders = _leaders(contributions, self.model.sensors, self.policy.lead_margin)
        top = _Top(contributions, score, self.model.sensors)
        events = dict.fromkeys(EVENT_TYPES, 0)
        j = 0
        for s, e in spans:
            asset = assets[s]
            for i in range(s, e):
                if first_list[j]:  # a new run (after a gap or a stop): the rule counts afresh
                    tracker.restart(asset)
                event = tracker.observe(asset, time_list[j], score_list[j], normalized_list[j],
                                        lambda j=j: top(j), leaders[j])
                if flagged is not None:
                    flagged[i] = tracker.flagged(asset)
                if event is not None:
                    self._take(event, asset, time_list[j], silent_list[j], result, events)
                j += 1
        self._count(events)

    def _take(self, event: AlertEvent, asset: str, ts_ms: int, silent: bool, result: BatchResult,
              counts: dict[str, int]) -> None:
        """An alert event of the tracker: opens and resolves go to the storm tracker (re-read
        history counts there, but starts or ends no storm); live events and storm events go
        into result, counted by type."""
        if event.type != "update":
            storm_event = self.storm.observe(event.type, asset, ts_ms, silent)
            if storm_event is not None:
                result.storms.append(storm_event)
                counts[storm_event.type] += 1
        if not silent:
            result.alerts.append(event)
            counts[event.type] += 1

    def _count(self, counts: dict[str, int]) -> None:
        for kind, count in counts.items():
            if count:
                self.metrics.alert_events.labels(kind).inc(count)

    def expire_idle(self) -> list[str]:
        """Drop assets without a reading for idle_seconds (windows, alert state, labels);
        an asset with an open alert is kept."""
        gone = [a for a in self.windows.idle(self.idle_seconds) if not self.alerts.is_open(a)]
        for asset in gone:
            self.windows.forget(asset)
            self.alerts.forget(asset)
            self.metrics.forget_asset(asset)
        cutoff = time.monotonic() - self.idle_seconds
        for asset in [a for a, seen in self.off_assets.items() if seen < cutoff]:
            del self.off_assets[asset]
            if self.off_state is not None:
                self.off_state.forget(asset)
        self.metrics.assets.set(len(self.windows))
        self.metrics.assets_off.set(len(self.off_assets))
        self.storm.set_assets(len(self.windows))
        return gone


class _Top:
    """The top sensors of a batch's windows, (sensor, share) pairs as AlertEvent reports them:
    worked out for every window at once when the first event asks (a few events per batch
    cost one vectorised top_shares, not one each)."""

    def __init__(self, contributions: np.ndarray, score: np.ndarray, names: tuple[str, ...]):
        self.contributions, self.score, self.names, self._order = contributions, score, names, None

    def __call__(self, i: int) -> list[tuple[str, float]]:
        if self._order is None:
            order, shares = top_shares(self.contributions, self.score)
            self._order, self._shares = order.tolist(), shares.tolist()
        names = self.names
        return [(names[j], share) for j, share in zip(self._order[i], self._shares[i])]


def _leaders(contributions: np.ndarray, names: tuple[str, ...], margin: float) -> list[str | None]:
    """Of each window [windows, sensors]: the sensor that contributes at least `margin` x as much
    as any other (AlertTracker.observe's leader), or None when none leads that clearly."""
    if contributions.shape[1] < 2:
        return [names[0] if len(names) else None] * len(contributions)
    two = -np.partition(-contributions, 1, axis=1)[:, :2]  # the largest and the second largest
    lead = np.argmax(contributions, axis=1)
    clear = (two[:, 0] > 0) & (two[:, 0] >= margin * two[:, 1])
    return [names[j] if ok else None for j, ok in zip(lead.tolist(), clear.tolist())]


def _created_seconds(model: TrainedModel) -> float | None:
    """The model's creation time (config.json created_at) as unix seconds, if known."""
    try:
        return datetime.fromisoformat(model.metadata["created_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None
