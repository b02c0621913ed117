"""DPM-Solver-2 (dprl.models.diffusion.dpm_solver_sample): the update equals a plain-Python
transcription of DPM-Solver++(2S), it solves the probability-flow ODE of a Gaussian toy (exact
solution known), it converges to the same samples as many-step DDIM (eta 0), guidance enters as
``eps - s sigma grad J``, and the actor runs it from its config."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dprl.models import diffusion

M, S = 0.3, 0.2          # the toy's clean actions: N(M, S^2) in every dimension
T = 1000                 # training steps of the vp_sde schedule: tau in [1e-3, 1]


def _vp(tau, b0=0.1, b1=20.0):
    """(alpha, sigma) of QGPO's VP SDE, in plain Python."""
    la = -0.25 * tau**2 * (b1 - b0) - 0.5 * tau * b0
    return math.exp(la), math.sqrt(1.0 - math.exp(2.0 * la))


def _gaussian_eps(obs, x, k):
    """The exact eps-predictor for N(M, S^2) data at the fractional step k (tau = (k+1)/T)."""
    del obs
    tau = (k[:, None, None] + 1.0) / T
    la = -0.25 * tau**2 * 19.9 - 0.05 * tau
    a, var = jnp.exp(la), -jnp.expm1(2.0 * la)
    return jnp.sqrt(var) * (x - a * M) / (a**2 * S**2 + var)


def _exact_flow(x_T, tau_end):
    """The probability-flow ODE's solution from tau = 1 to tau_end for the Gaussian toy."""
    a1, s1 = _vp(1.0)
    a0, s0 = _vp(tau_end)
    return a0 * M + math.sqrt(a0**2 * S**2 + s0**2) * (x_T - a1 * M) / math.sqrt(
        a1**2 * S**2 + s1**2)


