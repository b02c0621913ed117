"""Numerical pins of the samplers, losses and network pieces that the speed work touches.

Each is checked against a plain numpy re-implementation of the paper's formula, step by step, with
the same random draws, so that a faster implementation cannot silently change the math.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dprl.models import diffusion, flow
from dprl.models.actor import default_actor_config, make_actor
from dprl.models.nets import ACTIVATIONS, MLPDenoiser, ResidualMLP, mish

B, H, A, O = 5, 2, 3, 4


def np_mish(x):
    x = np.asarray(x, np.float64)
    return x * np.tanh(np.logaddexp(0.0, x))


def test_mish_matches_the_definition_and_its_derivative():
    x = np.concatenate([np.linspace(-30, 30, 2001), [-100.0, -87.5, 19.99, 20.0, 20.01, 44.0, 90.0,
                                                     1e4, -1e4, 0.0]]).astype(np.float32)
    np.testing.assert_allclose(np.asarray(mish(jnp.asarray(x))), np_mish(x), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mish(jnp.asarray(x))),
                               np.asarray(jax.nn.mish(jnp.asarray(x))), rtol=2e-6, atol=1e-6)
    # d/dx x tanh(softplus(x)), by central differences of the float64 definition.
    h = 1e-5
    want = (np_mish(x.astype(np.float64) + h) - np_mish(x.astype(np.float64) - h)) / (2 * h)
    got = np.asarray(jax.vmap(jax.grad(mish))(jnp.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(got))
    assert ACTIVATIONS["mish"] is mish


def test_residual_mlp_is_pre_activation_blocks():
    net = ResidualMLP((8, 8, 8, 8, 8), out_dim=3, activation="relu")
    x = jax.random.normal(jax.random.PRNGKey(0), (B, 6))
    params = net.init(jax.random.PRNGKey(1), x)["params"]
    def d(name, v):
        return v @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h = d("Dense_0", np.asarray(x))
    h = h + d("Dense_2", relu(d("Dense_1", relu(h))))
    h = h + d("Dense_4", relu(d("Dense_3", relu(h))))
    want = d("Dense_5", h)
    np.testing.assert_allclose(np.asarray(net.apply({"params": params}, x)), want, rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="odd number of equal hidden dims"):
        ResidualMLP((8, 8), out_dim=3).init(jax.random.PRNGKey(0), x)


def _denoiser_and_params(model: str):
    cfg = default_actor_config()
    cfg.model = model
    cfg.hidden_dims = (16, 16)
    cfg.diffusion_steps = 6
    cfg.flow_steps = 4
    actor = make_actor(cfg, H, A)
    obs = jax.random.normal(jax.random.PRNGKey(2), (B, O))
    params = actor.init(jax.random.PRNGKey(3), obs)
    return actor, params, obs


@pytest.mark.parametrize("method,steps,eta,min_std", [("ddpm", None, 1.0, 0.0),
                                                      ("ddpm", 3, 1.0, 0.3),
                                                      ("ddim", 3, 0.5, 0.0)])
@pytest.mark.parametrize("unroll", [False, True])
def test_diffusion_sample_matches_a_python_loop_of_the_formulas(method, steps, eta, min_std,
                                                                unroll):
    actor, params, obs = _denoiser_and_params("diffusion")
    schedule = actor.schedule
    key = jax.random.PRNGKey(7)
    got, chain = actor.sample(params, obs, key, method=method, num_steps=steps, eta=eta,
                              min_std=min_std, return_chain=True, unroll=unroll)

    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    ts, prevs = diffusion.sampling_steps(schedule.num_steps, steps)
    init_key, key = jax.random.split(key)
    x = np.asarray(jax.random.normal(init_key, (B, H, A)), np.float64)
    keys = jax.random.split(key, len(ts))
    for t, tp, k in zip(ts, prevs, keys):
        eps = np.asarray(actor.apply(params, obs, jnp.asarray(x, jnp.float32),
                                     jnp.full((B,), t, jnp.float32)), np.float64)
        ab, ab_prev = abar[t], (abar[tp] if tp >= 0 else 1.0)
        x0 = np.clip((x - np.sqrt(1 - ab) * eps) / np.sqrt(ab), -1, 1)
        if method == "ddpm":  # Ho et al. (2020), eq. 7, over a (possibly strided) step
            beta = 1 - ab / ab_prev
            mean = (np.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (
                np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
            var = beta * (1 - ab_prev) / (1 - ab)
        else:  # Song et al. (2021), eq. 12
            var = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
            eps_hat = (x - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
            mean = np.sqrt(ab_prev) * x0 + np.sqrt(max(1 - ab_prev - var, 0.0)) * eps_hat
        std = max(np.sqrt(max(var, 0.0)), min_std)
        x = mean + std * np.asarray(jax.random.normal(k, (B, H, A)), np.float64)
    np.testing.assert_allclose(np.asarray(chain.xs[-1]), x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got), np.clip(x, -1, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("min_std", [0.0, 0.2])
@pytest.mark.parametrize("unroll", [False, True])
def test_flow_sample_matches_a_python_euler_loop(min_std, unroll):
    actor, params, obs = _denoiser_and_params("flow")
    key = jax.random.PRNGKey(11)
    got, chain = actor.sample(params, obs, key, min_std=min_std, return_chain=True,
                              unroll=unroll)
    S = actor.num_sampling_steps
    init_key, key = jax.random.split(key)
    x = np.asarray(jax.random.normal(init_key, (B, H, A)), np.float64)
    for i, k in enumerate(jax.random.split(key, S)):
        t = i / S
        v = np.asarray(actor.apply(params, obs, jnp.asarray(x, jnp.float32),
                                   jnp.full((B,), t * flow.TIME_SCALE, jnp.float32)), np.float64)
        x = x + v / S + min_std * np.asarray(jax.random.normal(k, (B, H, A)), np.float64)
    np.testing.assert_allclose(np.asarray(chain.xs[-1]), x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got), np.clip(x, -1, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", ["diffusion", "flow"])
def test_bc_losses_match_numpy_with_the_same_draws(model):
    actor, params, obs = _denoiser_and_params(model)
    actions = jax.random.uniform(jax.random.PRNGKey(4), (B, H, A), minval=-1, maxval=1)
    valid = jnp.asarray(np.array([[1, 1], [1, 0], [1, 1], [1, 0], [1, 1]], np.float32))
    key = jax.random.PRNGKey(5)
    got = float(actor.loss(params, obs, actions, key, valid))
    t_key, n_key = jax.random.split(key)
    noise = np.asarray(jax.random.normal(n_key, (B, H, A)), np.float64)
    a = np.asarray(actions, np.float64)
    if model == "diffusion":  # Ho et al.: ||eps - eps_theta(sqrt(abar) x0 + sqrt(1-abar) eps)||^2
        t = np.asarray(jax.random.randint(t_key, (B,), 0, actor.schedule.num_steps))
        abar = np.asarray(actor.schedule.alphas_cumprod, np.float64)[t][:, None, None]
        x_t = np.sqrt(abar) * a + np.sqrt(1 - abar) * noise
        target, t_in = noise, t.astype(np.float32)
    else:  # Lipman et al.: || v_theta((1-t) x0 + t x1, t) - (x1 - x0) ||^2
        t = np.asarray(jax.random.uniform(t_key, (B,)), np.float64)
        x_t = (1 - t[:, None, None]) * noise + t[:, None, None] * a
        target, t_in = a - noise, (t * flow.TIME_SCALE).astype(np.float32)
    pred = np.asarray(actor.apply(params, obs, jnp.asarray(x_t, jnp.float32), jnp.asarray(t_in)),
                      np.float64)
    w = np.broadcast_to(np.asarray(valid)[:, :, None], pred.shape)
    want = ((pred - target) ** 2 * w).sum() / w.sum()
    assert got == pytest.approx(want, rel=1e-4)


def test_denoiser_gradient_through_the_chain_is_finite_and_nonzero():
    """DQL differentiates through every denoising step: the sampler must stay differentiable."""
    actor, params, obs = _denoiser_and_params("diffusion")
    grads = jax.grad(lambda p: actor.sample(p, obs, jax.random.PRNGKey(0))[0].sum())(params)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
    assert isinstance(actor.network, MLPDenoiser)
    # DQL's update unrolls its short chains: the same gradient as through the loop.
    unrolled = jax.grad(lambda p: actor.sample(p, obs, jax.random.PRNGKey(0),
                                               unroll=True)[0].sum())(params)
    for g, u in zip(leaves, jax.tree.leaves(unrolled)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(g), rtol=1e-4, atol=1e-6)
