"""Static checks of deploy/: Prometheus rules and config (promtool, amtool), Grafana
provisioning and dashboards, compose.yaml and the Dockerfile, the Kubernetes manifests and
the systemd units. No Docker engine or cluster needed: files are parsed and cross-checked
against each other and against the project (images, paths, ports, `vigil` command lines).
tests/test_prometheus.py runs the rules and dashboard queries on a live Prometheus."""

import contextlib
import io
import json
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from detector.metrics import ServiceMetrics
from detector.settings import load_settings
from tests.deploy_files import (DASHBOARDS, DEPLOY, K8S, ROOT, RULE_TESTS, RULES, UNITS, all_vigil_invocations,
                                compose, dashboards, k8s_containers, load_yaml, load_yaml_docs, panels,
                                promql_expressions, rules, unit)
from vigil.cli import build_parser

PROMTOOL, AMTOOL = shutil.which("promtool"), shutil.which("amtool")
ALERTMANAGER = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")  # Debian's name
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (scripts/test installs "
                                                               "Debian's prometheus package)")
DATASOURCE_UID = "vigil-prometheus"
BUILT_IMAGE = "vigil:0.1.0"
REQUIRED_ALERTS = {"VigilAssetAnomaly", "VigilDetectorDown", "VigilConsumerLagHigh", "VigilDeadLetterRateHigh",
                   "VigilModelStale", "VigilModelReloadFailed", "VigilAlertStorm"}


