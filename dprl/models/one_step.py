"""One-step actors: a noise-conditioned policy ``mu(s, z)`` distilled from a multi-step generative
actor (the teacher): the network, its train state and the losses, shared by QC-FQL's policy
extraction (``agents/qc.py``) and by ``act_with='one_step'`` around any off-policy agent
(``dprl.run.one_step``, which owns mu's place in a run).

Method (Flow Q-learning, FQL; Park, Li, Levine 2025). A one-step network maps an observation and a
Gaussian noise ``z`` straight to an action chunk and is trained to reproduce the teacher's
*deterministic* sample started from the same ``z``:

    distillation   ||mu(s, z) - teacher(s, z)||^2
    FQL / QC-FQL   alpha * ||mu(s, z) - teacher(s, z)||^2  -  Q(s, clip(mu(s, z)))

``teacher(s, z)`` is the flow's Euler steps (a flow actor), or DDIM with eta = 0 over the actor's
sampling steps (a diffusion actor, whatever sampler it acts with; ``dprl.models.teacher``). The
teacher gets no gradient.

Why this rather than consistency distillation or shortcut models:
  * It needs only the teacher's sampler, never its training loss or its internals: every actor
    here (flow or diffusion, MLP or U-Net, BC or RL-finetuned, guided or not) is distilled the same
    way, after training or alongside it, and the student is a plain MLP (fastest at batch 1).
  * Pairing the noises keeps ``mu`` a map from noise to actions like the teacher's, so it keeps
    every mode the teacher has (the pole task's two sides) instead of regressing to their mean,
    which is what one-step regression on unpaired samples would do.
  * Consistency models / consistency distillation train a network along the teacher's trajectory
    (a self-consistency loss over pairs of times with a target network, a schedule of
    discretizations); shortcut models train one network conditioned on the step size and need
    their own training from the start. Both are ways to *train* a few-step generator; here a
    trained actor exists and only its noise -> action map is wanted, which a direct regression on
    that map gives with one loss and no extra hyperparameters. QC-FQL already uses it (one module).
  * The teacher must be deterministic given ``z``: DDPM draws fresh noise at every step, so a
    diffusion teacher samples with DDIM eta = 0 (the probability-flow ODE of the same denoiser:
    the same marginals in the limit of many steps; with few steps its samples can differ from
    DDPM's, which is why results report the DDIM teacher's score too).

``act_with`` (every agent config, ``configs/common.py``): 'multi_step' acts with the agent's own
sampler; 'one_step' acts with a distilled ``mu`` instead (``dprl.run.one_step``: the agent trains
as before, each of its gradient steps followed by one distillation step of ``mu``).
``check_act_with`` refuses what cannot work: on-policy DPPO cannot act with ``mu`` (its PPO step
needs the likelihood of the acting denoising chain, which a one-step map of the noise does not
have), nor can an actor that is not generative.

Shapes: B batch, H chunk length, A action dim.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from dprl.models.encoders import batch_size_of, encode_observations, frozen_encoder_config
from dprl.models.nets import MLP
from dprl.models.teacher import check_teacher, teacher_actions  # noqa: F401  (their home before)
from dprl.models.training import apply_loss, make_optimizer

ACT_WITH = ("multi_step", "one_step")
# teacher(observations [B, (K,) O], noise [B, H, A]) -> the teacher's actions [B, H, A]
TeacherFn = Callable[[jax.Array, jax.Array], jax.Array]


class OneStepPolicy(nn.Module):
    """``mu(observations [B, (K,) O], noise [B, H, A]) -> actions [B, H, A]`` (unclipped).

    An MLP on the concatenated observation and flattened noise (FQL's one-step actor: the BC
    actor's widths and activation, no LayerNorm). Callers clip to the action bounds where the
    action is used.
    """

    horizon: int
    action_dim: int
    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    activation: str = "gelu"
    kernel_init: str = "lecun_normal"
    encoder: Any = None   # a frozen config.encoder: pixel observations get mu's own encoder

    @nn.compact
    def __call__(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        B = noise.shape[0]
        x = jnp.concatenate([encode_observations(observations, self.encoder),
                             noise.reshape(B, -1)], axis=-1)
        x = MLP((*self.hidden_dims, self.horizon * self.action_dim), self.activation,
                kernel_init=self.kernel_init)(x)
        return x.reshape(B, self.horizon, self.action_dim)


class OneStepActor(TrainState):
    """``mu``'s weights and optimizer, and how it acts and is distilled."""

    net: OneStepPolicy = flax.struct.field(pytree_node=False)

    @classmethod
    def init(cls, net: OneStepPolicy, key: jax.Array, observations: jax.Array,
             tx) -> "OneStepActor":
        """Fresh weights for example ``observations [B, (K,) O]`` (shapes only)."""
        noise = jnp.zeros((batch_size_of(observations), net.horizon, net.action_dim))
        return cls.create(apply_fn=None, params=net.init(key, observations, noise), tx=tx,
                          net=net)

    def noise(self, key: jax.Array, batch_size: int) -> jax.Array:
        """``z ~ N(0, I)`` ``[B, H, A]``."""
        return jax.random.normal(key, (batch_size, self.net.horizon, self.net.action_dim))

    def sample(self, observations: jax.Array, key: jax.Array) -> jax.Array:
        """Acting: ``clip(mu(s, z), -1, 1)`` ``[B, H, A]`` with ``z ~ N(0, I)``."""
        noise = self.noise(key, batch_size_of(observations))
        return jnp.clip(self.net.apply(self.params, observations, noise), -1.0, 1.0)

    def distill(self, observations: jax.Array, teacher: TeacherFn, key: jax.Array
                ) -> tuple["OneStepActor", dict]:
        """One gradient step of ``||mu(s, z) - teacher(s, z)||^2`` with the same ``z`` for both;
        info ``one_step/distill_loss``, ``one_step/grad_norm``."""
        noise = self.noise(key, batch_size_of(observations))
        target = jax.lax.stop_gradient(teacher(observations, noise))

        def loss_fn(params):
            loss = distillation_loss(self.net.apply(params, observations, noise), target)
            return loss, {"one_step/distill_loss": loss}

        return apply_loss(self, loss_fn, "one_step")


def init_one_step(config, horizon: int, action_dim: int, key: jax.Array,
                  observations: jax.Array) -> OneStepActor:
    """A fresh ``mu`` for chunks ``[horizon, action_dim]`` (the teacher's) at example
    ``observations [B, (K,) O]``: the actor's widths, activation and kernel init (FQL, QC), Adam
    at ``actor_lr`` with the agent's grad_clip."""
    net = OneStepPolicy(horizon, action_dim,
                        tuple(config.actor.hidden_dims), config.actor.activation,
                        config.actor.get("kernel_init", "lecun_normal"),
                        frozen_encoder_config(config.get("encoder")))
    return OneStepActor.init(net, key, observations,
                             make_optimizer(config.actor_lr, grad_clip=config.grad_clip))


# ---- acting with mu: one config key ---------------------------------------------------------
def acts_one_step(config) -> bool:
    """``config.act_with == 'one_step'`` (configs older than the key act multi-step)."""
    return config.get("act_with", "multi_step") == "one_step"


def check_act_with(config, on_policy: bool) -> None:
    """Raise ValueError (what is wrong, how to fix it) for an ``act_with`` the agent cannot use."""
    act_with = config.get("act_with", "multi_step")
    if act_with not in ACT_WITH:
        raise ValueError(f"--agent.act_with={act_with!r}: must be one of {ACT_WITH} (the "
                         f"agent's own sampler, or its distilled one-step actor)")
    if act_with != "one_step":
        return
    if on_policy:
        raise ValueError(f"--agent.act_with='one_step' is for off-policy agents: the on-policy "
                         f"agent {config.agent_name!r} trains by PPO on the likelihoods of the "
                         f"denoising chain it acted with, which a one-step actor does not have; "
                         f"use act_with='multi_step'")
    if config.actor.get("model") not in ("flow", "diffusion"):
        raise ValueError(f"--agent.act_with='one_step' distills a generative actor "
                         f"(actor.model 'diffusion' or 'flow'); actor.model="
                         f"{config.actor.get('model')!r} already acts in one step: use "
                         f"act_with='multi_step'")


# ---- losses ---------------------------------------------------------------------------------
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
