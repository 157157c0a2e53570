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
