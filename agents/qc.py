"""Q-chunking (QC; Li, Zhou, Levine 2025, "Reinforcement Learning with Action Chunking").

RL in the space of action chunks: a critic ``Q(s_t, a_{t:t+h})`` over the flattened chunk is
trained with the unbiased h-step backup

    y = sum_{i<h} gamma^i r_{t+i} + gamma^h (1 - terminal) Q'(s_{t+h}, a'),

and the policy is "best-of-N" (the paper's QC): N chunks sampled from a behaviour-cloned flow
policy, the one with the highest Q executed open-loop for h steps. The behaviour policy is never
updated by Q (the expressive behaviour constraint); it keeps behaviour-cloning the data in every
update. ``horizon = act_steps = 1`` is the paper's best-of-N baseline without chunking (BFN).

Departures from the reference code, both for chunks that run past an episode's end (``valid``):
  * kept in the critic loss (the reference drops every chunk whose last step is invalid), so a
    sparse terminal reward inside a chunk trains every chunk that reaches it;
  * a chunk cut by a time limit after n < h valid steps bootstraps with gamma^n from the
    observation after its last valid step (the correct n-step return); a chunk cut by
    termination does not bootstrap.

Phases: ``pretrain`` = flow BC on chunks (the shared ``dprl.training.BCStage``, without an EMA);
``update`` = critic TD step + the same BC step. The target is ``dprl.buffer.chunk_return``'s.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from dprl.actor import actor_from_config
from dprl.buffer import chunk_return
from dprl.nets import CriticEnsemble, critic_from_config
from dprl.training import BCStage, apply_loss, create_state, make_optimizer, polyak, pretrain_step


# ---- the pieces the tests check against plain Python --------------------------------------------
def aggregate(qs: jax.Array, how: str) -> jax.Array:
    """Ensemble ``[E, ...]`` -> ``[...]`` by 'mean' (QC's default) or 'min' (clipped double Q)."""
    return qs.min(axis=0) if how == "min" else qs.mean(axis=0)


def select_best(candidates: jax.Array, scores: jax.Array) -> jax.Array:
    """Best-of-N: ``candidates [B, N, H, A]``, ``scores [B, N]`` -> the argmax chunks ``[B, H, A]``."""
    best = jnp.argmax(scores, axis=1)
    return jnp.take_along_axis(candidates, best[:, None, None, None], axis=1)[:, 0]


class Agent(flax.struct.PyTreeNode):
    actor: BCStage              # the BC flow (or diffusion) policy over chunks (no EMA)
    critic: TrainState          # Q ensemble over (observation, flattened chunk) -> [E, B]
    target_critic_params: Any   # Polyak-averaged copy
    key: jax.Array
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = False

    @property
    def critic_net(self) -> CriticEnsemble:
        return critic_from_config(self.config)

    # ---- best-of-N ------------------------------------------------------------------------
    def candidates(self, critic_params, observations: jax.Array, key: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
        """N chunks per observation from the BC policy and their aggregated Q.

        ``observations [B, (K,) O]`` -> ``(chunks [B, N, H, A], q [B, N])``.
        """
        B, N = observations.shape[0], self.config.num_samples
        obs = jnp.repeat(observations, N, axis=0)                        # [B*N, (K,) O]
        chunks, _ = self.actor.sample(obs, key)                          # [B*N, H, A]
        q = aggregate(self.critic_net.apply(critic_params, obs, chunks), self.config.q_agg)
        return chunks.reshape(B, N, *chunks.shape[1:]), q.reshape(B, N)

    def best_of_n(self, critic_params, observations, key) -> tuple[jax.Array, jax.Array]:
        chunks, q = self.candidates(critic_params, observations, key)
        return select_best(chunks, q), q.max(axis=1)

    # ---- losses ---------------------------------------------------------------------------
    def critic_loss(self, params, batch, target) -> tuple[jax.Array, dict]:
        q = self.critic_net.apply(params, batch["observations"], batch["actions"])   # [E, B]
        loss = jnp.mean((q - target[None]) ** 2)
        return loss, {"critic/loss": loss, "critic/q_mean": q.mean(), "critic/q_max": q.max(),
                      "critic/q_min": q.min()}

    # ---- updates --------------------------------------------------------------------------
    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        """One BC step of the behaviour policy on chunks."""
        return pretrain_step(self, batch)

    @jax.jit
    def update(self, batch: dict) -> tuple["Agent", dict]:
        """Critic TD step on the h-step target (a' = best-of-N, as when acting) + a BC step."""
        cfg = self.config
        key, next_key, bc_key = jax.random.split(self.key, 3)
        # a' is chosen with the online critic (as acting does) and valued by the target critic.
        next_chunks, _ = self.best_of_n(self.critic.params, batch["next_observations"], next_key)
        next_q = aggregate(self.critic_net.apply(self.target_critic_params,
                                                 batch["next_observations"], next_chunks),
                           cfg.q_agg)
        ret, boot = chunk_return(batch, cfg.discount)
        target = jax.lax.stop_gradient(ret + boot * next_q)
        critic, c_info = apply_loss(self.critic, lambda p: self.critic_loss(p, batch, target),
                                    "critic")
        target_params = polyak(self.target_critic_params, critic.params, cfg.tau)
        info = {**c_info, "critic/target_mean": target.mean()}
        actor = self.actor
        if cfg.bc_in_update:  # the reference trains BC and critic jointly on every batch
            actor, a_info = self.actor.pretrain(batch, bc_key)
            info["bc/loss"] = a_info["bc/loss"]
        return self.replace(actor=actor, critic=critic, target_critic_params=target_params,
                            key=key), info

    # ---- acting ---------------------------------------------------------------------------
    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> the best of N BC chunks ``[B, H, A]`` under Q."""
        chunks, q = self.best_of_n(self.critic.params, observations, key)
        return chunks, {"q": q}

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.FrozenConfigDict(config)
        if config.actor.model not in ("flow", "diffusion"):
            raise ValueError(f"qc: actor.model must be 'flow' or 'diffusion', "
                             f"not {config.actor.model!r}")
        if config.q_agg not in ("mean", "min"):
            raise ValueError(f"qc: q_agg must be 'mean' or 'min', not {config.q_agg!r}")
        if config.act_steps != config.horizon:
            raise ValueError(f"qc executes whole chunks open-loop: act_steps ({config.act_steps}) "
                             f"must equal horizon ({config.horizon})")
        key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        obs = jnp.asarray(example_batch["observations"])
        critic_params = critic_from_config(config).init(critic_key, obs,
                                                        jnp.asarray(example_batch["actions"]))
        return cls(
            actor=BCStage.init(actor_from_config(config), actor_key, obs,
                               make_optimizer(config.actor_lr, grad_clip=config.grad_clip),
                               ema=None),
            critic=create_state(critic_params, make_optimizer(config.critic_lr,
                                                              grad_clip=config.grad_clip)),
            target_critic_params=critic_params, key=key, config=config)
