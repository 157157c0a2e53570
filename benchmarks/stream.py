"""Streaming throughput and latency of `vigil serve` on the local Kafka broker, in one run:

  a. readings/s through the whole daemon (decode, windows, scoring, alerts, metrics,
     commits) for single-reading messages and for batch messages of 100 readings;
  b. the same topics read by a bare kafka-python consume loop that only decodes JSON (the
     ceiling for this client), and the ratio a / b; the loop runs twice, with the standard
     library's json (the baseline the target was set against) and with orjson (the parser
     the daemon uses), and both ratios are reported;
  c. produce-to-alert latency p50/p99 at a steady 2,000 readings/s;
  d. alert storms (issue 11): 50 assets, readings of an asset 50 s apart in reading time,
     single-reading messages, three scenarios drained at full speed: normal traffic, 10 % of
     the assets anomalous (in episodes, so alerts open and resolve), and all of them anomalous
     (the storm, until its last 100 readings per asset), each drained twice in interleaved
     rounds (--storm-drains; the best of each counts: other load on a shared machine hits a
     run, not a scenario); readings/s, the ratio to normal traffic of the same run, alert
     events by kind (of the first drain), and whether every open and resolve of an in-process
     reference run over the same readings arrived;
  e. the 10 % and storm scenarios fed at a steady 5,000 readings/s: produce-to-alert latency
     p50/p99 of every alert event, and the consumer lag over time (from the broker);
  f. several models in one daemon and shadow scoring (--routes-only): one model, one route,
     five routes, one model + a shadow: readings/s and peak memory (routes()).

The model has the default architecture (W=60, C=8; throughput does not depend on training).

    deploy/kafka/broker start
    python benchmarks/stream.py --out bench-results/stream.json
    python benchmarks/stream.py --quick --storm-only     # d and e in a few minutes
    python benchmarks/stream.py --routes-only --out bench-results/routes.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from flax import nnx  # noqa: E402
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from detector.alerts import epoch_ms, iso_ms  # noqa: E402
from detector.artifact import TrainedModel, save  # noqa: E402
from detector.model import VAE, ModelConfig  # noqa: E402
from detector.preprocessing import Scaler  # noqa: E402
from detector.threshold import Persistence, Threshold  # noqa: E402

SENSORS = tuple(f"s{i}" for i in range(8))
T0 = 1_795_460_400_000
FAULT_PERIOD = 80  # readings between an asset's faults: longer than the window, so alerts resolve


def make_model(directory: Path, interval_seconds: float = 1.0, name: str = "model") -> Path:
    """The benchmark's model; interval_seconds: the spacing of the readings it is fed (its time grid)."""
    config = ModelConfig()
    vae = VAE(config, len(SENSORS), rngs=nnx.Rngs(0))
    scaler = Scaler(np.zeros(len(SENSORS), np.float32), np.ones(len(SENSORS), np.float32))
    scorer_model = TrainedModel(SENSORS, config, scaler, vae, Threshold(1.0, "quantile"), Persistence())
    # the benchmark's readings are N(0, 0.1) noise: put the threshold well above their scores, so
    # alerts come only from the latency test's injected faults (as in a healthy fleet)
    noise = np.random.default_rng(1).normal(0, 0.1, (256, config.window, len(SENSORS))).astype(np.float32)
    normal = float(scorer_model.scorer()(noise).score.max())
    model = TrainedModel(SENSORS, config, scaler, vae, Threshold(normal * 3, "quantile"), Persistence(),
                         interval_seconds=interval_seconds)
    return save(model, directory / name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_topics(bootstrap: str, *names: str, partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    admin.close()


def produce(bootstrap: str, topic: str, assets: int, readings: int, per_message: int) -> int:
    """Readings of `assets` assets, `per_message` per record; returns the number of records."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=1 << 18)
    rng = np.random.default_rng(0)
    per_asset = readings // assets
    records = 0
    for start in range(0, per_asset, per_message):
        for a in range(assets):
            rows = [{"ts": T0 + (start + i) * 1000, "values": dict(zip(SENSORS, v))}
                    for i, v in enumerate(np.round(rng.normal(0, 0.1, (per_message, len(SENSORS))), 4).tolist())]
            asset = f"pump-{a}"
            doc = {"asset": asset, **rows[0]} if per_message == 1 else {"asset": asset, "readings": rows}
            p.send(topic, key=asset.encode(), value=json.dumps(doc).encode())
            records += 1
    p.flush()
    p.close()
    return records


def bare_consume(bootstrap: str, topic: str, records: int, loads=json.loads) -> float:
    """Seconds for a plain kafka-python loop to read and JSON-decode every record."""
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bare-{uuid.uuid4().hex[:6]}",
                      auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=5000)
    seen, t0 = 0, None
    while seen < records:
        for batch in c.poll(timeout_ms=500).values():
            if t0 is None:
                t0 = time.perf_counter()
            for r in batch:
                loads(r.value)
            seen += len(batch)
    elapsed = time.perf_counter() - t0
    c.close()
    return elapsed


class Daemon:
    def __init__(self, model: Path | None, bootstrap: str, topic: str, extra=()):
        """model None: the routes of a config file in `extra` (--config FILE)."""
        self.port, self.group = free_port(), f"bench-{uuid.uuid4().hex[:6]}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vigil", "serve", *(["--model", str(model)] if model else []),
             "--bootstrap-servers", bootstrap,
             "--topic", topic, "--group", self.group, "--alerts-topic", topic + ".alerts",
             "--dlq-topic", topic + ".dlq", "--metrics-addr", f"127.0.0.1:{self.port}", "--log-level", "warning",
             *extra], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith(name + " "):
                        return float(line.split()[-1])
        except OSError:
            pass
        return 0.0

    def peak_rss_mb(self) -> float:
        """The daemon's peak resident memory so far (Linux: VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def daemon_throughput(model: Path | None, bootstrap: str, topic: str, records: int, per_message: int, extra=(),
                      memory: list | None = None) -> float:
    """Readings/s from the first commit of the daemon's group until every record is committed
    (the daemon commits after each micro-batch, once its alerts are flushed). Progress is read
    from the broker, not from the daemon's /metrics, so measuring costs the daemon nothing.
    memory: a list to append the daemon's peak resident memory (MB) to, once drained."""
    d = Daemon(model, bootstrap, topic, extra)
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=d.group, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(watcher.partitions_for_topic(topic))]
    t_first = first = None
    try:
        while True:
            committed = sum(watcher.committed(tp) or 0 for tp in partitions)
            now = time.perf_counter()
            if committed > 0 and t_first is None:
                t_first, first = now, committed
            if committed >= records:
                if memory is not None:
                    memory.append(d.peak_rss_mb())
                return (records - first) * per_message / (now - t_first)
            if d.proc.poll() is not None:
                raise SystemExit("vigil serve exited")
            time.sleep(0.02)
    finally:
        watcher.close()
        d.stop()


