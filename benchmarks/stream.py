"""Streaming throughput and latency of `vigil serve` on the local Kafka broker, in one run:

  a. readings/s through the whole daemon (decode, windows, scoring, alerts, metrics,
     commits) for single-reading messages and for batch messages of 100 readings;
  b. the same topics read by a bare kafka-python consume loop that only decodes JSON (the
     ceiling for this client), and the ratio a / b; the loop runs twice, with the standard
     library's json (the baseline the target was set against) and with orjson (the parser
     the daemon uses), and both ratios are reported;
  c. produce-to-alert latency p50/p99 at a steady 2,000 readings/s.

The model has the default architecture (W=60, C=8; throughput does not depend on training).

    deploy/kafka/broker start
    python benchmarks/stream.py --out bench-results/stream.json
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

from detector.alerts import iso_ms  # noqa: E402
from detector.artifact import TrainedModel, save  # noqa: E402
from detector.model import VAE, ModelConfig  # noqa: E402
from detector.preprocessing import Scaler  # noqa: E402
from detector.threshold import Persistence, Threshold  # noqa: E402

SENSORS = tuple(f"s{i}" for i in range(8))
T0 = 1_795_460_400_000
FAULT_PERIOD = 80  # readings between an asset's faults: longer than the window, so alerts resolve


def make_model(directory: Path) -> Path:
    config = ModelConfig()
    vae = VAE(config, len(SENSORS), rngs=nnx.Rngs(0))
    scaler = Scaler(np.zeros(len(SENSORS), np.float32), np.ones(len(SENSORS), np.float32))
    scorer_model = TrainedModel(SENSORS, config, scaler, vae, Threshold(1.0, "quantile"), Persistence())
    # the benchmark's readings are N(0, 0.1) noise: put the threshold well above their scores, so
    # alerts come only from the latency test's injected faults (as in a healthy fleet)
    noise = np.random.default_rng(1).normal(0, 0.1, (256, config.window, len(SENSORS))).astype(np.float32)
    normal = float(scorer_model.scorer()(noise).score.max())
    model = TrainedModel(SENSORS, config, scaler, vae, Threshold(normal * 3, "quantile"), Persistence())
    return save(model, directory / "model")


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
    def __init__(self, model: Path, bootstrap: str, topic: str, extra=()):
        self.port, self.group = free_port(), f"bench-{uuid.uuid4().hex[:6]}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vigil", "serve", "--model", str(model), "--bootstrap-servers", bootstrap,
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

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def daemon_throughput(model: Path, bootstrap: str, topic: str, records: int, per_message: int) -> float:
    """Readings/s from the first commit of the daemon's group until every record is committed
    (the daemon commits after each micro-batch, once its alerts are flushed). Progress is read
    from the broker, not from the daemon's /metrics, so measuring costs the daemon nothing."""
    d = Daemon(model, bootstrap, topic)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--assets", type=int, default=500)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--out", type=Path, default=Path("bench-results/stream.json"))
    args = ap.parse_args()
    b = args.bootstrap_servers
    result = {"readings": args.readings, "assets": args.assets}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp))
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
        topic = f"bench-lat-{uuid.uuid4().hex[:6]}"
        create_topics(b, topic, topic + ".alerts", topic + ".dlq")
        samples = np.array(latency(model, b, topic, args.rate, args.seconds))
    p50, p99 = (np.percentile(samples, [50, 99]) * 1000).tolist() if samples.size else (None, None)
    result["latency"] = {"rate_readings_per_s": args.rate, "seconds": args.seconds, "alerts": int(samples.size),
                         "p50_ms": p50, "p99_ms": p99}
    print(f"produce-to-alert at {args.rate} readings/s: {samples.size} alerts, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
