"""Behaviour cloning of action chunks: diffusion or flow (the generative actor), or MSE regression.

The shared first stage of every agent (``dprl.models.training.BCStage``) on its own, and the baselines
of the multimodality proof: a deterministic MSE policy (``actor.model='mse'``) regresses to the
mean of the demonstrated actions, so it averages modes; a generative policy samples them.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from dprl.models.actor import policy_from_config
from dprl.models.teacher import teacher_actions
from dprl.models.training import BCStage, EMA, make_optimizer, pretrain_step

POLICY_MODELS = ("diffusion", "flow", "mse")


class Agent(flax.struct.PyTreeNode):
    actor: BCStage          # the policy, its optimizer and EMA; acting uses the EMA weights
    key: jax.Array
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = False

    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        return pretrain_step(self, batch)

    def update(self, batch: dict) -> tuple["Agent", dict]:
        """BC has no RL step: more behaviour cloning."""
        return self.pretrain(batch)

    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> chunks ``[B, H, A]`` from the EMA weights."""
        return self.actor.sample(observations, key)[0], {}

    def teacher_sample(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """The EMA policy's deterministic sample ``[B, H, A]`` from ``noise [B, H, A]``."""
        return teacher_actions(self.actor.model, self.actor.policy_params, observations, noise)

    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.FrozenConfigDict(config)
        if config.actor.model not in POLICY_MODELS:
            raise ValueError(f"bc: actor.model must be one of {POLICY_MODELS}, "
                             f"not {config.actor.model!r}")
        key, init_key = jax.random.split(jax.random.PRNGKey(seed))
        obs = jax.tree.map(jnp.asarray, example_batch["observations"])  # flat or pixel
        actor = BCStage.init(policy_from_config(config), init_key, obs,
                             make_optimizer(config.actor_lr, grad_clip=config.grad_clip),
                             EMA.from_config(config))
        return cls(actor=actor, key=key, config=config)
