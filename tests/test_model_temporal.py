"""The temporal (convolutional) VAE, the architecture switch in ModelConfig, and build_vae."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from detector.artifact import TrainedModel, load, save
from detector.model import VAE, ConvVAE, ModelConfig, WindowVAE, build_vae, conv1d, negative_elbo
from detector.preprocessing import Scaler
from detector.threshold import Persistence, Threshold
from training.config import TrainConfig
from training.train import WindowData, fit

# A description as every artifact before the architecture switch wrote it.
OLD_STYLE = {"window": 12, "hidden": [32, 16], "latent": 3, "activation": "silu"}


SMALL = ModelConfig(window=12, latent=4, architecture="conv", channels=(8,), kernel=3)  # with 3 sensors


def _abstract(config: ModelConfig, sensors: int):
    """The model with shapes only: no initialisation or compilation (fast)."""
    return nnx.eval_shape(lambda: build_vae(config, sensors, rngs=nnx.Rngs(0)))


def _shapes(model) -> dict:
    return jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(model)))


def _batch(window, sensors, batch=4, seed=1):
    x = jax.random.normal(jax.random.key(seed), (batch, window, sensors))
    mask = (jax.random.uniform(jax.random.key(seed + 1), x.shape) > 0.2).astype(jnp.float32)
    return x * mask, mask


@pytest.fixture(scope="module")
def small() -> ConvVAE:
    return build_vae(SMALL, 3, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def elbo(small):
    """Jitted (state, x, mask, beta) -> ((loss, parts), grads), reconstruction; compiled once for the module."""
    graphdef, state = nnx.split(small)

    @jax.jit
    def run(state, x, mask, beta):
        loss = lambda p: negative_elbo(nnx.merge(graphdef, p), x, mask, jax.random.key(3), beta)  # noqa: E731
        return jax.value_and_grad(loss, has_aux=True)(state), nnx.merge(graphdef, state).reconstruct(x, mask)

    return lambda x, mask, beta=1.0: run(state, x, mask, beta)


@pytest.mark.parametrize("window, sensors, channels, kernel", [
    (2, 1, (8, 8), 3), (3, 2, (8,), 2), (10, 3, (8, 8), 5), (30, 8, (8, 16, 8), 4), (60, 8, (32, 32), 5),
    (61, 5, (8, 8), 3),
])
def test_shapes_for_any_window(window, sensors, channels, kernel):
    config = ModelConfig(window=window, latent=3, architecture="conv", channels=channels, kernel=kernel)
    graphdef, state = nnx.split(_abstract(config, sensors))
    x = jax.ShapeDtypeStruct((4, window, sensors), jnp.float32)

    def run(state, x):
        model = nnx.merge(graphdef, state)
        mean, logvar = model.encode(x, x)
        return mean, logvar, model.decode(mean), model.reconstruct(x, x), model.observation_logvar()

    mean, logvar, decoded, recon, obs = jax.eval_shape(run, state, x)
    assert mean.shape == logvar.shape == (4, 3)
    assert decoded.shape == recon.shape == (4, window, sensors)
    assert obs.shape == (sensors,)


def test_default_conv_model_is_small():
    model = _abstract(ModelConfig(architecture="conv"), 8)
    assert sum(a.size for a in jax.tree.leaves(nnx.state(model, nnx.Param))) < 50_000


def test_shapes_are_checked(small):
    with pytest.raises(ValueError, match=r"\[batch, 12, 3\].*\[2, 11, 3\]"):
        small.reconstruct(jnp.zeros((2, 11, 3)), jnp.ones((2, 11, 3)))


@pytest.mark.slow
def test_elbo_and_gradient_are_finite_and_kl_is_real(elbo):
    x, mask = _batch(12, 3)
    mask = mask.at[0].set(0.0)  # a window with nothing observed weighs nothing
    ((loss, parts), grads), _ = elbo(x, mask)
    assert np.isfinite(float(loss)) and float(parts["kl"]) > 0
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
    ((l0, _), _), _ = elbo(x, mask, 0.0)
    ((l2, _), _), _ = elbo(x, mask, 2.0)
    assert float(l2) - float(l0) == pytest.approx(2 * float(parts["kl"]), rel=1e-4)


def test_missing_cells_are_not_zeros_and_do_not_change_the_loss(elbo):
    x, _ = _batch(12, 3)
    full = jnp.ones_like(x)
    holed = full.at[:, 4, 1].set(0.0)
    zeroed = x.at[:, 4, 1].set(0.0)
    # the encoder sees the mask: a missing cell is not a reading at the training mean
    assert not np.allclose(elbo(zeroed, full)[1], elbo(zeroed, holed)[1])
    ((a, _), _), _ = elbo(x, holed)
    ((b, _), _), _ = elbo(x.at[:, 4, 1].set(1e6), holed)
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_reconstruct_traces_once_per_shape(small):
    graphdef, state = nnx.split(small)
    traces = []

    @jax.jit
    def reconstruct(state, x, mask):
        traces.append(1)
        return nnx.merge(graphdef, state).reconstruct(x, mask)

    for seed in range(3):
        reconstruct(state, *_batch(12, 3, seed=seed))
    assert len(traces) == 1


@pytest.mark.parametrize("steps, kernel, stride", [(11, 4, 2), (7, 5, 2), (6, 3, 1)])
def test_hand_written_convolution_gradient_is_exact(steps, kernel, stride):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, steps, 3)), rng.normal(size=(kernel, 3, 4))
    g = rng.normal(size=(2, -(-steps // stride), 4))

    def same(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))

    @jax.jit
    def both(x, w, g):
        (y, reference), (ours, hand) = jax.vjp(same, x, w), jax.vjp(lambda x, w: conv1d(x, w, stride), x, w)
        return y, ours, reference(g), hand(g)

    y, ours, expected, got = both(x.astype(np.float32), w.astype(np.float32), g.astype(np.float32))
    np.testing.assert_array_equal(ours, y)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_old_style_description_is_exactly_the_old_mlp():
    config = ModelConfig.from_dict(OLD_STYLE)
    assert config.architecture == "mlp"
    assert config.to_dict() == OLD_STYLE  # still readable by releases before the switch
    model = _abstract(config, 3)
    assert type(model) is VAE
    cells = 12 * 3
    linear = lambda a, b: {"kernel": (a, b), "bias": (b,)}  # noqa: E731
    assert _shapes(model) == {
        "encoder": {0: linear(cells, 32), 1: linear(32, 16)},
        "to_mean": linear(16, 3), "to_logvar": linear(16, 3),
        "decoder": {0: linear(3, 16), 1: linear(16, 32)},
        "to_output": linear(32, cells),
        "obs_logvar": (3,),
    }


def test_conv_description_round_trips_through_json():
    config = ModelConfig(window=30, hidden=(64,), latent=4, activation="gelu", architecture="conv",
                         channels=(8, 16), kernel=3)
    d = json.loads(json.dumps(config.to_dict()))
    assert d["architecture"] == "conv" and d["channels"] == [8, 16] and d["kernel"] == 3
    assert ModelConfig.from_dict(d) == config
    assert _shapes(_abstract(config, 2)) == _shapes(_abstract(ModelConfig.from_dict(d), 2))


def test_build_vae_dispatches_on_architecture():
    mlp = _abstract(ModelConfig(window=8, hidden=(8,), latent=2), 3)
    conv = _abstract(ModelConfig(window=8, latent=2, architecture="conv"), 3)
    assert type(mlp) is VAE and type(conv) is ConvVAE
    assert isinstance(mlp, WindowVAE) and isinstance(conv, WindowVAE)
    assert (conv.window, conv.sensors) == (8, 3)


@pytest.mark.parametrize("change, message", [
    ({"architecture": "lstm"}, r"unsupported architecture: 'lstm' \(choose from \['mlp', 'conv'\]\)"),
    ({"channels": ()}, "channels must be a non-empty list of integers >= 1"),
    ({"channels": (16, 0)}, "channels must be"),
    ({"channels": (16.0,)}, "channels must be"),
    ({"kernel": 1}, "kernel must be an integer >= 2, got 1"),
    ({"kernel": 3.0}, "kernel must be an integer"),
])
def test_invalid_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**({"architecture": "conv"} | change))


def test_invalid_descriptions_are_refused():
    with pytest.raises(ValueError, match="unsupported architecture"):
        ModelConfig.from_dict(OLD_STYLE | {"architecture": "transformer"})
    with pytest.raises(ValueError, match="channels must be"):
        ModelConfig.from_dict(OLD_STYLE | {"architecture": "conv", "channels": "32"})


@pytest.mark.slow
def test_tiny_fit_reduces_the_loss():
    rows, window = 900, SMALL.window
    t = np.arange(rows)[:, None]
    noise = 0.05 * np.random.default_rng(0).standard_normal((rows, 3))
    values = (np.sin(2 * np.pi * t / np.array([[25.0, 40.0, 60.0]])) + noise).astype(np.float32)
    starts = np.arange(rows - window + 1, dtype=np.int32)
    data = WindowData(values, np.ones((rows, 3), np.float32), starts[:600], starts[650:])
    config = TrainConfig(model=SMALL, epochs=10, batch_size=32, max_steps_per_epoch=20, patience=10,
                         learning_rate=1e-2)
    model, history, best = fit(config, data, 3)
    assert type(model) is ConvVAE
    assert history[-1].loss < history[0].loss - 0.3
    assert history[best - 1].val_loss < history[0].val_loss - 0.3


def test_conv_artifact_round_trip(small, tmp_path):
    model = TrainedModel(("a", "b", "c"), SMALL, Scaler(np.zeros(3, np.float32), np.ones(3, np.float32)), small,
                         Threshold(2.0, "pot", {"risk": 1e-3}), Persistence(2, 4))
    raw = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    loaded = load(save(model, tmp_path / "model"))
    assert type(loaded.vae) is ConvVAE and loaded.config == SMALL
    assert loaded.scorer().score_series(raw).score.tobytes() == model.scorer().score_series(raw).score.tobytes()