def latency(model: Path, bootstrap: str, topic: str, rate: int, seconds: float, assets: int = 200) -> list[float]:
    """Produce `rate` readings/s; every FAULT_PERIOD-th reading of an asset is a fault that opens
    an alert (k = n = 1), which resolves once the fault has left the window. Returns the
    produce-to-alert seconds of each open event."""
    d = Daemon(model, bootstrap, topic, extra=("--alert-k", "1", "--alert-n", "1", "--resolve-after", "1",
                                               "--max-wait-ms", "20"))
    window = ModelConfig().window
    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    sent_at: dict[tuple[str, int], float] = {}
    samples: list[float] = []
    done = threading.Event()

    def collect():
        c = KafkaConsumer(topic + ".alerts", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                          group_id=None)
        while not done.is_set():
            for batch in c.poll(timeout_ms=200).values():
                now = time.perf_counter()
                for r in batch:
                    e = json.loads(r.value)
                    if e["type"] == "open":
                        t = sent_at.get((e["asset"], e["time"]))
                        if t is not None:
                            samples.append(now - t)
        c.close()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    zero = {s: 0.0 for s in SENSORS}  # all-zero readings score under the noise-based threshold
    fault = {s: 50.0 for s in SENSORS}
    try:
        # fill every asset's window first
        for i in range(window):
            for a in range(assets):
                asset = f"pump-{a}"
                p.send(topic, key=asset.encode(), value=json.dumps({"asset": asset, "ts": T0 + i * 1000, "values": zero}).encode())
        p.flush()
        while d.metric("vigil_readings_consumed_total") < window * assets:
            time.sleep(0.1)
        step, start = window, time.perf_counter()
        interval = assets / rate
        while time.perf_counter() - start < seconds:
            tick = time.perf_counter()
            for a in range(assets):
                asset = f"pump-{a}"
                is_fault = (step + 7 * a) % FAULT_PERIOD == 0
                ts = T0 + step * 1000
                if is_fault:
                    sent_at[(asset, iso_ms(ts))] = time.perf_counter()
                p.send(topic, key=asset.encode(), value=json.dumps(
                    {"asset": asset, "ts": ts, "values": fault if is_fault else zero}).encode())
            p.flush()
            step += 1
            time.sleep(max(0.0, interval - (time.perf_counter() - tick)))
        time.sleep(2)
    finally:
        done.set()
        reader.join(timeout=5)
        p.close()
        d.stop()
    return samples


