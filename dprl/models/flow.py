"""Flow matching over action chunks: the conditional flow-matching loss and an Euler sampler.

Noise ``x_0 ~ N(0, I)`` at time 0 flows to data ``x_1`` at time 1 along straight lines
``x_t = (1 - t) x_0 + t x_1``; the network ``velocity_fn(obs, x_t [B, H, A], t [B])`` regresses
``x_1 - x_0``. Same sampler API as ``dprl.models.diffusion.sample`` (chains, guidance), so any agent can
swap a diffusion actor for a flow actor (QC's default behaviour policy is a flow).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dprl.models.diffusion import Chain, GuidanceFn, masked_mean
from dprl.models.inpaint import Inpaint

VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
# The network sees t scaled to [0, TIME_SCALE] so the sinusoidal embedding spans its frequencies.
TIME_SCALE = 1000.0


def flow_loss(velocity_fn: VelocityFn, observations: jax.Array, actions: jax.Array,
              key: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """``E ||v_theta(x_t, t) - (x_1 - x_0)||^2`` over valid chunk steps; ``actions [B, H, A]``."""
    B = actions.shape[0]
    t_key, n_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (B,))
    x0 = jax.random.normal(n_key, actions.shape)
    x_t = (1.0 - t[:, None, None]) * x0 + t[:, None, None] * actions
    pred = velocity_fn(observations, x_t, t * TIME_SCALE)
    return masked_mean((pred - (actions - x0)) ** 2, valid)


def sample(
    velocity_fn: VelocityFn,
    observations: jax.Array,
    key: jax.Array,
    action_shape: tuple[int, int],
    *,
    num_steps: int = 10,
    clip_actions: float | None = 1.0,
    min_std: float = 0.0,
    guidance_fn: GuidanceFn | None = None,
    guidance_scale: float = 0.0,
    initial_noise: jax.Array | None = None,
    return_chain: bool = False,
    inpaint: Inpaint | None = None,
    unroll: bool = False,
    **unused,
) -> tuple[jax.Array, Chain | None]:
    """Euler integration of the learned flow in ``num_steps`` steps -> ``[B, H, A]``.

    ``min_std`` > 0 adds Gaussian noise of that std to every step (a stochastic policy, for
    exploration or likelihoods); guidance adds ``guidance_scale * grad_x J`` to the velocity.
    ``inpaint`` (``dprl.models.inpaint.Inpaint``, real-time chunking) guides every step's velocity towards
    its target and sets the returned chunks' first ``num_fixed`` actions to it exactly; None (the
    default) samples as without it. ``unroll``: as ``dprl.models.diffusion.sample``'s.
    """
    B = jax.tree.leaves(observations)[0].shape[0]  # flat or pixel (dict)
    init_key, key = jax.random.split(key)
    x = (jax.random.normal(init_key, (B, *action_shape)) if initial_noise is None
         else initial_noise)
    dt = 1.0 / num_steps
    # A static zero std (QC's sampler): skip the noise, the same x_next = mean exactly.
    deterministic = not isinstance(min_std, jax.Array) and float(min_std) == 0.0
    times = jnp.arange(num_steps, dtype=jnp.float32) * dt

    def step(x, inputs):
        t, step_key = inputs
        t_vec = jnp.full((B,), t, jnp.float32)
        if inpaint is None:
            v = velocity_fn(observations, x, t_vec * TIME_SCALE)
        else:
            v = inpaint.guided_velocity(
                lambda x_: velocity_fn(observations, x_, t_vec * TIME_SCALE), x, t)
        if guidance_fn is not None:
            v = v + guidance_scale * jax.grad(lambda x_: guidance_fn(x_, t_vec).sum())(x)
        mean = x + v * dt
        std = jnp.asarray(min_std, jnp.float32)
        if deterministic:  # no noise to draw: Gaussian draws cost as much as a big matmul on CPU
            return mean, (mean, mean, std)
        x_next = mean + std * jax.random.normal(step_key, x.shape)
        return x_next, (x_next, mean, std)

    keys = jax.random.split(key, num_steps)
    x_final, (xs, means, stds) = jax.lax.scan(step, x, (times, keys), unroll=unroll)
    actions = x_final if clip_actions is None else jnp.clip(x_final, -clip_actions, clip_actions)
    if inpaint is not None:
        actions = inpaint.apply(actions)
    chain = None
    if return_chain:
        chain = Chain(xs=jnp.concatenate([x[None], xs], axis=0), means=means, stds=stds,
                      steps=times)
    return actions, chain
