import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from detector.model import VAE, ModelConfig, negative_elbo


def _model(window=6, sensors=3, seed=0):
    return VAE(ModelConfig(window=window, hidden=(16,), latent=2), sensors, rngs=nnx.Rngs(seed))


def test_shapes_are_checked():
    model = _model()
    with pytest.raises(ValueError, match=r"\[batch, 6, 3\].*\[2, 5, 3\]"):
        model.reconstruct(jnp.zeros((2, 5, 3)), jnp.ones((2, 5, 3)))


@pytest.mark.slow
def test_masked_cells_do_not_change_the_loss():
    model = _model()
    x = jax.random.normal(jax.random.key(1), (4, 6, 3))
    mask = jnp.ones_like(x).at[:, 2, 1].set(0.0)
    key = jax.random.key(2)
    a, _ = negative_elbo(model, x, mask, key, beta=1.0)
    b, _ = negative_elbo(model, x.at[:, 2, 1].set(1e6), mask, key, beta=1.0)
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_kl_term_is_real_and_weighted_by_beta():
    model = _model()
    x = jax.random.normal(jax.random.key(1), (4, 6, 3))
    mask = jnp.ones_like(x)
    key = jax.random.key(2)
    _, parts = negative_elbo(model, x, mask, key, beta=1.0)
    assert float(parts["kl"]) > 0
    l0, _ = negative_elbo(model, x, mask, key, beta=0.0)
    l2, _ = negative_elbo(model, x, mask, key, beta=2.0)
    assert float(l2) - float(l0) == pytest.approx(2 * float(parts["kl"]), rel=1e-4)


@pytest.mark.slow
def test_loss_decreases_on_a_toy_problem():
    t = np.arange(6)[None, :, None] + np.arange(64)[:, None, None] * 0.3
    x = jnp.asarray(np.concatenate([np.sin(t), np.cos(t), 0.5 * np.sin(t)], axis=2), jnp.float32)
    mask = jnp.ones_like(x)
    model = _model()
    graphdef, params = nnx.split(model)
    tx = optax.adam(1e-2)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, key):
        loss, grads = jax.value_and_grad(
            lambda p: negative_elbo(nnx.merge(graphdef, p), x, mask, key, 1.0)[0])(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    key = jax.random.key(0)
    losses = []
    for _ in range(300):
        key, sub = jax.random.split(key)
        params, opt, loss = step(params, opt, sub)
        losses.append(float(loss))
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.5
