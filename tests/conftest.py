import subprocess
from pathlib import Path

import numpy as np
import pytest

from detector.model import ModelConfig
from training.config import TrainConfig
from vigil import synthetic


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
_started_broker = False


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """Start the local Kafka broker (deploy/kafka/broker) when a selected test needs it (marked
    kafka) and none is running; `-m "not kafka"` therefore needs neither Java nor a broker.
    After the -m/-k selection (trylast), so only what runs counts."""
    global _started_broker
    if config.option.collectonly or not any(item.get_closest_marker("kafka") for item in items):
        return
    from tests.kafka_util import broker_reachable

    if broker_reachable():
        return
    broker = ROOT / "deploy" / "kafka" / "broker"
    say = config.pluginmanager.get_plugin("terminalreporter")
    if say is not None:  # the first start fetches Kafka's jars: it can take a minute or two
        say.write_line(f"starting the local Kafka broker for the tests marked kafka ({broker.relative_to(ROOT)} start)")
    done = subprocess.run([str(broker), "start"], capture_output=True, text=True)
    if done.returncode != 0:
        raise pytest.UsageError(f"the selected tests need Kafka (marked kafka), and {broker} start failed:\n"
                                f"{done.stdout}{done.stderr}(-m \"not kafka\" runs the others)")
    if say is not None:
        say.write_line((done.stdout + done.stderr).strip().splitlines()[-1] if (done.stdout + done.stderr).strip()
                       else "broker started")
    _started_broker = True


def pytest_sessionfinish(session, exitstatus):
    if _started_broker:
        subprocess.run([str(ROOT / "deploy" / "kafka" / "broker"), "stop"], capture_output=True)
