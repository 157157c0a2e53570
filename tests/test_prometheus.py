"""A real Prometheus (Debian's package) scraping a real `vigil serve` on the local Kafka broker.

The test Prometheus runs from its own temporary directory on a free port (never the packaged
service or port 9090), scrapes and evaluates every second, and loads a copy of
deploy/prometheus/rules in which every `for:` is shortened to FAST_FOR: production waits
minutes before paging, this test cannot. Readings go to Kafka directly (no `vigil simulate`):
three pumps run normally, then pump-1 develops cavitation and stays faulty, so its detector
alert opens and stays open and VigilAssetAnomaly must become `firing`.
"""

import json
import shutil
import subprocess
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
from tests.kafka_util import BOOTSTRAP, Serve, broker_reachable, free_port, unique
from tests.test_serve_kafka import fault_stream, model, produce  # noqa: F401 (model is a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.prometheus]

PROMETHEUS = shutil.which("prometheus")
FAST_FOR = "3s"
ROWS, FAULT_AT = 600, 300  # per pump; pump-1's fault runs from row FAULT_AT to the end
ASSETS = ("pump-1", "pump-2", "pump-3")


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


def streams():
    """Each pump's readings as (key, value) pairs: pump-1 turns faulty at FAULT_AT, the others stay normal."""
    return {"pump-1": fault_stream("pump-1", rows=ROWS, fault=(("cavitation", FAULT_AT, ROWS - FAULT_AT),)),
            "pump-2": fault_stream("pump-2", rows=ROWS, fault=()),
            "pump-3": fault_stream("pump-3", rows=ROWS, fault=(), seed=4)}


@pytest.fixture(scope="module")
def stack(model, tmp_path_factory):  # noqa: F811 (model: the fixture imported above)
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary: scripts/test installs Debian's prometheus package")
    if not broker_reachable():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run deploy/kafka/broker start (scripts/test does)")
    workdir = tmp_path_factory.mktemp("prometheus")
    topic = unique("prom-readings")
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(topic, 3, 1), NewTopic(topic + ".alerts", 1, 1), NewTopic(topic + ".dlq", 1, 1)])
    admin.close()
    serve = Serve(model, topic, unique("g"), log_path=workdir / "serve.log")
    prometheus = Prometheus(workdir, serve.port)
    try:
        prometheus.wait_ready()
        yield Stack(serve, prometheus, workdir / "serve.log"), topic
    finally:
        prometheus.stop()
        serve.cleanup()


@pytest.fixture(scope="module")
def faulted(stack):
    """Normal readings for all pumps, seen by Prometheus; then pump-1's fault, until the alert fires."""
    s, topic = stack
    pumps = streams()
    produce(topic, [m for asset in ASSETS for m in pumps[asset][:FAULT_AT]])
    s.wait(lambda: len(s.prometheus.query("vigil_asset_normalized_score")) == len(ASSETS)
           and s.prometheus.query(f"sum(vigil_readings_scored_total) >= {len(ASSETS) * (FAULT_AT - 7)}"),
           "Prometheus to scrape the scores of the normal readings")
    time.sleep(4)  # a few evaluations on normal data: longer than FAST_FOR
    normal_alerts = [a for a in s.prometheus.alerts() if a["labels"]["alertname"] == "VigilAssetAnomaly"]
    produce(topic, [m for asset in ASSETS for m in pumps[asset][FAULT_AT:]])
    t0 = time.monotonic()
    firing = s.wait(lambda: [a for a in s.prometheus.alerts() if a["labels"]["alertname"] == "VigilAssetAnomaly"
                             and a["state"] == "firing"], "VigilAssetAnomaly to fire for pump-1")
    return normal_alerts, firing, time.monotonic() - t0


def test_anomaly_alert_fires_in_prometheus(stack, faulted):
    s, _ = stack
    normal_alerts, firing, seconds = faulted
    assert normal_alerts == [], f"anomaly alert on normal data: {normal_alerts}"
    assert [a["labels"]["asset"] for a in firing] == ["pump-1"], s.diagnostics()
    (alert,) = firing
    assert alert["labels"]["severity"] == "warning" and alert["labels"]["team"] == "maintenance"
    assert alert["annotations"]["summary"] == "Asset pump-1: anomaly open for 5 minutes"
    assert float(alert["value"]) > 1.0  # the normalised score
    print(f"VigilAssetAnomaly firing {seconds:.1f} s after the fault readings were produced")
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
        assert s.prometheus.query(record), f"{record}: no samples{s.diagnostics()}"
