"""The full demo, live: simulate history -> train and register -> serve -> live readings with
a fault -> alert events printed as they arrive.

Each step runs the real `vigil` command in a subprocess (what an operator would run), on
topics of its own (created at the start, deleted at the end). Ctrl-C, or the end of
`duration`, stops everything it started.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path


class DemoError(Exception):
    """A step of the demo failed; the message says which and where its log is."""


def _vigil(*args: str) -> list[str]:
    return [sys.executable, "-m", "vigil", *args]


def _run(step: str, cmd: list[str], log: Path) -> None:
    with open(log, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise DemoError(f"{step} failed (exit {code}); its output is in {log}:\n{log.read_text()[-2000:]}")


def _metrics(addr: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("vigil_") and "{" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _ready(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def format_event(event: dict) -> str:
    if event.get("type") in ("storm_start", "storm_end"):  # a fleet-level event (detector.storm)
        return (f"{event['time'][11:19]}  {event['type'].replace('_', ' ').upper():<13} "
                f"{event['assets_alerting']} of {event['assets']} assets alerting ({event['share']:.0%}), "
                f"first: {', '.join(event['first_assets'])}  (storm {event['storm_id']})")
    top = ", ".join(f"{s['sensor']} {s['share']:.0%}" for s in event.get("top_sensors", []))
    return (f"{event['time'][11:19]}  {event['type'].upper():<7} {event['asset']:<8} "
            f"score/threshold {event['normalized_score']:6.2f}  top: {top}  (alert {event['alert_id']})")


def run_live_demo(workdir: Path, bootstrap: str, assets: int = 3, history: str = "7d", fault: str | None = None,
                  metrics_addr: str = "127.0.0.1:9108", duration: float | None = None,
                  say=lambda m: print(m, file=sys.stderr, flush=True)) -> int:
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

    workdir.mkdir(parents=True, exist_ok=True)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    topic = f"vigil-demo-{run_id}.readings"
    topics = [topic, f"vigil-demo-{run_id}.alerts", f"vigil-demo-{run_id}.dlq"]
    fault = fault or f"pump-{min(2, assets)}:cavitation@1m+5m"
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="vigil-demo")
    except KafkaError as e:
        raise DemoError(f"cannot reach Kafka at {bootstrap}: {e} (deploy/kafka/broker start runs a local one)") \
            from None
    admin.create_topics([NewTopic(t, 3, 1) for t in topics])
    started: list[subprocess.Popen] = []
    try:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        history_dir, registry = workdir / f"history-{run_id}", workdir / "models"
        say(f"demo: 1/4 simulating {history} of normal readings for {assets} pumps -> {history_dir}")
        from vigil.specs import parse_duration

        start = now - timedelta(seconds=parse_duration(history, "--history"))
        _run("vigil simulate", _vigil("simulate", "--assets", str(assets), "--duration", history, "--out",
                                      str(history_dir), "--start", start.isoformat()), workdir / "simulate.log")
        say(f"demo: 2/4 training a model and registering it in {registry} (log: {workdir / 'train.log'})")
        _run("vigil train", _vigil("train", "--data", str(history_dir), "--registry", str(registry), "--promote",
                                   "--epochs", "30"), workdir / "train.log")
        say(f"demo: 3/4 starting vigil serve on {topic} (log: {workdir / 'serve.log'})")
        serve_log = open(workdir / "serve.log", "w")
        started.append(subprocess.Popen(_vigil(
            "serve", "--model", str(registry), "--bootstrap-servers", bootstrap, "--topic", topic,
            "--alerts-topic", topics[1], "--dlq-topic", topics[2], "--group", f"vigil-demo-{run_id}",
            "--metrics-addr", metrics_addr), stdout=serve_log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while not _ready(metrics_addr):
            if started[0].poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"vigil serve did not become ready; see {workdir / 'serve.log'}")
            time.sleep(0.5)
        alerts = KafkaConsumer(topics[1], bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                               group_id=None, client_id="vigil-demo")
        say(f"demo: 4/4 live readings from {assets} pumps, 1 per second each; fault {fault} "
            f"(log: {workdir / 'live.log'})")
        started.append(subprocess.Popen(
            _vigil("simulate", "--assets", str(assets), "--bootstrap-servers", bootstrap, "--topic", topic,
                   "--fault", fault), stdout=open(workdir / "live.log", "w"), stderr=subprocess.STDOUT))
        say(f"demo: metrics at http://{metrics_addr}/metrics; alert events below as they arrive "
            f"({'Ctrl-C' if duration is None else f'{duration:.0f} s or Ctrl-C'} stops everything)")
        events = _watch(alerts, started, metrics_addr, duration, say)
        say(f"demo: {events} alert event(s); model registry {registry}, logs in {workdir}")
        return 0
    except KeyboardInterrupt:
        say("demo: stopping")
        return 0
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(started):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            admin.delete_topics(topics)
        except KafkaError:
            pass
        admin.close()


def _watch(alerts, procs, metrics_addr: str, duration: float | None, say) -> int:
    """Print alert events until duration (or Ctrl-C); a status line every 15 s. Returns the count."""
    t0 = last_status = time.monotonic()
    events = 0
    try:
        while duration is None or time.monotonic() - t0 < duration:
            for name, proc in zip(("vigil serve", "vigil simulate"), procs):
                if proc.poll() is not None:
                    raise DemoError(f"{name} stopped unexpectedly (exit {proc.returncode}); see its log")
            for records in alerts.poll(timeout_ms=500).values():
                for record in records:
                    events += 1
                    print(format_event(json.loads(record.value)), flush=True)
            if time.monotonic() - last_status > 15:
                last_status = time.monotonic()
                try:
                    m = _metrics(metrics_addr)
                    say(f"demo: {int(m.get('vigil_readings_scored_total', 0))} readings scored, "
                        f"{int(m.get('vigil_assets_tracked', 0))} assets, {int(m.get('vigil_alerts_open', 0))} "
                        f"open alert(s)")
                except OSError:
                    pass
    finally:
        alerts.close()
    return events
