"""A noise-conditioned one-step policy ``mu(s, z)`` distilled from a generative actor.

Flow Q-learning (FQL; Park, Li, Levine 2025) extracts a policy from a multi-step generative actor
(the teacher) without backpropagating through its sampling chain: a one-step network maps an
observation and a Gaussian noise ``z`` straight to an action chunk, and is trained with

    alpha * ||mu(s, z) - teacher(s, z)||^2  -  Q(s, clip(mu(s, z)))

where ``teacher(s, z)`` is the teacher's *deterministic* sample started from the same noise
``z`` (the flow's Euler steps; or DDIM with eta = 0). Pairing the noises keeps mu a map from noise
to actions like the teacher's, so it can stay multimodal, while the Q term moves it to better
actions. The teacher gets no gradient from this loss. QC-FQL (Li, Zhou, Levine 2025) is the same
over action chunks. Shapes: B batch, H chunk length, A action dim.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dprl.actor import GenerativeActor
from dprl.nets import MLP, flatten_observations


class OneStepPolicy(nn.Module):
    """``mu(observations [B, (K,) O], noise [B, H, A]) -> actions [B, H, A]`` (unclipped).

    An MLP on the concatenated observation and flattened noise (FQL's one-step actor: 4x512
    GELU, no LayerNorm). Callers clip to the action bounds where the action is used.
    """

    horizon: int
    action_dim: int
    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    activation: str = "gelu"

    @nn.compact
    def __call__(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        B = noise.shape[0]
        x = jnp.concatenate([flatten_observations(observations), noise.reshape(B, -1)], axis=-1)
        x = MLP((*self.hidden_dims, self.horizon * self.action_dim), self.activation)(x)
        return x.reshape(B, self.horizon, self.action_dim)


def check_teacher(actor_config) -> None:
    """Raise ValueError unless the actor config samples deterministically from its noise."""
    cfg = actor_config
    if not (cfg.model == "flow" or (cfg.sampler == "ddim" and cfg.ddim_eta == 0.0)):
        raise ValueError(f"one-step distillation needs a deterministic teacher (actor.model="
                         f"'flow', or actor.sampler='ddim' with actor.ddim_eta=0); got model="
                         f"{cfg.model!r}, sampler={cfg.sampler!r}, ddim_eta={cfg.ddim_eta}")


def teacher_actions(actor: GenerativeActor, params, observations: jax.Array,
                    noise: jax.Array) -> jax.Array:
    """The teacher's sample ``[B, H, A]`` from the given initial noise, without gradient.

    The teacher must map noise to actions deterministically: a flow (Euler steps) or a diffusion
    model sampled by DDIM with ``ddim_eta = 0``.
    """
    check_teacher(actor.config)
    # The key only draws initial noise (given here) and per-step noise (zero when deterministic).
    actions, _ = actor.sample(params, observations, jax.random.PRNGKey(0), initial_noise=noise)
    return jax.lax.stop_gradient(actions)


def distillation_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """``mean (student - teacher)^2`` over batch and action dims (FQL's scale for alpha)."""
    return jnp.mean((student - teacher) ** 2)


def one_step_loss(student: jax.Array, teacher: jax.Array, q_fn: Callable[[jax.Array], jax.Array],
                  alpha: float, normalize_q: bool = False) -> tuple[jax.Array, dict]:
    """``alpha * distillation - mean Q(s, clip(student))``; ``q_fn(actions [B, H, A]) -> [B]``.

    ``normalize_q`` divides the Q term by ``mean |Q|`` (held constant), which makes alpha
    independent of the reward scale (FQL's optional ``normalize_q_loss``; off in FQL's and QC's
    papers).
    """
    distill = distillation_loss(student, teacher)
    q = q_fn(jnp.clip(student, -1.0, 1.0))
    q_loss = -q.mean()
    if normalize_q:
        q_loss = q_loss / jax.lax.stop_gradient(jnp.abs(q).mean() + 1e-6)
    loss = alpha * distill + q_loss
    return loss, {"actor/loss": loss, "actor/distill_loss": distill, "actor/q_loss": q_loss,
                  "actor/q_mean": q.mean()}
