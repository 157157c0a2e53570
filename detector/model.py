"""The variational autoencoders over sensor windows (Flax NNX).

A window is W time steps x C sensors, standardised, with a mask of observed cells.
The encoder sees the values with missing cells at 0 (the training mean); the decoder
reconstructs every cell, and only observed cells count in the loss and the score.
The likelihood is Gaussian with a learned noise level per sensor, so the ELBO weighs
each sensor's reconstruction by how predictable that sensor is on normal data.

Two architectures share one interface (`WindowVAE`), chosen by `ModelConfig.architecture`
through `build_vae`:

- "mlp" (`VAE`): dense layers on the flattened window; every cell has its own weights.
- "conv" (`ConvVAE`): 1-D convolutions over time, so a pattern is recognised wherever it
  sits in the window, with far fewer weights for the same window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {"silu": jax.nn.silu, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh}
ARCHITECTURES = ("mlp", "conv")

# Per-sensor observation noise is learned but kept in a sane range (in standard
# deviations of the training data): below 0.05 a sensor would dominate every score.
MIN_OBS_LOGVAR = 2 * math.log(0.05)
MAX_OBS_LOGVAR = 2 * math.log(2.0)

# The keys of an "mlp" model description, written exactly as before other architectures
# existed, so that earlier Vigil releases still load MLP artifacts written by this one.
_MLP_KEYS = ("window", "hidden", "latent", "activation")


def _sizes_ok(sizes) -> bool:
    return bool(sizes) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the VAE; stored in every model artifact.

    hidden: layer sizes of the "mlp" encoder (mirrored by its decoder).
    channels, kernel: the "conv" encoder's stride-2 convolutions, one per entry of
    channels (each halves the time axis), and their width in time steps.
    """

    window: int = 60
    hidden: tuple[int, ...] = (128,)
    latent: int = 16
    activation: str = "silu"
    architecture: str = "mlp"
    channels: tuple[int, ...] = (16, 32)
    kernel: int = 5

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if self.latent < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"latent and hidden sizes must be >= 1, got {self.latent}, {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation: {self.activation!r} (choose from {sorted(ACTIVATIONS)})")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unsupported architecture: {self.architecture!r} (choose from {list(ARCHITECTURES)})")
        if not _sizes_ok(self.channels):
            raise ValueError(f"channels must be a non-empty list of integers >= 1, got {self.channels!r}")
        if not isinstance(self.kernel, int) or isinstance(self.kernel, bool) or self.kernel < 2:
            # a stride-2 convolution of width 1 would never look at every other time step
            raise ValueError(f"kernel must be an integer >= 2, got {self.kernel!r}")

    def to_dict(self) -> dict:
        """JSON-ready description; an "mlp" one leaves out the fields only "conv" uses."""
        d = asdict(self) | {"hidden": list(self.hidden), "channels": list(self.channels)}
        return {k: d[k] for k in _MLP_KEYS} if self.architecture == "mlp" else d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of to_dict; a description without "architecture" (written before it existed) is an MLP."""
        d = d | {"hidden": tuple(d["hidden"])}
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return cls(**d)


class WindowVAE(nnx.Module):
    """What training, scoring and artifacts rely on. Inputs x, mask: [batch, window, sensors].

    Subclasses set window, sensors and obs_logvar (an nnx.Param [sensors]) and define
    encode and decode.
    """

    window: int
    sensors: int
    obs_logvar: nnx.Param

    def _check(self, x: jax.Array) -> None:
        if x.shape[1:] != (self.window, self.sensors):
            raise ValueError(
                f"expected windows of shape [batch, {self.window}, {self.sensors}], got {list(x.shape)}"
            )

    def encode(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x, mask: [batch, window, sensors] -> posterior mean, log-variance: [batch, latent]."""
        raise NotImplementedError

    def decode(self, z: jax.Array) -> jax.Array:
        """z: [batch, latent] -> reconstruction [batch, window, sensors]."""
        raise NotImplementedError

    def observation_logvar(self) -> jax.Array:
        """Learned noise log-variance per sensor: [sensors]."""
        return jnp.clip(self.obs_logvar[...], MIN_OBS_LOGVAR, MAX_OBS_LOGVAR)

    def reconstruct(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """Deterministic reconstruction from the posterior mean: [batch, window, sensors]."""
        mean, _ = self.encode(x, mask)
        return self.decode(mean)


def _mlp(sizes: list[int], rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])


def _posterior(mean: jax.Array, logvar: jax.Array) -> tuple[jax.Array, jax.Array]:
    return mean, jnp.clip(logvar, -12.0, 8.0)


