"""Samplers against known answers: a perfect denoiser for a 1D Gaussian mixture, determinism,
chain likelihoods, guidance, and the flow sampler learning two modes."""
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dprl.models import diffusion, flow

MODES = jnp.array([-0.5, 0.5])
WEIGHTS = jnp.array([0.3, 0.7])
SIGMA = 0.08


def perfect_eps(schedule, weights=WEIGHTS):
    """The exact eps-prediction for data ~ sum_i w_i N(mu_i, SIGMA^2) (1D, H = A = 1)."""
    def eps_fn(obs, x, t):
        abar = schedule.alphas_cumprod[t.astype(jnp.int32)][:, None, None]
        mean = jnp.sqrt(abar) * MODES                      # [B, 1, 1, modes] after broadcast
        var = abar * SIGMA**2 + (1.0 - abar)
        xe = x[..., None]
        logp = jnp.log(weights) - 0.5 * (xe - mean[..., None, :]) ** 2 / var[..., None] \
            - 0.5 * jnp.log(var[..., None])
        resp = jax.nn.softmax(logp, axis=-1)
        score = (resp * (mean[..., None, :] - xe) / var[..., None]).sum(-1)
        return -jnp.sqrt(1.0 - abar) * score
    return eps_fn


def mixture_stats(x):
    x = np.asarray(x).ravel()
    right = x > 0
    return right.mean(), x[~right].mean(), x[right].mean(), x[~right].std(), x[right].std()


@pytest.mark.parametrize("method,steps,eta", [("ddpm", None, 1.0), ("ddim", 25, 0.0),
                                              ("ddim", 25, 0.5)])
def test_perfect_denoiser_recovers_mixture(method, steps, eta):
    schedule = diffusion.make_schedule("cosine", 50)
    obs = jnp.zeros((8000, 1))
    x, _ = diffusion.sample(perfect_eps(schedule), schedule, obs, jax.random.PRNGKey(0), (1, 1),
                            method=method, num_steps=steps, eta=eta)
    w_right, m_left, m_right, s_left, s_right = mixture_stats(x)
    assert abs(w_right - 0.7) < 0.025
    assert abs(m_left + 0.5) < 0.02 and abs(m_right - 0.5) < 0.02
    assert abs(s_left - SIGMA) < 0.03 and abs(s_right - SIGMA) < 0.03


def test_wrong_denoiser_fails_the_mixture_check():
    """The check above can fail: a denoiser for the wrong weights gives the wrong weights."""
    schedule = diffusion.make_schedule("cosine", 50)
    eps = perfect_eps(schedule, jnp.array([0.7, 0.3]))
    x, _ = diffusion.sample(eps, schedule, jnp.zeros((5000, 1)), jax.random.PRNGKey(0), (1, 1))
    assert abs(mixture_stats(x)[0] - 0.7) > 0.2


def test_ddim_eta0_is_deterministic_and_ddpm_is_not():
    schedule = diffusion.make_schedule("cosine", 50)
    eps = perfect_eps(schedule)
    obs = jnp.zeros((64, 1))
    noise = jax.random.normal(jax.random.PRNGKey(3), (64, 1, 1))
    a, _ = diffusion.sample(eps, schedule, obs, jax.random.PRNGKey(1), (1, 1), method="ddim",
                            num_steps=10, eta=0.0, initial_noise=noise)
    b, _ = diffusion.sample(eps, schedule, obs, jax.random.PRNGKey(2), (1, 1), method="ddim",
                            num_steps=10, eta=0.0, initial_noise=noise)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c, _ = diffusion.sample(eps, schedule, obs, jax.random.PRNGKey(1), (1, 1), method="ddpm",
                            initial_noise=noise)
    d, _ = diffusion.sample(eps, schedule, obs, jax.random.PRNGKey(2), (1, 1), method="ddpm",
                            initial_noise=noise)
    assert np.abs(np.asarray(c) - np.asarray(d)).max() > 1e-3


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_chain_is_consistent_and_logprob_matches_distrax(method):
    schedule = diffusion.make_schedule("cosine", 20)
    eps = perfect_eps(schedule)
    obs = jnp.zeros((16, 1))
    _, chain = diffusion.sample(eps, schedule, obs, jax.random.PRNGKey(0), (1, 1), method=method,
                                eta=1.0, min_std=0.1, return_chain=True)
    S = chain.means.shape[0]
    assert chain.xs.shape == (S + 1, 16, 1, 1) and chain.stds.shape == (S,)
    assert float(chain.stds.min()) >= 0.1 - 1e-6
    # Each step's mean is the sampler's own step function applied to the previous x.
    ts, prevs = diffusion.sampling_steps(20, None)
    for i in range(S):
        mean, _ = diffusion.step_mean_std(schedule, eps(obs, chain.xs[i], jnp.full((16,), ts[i],
                                          jnp.float32)), chain.xs[i], ts[i], prevs[i], method,
                                          1.0, 1.0)
        np.testing.assert_allclose(np.asarray(mean), np.asarray(chain.means[i]), atol=1e-5)
    # Log-likelihood of the chain: sum over steps of Normal(mean, std).log_prob(x_next).
    manual = 0.0
    for i in range(S):
        z = (chain.xs[i + 1] - chain.means[i]) / chain.stds[i]
        manual = manual + (-0.5 * z**2 - jnp.log(chain.stds[i]) - 0.5 * jnp.log(2 * jnp.pi)).sum((1, 2))
    dist = distrax.Normal(chain.means, chain.stds[:, None, None, None])
    via_distrax = dist.log_prob(chain.xs[1:]).sum((0, 2, 3))
    np.testing.assert_allclose(np.asarray(manual), np.asarray(via_distrax), rtol=1e-5, atol=1e-4)


