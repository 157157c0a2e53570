"""Crash-and-restart soak: stream readings of many assets through the local broker while
`vigil serve` is killed with SIGKILL at random moments and restarted, then check that

  - the group's committed offsets equal the end offsets,
  - every reading that completes a window was scored at least once (from the scores topic),
  - no alert was lost: the alert ids opened equal those of an uninterrupted reference run of
    the same pipeline over the same readings, and every alert the reference resolves is
    resolved under the same id (duplicates carry the same id, so consumers can drop them).

Used by tests/test_crash.py (short) and scripts/soak (the long version: 100,000 readings,
50 assets, 10 kills).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from detector.storm import is_storm_event
from tests.kafka_util import BOOTSTRAP, T0, Serve, reading, unique
from vigil import synthetic

FAULT_EVERY = 5  # every 5th asset gets a fault
POLICY = {"k": 3, "n": 5, "resolve_after": 10, "update_seconds": 10.0}


def serve_flags(topics: dict) -> list[str]:
    """`vigil serve` flags of these runs: the alert policy of POLICY, a scores topic to count."""
    return ["--scores-topic", topics["scores"], "--batch-size", "500", "--alert-k", "3", "--alert-n", "5",
            "--resolve-after", "10", "--update-seconds", "10", "--rewind-seconds", "3600"]


@dataclass
class SoakResult:
    readings: int
    assets: int
    kills: int
    scored_once_or_more: int
    expected_scored: int
    duplicate_scores: int
    committed: int
    end: int
    reference_alerts: set = field(default_factory=set)
    alerts_opened: set = field(default_factory=set)
    reference_resolved: set = field(default_factory=set)
    alerts_resolved: set = field(default_factory=set)
    duplicate_alert_events: int = 0
    seconds: float = 0.0

    @property
    def missing_scores(self) -> int:
        return self.expected_scored - self.scored_once_or_more

    def summary(self) -> dict:
        return {"readings": self.readings, "assets": self.assets, "kills": self.kills,
                "readings_scored_at_least_once": self.scored_once_or_more, "readings_expected_scored": self.expected_scored,
                "readings_lost": self.missing_scores, "readings_scored_twice_or_more": self.duplicate_scores,
                "committed_offsets": self.committed, "end_offsets": self.end,
                "alerts_reference": len(self.reference_alerts), "alerts_opened": len(self.alerts_opened),
                "alerts_lost": len(self.reference_alerts - self.alerts_opened),
                "alerts_unexpected": len(self.alerts_opened - self.reference_alerts),
                "resolves_lost": len(self.reference_resolved - self.alerts_resolved),
                "duplicate_alert_events": self.duplicate_alert_events, "seconds": round(self.seconds, 1)}


def fleet_messages(assets: int, per_asset: int, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """Readings of all assets interleaved by time; every FAULT_EVERY-th asset has a cavitation fault."""
    streams = []
    for a in range(assets):
        faults = (("cavitation", per_asset // 2, per_asset // 5),) if a % FAULT_EVERY == FAULT_EVERY - 1 else ()
        values, _ = synthetic.generate(per_asset, seed=seed + a, faults=faults)
        streams.append(values)
    out = []
    for i in range(per_asset):
        for a in range(assets):
            asset = f"pump-{a + 1}"
            out.append((asset.encode(), reading(asset, i, dict(zip(synthetic.SENSORS, map(float, streams[a][i]))))))
    return out


def reference_alerts(model_dir: Path, messages, policy_args: dict) -> tuple[set, set]:
    """Alert ids opened and resolved by one uninterrupted pipeline over the same readings."""
    from prometheus_client import CollectorRegistry

    from detector.alerts import AlertPolicy
    from detector.artifact import load
    from detector.metrics import ServiceMetrics
    from detector.pipeline import Pipeline, Record

    pipeline = Pipeline(load(model_dir), ServiceMetrics(CollectorRegistry()), AlertPolicy(**policy_args))
    opened, resolved = set(), set()
    for first in range(0, len(messages), 2000):
        records = [Record("t", 0, first + i, k, v, T0) for i, (k, v) in enumerate(messages[first:first + 2000])]
        for e in pipeline.process(records, now_ms=T0 + 10**9).alerts:
            (opened if e.type == "open" else resolved if e.type == "resolve" else set()).add(e.alert_id)
    return opened, resolved


def make_topics(name: str, partitions: int, bootstrap: str = BOOTSTRAP) -> dict[str, str]:
    topics = {"topic": name, "alerts": name + ".alerts", "dlq": name + ".dlq", "scores": name + ".scores"}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, partitions if k == "topic" else 1, 1) for k, t in topics.items()])
    admin.close()
    return topics


def read_all(topic: str, bootstrap: str = BOOTSTRAP) -> list:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    c.assign(tps)
    c.seek_to_beginning()
    ends = c.end_offsets(tps)
    out = []
    while any(c.position(tp) < ends[tp] for tp in tps):
        for batch in c.poll(timeout_ms=500).values():
            out.extend(batch)
    c.close()
    return out


def committed_and_end(topic: str, group: str, bootstrap: str = BOOTSTRAP) -> tuple[int, int]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
    ends = c.end_offsets(tps)
    committed = sum(c.committed(tp) or 0 for tp in tps)
    c.close()
    return committed, sum(ends.values())


def produce_paced(messages, topic: str, rate: float, done: threading.Event, bootstrap: str = BOOTSTRAP) -> None:
    """Send (key, value) messages at `rate` per second; the producer rides out a broker outage
    (it blocks and retries rather than dropping); sets `done` at the end."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_block_ms=300_000,
                      delivery_timeout_ms=600_000, request_timeout_ms=30_000, reconnect_backoff_max_ms=2000)
    t0 = time.monotonic()
    for n, (key, value) in enumerate(messages):
        p.send(topic, key=key, value=value)
        ahead = n / rate - (time.monotonic() - t0)
        if ahead > 0.05:
            time.sleep(ahead)
    p.flush()
    p.close()
    done.set()


