"""Gaussian diffusion over action chunks: schedules, noising, the eps loss and the DDPM, DDIM and
DPM-Solver samplers.

Conventions. Training steps ``k = 0 .. T-1``; ``x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps``
with ``abar_k = prod_{i <= k} (1 - beta_i)``. Sampling walks a decreasing sequence of steps
``t_S > ... > t_1`` (all T steps for DDPM by default, any S for DDIM) and each step is a Gaussian
``x_prev ~ N(mean(x_t, t), std_t^2)``; ``return_chain=True`` returns every ``x`` with its step's
mean and std, which is what DPPO's likelihoods need. ``denoise_fn(obs, x [B, H, A], t [B])``
predicts eps.

DPM-Solver (Lu et al. 2022; QGPO samples with it) solves the probability-flow ODE in continuous
time ``tau in [1/T, 1]``: training step ``k`` sits at ``tau = (k + 1) / T`` and the networks see
the (fractional) step ``k = tau T - 1``. ``log alpha(tau)`` is the closed form on the 'vp_sde'
schedule (QGPO's VP SDE, beta 0.1 -> 20) and the piecewise-linear interpolation of the discrete
``log sqrt(abar_k)`` on the others (DPM-Solver's 'discrete' schedule).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dprl.models.inpaint import Inpaint

DenoiseFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
# guidance_fn(noisy_actions [B, H, A], t [B]) -> value [B]; its gradient in x steers sampling.
GuidanceFn = Callable[[jax.Array, jax.Array], jax.Array]


class Schedule(flax.struct.PyTreeNode):
    """Noise schedule arrays, each ``[T]``."""

    betas: jax.Array
    alphas_cumprod: jax.Array
    # (beta_0, beta_1) of a continuous VP SDE ('vp_sde'); () for the discrete schedules.
    continuous: tuple = flax.struct.field(pytree_node=False, default=())

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])


SCHEDULES = ("linear", "cosine", "vp", "vp_sde")
VP_SDE_BETAS = (0.1, 20.0)   # QGPO's (and Song et al. 2021's) VP SDE: beta(tau) from 0.1 to 20


def vp_sde_log_alpha(tau, beta_0: float = VP_SDE_BETAS[0], beta_1: float = VP_SDE_BETAS[1]):
    """``log alpha(tau) = -(beta_1 - beta_0) tau^2 / 4 - beta_0 tau / 2`` of the VP SDE."""
    return -0.25 * tau**2 * (beta_1 - beta_0) - 0.5 * tau * beta_0


def make_schedule(kind: str, num_steps: int) -> Schedule:
    """'linear' (DDPM, 1e-4 -> 2e-2), 'cosine' (Nichol & Dhariwal 2021), 'vp' (Diffusion-QL), or
    'vp_sde' (QGPO: the continuous VP SDE, beta 0.1 -> 20, read at ``tau = (k + 1) / T``, so
    that T = 1000 steps span QGPO's ``tau in [1e-3, 1]``)."""
    T = int(num_steps)
    if T < 1:
        raise ValueError(f"num_steps must be >= 1, got {T}")
    if kind == "vp_sde":
        tau = np.arange(1, T + 1, dtype=np.float64) / T
        abar = np.exp(2.0 * vp_sde_log_alpha(tau))
        betas = 1.0 - abar / np.concatenate([[1.0], abar[:-1]])
        return Schedule(betas=jnp.asarray(betas.astype(np.float32)),
                        alphas_cumprod=jnp.asarray(abar.astype(np.float32)),
                        continuous=VP_SDE_BETAS)
    if kind == "linear":
        betas = np.linspace(1e-4, 2e-2, T)
    elif kind == "cosine":
        s = 0.008
        x = np.linspace(0, T, T + 1)
        abar = np.cos(((x / T) + s) / (1 + s) * np.pi * 0.5) ** 2
        abar = abar / abar[0]
        betas = np.clip(1 - abar[1:] / abar[:-1], 0.0, 0.999)
    elif kind == "vp":
        # Variance-preserving SDE discretized to T steps (Diffusion-QL's vp_beta_schedule).
        t = np.arange(1, T + 1)
        b_max, b_min = 10.0, 0.1
        alpha = np.exp(-b_min / T - 0.5 * (b_max - b_min) * (2 * t - 1) / T**2)
        betas = 1 - alpha
    else:
        raise ValueError(f"Unknown noise schedule {kind!r}; use one of {SCHEDULES}")
    betas = betas.astype(np.float32)
    return Schedule(betas=jnp.asarray(betas),
                    alphas_cumprod=jnp.asarray(np.cumprod(1.0 - betas.astype(np.float64))
                                               .astype(np.float32)))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Forward noising ``x_t`` for clean chunks ``x0 [B, H, A]`` at integer steps ``t [B]``."""
    abar = schedule.alphas_cumprod[t][:, None, None]
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def masked_mean(values: jax.Array, valid: jax.Array | None) -> jax.Array:
    """Mean of ``values [B, H, ...]`` over the entries where ``valid [B, H]`` is true."""
    if valid is None:
        return values.mean()
    w = jnp.broadcast_to(valid.reshape(valid.shape + (1,) * (values.ndim - 2)), values.shape)
    w = w.astype(values.dtype)
    return (values * w).sum() / jnp.maximum(w.sum(), 1.0)


def eps_loss(denoise_fn: DenoiseFn, schedule: Schedule, observations: jax.Array,
             actions: jax.Array, key: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """The DDPM eps-prediction loss ``E ||eps - eps_theta(x_t, t)||^2`` over valid chunk steps."""
    B = actions.shape[0]
    t_key, n_key = jax.random.split(key)
    t = jax.random.randint(t_key, (B,), 0, schedule.num_steps)
    noise = jax.random.normal(n_key, actions.shape)
    pred = denoise_fn(observations, q_sample(schedule, actions, t, noise), t.astype(jnp.float32))
    return masked_mean((pred - noise) ** 2, valid)


def sampling_steps(num_train_steps: int, num_steps: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Decreasing step indices ``t [S]`` and each one's successor ``t_prev [S]`` (-1 = clean)."""
    T = num_train_steps
    S = T if num_steps is None else int(num_steps)
    if not 1 <= S <= T:
        raise ValueError(f"num sampling steps must be in [1, {T}], got {S}")
    ts = np.unique(np.round(np.linspace(0, T - 1, S)).astype(np.int32))[::-1]
    prev = np.concatenate([ts[1:], [-1]]).astype(np.int32)
    return ts.copy(), prev


def step_mean_std(schedule: Schedule, eps: jax.Array, x: jax.Array, t: jax.Array,
                  t_prev: jax.Array, method: str = "ddpm", eta: float = 1.0,
                  clip_x0: float | None = 1.0) -> tuple[jax.Array, jax.Array]:
    """Mean ``[B, H, A]`` and std (scalar) of ``p(x_prev | x_t)`` given predicted noise ``eps``.

    'ddpm': the posterior ``q(x_prev | x_t, x0_hat)`` over the (possibly strided) step;
    'ddim': Song et al. 2021 with noise level ``eta`` (0 = deterministic, 1 = DDPM's variance).
    ``x0_hat`` is clipped to ``[-clip_x0, clip_x0]`` (the action bounds) when given.
    """
    abar = schedule.alphas_cumprod[t]
    abar_prev = jnp.where(t_prev >= 0, schedule.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
    x0 = (x - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
    if method == "ddpm":
        beta = 1.0 - abar / abar_prev  # the step's effective beta (= beta_t for unit strides)
        mean = (jnp.sqrt(abar_prev) * beta / (1.0 - abar)) * x0 + (
            jnp.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar)) * x
        var = beta * (1.0 - abar_prev) / (1.0 - abar)
    elif method == "ddim":
        eps_hat = (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)
        var = eta**2 * (1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev)
        mean = jnp.sqrt(abar_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - abar_prev - var, 0.0)) * eps_hat
    else:
        raise ValueError(f"Unknown sampler {method!r}; use one of {SAMPLERS}")
    return mean, jnp.sqrt(jnp.maximum(var, 0.0))


class Chain(NamedTuple):
    """The whole denoising chain of a sample (for DPPO's likelihoods and for inspection)."""

    xs: jax.Array      # [S + 1, B, H, A]: x at t_S, ..., the final action (before final clipping)
    means: jax.Array   # [S, B, H, A]: each step's Gaussian mean
    stds: jax.Array    # [S]: each step's Gaussian std (after the min_std floor)
    steps: jax.Array   # [S]: the step index t of each denoising step


SAMPLERS = ("ddpm", "ddim", "dpm_solver")


def log_alpha(schedule: Schedule, tau: jax.Array) -> jax.Array:
    """``log alpha(tau)`` (``alpha = sqrt(abar)``) at continuous times ``tau in [1/T, 1]``."""
    if schedule.continuous:
        return vp_sde_log_alpha(tau, *schedule.continuous)
    T = schedule.num_steps
    grid = jnp.arange(1, T + 1, dtype=jnp.float32) / T
    return jnp.interp(tau, grid, 0.5 * jnp.log(schedule.alphas_cumprod))


def half_log_snr(schedule: Schedule, tau: jax.Array) -> jax.Array:
    """``lambda(tau) = log alpha - log sigma``."""
    la = log_alpha(schedule, tau)
    return la - 0.5 * jnp.log(-jnp.expm1(2.0 * la))


def dpm_solver_orders(num_steps: int, order: int = 2) -> list[int]:
    """The order of each singlestep DPM-Solver step for ``num_steps`` model evaluations
    (DPM-Solver's 'fast' split: order-2 steps, then order-1 steps to use every evaluation)."""
    if num_steps < 1:
        raise ValueError(f"DPM-Solver needs >= 1 model evaluations, got {num_steps}")
    if order == 1:
        return [1] * num_steps
    if order != 2:
        raise ValueError(f"DPM-Solver order must be 1 or 2, got {order}")
    if num_steps % 2 == 0:
        return [2] * (num_steps // 2 - 1) + [1, 1]
    return [2] * (num_steps // 2) + [1]


def dpm_solver_sample(
    denoise_fn: DenoiseFn,
    schedule: Schedule,
    observations: jax.Array,
    key: jax.Array,
    action_shape: tuple[int, int],
    *,
    num_steps: int = 15,
    order: int = 2,
    clip_x0: float | None = None,
    clip_actions: float | None = 1.0,
    guidance_fn: GuidanceFn | None = None,
    guidance_scale: float = 0.0,
    guidance_min_step: int = 0,
    initial_noise: jax.Array | None = None,
    return_chain: bool = False,
) -> tuple[jax.Array, Chain | None]:
    """Deterministic sampling by singlestep DPM-Solver++ (data prediction), ``num_steps`` model
    evaluations on a time-uniform grid from ``tau = 1`` to ``tau = 1/T`` (QGPO: order 2, 15
    evaluations, ``tau`` from 1 to 1e-3; no final denoising step, no x0 clipping).

    Guidance is classifier guidance on the noise: ``eps - guidance_scale * sigma_tau * grad_x J``
    (QGPO's ``score`` guidance), where ``J(x, k)`` sees the fractional step ``k = tau T - 1``.
    Returns chunks ``[B, H, A]`` and, with ``return_chain``, a ``Chain`` whose ``xs`` are ``x`` at
    every step's end (``means = xs[1:]``, ``stds = 0``: the sampler draws no noise).
    """
    B = jax.tree.leaves(observations)[0].shape[0]  # flat or pixel (dict)
    T = schedule.num_steps
    orders = dpm_solver_orders(num_steps, order)
    taus = np.linspace(1.0, 1.0 / T, num_steps + 1).astype(np.float32)
    init_key, _ = jax.random.split(key)  # the initial noise of the other samplers for a key
    x = (jax.random.normal(init_key, (B, *action_shape)) if initial_noise is None
         else initial_noise)

    def data_pred(x, tau):
        la = log_alpha(schedule, tau)
        alpha, sigma = jnp.exp(la), jnp.sqrt(-jnp.expm1(2.0 * la))
        k = tau * T - 1.0
        k_vec = jnp.full((B,), k, jnp.float32)
        eps = denoise_fn(observations, x, k_vec)
        if guidance_fn is not None:
            grad = jax.grad(lambda x_: guidance_fn(x_, k_vec).sum())(x)
            scale = jnp.where(k >= guidance_min_step - 1e-4, guidance_scale, 0.0)
            eps = eps - scale * sigma * grad
        x0 = (x - sigma * eps) / alpha
        return x0 if clip_x0 is None else jnp.clip(x0, -clip_x0, clip_x0)

    def coefs(s, t):
        ls, lt = log_alpha(schedule, s), log_alpha(schedule, t)
        h = half_log_snr(schedule, t) - half_log_snr(schedule, s)
        sig_ratio = jnp.sqrt(-jnp.expm1(2.0 * lt) / -jnp.expm1(2.0 * ls))
        return h, sig_ratio, jnp.exp(lt)

    def second(x, times):
        s, s1, t = times[0], times[1], times[2]
        h, ratio_t, alpha_t = coefs(s, t)
        h1, ratio_s1, alpha_s1 = coefs(s, s1)
        r1 = h1 / h
        m_s = data_pred(x, s)
        x_s1 = ratio_s1 * x - alpha_s1 * jnp.expm1(-h1) * m_s
        m_s1 = data_pred(x_s1, s1)
        phi_1 = jnp.expm1(-h)
        x = ratio_t * x - alpha_t * phi_1 * m_s - (0.5 / r1) * alpha_t * phi_1 * (m_s1 - m_s)
        return x, x

    def first(x, s, t):
        h, ratio_t, alpha_t = coefs(s, t)
        return ratio_t * x - alpha_t * jnp.expm1(-h) * data_pred(x, s)

    n2 = sum(o == 2 for o in orders)
    xs = [x[None]]
    if n2:
        idx = 2 * np.arange(n2)
        segs = jnp.asarray(np.stack([taus[idx], taus[idx + 1], taus[idx + 2]], axis=1))
        x, mids = jax.lax.scan(second, x, segs)
        xs.append(mids)
    i = 2 * n2
    for _ in orders[n2:]:
        x = first(x, jnp.asarray(taus[i]), jnp.asarray(taus[i + 1]))
        xs.append(x[None])
        i += 1
    actions = x if clip_actions is None else jnp.clip(x, -clip_actions, clip_actions)
    chain = None
    if return_chain:
        xs = jnp.concatenate(xs, axis=0)
        starts = np.concatenate([taus[2 * np.arange(n2)], taus[2 * n2:-1]])
        chain = Chain(xs=xs, means=xs[1:], stds=jnp.zeros((len(orders),), jnp.float32),
                      steps=jnp.asarray(starts * T - 1.0))
    return actions, chain


def sample(
    denoise_fn: DenoiseFn,
    schedule: Schedule,
    observations: jax.Array,
    key: jax.Array,
    action_shape: tuple[int, int],
    *,
    method: str = "ddpm",
    num_steps: int | None = None,
    eta: float = 1.0,
    clip_x0: float | None = 1.0,
    clip_actions: float | None = 1.0,
    min_std: float = 0.0,
    noise_clip: float | None = None,
    guidance_fn: GuidanceFn | None = None,
    guidance_scale: float = 0.0,
    guidance_mode: str = "mean",
    guidance_min_step: int = 0,
    initial_noise: jax.Array | None = None,
    return_chain: bool = False,
    inpaint: Inpaint | None = None,
    unroll: bool = False,
) -> tuple[jax.Array, Chain | None]:
    """Sample action chunks ``[B, H, A]`` by ancestral denoising, as one ``lax.scan``.

    Args:
      observations: ``[B, (K,) O]``.
      action_shape: ``(H, A)``.
      method / num_steps / eta: 'ddpm' over ``num_steps`` (default all), 'ddim' with ``eta``, or
        'dpm_solver' (``dpm_solver_sample``: ``num_steps`` model evaluations, deterministic).
      min_std: floor on every step's std (DPPO's exploration noise); 0 keeps the sampler exact.
      noise_clip: clip the standard normal noise to ``[-noise_clip, noise_clip]``.
      guidance_fn: ``J(x_t [B, H, A], t [B]) -> [B]``. 'mean' mode shifts each step's mean by
        ``guidance_scale * std^2 * grad_x J`` (Diffuser); 'score' mode subtracts
        ``guidance_scale * sqrt(1 - abar_t) * grad_x J`` from the predicted noise (classifier
        guidance, QGPO). Steps with ``t < guidance_min_step`` are not guided.
      return_chain: also return the ``Chain``.
      inpaint: a prefix constraint (``dprl.models.inpaint.Inpaint``, real-time chunking): every step's
        predicted noise is guided towards its target, and the returned chunks' first
        ``num_fixed`` actions equal it exactly. None (the default) samples as without it.
      unroll: unroll the scan over steps (same numbers up to float rounding). For a short chain
        that is trained through (DQL's update) XLA then fuses across steps: a DQL update takes
        ~7 % less time here; a chain that only acts compiles 1.3-7x slower unrolled and acts no
        faster, so the default keeps the loop.
    """
    if method == "dpm_solver":
        if min_std > 0 or noise_clip is not None or inpaint is not None:
            raise ValueError("the DPM-Solver sampler is deterministic: it takes no min_std, "
                             "noise_clip or inpaint")
        if guidance_fn is not None and guidance_mode != "score":
            raise ValueError("DPM-Solver guides the noise ('score' guidance); 'mean' guidance "
                             "scales with a step's noise variance, which it does not have")
        return dpm_solver_sample(
            denoise_fn, schedule, observations, key, action_shape,
            num_steps=15 if num_steps is None else int(num_steps), clip_x0=clip_x0,
            clip_actions=clip_actions, guidance_fn=guidance_fn, guidance_scale=guidance_scale,
            guidance_min_step=guidance_min_step, initial_noise=initial_noise,
            return_chain=return_chain)
    B = jax.tree.leaves(observations)[0].shape[0]  # flat or pixel (dict)
    ts, prevs = sampling_steps(schedule.num_steps, num_steps)
    init_key, key = jax.random.split(key)
    x = (jax.random.normal(init_key, (B, *action_shape)) if initial_noise is None
         else initial_noise)
    guided = guidance_fn is not None
    if guidance_mode not in ("mean", "score"):
        raise ValueError(f"guidance_mode must be 'mean' or 'score', not {guidance_mode!r}")

    def step(x, inputs):
        t, t_prev, step_key = inputs
        t_vec = jnp.full((B,), t, jnp.float32)
        if inpaint is None:
            eps = denoise_fn(observations, x, t_vec)
        else:
            eps = inpaint.guided_eps(lambda x_: denoise_fn(observations, x_, t_vec), x,
                                     schedule.alphas_cumprod[t])
        if guided:
            grad = jax.grad(lambda x_: guidance_fn(x_, t_vec).sum())(x)
            scale = jnp.where(t >= guidance_min_step, guidance_scale, 0.0)
            if guidance_mode == "score":
                eps = eps - scale * jnp.sqrt(1.0 - schedule.alphas_cumprod[t]) * grad
        mean, std = step_mean_std(schedule, eps, x, t, t_prev, method, eta, clip_x0)
        if guided and guidance_mode == "mean":
            mean = mean + scale * std**2 * grad
        std = jnp.maximum(std, min_std)
        noise = jax.random.normal(step_key, x.shape)
        if noise_clip is not None:
            noise = jnp.clip(noise, -noise_clip, noise_clip)
        x_next = mean + std * noise
        return x_next, (x_next, mean, std)

    keys = jax.random.split(key, len(ts))
    x_final, (xs, means, stds) = jax.lax.scan(step, x, (jnp.asarray(ts), jnp.asarray(prevs), keys),
                                              unroll=unroll)
    actions = x_final if clip_actions is None else jnp.clip(x_final, -clip_actions, clip_actions)
    if inpaint is not None:
        actions = inpaint.apply(actions)
    chain = None
    if return_chain:
        chain = Chain(xs=jnp.concatenate([x[None], xs], axis=0), means=means, stds=stds,
                      steps=jnp.asarray(ts))
    return actions, chain