# -- alert storms: normal traffic, 10 % of the assets anomalous, all of them -------------------------

STORM_ASSETS = 50
STORM_SPACING_MS = 50_000  # readings of one asset 50 s apart in reading time (as in issue 11)
STORM_FAULT_SENSORS = 3    # each anomalous asset: an offset on 3 of the 8 sensors, its own 3
STORM_EPISODE = (300, 200)  # 10 % scenario: each anomalous asset is faulty 300 readings, then normal 200
STORM_TAIL = 100           # storm: its last 100 readings are normal again (the storm ends, alerts resolve)
SCENARIOS = ("normal", "10%", "storm")
STORM_EVENTS = ("storm_start", "storm_end")  # the fleet-level events on the alerts topic (detector.storm)


def scenario_values(scenario: str, assets: int, steps: int, seed: int = 0, tail: int = STORM_TAIL) -> np.ndarray:
    """Readings [steps, assets, sensors]: N(0, 0.1) noise (what the threshold is set above), plus
    a fault the model was not trained on: an offset on three of the asset's sensors whose size
    swings slowly (score / threshold about 2 to 7, period 400 readings, a phase per asset).
    normal: no asset; "10%": every tenth asset, in episodes (STORM_EPISODE); storm: every
    asset from the first reading until `tail` readings before the end."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 0.1, (steps, assets, len(SENSORS)))
    if scenario == "normal":
        return values
    step = np.arange(steps)[:, None]
    asset = np.arange(assets)[None, :]
    amplitude = 0.4 * (1 + 0.3 * np.sin(2 * np.pi * (step / 400 + asset / assets)))
    if scenario == "storm":
        on = np.broadcast_to(step < steps - tail, (steps, assets))
    elif scenario == "10%":
        on, (faulty, healthy) = np.broadcast_to(asset % 10 == 0, (steps, assets)), STORM_EPISODE
        on = on & ((step + 37 * asset) % (faulty + healthy) >= healthy)
    else:
        raise ValueError(f"unknown scenario: {scenario!r}")
    for a in range(assets):
        sensors = [(a + j * 3) % len(SENSORS) for j in range(STORM_FAULT_SENSORS)]
        values[:, a, sensors] += (amplitude[:, a] * on[:, a])[:, None]
    return values


def encode_readings(values: np.ndarray, t0: int, spacing_ms: int = STORM_SPACING_MS) -> list[tuple[bytes, bytes, str, int]]:
    """One single-reading message per reading, step by step (every asset's reading of a step,
    then the next step): (key, value, asset, ts) each."""
    steps, assets, _ = values.shape
    rounded = np.round(values, 4).tolist()
    out = []
    for step in range(steps):
        ts = t0 + step * spacing_ms
        for a in range(assets):
            asset = f"pump-{a}"
            out.append((asset.encode(), orjson.dumps({"asset": asset, "ts": ts, "values": dict(zip(SENSORS, rounded[step][a]))}),
                        asset, ts))
    return out


def produce_messages(bootstrap: str, topic: str, messages) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=1 << 18)
    for key, value, *_ in messages:
        p.send(topic, key=key, value=value)
    p.flush()
    p.close()


def read_events(bootstrap: str, topic: str) -> list[dict]:
    """Every event on an alerts topic (its partitions read to their end offsets)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
    c.assign(partitions)
    c.seek_to_beginning(*partitions)
    ends = c.end_offsets(partitions)
    events = []
    while any(c.position(tp) < ends[tp] for tp in partitions):
        for batch in c.poll(timeout_ms=500).values():
            events.extend(orjson.loads(r.value) for r in batch)
    c.close()
    return events


