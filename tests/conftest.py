import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from detector.model import ModelConfig
from training.config import TrainConfig
from vigil import synthetic


@pytest.fixture(autouse=True)
def cleanup_processes(monkeypatch):
    """Kill any `vigil serve` a failed test left running, and close its log, at the end of that
    test: left to the garbage collector, its process and file warn (ResourceWarning) during
    whichever later test collects them, and fail that test instead."""
    from tests.kafka_util import Serve

    started = []
    original = Serve.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(Serve, "__init__", init)
    yield
    for s in started:
        s.cleanup()


@pytest.fixture
def tiny_config() -> TrainConfig:
    """A model small enough to train in a second or two."""
    return TrainConfig(model=ModelConfig(window=8, hidden=(16,), latent=4), epochs=6, batch_size=32,
                       max_steps_per_epoch=20, patience=3)


@pytest.fixture
def normal_csv(tmp_path):
    values, labels = synthetic.generate(1200, seed=1)
    return synthetic.write_csv(tmp_path / "normal.csv", values)


@pytest.fixture
def faulty_csv(tmp_path):
    values, labels = synthetic.generate(600, seed=2, faults=(("cavitation", 300, 120),))
    return synthetic.write_csv(tmp_path / "faulty.csv", values, labels)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- the broker

ROOT = Path(__file__).resolve().parents[1]
# The broker the tests start has a state dir of its own, deleted before and after the run: the
# tests make hundreds of throwaway topics per run, and a state that keeps them all grows without
# bound (a broker with 4,000 partitions takes minutes to load them before it opens its port).
TEST_STATE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vigil" / "kafka-test-state"
_started_broker = False
_topics_before: set[str] | None = None   # when the tests use a broker that was already running


def _broker(command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "deploy" / "kafka" / "broker"), command], capture_output=True, text=True,
                          env=os.environ | {"VIGIL_KAFKA_STATE_DIR": str(TEST_STATE)})


def _topics() -> set[str]:
    from kafka import KafkaAdminClient

    from tests.kafka_util import BOOTSTRAP

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30_000)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """Start a local Kafka broker (deploy/kafka/broker, fresh state) when a selected test needs
    it (marked kafka) and none is running; `-m "not kafka"` therefore needs neither Java nor a
    broker. A broker already running is used as it is, and the topics the run made on it are
    deleted at the end. After the -m/-k selection (trylast), so only what runs counts."""
    global _started_broker, _topics_before
    if config.option.collectonly or not any(item.get_closest_marker("kafka") for item in items):
        return
    from tests.kafka_util import broker_reachable

    if broker_reachable():
        try:
            _topics_before = _topics()
        except Exception:  # noqa: BLE001 - then the tests say what is wrong with it; nothing is cleaned up
            _topics_before = None
        return
    say = config.pluginmanager.get_plugin("terminalreporter")
    if say is not None:  # the first start fetches Kafka's jars: it can take a minute or two
        say.write_line("starting a local Kafka broker for the tests marked kafka "
                       f"(deploy/kafka/broker start, state {TEST_STATE})")
    _broker("reset")
    done = _broker("start")
    if done.returncode != 0:
        raise pytest.UsageError("the selected tests need Kafka (marked kafka), and deploy/kafka/broker start failed:\n"
                                f"{done.stdout}{done.stderr}(-m \"not kafka\" runs the others)")
    if say is not None:
        say.write_line((done.stdout + done.stderr).strip().splitlines()[-1] if (done.stdout + done.stderr).strip()
                       else "broker started")
    _started_broker = True


def pytest_sessionfinish(session, exitstatus):
    if _started_broker:
        _broker("reset")   # stops it and deletes its state
    elif _topics_before is not None:
        from kafka import KafkaAdminClient

        from tests.kafka_util import BOOTSTRAP

        try:
            made = sorted(t for t in _topics() - _topics_before if not t.startswith("__"))
            admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=60_000)
            try:
                for i in range(0, len(made), 100):
                    admin.delete_topics(made[i:i + 100])
            finally:
                admin.close()
        except Exception as e:  # noqa: BLE001 - leftover topics are untidy, not a failed run
            print(f"\nconftest: could not delete the topics this run made: {e}")
