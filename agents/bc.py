"""Behaviour cloning of action chunks: diffusion or flow (the generative actor), or Gaussian/MSE.

The shared first stage of every agent, and the baselines of the multimodality proof: a Gaussian
(MSE) policy regresses to the mean of the demonstrated actions, so it averages modes; a
generative policy samples them.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from dprl.actor import GenerativeActor, action_dim_of, actor_from_config
from dprl.diffusion import masked_mean
from dprl.nets import GaussianMLPPolicy
from dprl.training import apply_loss, create_state, ema, make_optimizer


class Agent(flax.struct.PyTreeNode):
    actor: TrainState
    ema_params: Any
    key: jax.Array
    step: jax.Array
    config: Any = flax.struct.field(pytree_node=False)

    on_policy = False

    # ---- networks -------------------------------------------------------------------------
    @property
    def generative(self) -> GenerativeActor:
        return _generative(self.config)

    @property
    def gaussian(self) -> GaussianMLPPolicy:
        return _gaussian(self.config)

    # ---- loss and update ------------------------------------------------------------------
    def bc_loss(self, params, batch, key) -> tuple[jax.Array, dict]:
        if self.config.policy == "gaussian":
            pred = self.gaussian.apply(params, batch["observations"])
            loss = masked_mean((pred - batch["actions"]) ** 2, batch["valid"])
        else:
            loss = self.generative.loss(params, batch["observations"], batch["actions"], key,
                                        batch["valid"])
        return loss, {"bc/loss": loss}

    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        key, loss_key = jax.random.split(self.key)
        actor, info = apply_loss(self.actor, lambda p: self.bc_loss(p, batch, loss_key))
        decay = jnp.where(self.step < self.config.ema_start, 0.0, self.config.ema_decay)
        ema_params = ema(self.ema_params, actor.params, decay)
        info = {"bc/loss": info["bc/loss"], "bc/grad_norm": info["grad_norm"]}
        return self.replace(actor=actor, ema_params=ema_params, key=key, step=self.step + 1), info

    def update(self, batch: dict) -> tuple["Agent", dict]:
        """BC has no RL step: more behaviour cloning."""
        return self.pretrain(batch)

    # ---- acting ---------------------------------------------------------------------------
    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> chunks ``[B, H, A]`` from the EMA weights."""
        if self.config.policy == "gaussian":
            return self.gaussian.apply(self.ema_params, observations), {}
        actions, _ = self.generative.sample(self.ema_params, observations, key)
        return actions, {}

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.FrozenConfigDict(config)
        if config.policy not in ("diffusion", "flow", "gaussian"):
            raise ValueError(f"bc.policy must be 'diffusion', 'flow' or 'gaussian', "
                             f"not {config.policy!r}")
        key, init_key = jax.random.split(jax.random.PRNGKey(seed))
        obs = jnp.asarray(example_batch["observations"])
        if config.policy == "gaussian":
            params = _gaussian(config).init(init_key, obs)
        else:
            params = _generative(config).init(init_key, obs)
        tx = make_optimizer(config.lr, grad_clip=config.grad_clip)
        return cls(actor=create_state(params, tx), ema_params=params, key=key,
                   step=jnp.zeros((), jnp.int32), config=config)


def _actor_config(config):
    cfg = ml_collections.ConfigDict(config.actor.to_dict())
    if config.policy in ("diffusion", "flow"):
        cfg.model = config.policy
    return cfg


def _generative(config) -> GenerativeActor:
    return actor_from_config(config, _actor_config(config))


def _gaussian(config) -> GaussianMLPPolicy:
    return GaussianMLPPolicy(config.horizon, action_dim_of(config), tuple(config.actor.hidden_dims),
                             config.actor.activation)