class VAE(WindowVAE):
    """MLP VAE on the flattened window. Inputs x, mask: [batch, window, sensors]."""

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

    def encode(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x, mask: [batch, window, sensors] -> posterior mean, log-variance: [batch, latent]."""
        self._check(x)
        h = (x * mask).reshape(x.shape[0], -1)
        for layer in self.encoder:
            h = self.act(layer(h))
        return _posterior(self.to_mean(h), self.to_logvar(h))

    def decode(self, z: jax.Array) -> jax.Array:
        """z: [batch, latent] -> reconstruction [batch, window, sensors]."""
        h = z
        for layer in self.decoder:
            h = self.act(layer(h))
        return self.to_output(h).reshape(z.shape[0], self.window, self.sensors)


def _same_padding(steps: int, kernel: int, stride: int) -> tuple[int, int]:
    """Zeros before and after the time axis of a "SAME" convolution (ceil(steps / stride) outputs)."""
    total = max((-(-steps // stride) - 1) * stride + kernel - steps, 0)
    return total // 2, total - total // 2


def _conv(x: jax.Array, w: jax.Array, stride: int, padding: list[tuple[int, int]], *, dilate_x: int = 1,
          dilate_w: int = 1) -> jax.Array:
    """x: [batch, steps, in], w: [kernel, in, out]: the one convolution layout XLA:CPU runs fast everywhere."""
    return jax.lax.conv_general_dilated(x, w, (stride,), padding, lhs_dilation=(dilate_x,), rhs_dilation=(dilate_w,),
                                        dimension_numbers=("NWC", "WIO", "NWC"))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv1d(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """x: [batch, steps, in], w: [kernel, in, out] -> [batch, ceil(steps / stride), out] ("SAME" padding).

    The gradient is written out by hand as two more convolutions in the forward layout:
    training runs each epoch as one lax.scan, and inside a loop XLA:CPU runs the
    convolutions that JAX derives for the gradient (other layouts) 10-15x slower.
    """
    return _conv(x, w, stride, [_same_padding(x.shape[1], w.shape[0], stride)])


def _conv1d_fwd(x, w, stride):
    return conv1d(x, w, stride), (x, w)


def _conv1d_bwd(stride, residuals, g):
    x, w = residuals
    kernel, steps = w.shape[0], x.shape[1]
    lo, hi = _same_padding(steps, kernel, stride)
    span = (g.shape[1] - 1) * stride + 1  # padded input steps from the first output's start to the last's
    # input: the transposed convolution (g spread out by stride, kernel flipped, in <-> out),
    # then the padding cut away
    extra = max(lo + steps - (span + kernel - 1), 0)
    dx = _conv(g, jnp.flip(w, 0).transpose(0, 2, 1), 1, [(kernel - 1, kernel - 1 + extra)], dilate_x=stride)
    # kernel: the input correlated over time with g (spread out by stride), summed over the
    # batch: a convolution with in as its batch and the batch as its features
    padded = jnp.pad(x, ((0, 0), (lo, hi), (0, 0))).transpose(2, 1, 0)  # [in, padded steps, batch]
    dw = _conv(padded, g.transpose(1, 0, 2), 1, [(0, 0)], dilate_w=stride)  # [in, >= kernel, out]
    return dx[:, lo:lo + steps], dw[:, :kernel].transpose(1, 0, 2)


conv1d.defvjp(_conv1d_fwd, _conv1d_bwd)


class _TimeConv(nnx.Module):
    """1-D convolution over time, channels last, "SAME" padding; parameters named as in nnx.Conv."""

    def __init__(self, ins: int, outs: int, kernel: int, stride: int, *, rngs: nnx.Rngs):
        self.stride = stride
        # drawn as the [kernel * ins, outs] matrix it is to lecun_normal (same fan-in): XLA:CPU
        # compiles the random draw for some 3-D shapes 4x slower (~3 s of each model build)
        w = nnx.initializers.lecun_normal()(rngs.params(), (kernel * ins, outs))
        self.kernel = nnx.Param(w.reshape(kernel, ins, outs))
        self.bias = nnx.Param(jnp.zeros((outs,)))

    def __call__(self, *parts: jax.Array) -> jax.Array:
        """parts: [batch, steps, ins_i], together ins channels -> [batch, ceil(steps / stride), outs].

        The same as convolving the parts concatenated along channels, but without building
        that array (on CPU, the concatenation costs more than the convolution).
        """
        y, start = self.bias[...], 0
        for part in parts:
            y = y + conv1d(part, self.kernel[:, start:start + part.shape[2]], self.stride)
            start += part.shape[2]
        return y


class ConvVAE(WindowVAE):
    """Temporal VAE: 1-D convolutions over time. Inputs x, mask: [batch, window, sensors].

    Encoder: the input channels are the masked values and the mask itself (2C channels),
    so a missing cell is not mistaken for a reading at the training mean. Each entry of
    config.channels is a convolution of width config.kernel with stride 2 ("SAME"
    padding: the time axis goes W -> ceil(W/2) -> ... -> T), then one dense layer each
    maps the flattened [T, channels[-1]] features to the posterior mean and log-variance.

    Decoder, the mirror image: a dense layer from z to the coarse grid [T, channels[-1]],
    then per encoder layer, in reverse, a stride-2 upsampling back to channels[i-1] (the
    last one to the C sensors, without activation). Upsampling is sub-pixel convolution:
    a stride-1 convolution of width kernel//2 + 1 on the coarse grid emits 2 x out
    channels, reshaped to twice the steps; that is a stride-2 transposed convolution
    computed without multiplying the inserted zeros (about half the cost on CPU). The
    result has T * 2^len(channels) >= W steps; the first W are the reconstruction.

    Defaults (W=60, C=8, channels (16, 32), kernel 5): [60, 16] -> [30, 16] -> [15, 32]
    -> z [16] -> [15, 32] -> [30, 16] -> [60, 8]; 31k parameters (the MLP: 130k).
    """

    def __init__(self, config: ModelConfig, sensors: int, *, rngs: nnx.Rngs):
        self.window, self.sensors = config.window, sensors
        self.act = ACTIVATIONS[config.activation]
        channels = list(config.channels)
        steps = config.window
        for _ in channels:
            steps = -(-steps // 2)
        self.steps = steps  # length of the coarsest time grid
        width = config.kernel // 2 + 1
        ins = [2 * sensors, *channels[:-1]]
        self.encoder = nnx.List([_TimeConv(a, b, config.kernel, 2, rngs=rngs) for a, b in zip(ins, channels)])
        self.to_mean = nnx.Linear(steps * channels[-1], config.latent, rngs=rngs)
        self.to_logvar = nnx.Linear(steps * channels[-1], config.latent, rngs=rngs)
        self.from_latent = nnx.Linear(config.latent, steps * channels[-1], rngs=rngs)
        outs = [sensors, *channels[:-1]]
        self.decoder = nnx.List([
            _TimeConv(a, 2 * b, width, 1, rngs=rngs) for a, b in zip(channels[::-1], outs[::-1])
        ])
        self.obs_logvar = nnx.Param(jnp.zeros((sensors,)))

    def encode(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x, mask: [batch, window, sensors] -> posterior mean, log-variance: [batch, latent]."""
        self._check(x)
        h = self.act(self.encoder[0](x * mask, mask))
        for layer in self.encoder[1:]:
            h = self.act(layer(h))
        h = h.reshape(x.shape[0], -1)
        return _posterior(self.to_mean(h), self.to_logvar(h))

    def decode(self, z: jax.Array) -> jax.Array:
        """z: [batch, latent] -> reconstruction [batch, window, sensors]."""
        h = self.act(self.from_latent(z)).reshape(z.shape[0], self.steps, -1)
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            h = h.reshape(z.shape[0], 2 * h.shape[1], h.shape[2] // 2)  # sub-pixel: 2 steps per coarse step
            if i < len(self.decoder) - 1:
                h = self.act(h)
        return h[:, : self.window]


_CLASSES: dict[str, type[WindowVAE]] = {"mlp": VAE, "conv": ConvVAE}


def build_vae(config: ModelConfig, sensors: int, *, rngs: nnx.Rngs) -> WindowVAE:
    """The VAE that config.architecture names, for windows [batch, config.window, sensors]."""
    if config.architecture not in _CLASSES:
        raise ValueError(f"unsupported architecture: {config.architecture!r} (choose from {list(_CLASSES)})")
    return _CLASSES[config.architecture](config, sensors, rngs=rngs)


def negative_elbo(
    model: WindowVAE, x: jax.Array, mask: jax.Array, key: jax.Array, beta: float, trim: jax.Array | float = 0.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean over the batch of -ELBO per observed cell, and its parts.

    x, mask: [batch, window, sensors]; windows with no observed cell weigh nothing.
    reconstruction = Gaussian negative log-likelihood of the observed cells;
    kl = KL(q(z|x) || N(0, I)), scaled by beta.
    trim: the share of the batch's windows with the highest -ELBO per cell that is left out
    (0 = none): "normal" training data holds unlabelled anomalies, and a model that must
    reconstruct them learns to reconstruct anomalies (cf. Donut's modified ELBO, which
    leaves out labelled anomalous points).
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
    per_cell = jax.lax.stop_gradient((nll + beta * kl) / jnp.maximum(observed, 1.0))
    cut = jnp.quantile(jnp.where(weight > 0, per_cell, -jnp.inf), 1.0 - trim)
    weight = weight * (per_cell <= cut)
    cells = jnp.maximum(jnp.sum(observed * weight), 1.0)
    loss = jnp.sum((nll + beta * kl) * weight) / cells
    return loss, {"reconstruction": jnp.sum(nll * weight) / cells, "kl": jnp.sum(kl * weight) / cells}
