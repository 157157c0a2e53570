"""The variational autoencoder over sensor windows (Flax NNX).

A window is W time steps x C sensors, standardised, with a mask of observed cells.
The encoder sees the values with missing cells at 0 (the training mean); the decoder
reconstructs every cell, and only observed cells count in the loss and the score.
The likelihood is Gaussian with a learned noise level per sensor, so the ELBO weighs
each sensor's reconstruction by how predictable that sensor is on normal data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {"silu": jax.nn.silu, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh}

# Per-sensor observation noise is learned but kept in a sane range (in standard
# deviations of the training data): below 0.05 a sensor would dominate every score.
MIN_OBS_LOGVAR = 2 * math.log(0.05)
MAX_OBS_LOGVAR = 2 * math.log(2.0)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the VAE; stored in every model artifact."""

    window: int = 60
    hidden: tuple[int, ...] = (128,)
    latent: int = 16
    activation: str = "silu"

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if self.latent < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"latent and hidden sizes must be >= 1, got {self.latent}, {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation: {self.activation!r} (choose from {sorted(ACTIVATIONS)})")

    def to_dict(self) -> dict:
        return asdict(self) | {"hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**(d | {"hidden": tuple(d["hidden"])}))


def _mlp(sizes: list[int], rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])


class VAE(nnx.Module):
    """MLP VAE. Inputs x, mask: [batch, window, sensors]."""

    def __init__(self, config: ModelConfig, sensors: int, *, rngs: nnx.Rngs):
        self.window, self.sensors = config.window, sensors
        self.act = ACTIVATIONS[config.activation]
        cells = config.window * sensors
        hidden = list(config.hidden)
        self.encoder = _mlp([cells, *hidden], rngs)
        self.to_mean = nnx.Linear(hidden[-1], config.latent, rngs=rngs)
        self.to_logvar = nnx.Linear(hidden[-1], config.latent, rngs=rngs)
        self.decoder = _mlp([config.latent, *hidden[::-1]], rngs)
        self.to_output = nnx.Linear(hidden[0], cells, rngs=rngs)
        self.obs_logvar = nnx.Param(jnp.zeros((sensors,)))

    def _check(self, x: jax.Array) -> None:
        if x.shape[1:] != (self.window, self.sensors):
            raise ValueError(
                f"expected windows of shape [batch, {self.window}, {self.sensors}], got {list(x.shape)}"
            )

    def encode(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x, mask: [batch, window, sensors] -> posterior mean, log-variance: [batch, latent]."""
        self._check(x)
        h = (x * mask).reshape(x.shape[0], -1)
        for layer in self.encoder:
            h = self.act(layer(h))
        return self.to_mean(h), jnp.clip(self.to_logvar(h), -12.0, 8.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """z: [batch, latent] -> reconstruction [batch, window, sensors]."""
        h = z
        for layer in self.decoder:
            h = self.act(layer(h))
        return self.to_output(h).reshape(z.shape[0], self.window, self.sensors)

    def observation_logvar(self) -> jax.Array:
        """Learned noise log-variance per sensor: [sensors]."""
        return jnp.clip(self.obs_logvar[...], MIN_OBS_LOGVAR, MAX_OBS_LOGVAR)

    def reconstruct(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """Deterministic reconstruction from the posterior mean: [batch, window, sensors]."""
        mean, _ = self.encode(x, mask)
        return self.decode(mean)


def negative_elbo(
    model: VAE, x: jax.Array, mask: jax.Array, key: jax.Array, beta: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean over the batch of -ELBO per observed cell, and its parts.

    x, mask: [batch, window, sensors]; windows with no observed cell weigh nothing.
    reconstruction = Gaussian negative log-likelihood of the observed cells;
    kl = KL(q(z|x) || N(0, I)), scaled by beta.
    """
    mean, logvar = model.encode(x, mask)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    recon = model.decode(z)
    obs_logvar = model.observation_logvar()
    nll_cells = 0.5 * ((x - recon) ** 2 * jnp.exp(-obs_logvar) + obs_logvar + jnp.log(2 * jnp.pi))
    nll = jnp.sum(nll_cells * mask, axis=(1, 2))
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=1)
    observed = jnp.sum(mask, axis=(1, 2))
    weight = (observed > 0).astype(x.dtype)
    cells = jnp.maximum(jnp.sum(observed), 1.0)
    loss = jnp.sum((nll + beta * kl) * weight) / cells
    return loss, {"reconstruction": jnp.sum(nll * weight) / cells, "kl": jnp.sum(kl * weight) / cells}