def run(*cmd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def volume_parts(volume: str) -> tuple[str, str]:
    """(source, target) of a compose short-syntax volume (SOURCE:TARGET[:MODE])."""
    source, target = volume.split(":")[:2]
    return source, target


def exported_series() -> set[str]:
    """Every series name the daemon exports (counters with _total, histograms' parts)."""
    registry, names = CollectorRegistry(), set()
    ServiceMetrics(registry)
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


# ---------------------------------------------------------------- Prometheus and Alertmanager

@needs_promtool
def test_promtool_check_rules():
    r = run(PROMTOOL, "check", "rules", *map(str, RULES))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@needs_promtool
def test_promtool_unit_tests_of_the_rules():
    assert RULE_TESTS
    r = run(PROMTOOL, "test", "rules", *map(str, RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_check_config_with_its_rule_files():
    r = run(PROMTOOL, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(RULES)} rule files found" in r.stdout  # the config finds deploy/prometheus/rules


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (scripts/test installs prometheus-alertmanager)")
def test_amtool_check_config():
    r = run(AMTOOL, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_alerts_have_severity_team_and_annotations():
    alerts = {rule["alert"]: rule for _, rule in rules() if "alert" in rule}
    assert REQUIRED_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        assert name.startswith("Vigil"), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["labels"]["team"] in ("maintenance", "platform"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_recording_rules_are_named_level_metric_operations_and_used():
    records = {rule["record"] for _, rule in rules() if "record" in rule}
    for name in records:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name), name
    used = " ".join(expr for where, expr, _ in promql_expressions() if not any(where.endswith(" " + r) for r in records))
    assert {r for r in records if r not in used} == set(), "recording rules no dashboard or alert uses"


def test_every_series_in_rules_and_dashboards_exists():
    known = exported_series() | {r["record"] for _, r in rules() if "record" in r} | {"up", "ALERTS"}
    for where, expr, _ in promql_expressions():
        for name in re.findall(r"\b(vigil_[a-z_]+|[a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b", expr):
            assert name in known, f"{where}: {name} is neither exported by the daemon nor recorded"


def test_alert_dashboard_link_names_the_asset_dashboard():
    board = dashboards()["asset-drill-down.json"]
    slug = re.sub(r"[^a-z0-9]+", "-", board["title"].lower()).strip("-")
    (anomaly,) = [r for _, r in rules() if r.get("alert") == "VigilAssetAnomaly"]
    assert anomaly["annotations"]["dashboard"].startswith(f"/d/{board['uid']}/{slug}?var-asset=")


def test_alertmanager_routes_every_team():
    config = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}
    routes = config["route"].get("routes", [])
    assert config["route"]["receiver"] in receivers and all(r["receiver"] in receivers for r in routes)
    teams = {rule["labels"]["team"] for _, rule in rules() if "alert" in rule}
    routed = {m.split("=", 1)[1].strip('"') for r in routes for m in r.get("matchers", []) if m.startswith("team=")}
    assert teams <= routed | {"platform"}  # platform is also the default receiver


# ---------------------------------------------------------------- alert storm: inhibition

def alert_labels(name: str, **values: str) -> dict[str, str]:
    """The labels Prometheus sends for alert `name` of the rules files: alertname, the labels its
    expression keeps (its first `by (...)`, valued from `values`, else "x") and the rule's labels."""
    (rule,) = [r for _, r in rules() if r.get("alert") == name]
    kept = re.search(r"\bby \(([^)]*)\)", rule["expr"])
    by = [label.strip() for label in kept.group(1).split(",")] if kept else []
    return {"alertname": name, **{label: values.get(label, "x") for label in by}, **rule["labels"]}


def matches(matcher: str, labels: dict[str, str]) -> bool:
    """Alertmanager's matcher semantics (a missing label is ""; regexes are anchored)."""
    m = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"(.*)"\s*', matcher)
    assert m, f"matcher not understood by this test: {matcher!r}"
    name, op, value = m.groups()
    actual = labels.get(name, "")
    return {"=": actual == value, "!=": actual != value, "=~": re.fullmatch(value, actual) is not None,
            "!~": re.fullmatch(value, actual) is None}[op]


def storm_inhibit_rule() -> dict:
    storm = alert_labels("VigilAlertStorm", job="vigil", scope="fleet")
    config = load_yaml(ALERTMANAGER_YML)
    (rule,) = [r for r in config["inhibit_rules"] if all(matches(m, storm) for m in r["source_matchers"])]
    return rule


def test_storm_inhibits_exactly_the_asset_anomalies_of_its_own_job():
    """The inhibit rule's matchers, read against the label sets the rules files produce: the
    storm inhibits VigilAssetAnomaly (and no other alert, nor itself), and every `equal` label
    is on both alerts (a label on one side only would make the inhibition never apply)."""
    rule = storm_inhibit_rule()
    storm = alert_labels("VigilAlertStorm", job="vigil", scope="fleet")
    anomaly = alert_labels("VigilAssetAnomaly", job="vigil", asset="pump-1")
    assert all(matches(m, anomaly) for m in rule["target_matchers"])
    assert not all(matches(m, anomaly) for m in rule["source_matchers"])
    assert rule["equal"] and all(label in storm and label in anomaly for label in rule["equal"]), rule["equal"]
    targets = {name for _, r in rules() if (name := r.get("alert"))
               and all(matches(m, alert_labels(name)) for m in rule["target_matchers"])}
    assert targets == {"VigilAssetAnomaly"}
    assert storm["team"] == anomaly["team"]  # the storm pages whoever the anomalies would have


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (scripts/test installs prometheus-alertmanager)")
@pytest.mark.parametrize("alert, values", [("VigilAlertStorm", {"job": "vigil", "scope": "fleet"}),
                                           ("VigilAssetAnomaly", {"job": "vigil", "asset": "pump-1"})])
def test_amtool_routes_the_storm_where_the_anomalies_go(alert, values):
    labels = alert_labels(alert, **values)
    r = run(AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", "--verify.receivers=maintenance",
            *(f"{k}={v}" for k, v in labels.items()))
    assert r.returncode == 0, r.stdout + r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(ALERTMANAGER is None or AMTOOL is None,
                    reason="alertmanager or amtool not installed (scripts/test installs prometheus-alertmanager)")
def test_alertmanager_holds_back_the_anomalies_while_the_storm_fires(tmp_path):
    """A real Alertmanager with deploy/'s config (clustering off, a free loopback port; the
    webhooks are never reached within the test): alerts posted with amtool as Prometheus would
    label them; the anomaly of the storm's job is suppressed (inhibited by the storm), another
    job's anomaly and a platform alert are not, and it is active again once the storm resolved."""
    port = free_port()
    url = f"--alertmanager.url=http://127.0.0.1:{port}"
    log = open(tmp_path / "alertmanager.log", "w")
    proc = subprocess.Popen([ALERTMANAGER, f"--config.file={ALERTMANAGER_YML}", f"--storage.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)

    def add(name: str, end: str | None = None, **values: str) -> None:
        labels = alert_labels(name, **values)
        r = run(AMTOOL, url, "alert", "add", *([f"--end={end}"] if end else []), *(f"{k}={v}" for k, v in labels.items()))
        assert r.returncode == 0, r.stdout + r.stderr

    def states() -> dict[tuple[str, str], str]:
        """(alertname, job) -> state of the alerts Alertmanager holds that have not resolved."""
        r = run(AMTOOL, url, "-o", "json", "alert", "query", "--active", "--inhibited")
        assert r.returncode == 0, r.stdout + r.stderr
        return {(a["labels"]["alertname"], a["labels"].get("job", "")): a["status"]["state"]
                for a in json.loads(r.stdout)}

    def wait_for(condition, what: str):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
            got = condition()
            if got is True:
                return
            time.sleep(0.2)
        raise AssertionError(f"{what}: {got}")

    def ready() -> bool | str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError as e:
            return str(e)

    def states_are(expected: dict):
        got = states()
        return True if got == expected else f"expected {expected}, got {got}"

    try:
        wait_for(ready, "alertmanager not ready")
        add("VigilAssetAnomaly", job="vigil", asset="pump-1")
        add("VigilAssetAnomaly", job="vigil-west", asset="pump-1")
        add("VigilConsumerLagHigh", job="vigil", topic="vigil.readings")
        wait_for(lambda: states_are({("VigilAssetAnomaly", "vigil"): "active",
                                     ("VigilAssetAnomaly", "vigil-west"): "active",
                                     ("VigilConsumerLagHigh", "vigil"): "active"}), "before the storm")
        add("VigilAlertStorm", job="vigil", scope="fleet")
        wait_for(lambda: states_are({("VigilAssetAnomaly", "vigil"): "suppressed",
                                     ("VigilAssetAnomaly", "vigil-west"): "active",
                                     ("VigilConsumerLagHigh", "vigil"): "active",
                                     ("VigilAlertStorm", "vigil"): "active"}), "during the storm")
        past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        add("VigilAlertStorm", end=past, job="vigil", scope="fleet")  # resolved: the storm ended
        wait_for(lambda: states_are({("VigilAssetAnomaly", "vigil"): "active",
                                     ("VigilAssetAnomaly", "vigil-west"): "active",
                                     ("VigilConsumerLagHigh", "vigil"): "active"}), "after the storm")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


# ---------------------------------------------------------------- Grafana

def test_dashboards_are_valid_and_use_the_provisioned_datasource():
    datasources = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [d["uid"] for d in datasources] == [DATASOURCE_UID]
    boards = dashboards()
    assert {"fleet-overview.json", "asset-drill-down.json", "pipeline-health.json"} <= set(boards)
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for name, board in boards.items():
        assert board["schemaVersion"] >= 36, name
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels(board):
            where = f"{name} panel {panel['id']}"
            assert panel["title"] and {"x", "y", "w", "h"} <= set(panel["gridPos"]), where
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, where
            refs = [t["refId"] for t in panel.get("targets", [])]
            assert refs and len(refs) == len(set(refs)), where
            for ds in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
                assert ds == {"type": "prometheus", "uid": DATASOURCE_UID}, where
        for var in board["templating"]["list"]:
            assert var["datasource"]["uid"] == DATASOURCE_UID, name


def test_asset_drill_down_is_templated_on_asset():
    board = dashboards()["asset-drill-down.json"]
    (var,) = [v for v in board["templating"]["list"] if v["name"] == "asset"]
    assert var["type"] == "query" and "label_values(vigil_asset_normalized_score, asset)" in var["query"]
    assert all("$asset" in t["expr"] for p in panels(board) for t in p["targets"])


def test_grafana_provisioning_matches_compose():
    services = compose()["services"]
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "vigil.yml")["providers"][0]
    mounts = {target: source for source, target in map(volume_parts, services["grafana"]["volumes"])}
    assert (DEPLOY / mounts[provider["options"]["path"]]).resolve() == DASHBOARDS[0].parent
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == DEPLOY / "grafana" / "provisioning"
    (datasource,) = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", datasource["url"]).groups()
    assert host in services and f"--web.listen-address=:{port}" in services[host]["command"]


# ---------------------------------------------------------------- compose and Dockerfile

def test_compose_images_builds_and_dependencies():
    services = compose()["services"]
    assert {"kafka", "vigil", "simulator", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for name, s in services.items():
        image = s["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), f"{name}: unpinned {image}"
        if "build" in s:
            assert image == BUILT_IMAGE, name
            context = (DEPLOY / s["build"]["context"]).resolve()
            assert context == ROOT and (context / s["build"]["dockerfile"]).is_file(), name
        for dep in s.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_compose_volumes_exist_and_ports_are_local():
    c = compose()
    published = []
    for name, s in c["services"].items():
        for volume in s.get("volumes", []):
            source, _ = volume_parts(volume)
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: mounts missing {source}"
            else:
                assert source in c["volumes"], f"{name}: undeclared volume {source}"
        for port in s.get("ports", []):
            host, host_port, _ = port.split(":")
            assert host == "127.0.0.1", f"{name}: {port} is published beyond loopback"
            published.append(host_port)
    assert len(published) == len(set(published))


def test_prometheus_targets_match_compose_services():
    services = compose()["services"]
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    (target,) = jobs["vigil"]["static_configs"][0]["targets"]
    host, port = target.split(":")
    serve = services[host]["command"]
    assert serve[:2] == ["vigil", "serve"] and port_of(serve[serve.index("--metrics-addr") + 1]) == int(port)
    assert f"127.0.0.1:{port}:{port}" in services[host]["ports"]
    (am,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    host, port = am.split(":")
    assert f"--web.listen-address=:{port}" in services[host]["command"]
    # every vigil process in compose talks to the compose broker on its listener port
    listener = port_of(services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    for _, argv in all_vigil_invocations():
        if "--bootstrap-servers" in argv and not argv[argv.index("--bootstrap-servers") + 1].startswith("$"):
            value = argv[argv.index("--bootstrap-servers") + 1]
            if value.startswith("kafka:"):
                assert port_of(value) == listener


def test_dockerfile_copies_what_exists_and_the_context_allows():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.12-slim\b", dockerfile, re.M)
    allowed = {line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copies = [shlex.split(line)[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    sources = [s for args in copies if not any(a.startswith("--from") for a in args) for s in args]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert source.rstrip("/") in allowed, f"COPY {source}: excluded by Dockerfile.dockerignore"
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert f"EXPOSE {port_of(compose()['services']['vigil']['command'][-1])}" in dockerfile


# ---------------------------------------------------------------- Kubernetes

def k8s_objects() -> dict[tuple[str, str], dict]:
    out = {}
    for path in K8S:
        for doc in load_yaml_docs(path):
            assert {"apiVersion", "kind"} <= set(doc), path.name
            if doc["kind"] != "Kustomization":
                out[doc["kind"], doc["metadata"]["name"]] = doc
    return out


def test_k8s_manifests_fit_the_kubernetes_schemas():
    """Every built-in kind against the OpenAPI schemas of the newest Kubernetes release that
    kubernetes-validate ships, strictly (an unknown or misplaced field is an error). The
    ServiceMonitor is the Prometheus operator's CRD: its schema is not Kubernetes', its fields
    are checked against the Service below."""
    import copy

    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    checked = set()
    for (kind, name), doc in k8s_objects().items():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked.add(kind)
    assert checked == {"ConfigMap", "Deployment", "Service", "Namespace", "PersistentVolumeClaim", "CronJob"}
    # the validator does catch a mistake: a container field spelled wrong
    broken = copy.deepcopy(k8s_objects()["Deployment", "vigil"])
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S} - {"kustomization.yaml"}


def test_k8s_detector_service_and_servicemonitor_fit_together():
    objs = k8s_objects()
    deployment, service = objs["Deployment", "vigil"], objs["Service", "vigil"]
    monitor = objs["ServiceMonitor", "vigil"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ports
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service_port["name"]]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    # the Operator names the scrape job after the Service: the rules expect job="vigil"
    jobs = [j["job_name"] for j in load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]]
    assert service["metadata"]["name"] in jobs


def test_k8s_serve_config_is_valid_and_matches_the_ports(tmp_path):
    objs = k8s_objects()
    config = objs["ConfigMap", "vigil-config"]["data"]
    (tmp_path / "serve.toml").write_text(config["serve.toml"])
    settings = load_settings({}, env={}, config=str(tmp_path / "serve.toml"))
    container = objs["Deployment", "vigil"]["spec"]["template"]["spec"]["containers"][0]
    assert port_of(settings.metrics_addr) == {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    assert "--config" in container["command"]
    # the retraining job reads the topic the detector consumes
    retrain = [argv for where, argv in all_vigil_invocations() if where.startswith("retrain-cronjob.yaml")]
    assert retrain and all(a[a.index("--topic") + 1] == settings.topic for a in retrain)


def test_k8s_references_resolve_and_images_are_the_built_one():
    objs = k8s_objects()
    for file, workload, pod, container in k8s_containers():
        assert container["image"] == BUILT_IMAGE, f"{workload}: image {container['image']}"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, workload
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, workload
        assert pod["securityContext"]["runAsNonRoot"] is True, workload
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{workload}: mounts unknown volume {mount['name']}"
        for volume in volumes.values():
            if "configMap" in volume:
                data = objs["ConfigMap", volume["configMap"]["name"]]["data"]
                assert all(item["key"] in data for item in volume["configMap"].get("items", [])), workload
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objs, workload
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                assert ref["key"] in objs["ConfigMap", ref["name"]]["data"], f"{workload}: {env['name']}"
    cron = objs["CronJob", "vigil-retrain"]["spec"]
    assert len(cron["schedule"].split()) == 5 and cron["concurrencyPolicy"] == "Forbid"


# ---------------------------------------------------------------- systemd

HARDENING = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
             "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "RestrictAddressFamilies",
             "RestrictNamespaces", "CapabilityBoundingSet", "SystemCallFilter", "LockPersonality")


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_units_are_hardened(path):
    service = unit(path)["Service"]
    assert service["User"] == "vigil" and service["EnvironmentFile"] == "/etc/vigil/vigil.env"
    missing = [key for key in HARDENING if key not in service]
    assert not missing, f"{path.name}: no {missing}"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert "MemoryDenyWriteExecute" not in service  # XLA writes machine code at start-up


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    """systemd's own parser: unknown keys and bad values are reported (the vigil path is swapped
    for this checkout's, which exists)."""
    vigil = ROOT / ".venv" / "bin" / "vigil"
    if not vigil.exists():
        pytest.skip("no .venv/bin/vigil to stand in for /opt/vigil/bin/vigil")
    for path in sorted(DEPLOY.glob("systemd/*.service")) + sorted(DEPLOY.glob("systemd/*.timer")):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/vigil/bin/vigil", str(vigil)))
    r = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


# ---------------------------------------------------------------- vigil command lines

INVOCATIONS = all_vigil_invocations()


def test_every_deployment_runs_vigil():
    where = {w.split()[0] for w, _ in INVOCATIONS}
    assert {"compose.yaml", "detector.yaml", "retrain-cronjob.yaml", "vigil.service"} <= where


@pytest.mark.parametrize("where, argv", INVOCATIONS, ids=[f"{w} {a[1]}" for w, a in INVOCATIONS])
def test_vigil_command_lines_parse(where, argv):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{shlex.join(argv)}` does not parse with vigil.cli.build_parser(): "
                    f"{stderr.getvalue().strip().splitlines()[-1]}")
    assert args.command == argv[1]