def _reference_dpm2(x, eps_fn, steps):
    """DPM-Solver++(2S) with DPM-Solver's 'fast' split, written out in plain Python on one float:
    lambda = log(alpha / sigma); x0 = (x - sigma eps) / alpha; an order-2 step from s over
    (s, s1, t) is x_s1 = sigma_s1/sigma_s x - alpha_s1 (e^{-r h} - 1) x0_s, then
    x_t = sigma_t/sigma_s x - alpha_t (e^{-h} - 1) (x0_s + (x0_s1 - x0_s) / (2 r))."""
    taus = [1.0 + (1.0 / T - 1.0) * i / steps for i in range(steps + 1)]
    orders = [2] * (steps // 2) + [1] if steps % 2 else [2] * (steps // 2 - 1) + [1, 1]
    lam = lambda tau: math.log(_vp(tau)[0] / _vp(tau)[1])  # noqa: E731

    def x0_of(x, tau):
        a, s = _vp(tau)
        return (x - s * eps_fn(x, tau)) / a

    i = 0
    for order in orders:
        s, t = taus[i], taus[i + order]
        h = lam(t) - lam(s)
        (_, sig_s), (a_t, sig_t) = _vp(s), _vp(t)
        m_s = x0_of(x, s)
        if order == 1:
            x = sig_t / sig_s * x - a_t * math.expm1(-h) * m_s
        else:
            s1 = taus[i + 1]
            r = (lam(s1) - lam(s)) / h
            a_s1, sig_s1 = _vp(s1)
            x_s1 = sig_s1 / sig_s * x - a_s1 * math.expm1(-r * h) * m_s
            m_s1 = x0_of(x_s1, s1)
            x = sig_t / sig_s * x - a_t * math.expm1(-h) * (m_s + (m_s1 - m_s) / (2 * r))
        i += order
    return x


def _plain_eps(x, tau):
    a, s = _vp(tau)
    return s * (x - a * M) / (a**2 * S**2 + s**2)


def _schedule():
    return diffusion.make_schedule("vp_sde", T)


def test_vp_sde_schedule_is_qgpos():
    sched = _schedule()
    for k in (0, 9, 499, 999):
        a, _ = _vp((k + 1) / T)
        np.testing.assert_allclose(float(sched.alphas_cumprod[k]), a * a, rtol=1e-5)
    np.testing.assert_allclose(float(diffusion.log_alpha(sched, jnp.float32(0.37))),
                               math.log(_vp(0.37)[0]), rtol=1e-5)
    assert diffusion.dpm_solver_orders(15) == [2] * 7 + [1]
    assert diffusion.dpm_solver_orders(6) == [2, 2, 1, 1]
    assert sum(diffusion.dpm_solver_orders(15)) == 15


@pytest.mark.parametrize("steps", [15, 6])
def test_dpm_solver_matches_plain_python_reference(steps):
    x_T = np.linspace(-2.5, 2.5, 11).astype(np.float32)
    got, _ = diffusion.dpm_solver_sample(
        _gaussian_eps, _schedule(), jnp.zeros((11, 1)), jax.random.PRNGKey(0), (1, 1),
        num_steps=steps, clip_actions=None, initial_noise=jnp.asarray(x_T)[:, None, None])
    want = [_reference_dpm2(float(x), _plain_eps, steps) for x in x_T]
    np.testing.assert_allclose(np.asarray(got)[:, 0, 0], want, rtol=1e-4, atol=1e-5)


def test_dpm_solver_solves_the_flow_and_agrees_with_many_step_ddim():
    """On the Gaussian toy the ODE's solution is known. QGPO's configuration (time-uniform grid,
    the last step first order) is dominated by that last step near tau = 1e-3, where the toy's
    narrow data make the ODE stiff: its error falls with the evaluations; with many it gives the
    exact flow and the same samples as 1000-step DDIM (eta 0)."""
    key = jax.random.PRNGKey(3)
    noise = jax.random.normal(key, (256, 2, 3))
    obs = jnp.zeros((256, 1))
    sched = _schedule()
    exact = _exact_flow(np.asarray(noise), 1.0 / T)

    def dpm(steps, **kw):
        return diffusion.sample(_gaussian_eps, sched, obs, key, (2, 3), method="dpm_solver",
                                num_steps=steps, clip_x0=None, clip_actions=None,
                                initial_noise=noise, **kw)

    err = {n: float(np.abs(np.asarray(dpm(n)[0]) - exact).max()) for n in (15, 30, 300)}
    assert err[30] < 0.6 * err[15] and err[15] < 0.3, err
    assert err[300] < 6e-3, err
    # 1000-step DDIM (x at k = 0, i.e. tau = 1e-3, before its final jump to x0) ...
    ddim = diffusion.sample(_gaussian_eps, sched, obs, key, (2, 3), method="ddim", eta=0.0,
                            num_steps=T, clip_x0=None, clip_actions=None, initial_noise=noise,
                            return_chain=True)[1].xs[-2]
    np.testing.assert_allclose(np.asarray(ddim), exact, atol=6e-3)
    # ... and many-step DPM-Solver give the same samples.
    final, chain = dpm(300, return_chain=True)
    np.testing.assert_allclose(np.asarray(final), np.asarray(ddim), atol=8e-3)
    # The chain holds x after each solver step (149 of order 2, 2 of order 1).
    assert chain.xs.shape == (152, 256, 2, 3) and float(jnp.abs(chain.stds).max()) == 0.0
    np.testing.assert_array_equal(np.asarray(chain.xs[-1]), np.asarray(final))


def test_dpm_solver_guidance_is_score_guidance():
    """A linear J = c . x adds exactly -s sigma c to every eps: the result equals the unguided
    solver on the shifted eps-predictor."""
    c = jnp.array([0.5, -1.0])
    sched = _schedule()
    noise = jax.random.normal(jax.random.PRNGKey(1), (16, 1, 2))
    obs = jnp.zeros((16, 1))

    def shifted(o, x, k):
        tau = (k[:, None, None] + 1.0) / T
        sigma = jnp.sqrt(-jnp.expm1(2.0 * (-0.25 * tau**2 * 19.9 - 0.05 * tau)))
        return _gaussian_eps(o, x, k) - 2.0 * sigma * c

    kw = dict(num_steps=15, clip_actions=None, initial_noise=noise)
    guided, _ = diffusion.dpm_solver_sample(
        _gaussian_eps, sched, obs, jax.random.PRNGKey(0), (1, 2), guidance_scale=2.0,
        guidance_fn=lambda x, k: (x * c).sum((1, 2)), **kw)
    want, _ = diffusion.dpm_solver_sample(shifted, sched, obs, jax.random.PRNGKey(0), (1, 2), **kw)
    np.testing.assert_allclose(np.asarray(guided), np.asarray(want), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="score"):
        diffusion.sample(_gaussian_eps, sched, obs, jax.random.PRNGKey(0), (1, 2),
                         method="dpm_solver", guidance_fn=lambda x, k: x.sum((1, 2)),
                         guidance_mode="mean")


def test_actor_samples_with_dpm_solver_on_any_schedule():
    """Every diffusion actor can pick the sampler by config (the discrete schedules interpolate
    log alpha); it is deterministic given the key."""
    from dprl.models.actor import default_actor_config, make_actor
    cfg = default_actor_config()
    cfg.hidden_dims = (16, 16)
    cfg.sampler, cfg.sampling_steps = "dpm_solver", 7
    actor = make_actor(cfg, 2, 3)
    obs = jnp.ones((4, 5))
    params = actor.init(jax.random.PRNGKey(0), obs)
    a, _ = actor.sample(params, obs, jax.random.PRNGKey(1))
    b, _ = actor.sample(params, obs, jax.random.PRNGKey(1))
    assert a.shape == (4, 2, 3) and bool(jnp.isfinite(a).all())
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="deterministic"):
        actor.sample(params, obs, jax.random.PRNGKey(1), min_std=0.1)