def run_soak(model_dir: Path, workdir: Path, assets: int, per_asset: int, kills: int, rate: float,
             seed: int = 0, say=print) -> SoakResult:
    """Produce assets * per_asset readings at `rate` readings/s while killing and restarting
    `vigil serve` `kills` times, each at a random moment once it is consuming; wait until it
    has caught up; compare. Choose `rate` so that the stream outlasts the kills (a restart
    takes about 15 s: start-up and the group's rebalance)."""
    t_start = time.monotonic()
    rnd = random.Random(seed)
    policy = POLICY
    topics = make_topics(unique("soak"), partitions=3)
    group = unique("soak-group")
    messages = fleet_messages(assets, per_asset, seed)
    extra = serve_flags(topics)

    def start(i: int) -> Serve:
        return Serve(model_dir, topics["topic"], group, extra, log_path=workdir / f"serve-{i}.log")

    done = threading.Event()
    producer = threading.Thread(target=produce_paced, args=(messages, topics["topic"], rate, done), daemon=True)
    serve = start(0)
    try:
        producer.start()
        for i in range(kills):  # each kill at a random moment while the daemon is consuming
            serve.wait_for(lambda m: m.get("vigil_messages_consumed_total", 0) > 0, what="the daemon to consume")
            time.sleep(rnd.uniform(0.2, 3.0))
            serve.kill()
            say(f"soak: kill {i + 1}/{kills} (SIGKILL) at {time.monotonic() - t_start:.0f} s"
                f"{'' if not done.is_set() else ' (all readings produced already)'}")
            serve = start(i + 1)
        producer.join()
        say(f"soak: {len(messages)} readings produced; waiting for the daemon to catch up")
        deadline = time.monotonic() + 300
        while True:
            committed, end = committed_and_end(topics["topic"], group)
            if committed == end or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:  # a failed wait must not leave a daemon running after the test
        serve.terminate(timeout=30)

    result = check(model_dir, topics, messages, assets, per_asset, policy, committed, end)
    result.kills, result.seconds = kills, time.monotonic() - t_start
    return result


def check(model_dir: Path, topics: dict, messages, assets: int, per_asset: int, policy: dict, committed: int,
          end: int, bootstrap: str = BOOTSTRAP) -> SoakResult:
    """Compare what the daemon produced (scores and alerts topics) with what it should have."""
    window = json.loads((model_dir / "config.json").read_text())["window"]
    scores = Counter()
    for r in read_all(topics["scores"], bootstrap):
        s = json.loads(r.value)
        scores[(s["asset"], s["ts"])] += 1
    expected = {(f"pump-{a + 1}", T0 + i * 1000) for a in range(assets) for i in range(window - 1, per_asset)}
    events = [json.loads(r.value) for r in read_all(topics["alerts"], bootstrap)]
    events = [e for e in events if not is_storm_event(e)]  # the alerts' own events (storms: detector.storm)
    keys = Counter((e["alert_id"], e["type"], e["time"]) for e in events)
    ref_opened, ref_resolved = reference_alerts(model_dir, messages, policy)
    return SoakResult(
        readings=len(messages), assets=assets, kills=0,
        scored_once_or_more=len(expected & scores.keys()), expected_scored=len(expected),
        duplicate_scores=sum(1 for k, c in scores.items() if c > 1), committed=committed, end=end,
        reference_alerts=ref_opened, alerts_opened={e["alert_id"] for e in events if e["type"] == "open"},
        reference_resolved=ref_resolved, alerts_resolved={e["alert_id"] for e in events if e["type"] == "resolve"},
        duplicate_alert_events=sum(c - 1 for c in keys.values()))

