"""A real Prometheus (Debian's package) scraping a real `vigil serve` on the local Kafka broker.

The test Prometheus runs from its own temporary directory on a free port (never the packaged
service or port 9090), scrapes and evaluates every second, and loads a copy of
deploy/prometheus/rules in which every `for:` is shortened to FAST_FOR: production waits
minutes before paging, this test cannot. The readings come from `vigil simulate`: a model is
trained on a simulated day of three pumps, then 20 simulated minutes are streamed in which
pump-1 develops cavitation after 10 minutes and stays faulty, so its detector alert opens
and stays open and VigilAssetAnomaly must become `firing` (for pump-1 only).
"""

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from tests.deploy_files import DEPLOY, RULES, promql_expressions, rules
from tests.kafka_util import BOOTSTRAP, ROOT, Serve, broker_reachable, free_port, unique

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.prometheus]

PROMETHEUS = shutil.which("prometheus")
FAST_FOR = "3s"
ASSETS = ("pump-1", "pump-2", "pump-3")
FAULT = "pump-1:cavitation@10m+10m"  # the last 10 of the 20 simulated minutes


def vigil(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "vigil", *args], check=True, capture_output=True, cwd=ROOT,
                   env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})


class Prometheus:
    """`prometheus` on 127.0.0.1:PORT with a copy of deploy/'s config and (faster) rules."""

    def __init__(self, workdir: Path, vigil_port: int):
        self.port, self.workdir = free_port(), workdir
        rules_dir = workdir / "rules"
        rules_dir.mkdir()
        for path in RULES:
            doc = yaml.safe_load(path.read_text())
            for group in doc["groups"]:
                for rule in group["rules"]:
                    if "for" in rule:
                        rule["for"] = FAST_FOR
            (rules_dir / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(rules_dir / "*.yml")]
        config.pop("alerting")  # no Alertmanager here: alerts are read from Prometheus' API
        targets = {"vigil": f"127.0.0.1:{vigil_port}", "prometheus": f"127.0.0.1:{self.port}"}
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = open(workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)

    def get(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400/422 carry the error as JSON
            return json.loads(e.read())

    def query(self, expr: str) -> list:
        r = self.get("/api/v1/query", query=expr)
        assert r["status"] == "success", f"{expr}: {r}"
        return r["data"]["result"]

    def alerts(self) -> list[dict]:
        return self.get("/api/v1/alerts")["data"]["alerts"]

    def wait_ready(self, timeout=30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout} s: {self.log_tail()}")

    def log_tail(self, lines=30) -> str:
        self.log.flush()
        return "\n".join((self.workdir / "prometheus.log").read_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@dataclass
class Stack:
    serve: Serve
    prometheus: Prometheus
    serve_log: Path

    def diagnostics(self) -> str:
        targets = [{k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
                   for t in self.prometheus.get("/api/v1/targets")["data"]["activeTargets"]]
        log = self.serve_log.read_text().splitlines()[-30:] if self.serve_log.exists() else []
        return (f"\nprometheus targets: {targets}\nprometheus alerts: {self.prometheus.alerts()}"
                f"\nprometheus log:\n{self.prometheus.log_tail()}\nvigil serve log:\n" + "\n".join(log))

    def wait(self, predicate, what: str, timeout: float = 90.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.serve.proc.poll() is not None:
                raise AssertionError(f"vigil serve exited with {self.serve.proc.returncode} while waiting for "
                                     f"{what}{self.diagnostics()}")
            result = predicate()
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{self.diagnostics()}")


@pytest.fixture(scope="module")
def sim_model(tmp_path_factory):
    """A model of the simulated plant: trained on a simulated day (every hour of the load cycle)."""
    d = tmp_path_factory.mktemp("sim-model")
    vigil("simulate", "--assets", str(len(ASSETS)), "--duration", "1d", "--out", str(d / "history"), "--quiet")
    vigil("train", "--data", str(d / "history"), "--out", str(d / "model"), "--epochs", "30", "--quiet")
    return d / "model"


@pytest.fixture(scope="module")
def stack(sim_model, tmp_path_factory):
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary: scripts/test installs Debian's prometheus package")
    if not broker_reachable():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run deploy/kafka/broker start (scripts/test does)")
    workdir = tmp_path_factory.mktemp("prometheus")
    topic = unique("prom-readings")
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(topic, 3, 1), NewTopic(topic + ".alerts", 1, 1), NewTopic(topic + ".dlq", 1, 1)])
    admin.close()
    serve = Serve(sim_model, topic, unique("g"), log_path=workdir / "serve.log")
    prometheus = Prometheus(workdir, serve.port)
    try:
        prometheus.wait_ready()
        yield Stack(serve, prometheus, workdir / "serve.log"), topic
    finally:
        prometheus.stop()
        serve.cleanup()


@pytest.fixture(scope="module")
def faulted(stack):
    """`vigil simulate` streams 20 minutes of the three pumps, pump-1 faulty in the second half;
    then wait until the alert fires."""
    s, topic = stack
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1200))
    vigil("simulate", "--assets", str(len(ASSETS)), "--bootstrap-servers", BOOTSTRAP, "--topic", topic,
          "--speed", "max", "--duration", "20m", "--start", start, "--fault", FAULT, "--quiet")
    t0 = time.monotonic()
    firing = s.wait(lambda: [a for a in s.prometheus.alerts() if a["labels"]["alertname"] == "VigilAssetAnomaly"
                             and a["state"] == "firing"], "VigilAssetAnomaly to fire for pump-1")
    return firing, time.monotonic() - t0