def test_guidance_moves_mass_to_the_preferred_mode_and_scale0_is_unguided():
    schedule = diffusion.make_schedule("cosine", 50)
    eps = perfect_eps(schedule)
    obs = jnp.zeros((4000, 1))
    key = jax.random.PRNGKey(0)
    prefer_left = lambda x, t: -x.sum(axis=(1, 2))  # noqa: E731  J increases to the left
    plain, _ = diffusion.sample(eps, schedule, obs, key, (1, 1))
    zero, _ = diffusion.sample(eps, schedule, obs, key, (1, 1), guidance_fn=prefer_left,
                               guidance_scale=0.0)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(zero), atol=1e-6)
    guided, _ = diffusion.sample(eps, schedule, obs, key, (1, 1), guidance_fn=prefer_left,
                                 guidance_scale=2.0, guidance_mode="score")
    assert mixture_stats(plain)[0] > 0.6
    assert mixture_stats(guided)[0] < 0.3


def test_schedules_reach_noise():
    for kind, T in (("cosine", 20), ("vp", 5), ("linear", 1000)):
        s = diffusion.make_schedule(kind, T)
        assert float(s.alphas_cumprod[-1]) < 0.05, kind
        assert np.all(np.diff(np.asarray(s.alphas_cumprod)) < 0)
    with pytest.raises(ValueError, match="Unknown noise schedule"):
        diffusion.make_schedule("sigmoid", 10)


def test_flow_bc_learns_both_modes():
    import optax

    from dprl.models.nets import MLPDenoiser

    net = MLPDenoiser((64, 64), "relu", 16)
    key = jax.random.PRNGKey(0)
    obs = jnp.zeros((256, 1))
    params = net.init(key, obs, jnp.zeros((256, 1, 1)), jnp.zeros(256))
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, key):
        k1, k2, k3 = jax.random.split(key, 3)
        data = jnp.where(jax.random.uniform(k1, (256, 1, 1)) < 0.5, -0.5, 0.5) + \
            0.05 * jax.random.normal(k2, (256, 1, 1))
        loss, g = jax.value_and_grad(lambda p: flow.flow_loss(
            lambda o, x, t: net.apply(p, o, x, t), obs, data, k3))(params)
        updates, opt = tx.update(g, opt)
        return optax.apply_updates(params, updates), opt, loss

    for i in range(1500):
        params, opt, _ = step(params, opt, jax.random.fold_in(key, i))
    x, chain = flow.sample(lambda o, x, t: net.apply(params, o, x, t), jnp.zeros((2000, 1)),
                           jax.random.PRNGKey(1), (1, 1), num_steps=10, return_chain=True)
    w_right, m_left, m_right, _, _ = mixture_stats(x)
    assert 0.3 < w_right < 0.7
    assert abs(m_left + 0.5) < 0.1 and abs(m_right - 0.5) < 0.1
    assert chain.xs.shape == (11, 2000, 1, 1)
