"""Behaviour cloning of action chunks: diffusion or flow (the generative actor), or MSE regression.

The shared first stage of every agent (``dprl.models.training.BCStage``) on its own, and the baselines
of the multimodality proof: a deterministic MSE policy (``actor.model='mse'``) regresses to the
mean of the demonstrated actions, so it averages modes; a generative policy samples them.
With ``act_with='one_step'`` a one-step actor ``mu(s, z)`` is distilled from the EMA policy at
every BC step and acts (``dprl/models/one_step.py``).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from dprl.models.actor import policy_from_config
from dprl.models.one_step import (OneStepActor, acts_one_step, check_act_with, distill_alongside,
                           distill_step, init_one_step, sample_chunks, teacher_actions)
from dprl.models.training import BCStage, EMA, make_optimizer, pretrain_step

POLICY_MODELS = ("diffusion", "flow", "mse")


class Agent(flax.struct.PyTreeNode):
    actor: BCStage          # the policy, its optimizer and EMA; acting uses the EMA weights
    one_step: OneStepActor | None  # mu(s, z) distilled from the EMA policy (act_with='one_step')
    key: jax.Array
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = False

    def teacher(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """What mu distills: the EMA policy's deterministic sample from ``noise [B, H, A]``."""
        return teacher_actions(self.actor.model, self.actor.policy_params, observations, noise)

    @jax.jit
    def distill(self, batch: dict) -> tuple["Agent", dict]:
        """One distillation step of the one-step actor toward ``teacher``."""
        return distill_step(self, batch, self.teacher)

    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        return distill_alongside(*pretrain_step(self, batch), batch)

    def update(self, batch: dict) -> tuple["Agent", dict]:
        """BC has no RL step: more behaviour cloning."""
        return self.pretrain(batch)

    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> chunks ``[B, H, A]`` from the EMA weights (or mu)."""
        return sample_chunks(self, observations, key), {}

    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.FrozenConfigDict(config)
        if config.actor.model not in POLICY_MODELS:
            raise ValueError(f"bc: actor.model must be one of {POLICY_MODELS}, "
                             f"not {config.actor.model!r}")
        check_act_with(config, on_policy=False)
        key, init_key = jax.random.split(jax.random.PRNGKey(seed))
        obs = jax.tree.map(jnp.asarray, example_batch["observations"])  # flat or pixel
        actor = BCStage.init(policy_from_config(config), init_key, obs,
                             make_optimizer(config.actor_lr, grad_clip=config.grad_clip),
                             EMA.from_config(config))
        one_step = None
        if acts_one_step(config):
            key, one_step_key = jax.random.split(key)  # multi-step acting keeps the key above
            one_step = init_one_step(config, actor.model, one_step_key, obs)
        return cls(actor=actor, one_step=one_step, key=key, config=config)
