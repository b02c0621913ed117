"""A generative actor's deterministic sample from given initial noise: what a one-step actor
``mu(s, z)`` distills (``dprl.models.one_step``) and what DSRL's noise policy steers.

A flow's Euler steps are a map of the initial noise ``z``; a diffusion actor's DDPM steps are not
(they draw fresh noise at every step), so a diffusion teacher samples with DDIM at eta = 0 (the
probability-flow ODE of the same denoiser) over its sampling steps, whatever sampler it acts with.

Shapes: B batch, H chunk length, A action dim.
"""
from __future__ import annotations

import jax

from dprl.models.actor import GenerativeActor


def check_teacher(actor_config) -> None:
    """Raise ValueError unless the actor is a generative model that ``teacher_actions`` can run
    deterministically (a flow, or a diffusion model sampled by DDIM with eta = 0)."""
    if actor_config.model not in ("flow", "diffusion"):
        raise ValueError(f"one-step distillation needs a generative teacher (actor.model 'flow' "
                         f"or 'diffusion'), not {actor_config.model!r}")


def teacher_actions(actor: GenerativeActor, params, observations: jax.Array,
                    noise: jax.Array, **overrides) -> jax.Array:
    """The actor's deterministic sample ``[B, H, A]`` from the initial ``noise [B, H, A]``,
    without gradient: the flow's Euler steps, or DDIM with eta = 0 over the diffusion actor's
    sampling steps (its configured sampler may be DDPM, which is not a map of ``noise``).
    ``overrides`` go to the sampler too (e.g. guidance)."""
    check_teacher(actor.config)
    deterministic = {} if actor.config.model == "flow" else {"method": "ddim", "eta": 0.0}
    # The key only draws initial noise (given here) and per-step noise (none: deterministic).
    actions, _ = actor.sample(params, observations, jax.random.PRNGKey(0), initial_noise=noise,
                              **deterministic, **overrides)
    return jax.lax.stop_gradient(actions)