def reference_events(model: Path, messages, policy=None) -> list:
    """The alert events of one in-process pipeline over the same readings (what the daemon must
    produce: its open and resolve events are checked against these)."""
    from prometheus_client import CollectorRegistry

    from detector.alerts import AlertPolicy
    from detector.artifact import load
    from detector.metrics import ServiceMetrics
    from detector.pipeline import Pipeline, Record

    pipeline = Pipeline(load(model), ServiceMetrics(CollectorRegistry()), policy or AlertPolicy())
    events, now_ms = [], int(time.time() * 1000)
    for first in range(0, len(messages), 5000):
        records = [Record("t", 0, first + i, key, value, -1) for i, (key, value, *_) in
                   enumerate(messages[first:first + 5000])]
        events += pipeline.process(records, now_ms=now_ms).alerts
    return events


def lifecycle(events) -> set[tuple[str, str]]:
    """(type, alert_id) of the open and resolve events (dicts or AlertEvents)."""
    pairs = ((e["type"], e.get("alert_id")) if isinstance(e, dict) else (e.type, e.alert_id) for e in events)
    return {p for p in pairs if p[0] in ("open", "resolve")}


class LagWatcher(threading.Thread):
    """Consumer lag of a group over time, from the broker (end offsets - committed offsets),
    every `interval` s: what the daemon has not finished yet, measured at no cost to it."""

    def __init__(self, bootstrap: str, topic: str, group: str, interval: float = 0.5):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.group, self.interval = bootstrap, topic, group, interval
        self.series: list[tuple[float, int]] = []  # (seconds since t0, records not committed yet)
        self.done = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False)
        partitions = [TopicPartition(self.topic, p) for p in sorted(c.partitions_for_topic(self.topic))]
        while not self.done.is_set():
            committed = {tp: c.committed(tp) or 0 for tp in partitions}  # before the end offsets: lag >= 0
            ends = c.end_offsets(partitions)
            self.series.append((round(time.perf_counter() - self.t0, 2),
                                sum(ends[tp] - committed[tp] for tp in partitions)))
            self.done.wait(self.interval)
        c.close()


