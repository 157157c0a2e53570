"""Trainings of one model shape share one compiled epoch (training.train._compiled)."""

import jax
import numpy as np
from flax import nnx

from detector.model import ModelConfig, build_vae
from training.config import TrainConfig
from training.train import WindowData, _compiled, _padded, fit

CONFIG = TrainConfig(model=ModelConfig(window=8, hidden=(16,), latent=2), epochs=2, batch_size=16,
                     max_steps_per_epoch=4, seed=3)


def _data(rows: int, seed: int) -> WindowData:
    values = np.random.default_rng(seed).normal(size=(rows, 3)).astype(np.float32)
    starts = np.arange(rows - CONFIG.model.window + 1, dtype=np.int32)
    split = int(len(starts) * 0.75)
    return WindowData(values, np.ones_like(values), starts[:split], starts[split:])


def test_padded_sizes():
    assert [_padded(n) for n in (1, 16, 17, 300, 310, 320, 321, 1000, 10_000)] == \
        [16, 16, 18, 320, 320, 320, 352, 1024, 10240]
    assert all(n <= _padded(n) <= 1.125 * n for n in range(17, 5000))


def test_trainings_of_a_shape_reuse_the_compiled_epoch():
    graphdef, _ = nnx.split(build_vae(CONFIG.model, 3, rngs=nnx.Rngs(0)))
    before = _compiled.cache_info().currsize
    fit(CONFIG, _data(300, 0), 3)
    _, run_epoch, eval_chunk = _compiled(graphdef, CONFIG.model.window, CONFIG.beta, CONFIG.learning_rate)
    assert _compiled.cache_info().currsize == before + 1
    # other data of a similar length (rows padded to the same size): no new trace
    fit(CONFIG, _data(310, 1), 3)
    assert run_epoch._cache_size() == 1 and eval_chunk._cache_size() == 1
    assert _compiled.cache_info().currsize == before + 1
    # a length in another size class: the same functions, compiled for the new shape
    fit(CONFIG, _data(400, 2), 3)
    assert run_epoch._cache_size() == 2


def test_padding_does_not_change_training():
    """Rows past every window's reach (as the padding is) change nothing: bit-identical
    parameters and validation losses."""
    data = _data(300, 0)
    longer = WindowData(np.concatenate([data.values, np.full((40, 3), 7.0, np.float32)]),
                        np.concatenate([data.mask, np.ones((40, 3), np.float32)]), data.train_starts, data.val_starts)
    a, history_a, _ = fit(CONFIG, data, 3)
    b, history_b, _ = fit(CONFIG, longer, 3)
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(nnx.split(a)[1])]
    others = [np.asarray(x) for x in jax.tree_util.tree_leaves(nnx.split(b)[1])]
    assert all(x.tobytes() == y.tobytes() for x, y in zip(leaves, others))
    assert [h.val_loss for h in history_a] == [h.val_loss for h in history_b]