def test_anomaly_alert_fires_in_prometheus(stack, faulted):
    s, _ = stack
    firing, seconds = faulted
    assert [a["labels"]["asset"] for a in firing] == ["pump-1"], s.diagnostics()
    healthy = s.prometheus.query('max_over_time(ALERTS{alertname="VigilAssetAnomaly", asset!="pump-1"}[10m])')
    assert healthy == [], f"anomaly alert on a healthy pump: {healthy}"
    (alert,) = firing
    assert alert["labels"]["severity"] == "warning" and alert["labels"]["team"] == "maintenance"
    assert alert["annotations"]["summary"] == "Asset pump-1: anomaly open for 5 minutes"
    assert float(alert["value"]) > 1.0  # the normalised score
    print(f"VigilAssetAnomaly firing {seconds:.1f} s after vigil simulate finished")
    states = {(a["labels"]["alertname"], a["state"]) for a in s.prometheus.alerts()}
    for name in ("VigilDetectorDown", "VigilDetectorAbsent", "VigilBrokerUnreachable"):
        assert not any(n == name for n, _ in states), f"{name} is active: {states}{s.diagnostics()}"
    # the dashboards' answers: pump-1 tops the fleet, its sensor shares add up to 1
    (top,) = s.prometheus.query("topk(1, asset:vigil_asset_normalized_score:max)")
    assert top["metric"]["asset"] == "pump-1"
    shares = s.prometheus.query('max by (sensor) (vigil_asset_sensor_share{asset="pump-1"})')
    assert len(shares) == 7 and abs(sum(float(r["value"][1]) for r in shares) - 1) < 1e-3


def test_every_rule_evaluates_without_error(stack, faulted):
    s, _ = stack
    groups = s.prometheus.get("/api/v1/rules")["data"]["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    assert len(loaded) == len(rules())
    bad = [(r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    assert not bad, bad


def test_every_promql_expression_evaluates(stack, faulted):
    """Every expression in the dashboards and rules, variables substituted, as an instant query and
    (for range panels) as a range query over the last minute."""
    s, _ = stack
    now = time.time()
    failures = []
    for where, expr, is_range in promql_expressions():
        r = s.prometheus.get("/api/v1/query", query=expr, time=now)
        if r["status"] != "success":
            failures.append(f"{where}: {r.get('error')}\n  {expr}")
        if is_range:
            r = s.prometheus.get("/api/v1/query_range", query=expr, start=now - 60, end=now, step=5)
            if r["status"] != "success":
                failures.append(f"{where} (range): {r.get('error')}\n  {expr}")
    assert not failures, "\n".join(failures)
    # and the recorded series the dashboards use exist once data flows
    for record in ("asset:vigil_asset_normalized_score:max", "asset:vigil_asset_alert_open:max",
                   "job:vigil_readings_scored:rate1m", "job_topic:vigil_consumer_lag:sum"):
        s.wait(lambda: s.prometheus.query(record), f"samples of {record}", timeout=30)
