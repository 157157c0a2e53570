"""Helpers for tests against the local Kafka broker (deploy/kafka/broker start)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

BOOTSTRAP = os.environ.get("VIGIL_TEST_BOOTSTRAP", "127.0.0.1:9092")
ROOT = Path(__file__).resolve().parents[1]
T0 = 1_795_460_400_000


TINY = "[model]\nwindow = 8\nhidden = [16]\nlatent = 4\n[training]\nepochs = 8\nmax_steps_per_epoch = 30\n"


def train_tiny_model(directory: Path) -> Path:
    """A small model of normal synthetic pumps (seconds to train), written to directory/model."""
    from vigil import synthetic
    from vigil.cli import main

    synthetic.write_csv(directory / "normal.csv", synthetic.generate(1500, seed=1)[0])
    (directory / "tiny.toml").write_text(TINY)
    assert main(["train", "--data", str(directory / "normal.csv"), "--out", str(directory / "model"),
                 "--config", str(directory / "tiny.toml"), "--quiet"]) == 0
    return directory / "model"


def broker_reachable() -> bool:
    host, port = BOOTSTRAP.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reading(asset: str, i: int, values: dict) -> bytes:
    return json.dumps({"asset": asset, "ts": T0 + i * 1000, "values": values}).encode()


class Serve:
    """A `vigil serve` subprocess with its own metrics port; `extra` flags and `env` variables
    override the defaults (e.g. another --bootstrap-servers, VIGIL_KAFKA_PASSWORD); model None:
    no --model (the config file's routes)."""

    def __init__(self, model, topic, group, extra=(), log_path=None, env=None):
        self.port, self.group = free_port(), group
        self.topics = {"topic": topic, "alerts": topic + ".alerts", "dlq": topic + ".dlq"}
        cmd = [sys.executable, "-m", "vigil", "serve", *(["--model", str(model)] if model else []),
               "--bootstrap-servers", BOOTSTRAP,
               "--topic", topic, "--group", group, "--alerts-topic", self.topics["alerts"],
               "--dlq-topic", self.topics["dlq"], "--metrics-addr", f"127.0.0.1:{self.port}",
               "--max-wait-ms", "50", "--log-level", "warning", *extra]
        self.log = open(log_path or os.devnull, "w")
        env = os.environ | {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"} | (env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def wait_for(self, predicate, timeout=120.0, what="condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vigil serve exited with {self.proc.returncode} while waiting for {what}")
            try:
                last = self.metrics()
                if predicate(last):
                    return last
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; last metrics: "
                             f"{ {k: v for k, v in (last or {}).items() if k.startswith('vigil_')} }")

    def terminate(self, timeout=10.0) -> float:
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # fails the test, but leaves no daemon behind
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.log.close()
        return time.monotonic() - t0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.log.close()
