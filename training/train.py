"""The training loop: ELBO with optax, time-ordered validation, early stopping.

Batches are gathered on device from one standardised series by window start index,
so long histories never have to be materialised as [windows, W, C] arrays. One jitted
function runs a whole epoch (lax.scan over steps), keeping Python out of the hot loop.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from detector.model import WindowVAE, build_vae, negative_elbo
from training.config import TrainConfig

EVAL_CHUNK = 512


@dataclass(frozen=True)
class WindowData:
    """Standardised series with window start indices for training and validation.

    values, mask: [rows, sensors] float32 (values are 0 where mask is 0);
    train_starts, val_starts: int32 indices of the first row of each window.
    """

    values: np.ndarray
    mask: np.ndarray
    train_starts: np.ndarray
    val_starts: np.ndarray


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    val_loss: float
    seconds: float


def _padded(rows: int) -> int:
    """rows rounded up to one of eight sizes per doubling (at most 12.5 % more)."""
    if rows <= 16:
        return 16
    step = 1 << (rows.bit_length() - 4)
    return -(-rows // step) * step


def _gather(values, mask, starts, window):
    index = starts[:, None] + jnp.arange(window)[None, :]
    return values[index], mask[index]


@functools.lru_cache(maxsize=16)
def _compiled(graphdef, window: int, beta: float, learning_rate: float):
    """The optimizer, jitted epoch and validation step of a model shape and its settings, built
    once: a second training of the same shape (quality.py trains one model per file; a fleet
    one per asset) uses the same compiled code instead of tracing and compiling it again
    (about 2 s). -> (tx, run_epoch, eval_chunk)"""
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))

    def loss_fn(p, x, m, key, trim=0.0):
        return negative_elbo(nnx.merge(graphdef, p), x, m, key, beta, trim)

    # the data go in as arguments: as constants of the compiled code they made every
    # training's cache entry as large as its data, written once and never read again
    @jax.jit
    def run_epoch(params, opt_state, values, mask, starts, key, trim):
        # starts: [steps, batch]; trim: the share of each batch's worst windows left out
        def step(carry, s):
            params, opt_state, key = carry
            key, sub = jax.random.split(key)
            x, m = _gather(values, mask, s, window)
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, m, sub, trim)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, key), loss
        (params, opt_state, _), losses = jax.lax.scan(step, (params, opt_state, key), starts)
        return params, opt_state, jnp.mean(losses)

    @jax.jit
    def eval_chunk(params, values, mask, starts, valid, key):
        x, m = _gather(values, mask, starts, window)
        m = m * valid[:, None, None]
        loss, _ = loss_fn(params, x, m, key)
        return loss * jnp.sum(m), jnp.sum(m)

    return tx, run_epoch, eval_chunk


def fit(config: TrainConfig, data: WindowData, sensors: int,
        progress: Callable[[EpochStats], None] | None = None) -> tuple[WindowVAE, list[EpochStats], int]:
    """Train config.model's VAE; returns (model with the best validation parameters, history, best epoch)."""
    window, batch = config.model.window, config.batch_size
    if data.train_starts.size == 0 or data.val_starts.size == 0:
        raise ValueError("no training or validation windows")
    rng = np.random.default_rng(config.seed)
    model = build_vae(config.model, sensors, rngs=nnx.Rngs(config.seed))
    graphdef, params = nnx.split(model)
    tx, run_epoch, eval_chunk = _compiled(graphdef, window, config.beta, config.learning_rate)
    opt_state = tx.init(params)
    # the rows padded to one of a few sizes (masked, never gathered): the compiled epoch's
    # shapes then recur across trainings of similar size, which reuse one compilation (in a
    # process, and through JAX's persistent cache across `vigil train` runs)
    rows = _padded(len(data.values))
    values = jnp.asarray(np.pad(data.values, ((0, rows - len(data.values)), (0, 0))))
    mask = jnp.asarray(np.pad(data.mask, ((0, rows - len(data.mask)), (0, 0))))
    steps = min(math.ceil(data.train_starts.size / batch), config.max_steps_per_epoch)

    val = data.val_starts
    if val.size > 8 * EVAL_CHUNK:  # a fixed, evenly spread subset keeps validation cheap
        val = val[np.linspace(0, val.size - 1, 8 * EVAL_CHUNK).astype(np.int64)]
    pad = (-val.size) % EVAL_CHUNK
    val_starts = np.concatenate([val, np.zeros(pad, val.dtype)]).reshape(-1, EVAL_CHUNK)
    val_valid = np.concatenate([np.ones(val.size, np.float32), np.zeros(pad, np.float32)]).reshape(-1, EVAL_CHUNK)
    eval_key = jax.random.key(config.seed + 1)

    def validation_loss(params) -> float:
        total = cells = 0.0
        for s, v in zip(val_starts, val_valid):
            t, c = eval_chunk(params, values, mask, s, v, eval_key)
            total, cells = total + float(t), cells + float(c)
        return total / max(cells, 1.0)

    key = jax.random.key(config.seed)
    history: list[EpochStats] = []
    best_loss, best_epoch, best_params, waited = math.inf, 0, params, 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        order = np.resize(rng.permutation(data.train_starts), steps * batch).reshape(steps, batch)
        key, sub = jax.random.split(key)
        trim = jnp.float32(config.robust_fraction if epoch > config.robust_warmup else 0.0)
        params, opt_state, loss = run_epoch(params, opt_state, values, mask, order, sub, trim)
        val_loss = validation_loss(params)
        stats = EpochStats(epoch, float(loss), val_loss, time.perf_counter() - t0)
        history.append(stats)
        if progress:
            progress(stats)
        if not math.isfinite(stats.loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {stats.loss}); lower the learning rate")
        if not math.isfinite(best_loss) or val_loss < best_loss - 1e-4 * abs(best_loss):
            best_loss, best_epoch, best_params, waited = val_loss, epoch, params, 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    return nnx.merge(graphdef, best_params), history, best_epoch
