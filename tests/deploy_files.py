"""Reading deploy/ for the tests: YAML files, dashboards, rules, their PromQL, and the `vigil`
command lines that compose, Kubernetes and systemd run."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))

# What the dashboards' Grafana variables stand for when an expression is run outside Grafana.
GRAFANA_VARIABLES = {"asset": "pump-1", "model": ".*", "__rate_interval": "1m", "__interval": "15s", "__range": "1h",
                     "__range_s": "3600"}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_yaml_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def compose() -> dict:
    return load_yaml(DEPLOY / "compose.yaml")


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


def panels(dashboard: dict):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside a collapsed row


def rules() -> list[tuple[str, dict]]:
    """(file name, rule) for every recording and alerting rule."""
    return [(p.name, rule) for p in RULES for group in load_yaml(p)["groups"] for rule in group["rules"]]


def substitute(expr: str, values: dict[str, str] = GRAFANA_VARIABLES) -> str:
    """Replace Grafana variables ($name, ${name}); an unknown one is an error."""
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def variable_query(query: str) -> str:
    """The PromQL inside a Grafana Prometheus variable query (label_values, query_result)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query) or \
        re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
    if m:
        return m.group(1)
    m = re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", query)
    return "up" if m else query


def promql_expressions() -> list[tuple[str, str, bool]]:
    """(where, PromQL with variables substituted, is a range panel) from dashboards and rules."""
    out = []
    for name, board in dashboards().items():
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                out.append((f"{name} variable ${var['name']}", substitute(variable_query(query)), False))
        for panel in panels(board):
            for target in panel.get("targets", []):
                out.append((f"{name} panel {panel['id']} {panel['title']!r} {target['refId']}",
                            substitute(target["expr"]), not target.get("instant", False)))
    for file, rule in rules():
        out.append((f"{file} {rule.get('alert') or rule.get('record')}", rule["expr"], False))
    return out


# ---------------------------------------------------------------- `vigil` command lines

SEPARATORS = {"&&", "||", ";", "|", "{", "}", "(", ")", "then", "else", "fi", "do", "done"}


def shell_commands(script: str) -> list[list[str]]:
    """Simple commands of a shell script (enough for the `sh -c` lines in deploy/)."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in lexer:
            if token in SEPARATORS:
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands


def vigil_argvs(argv: list[str]) -> list[list[str]]:
    """The `vigil ...` invocations in a container/unit command: direct, or inside `sh -c`."""
    if not argv:
        return []
    if Path(argv[0]).name in ("sh", "bash") and "-c" in argv:
        script = argv[argv.index("-c") + 1]
        return [c for c in shell_commands(script) if Path(c[0]).name == "vigil"]
    return [argv] if Path(argv[0]).name == "vigil" else []


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def compose_invocations() -> list[tuple[str, list[str]]]:
    out = []
    for name, service in compose()["services"].items():
        argv = _as_list(service.get("entrypoint")) + _as_list(service.get("command"))
        out += [(f"compose.yaml service {name}", a) for a in vigil_argvs(argv)]
    return out


def k8s_containers():
    """(file, workload kind/name, pod spec, container) for every container in deploy/k8s."""
    for path in K8S:
        for doc in load_yaml_docs(path):
            spec = doc.get("spec", {})
            if doc["kind"] == "CronJob":
                pod = spec["jobTemplate"]["spec"]["template"]["spec"]
            elif doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                pod = spec["template"]["spec"]
            else:
                continue
            for container in pod.get("initContainers", []) + pod["containers"]:
                yield path.name, f"{doc['kind']}/{doc['metadata']['name']}", pod, container


def k8s_invocations() -> list[tuple[str, list[str]]]:
    out = []
    for file, workload, _, container in k8s_containers():
        argv = _as_list(container.get("command")) + _as_list(container.get("args"))
        out += [(f"{file} {workload} container {container['name']}", a) for a in vigil_argvs(argv)]
    return out


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def systemd_invocations() -> list[tuple[str, list[str]]]:
    out = []
    for path in UNITS:
        for key in ("ExecStart", "ExecStartPre", "ExecStartPost"):
            line = unit(path)["Service"].get(key)
            if line:
                out += [(f"{path.name} {key}", a) for a in vigil_argvs(shlex.split(line.lstrip("-@:+!")))]
    return out


def all_vigil_invocations() -> list[tuple[str, list[str]]]:
    return compose_invocations() + k8s_invocations() + systemd_invocations()