def prepare(bootstrap: str, scenario: str, readings: int, assets: int, t0: int) -> tuple[str, list]:
    """A topic holding `readings` single-reading messages of the scenario: (topic, messages)."""
    topic = f"bench-storm-{scenario.rstrip('%')}-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, topic, topic + ".alerts", topic + ".dlq")
    messages = encode_readings(scenario_values(scenario, assets, readings // assets), t0)
    produce_messages(bootstrap, topic, messages)
    return topic, messages


def drained_events(model: Path, bootstrap: str, topic: str, messages: list) -> dict:
    """The alert events a daemon produced draining the topic, by kind, and whether its open and
    resolve events are those of the in-process reference over the same readings."""
    events = read_events(bootstrap, topic + ".alerts")
    reference = reference_events(model, messages)
    kinds = {k: sum(e["type"] == k for e in events) for k in ("open", "update", "resolve", *STORM_EVENTS)}
    return {"readings": len(messages), "events": kinds, "events_per_reading": round(len(events) / len(messages), 4),
            "reference_events": {k: sum(e.type == k for e in reference) for k in ("open", "update", "resolve")},
            "open_and_resolve_as_reference": lifecycle(events) == lifecycle(reference)}


def steady(model: Path, bootstrap: str, scenario: str, rate: int, seconds: float, assets: int, t0: int) -> dict:
    """The daemon fed `rate` readings/s of the scenario for `seconds` (after filling every
    asset's window): produce-to-alert latency of every alert event (from sending the reading
    that caused it until the event is read from the alerts topic), events by kind and the
    consumer lag over time."""
    topic = f"bench-steady-{scenario.rstrip('%')}-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, topic, topic + ".alerts", topic + ".dlq")
    fill = ModelConfig().window - 1
    steps = fill + int(np.ceil(rate * seconds / assets))
    messages = encode_readings(scenario_values(scenario, assets, steps, seed=1, tail=0), t0)
    d = Daemon(model, bootstrap, topic)
    # no flush per chunk (a round trip each): the producer's IO thread sends within 2 ms
    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2)
    sent_at: dict[tuple[str, int], float] = {}
    samples: list[tuple[str, float]] = []
    fleet: list[str] = []
    done = threading.Event()

    def collect():
        c = KafkaConsumer(topic + ".alerts", bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
        while not done.is_set():
            for batch in c.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for r in batch:
                    e = orjson.loads(r.value)
                    if "asset" not in e:  # a fleet-level storm_start / storm_end
                        fleet.append(e["type"])
                        continue
                    t = sent_at.get((e["asset"], epoch_ms(e["time"])))
                    if t is not None:
                        samples.append((e["type"], now - t))
        c.close()

    reader = threading.Thread(target=collect, daemon=True)
    lag = LagWatcher(bootstrap, topic, d.group)
    try:
        for key, value, *_ in messages[:fill * assets]:  # every asset's window but its last reading
            p.send(topic, key=key, value=value)
        p.flush()
        while d.metric("vigil_readings_consumed_total") < fill * assets:
            if d.proc.poll() is not None:
                raise SystemExit("vigil serve exited")
            time.sleep(0.1)
        reader.start()
        lag.start()
        time.sleep(0.5)  # the reader has joined its topic
        live, chunk = messages[fill * assets:], max(rate // 100, 1)
        start = lag.t0 = time.perf_counter()
        for i in range(0, len(live), chunk):
            now = time.perf_counter()
            for key, value, asset, ts in live[i:i + chunk]:
                sent_at[(asset, ts)] = now
                p.send(topic, key=key, value=value)
            time.sleep(max(0.0, start + (i + chunk) / rate - time.perf_counter()))
        p.flush()
        sent_seconds = time.perf_counter() - start
        deadline = time.perf_counter() + 30
        while (not lag.series or lag.series[-1][1] > 0) and time.perf_counter() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the last events reach the reader
    finally:
        done.set()
        lag.done.set()
        if reader.is_alive():
            reader.join(timeout=5)
        if lag.is_alive():
            lag.join(timeout=5)
        p.close()
        d.stop()
    during = [v for t, v in lag.series if t <= sent_seconds]
    third = max(len(during) // 3, 1)
    seconds_of = np.array([s for _, s in samples])
    p50, p99 = (np.percentile(seconds_of, [50, 99]) * 1000).round(1).tolist() if samples else (None, None)
    return {"input_readings_per_s": round(len(live) / sent_seconds), "seconds": round(sent_seconds, 1),
            "readings": len(live),
            "events": {k: sum(kind == k for kind, _ in samples) for k in ("open", "update", "resolve")}
            | {k: fleet.count(k) for k in STORM_EVENTS},
            "p50_ms": p50, "p99_ms": p99,
            "by_kind_p50_p99_ms": {k: (np.percentile([x for kind, x in samples if kind == k], [50, 99]) * 1000).round(1).tolist()
                                   for k in ("open", "update", "resolve") if any(kind == k for kind, _ in samples)},
            "lag_max": max(during, default=0), "lag_mean_first_third": round(float(np.mean(during[:third])), 1),
            "lag_mean_last_third": round(float(np.mean(during[-third:])), 1),
            "lag_series": lag.series}


def storm(model: Path, bootstrap: str, readings: int, assets: int, rate: int, seconds: float, repeat: int = 2) -> dict:
    """The three scenarios drained at full speed `repeat` times each (readings/s: the best of
    them, all in the JSON), then 10 % and storm at a steady `rate`."""
    t0 = (int(time.time()) - 20 * 86400) * 1000  # reading time well in the past: never "in the future"
    out: dict = {"assets": assets, "spacing_seconds": STORM_SPACING_MS / 1000, "drains": repeat}
    topics = {scenario: prepare(bootstrap, scenario, readings, assets, t0) for scenario in SCENARIOS}
    rates: dict[str, list[float]] = {scenario: [] for scenario in SCENARIOS}
    for round_ in range(repeat):  # interleaved rounds: a burst of other load on the machine hits one run, not a scenario
        for scenario, (topic, messages) in topics.items():
            rates[scenario].append(daemon_throughput(model, bootstrap, topic, len(messages), 1))
            if round_ == 0:  # each drain is a new group; the events of the first are counted
                out[scenario] = drained_events(model, bootstrap, topic, messages)
            print(f"  drained {scenario:>6}: {rates[scenario][-1]:>7,.0f} readings/s", flush=True)
    for scenario in SCENARIOS:
        r = out[scenario]
        r["readings_per_s"], r["readings_per_s_runs"] = round(max(rates[scenario])), [round(x) for x in rates[scenario]]
        r["ratio_to_normal"] = round(max(rates[scenario]) / max(rates["normal"]), 3)
        print(f"  {scenario:>6}: best {r['readings_per_s']:,} readings/s, events {r['events']}", flush=True)
    for scenario in ("10%", "storm"):
        out[scenario]["steady"] = steady(model, bootstrap, scenario, rate, seconds, assets, t0)
        s = out[scenario]["steady"]
        print(f"  steady {scenario:>6} at {s['input_readings_per_s']:,}/s: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
              f"lag max {s['lag_max']}", flush=True)
    return out


def storm_table(out: dict) -> str:
    rows = ["| scenario | readings/s | ratio to normal | open | update | resolve | storm start / end | events / readings "
            "| open+resolve as reference | steady input/s | p50 ms | p99 ms | lag max | lag mean first / last third |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario in SCENARIOS:
        r, s = out[scenario], out[scenario].get("steady")
        e = r["events"]
        steady_cells = (f"{s['input_readings_per_s']:,} | {s['p50_ms']} | {s['p99_ms']} | {s['lag_max']:,} | "
                        f"{s['lag_mean_first_third']:,} / {s['lag_mean_last_third']:,}") if s else " | | | | "
        rows.append(f"| {scenario} | {r['readings_per_s']:,} | {r['ratio_to_normal']:.2f} | {e['open']:,} | "
                    f"{e['update']:,} | {e['resolve']:,} | {e.get('storm_start', 0)} / {e.get('storm_end', 0)} | "
                    f"{100 * r['events_per_reading']:.2f} % | "
                    f"{'yes' if r['open_and_resolve_as_reference'] else 'NO'} | {steady_cells} |")
    return "\n".join(rows)


ROUTE_DIGITS = ("01", "23", "45", "67", "89")  # route i serves the assets whose name ends in one of these


def routes(model: Path, bootstrap: str, readings: int, assets: int, tmp: Path, repeat: int = 3) -> dict:
    """(f) Several models in one daemon (serve.routes) and shadow scoring: readings/s and peak
    memory on single-reading messages with one model (--model), with the same model as one route
    of a config file (every record routed), with five routes (five models of the same
    architecture, each serving a fifth of the assets by the last digit of their names), and with
    one model and a shadow (a registry), each drained `repeat` times in interleaved rounds (the
    best counts)."""
    five = []
    for i, digits in enumerate(ROUTE_DIGITS):
        five.append(f'[[serve.routes]]\nname = "r{i}"\nmodel = "{make_model(tmp, name=f"route-{i}")}"\n'
                    f'assets = ["pump-*[{digits}]"]\n')
    (tmp / "five.toml").write_text("\n".join(five))
    (tmp / "one.toml").write_text(f'[[serve.routes]]\nname = "pumps"\nmodel = "{model}"\nassets = ["pump-*"]\n')
    from detector.registry import promote, set_shadow  # a registry: v1 current, v2 (another model) its shadow

    shadowed = tmp / "shadowed"
    shadowed.mkdir()
    make_model(shadowed, name="v1")
    make_model(shadowed, name="v2")
    promote(shadowed, "v1")
    set_shadow(shadowed, "v2")
    cases = {"1 model (--model)": (model, ()), "1 route": (None, ("--config", str(tmp / "one.toml"))),
             "5 routes": (None, ("--config", str(tmp / "five.toml"))), "1 model + shadow": (shadowed, ())}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    memory: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (m, extra) in cases.items():
            topic = f"bench-routes-{uuid.uuid4().hex[:6]}"
            create_topics(bootstrap, topic, topic + ".alerts", topic + ".dlq")
            records = produce(bootstrap, topic, assets, readings, 1)
            rates[name].append(daemon_throughput(m, bootstrap, topic, records, 1, extra, memory[name]))
    inproc = routes_in_process({name: (m, extra) for name, (m, extra) in cases.items()}, readings, assets, repeat + 1)
    base, base_in = max(rates["1 model (--model)"]), max(inproc["1 model (--model)"])
    out = {name: {"readings_per_s": round(max(r)), "ratio_to_one_model": round(max(r) / base, 3),
                  "runs": [round(x) for x in r], "peak_rss_mb": round(max(memory[name]), 1),
                  "in_process_readings_per_s": round(max(inproc[name])),
                  "in_process_ratio": round(max(inproc[name]) / base_in, 3)}
           for name, r in rates.items()}
    print(f"\nroutes: {readings:,} single-reading messages of {assets} assets; through Kafka best of {repeat}, "
          f"in process (the fleet's submit/finish on the same records, no Kafka) best of {repeat + 1}")
    print(f"{'daemon':<22}{'readings/s':>12}{'x 1 model':>11}{'peak RSS MB':>13}{'in process/s':>14}{'x 1 model':>11}")
    for name, o in out.items():
        print(f"{name:<22}{o['readings_per_s']:>12,}{o['ratio_to_one_model']:>11.2f}{o['peak_rss_mb']:>13.0f}"
              f"{o['in_process_readings_per_s']:>14,}{o['in_process_ratio']:>11.2f}")
    return out


def routes_in_process(cases: dict, readings: int, assets: int, repeat: int) -> dict[str, list[float]]:
    """Readings/s of detector.fleet.Fleet alone (decode, route, windows, score, alerts) on the
    records produce() would send, in micro-batches of 5,000, a fresh fleet per run (compiled
    before timing); interleaved rounds."""
    from prometheus_client import CollectorRegistry

    from detector.fleet import Fleet
    from detector.metrics import ServiceMetrics
    from detector.pipeline import Record
    from detector.settings import load_settings

    rng = np.random.default_rng(0)
    records = []
    for step in range(readings // assets):
        for a, v in enumerate(np.round(rng.normal(0, 0.1, (assets, len(SENSORS))), 4).tolist()):
            asset = f"pump-{a}"
            value = json.dumps({"asset": asset, "ts": T0 + step * 1000, "values": dict(zip(SENSORS, v))}).encode()
            records.append(Record("t", a % 3, len(records), asset.encode(), value, T0 + step * 1000))
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (model, extra) in cases.items():
            settings = load_settings({"model": str(model) if model else None}, {}, extra[1] if extra else None)
            registry = CollectorRegistry()
            fleet = Fleet(settings, ServiceMetrics(CollectorRegistry() if settings.routes else registry), registry)
            t0, pending = time.perf_counter(), None
            for i in range(0, len(records), 5000):
                batch = fleet.submit(records[i:i + 5000], {}, T0)
                if pending is not None:
                    fleet.finish(pending)
                pending = batch
            fleet.finish(pending)
            rates[name].append(len(records) / (time.perf_counter() - t0))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    ap.add_argument("--readings", type=int, default=200_000, help="readings per throughput topic (a, b, d)")
    ap.add_argument("--assets", type=int, default=500, help="assets of a and b")
    ap.add_argument("--rate", type=int, default=2000, help="readings/s of the latency test (c)")
    ap.add_argument("--seconds", type=float, default=20, help="length of the latency test (c)")
    ap.add_argument("--storm-assets", type=int, default=STORM_ASSETS)
    ap.add_argument("--storm-rate", type=int, default=5000, help="readings/s of the steady storm runs (e)")
    ap.add_argument("--storm-seconds", type=float, default=30, help="length of each steady storm run (e)")
    ap.add_argument("--storm-drains", type=int, default=2,
                    help="drains of each storm scenario, interleaved; readings/s is the best (d)")
    ap.add_argument("--storm-only", action="store_true", help="only the alert-storm sections (d, e)")
    ap.add_argument("--throughput-only", action="store_true", help="only the throughput section (a, b)")
    ap.add_argument("--routes-only", action="store_true", help="only the routes section (f)")
    ap.add_argument("--quick", action="store_true",
                    help="a few minutes: 50,000 readings per topic, 10 s latency and steady runs")
    ap.add_argument("--out", type=Path, default=Path("bench-results/stream.json"))
    args = ap.parse_args()
    if args.quick:
        args.readings, args.seconds, args.storm_seconds = 50_000, 10.0, 10.0
    b = args.bootstrap_servers
    result = {"readings": args.readings, "assets": args.assets, "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp))
        if args.routes_only:
            result["routes"] = routes(model, b, args.readings, args.assets, Path(tmp))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.out}")
            return
        if not args.storm_only:
            for per_message in (1, 100):
                topic = f"bench-{per_message}-{uuid.uuid4().hex[:6]}"
                create_topics(b, topic, topic + ".alerts", topic + ".dlq")
                records = produce(b, topic, args.assets, args.readings, per_message)
                readings = records * per_message
                bare = readings / bare_consume(b, topic, records)
                bare_orjson = readings / bare_consume(b, topic, records, orjson.loads)
                daemon = daemon_throughput(model, b, topic, records, per_message)
                result[f"per_message_{per_message}"] = {"records": records, "readings": readings,
                                                        "daemon_readings_per_s": round(daemon),
                                                        "bare_loop_readings_per_s": round(bare),
                                                        "ratio": round(daemon / bare, 3),
                                                        "bare_loop_orjson_readings_per_s": round(bare_orjson),
                                                        "ratio_orjson": round(daemon / bare_orjson, 3)}
                print(f"{per_message:>3} reading(s)/message: daemon {daemon:>9,.0f} readings/s | bare loop json "
                      f"{bare:>9,.0f}/s, ratio {daemon / bare:.2f} | bare loop orjson {bare_orjson:>9,.0f}/s, "
                      f"ratio {daemon / bare_orjson:.2f}", flush=True)
        if args.throughput_only:
            print(json.dumps(result))
            return
        if not args.storm_only:
            topic = f"bench-lat-{uuid.uuid4().hex[:6]}"
            create_topics(b, topic, topic + ".alerts", topic + ".dlq")
            samples = np.array(latency(model, b, topic, args.rate, args.seconds))
            p50, p99 = (np.percentile(samples, [50, 99]) * 1000).tolist() if samples.size else (None, None)
            result["latency"] = {"rate_readings_per_s": args.rate, "seconds": args.seconds, "alerts": int(samples.size),
                                 "p50_ms": p50, "p99_ms": p99}
            print(f"produce-to-alert at {args.rate} readings/s: {samples.size} alerts, p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms", flush=True)
        print(f"alert storm: {args.storm_assets} assets, readings of an asset {STORM_SPACING_MS // 1000} s apart, "
              f"{args.readings:,} single-reading messages per scenario", flush=True)
        storm_model = make_model(Path(tmp), STORM_SPACING_MS / 1000, "storm-model")
        result["storm"] = storm(storm_model, b, args.readings, args.storm_assets, args.storm_rate, args.storm_seconds,
                                args.storm_drains)
    print(storm_table(result["storm"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
