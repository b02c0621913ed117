"""Diffusion Q-Learning (Wang, Hunt & Zhou, ICLR 2023), on action chunks.

The actor is the BC stage every agent starts from (``dprl.models.training.BCStage``: a diffusion policy
and its EMA); on top of its BC loss it is pushed up the critics' landscape through the whole
denoising chain:

  actor loss   L_bc(theta) + eta * ( -Q_i(s, a_pi) / sg(mean |Q_j(s, a_pi)|) ),
               a_pi ~ pi_theta(. | s) sampled with gradients through all N denoising steps;
               i random, j = the next critic (the reference code's random q1/q2 pick)
  critic loss  sum_e mean_b (Q_e(s, a) - y)^2 over an ensemble of E critics (E = 2: twin), as
               the reference; logged ``critic/loss`` is the mean over e, as in every agent
  target       y = sum_{j < n} gamma^j r_j + gamma^n * mask * min_e Q'_e(s', a'),
               n = valid steps of the chunk, a' ~ EMA actor (max over ``max_q_samples`` draws per
               critic when ``max_q_backup``, as the paper does on AntMaze)

Targets are Polyak-averaged critics, and an EMA of the actor samples the next actions and acts.
Acting draws ``num_samples`` chunks from the EMA actor and picks one by softmax (or argmax)
of the target critics' min Q. With ``horizon > 1`` the critics score whole chunks ``[H, A]`` and the
target is the chunk's h-step return (``dprl.data.buffer.chunk_return``). ``pretrain`` is diffusion BC alone (the shared first stage);
``update`` is the DQL step; offline and online use the same ``update``.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from dprl.models.actor import actor_from_config
from dprl.data.buffer import chunk_return
from dprl.models.encoders import batch_size_of, encode_once, repeat_rows
from dprl.models.nets import CriticEnsemble, critic_from_config
from dprl.models.teacher import teacher_actions
from dprl.models.training import (BCStage, EMA, apply_loss, create_state, make_optimizer, polyak,
                          pretrain_step)


class Agent(flax.struct.PyTreeNode):
    actor: BCStage           # the diffusion actor and its EMA (which acts and picks next actions)
    critic: TrainState       # the Q ensemble -> [E, B]
    target_critic_params: Any
    key: jax.Array
    critic_step: jax.Array   # DQL updates so far: 0 = the critics are untrained
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = False

    @property
    def critic_net(self) -> CriticEnsemble:
        return critic_from_config(self.config)

    @property
    def unroll_chains(self) -> bool:
        """Unroll the update's denoising chains when short (Diffusion-QL's 5 steps): XLA then
        fuses across steps, ~7 % less time per update here (same numbers to float rounding); a
        long chain would compile far slower."""
        return self.actor.model.num_sampling_steps <= 10

    # ---- critic ---------------------------------------------------------------------------
    def target_q(self, next_observations: jax.Array, key: jax.Array) -> jax.Array:
        """``min_e Q'_e(s', a')`` ``[B]``, ``a'`` from the EMA actor (max over draws if max-Q).

        ``key`` samples the next actions directly (tests reproduce the draw with it).
        """
        n = self.config.max_q_samples if self.config.max_q_backup else 1
        B = batch_size_of(next_observations)
        # [B * n, ...], row-major; images are encoded once per network, then repeated
        actor_obs = repeat_rows(self.actor.encode(next_observations), n)
        critic_obs = repeat_rows(encode_once(self.critic_net, self.target_critic_params,
                                             next_observations), n)
        next_actions, _ = self.actor.sample(actor_obs, key, unroll=self.unroll_chains)
        q = self.critic_net.apply(self.target_critic_params, critic_obs, next_actions)  # [E, B * n]
        q = q.reshape(q.shape[0], B, n).max(axis=-1)                     # per critic: max over draws
        return q.min(axis=0)

    def critic_loss(self, params, batch: dict, target: jax.Array) -> tuple[jax.Array, dict]:
        """The sum of the E critics' MSEs (the paper's loss, what the gradient sees); logged as
        ``critic/loss``: their mean, comparable with the other agents'."""
        q = self.critic_net.apply(params, batch["observations"], batch["actions"])  # [E, B]
        per_critic = ((q - target[None]) ** 2).mean(axis=1)
        return per_critic.sum(), {"critic/loss": per_critic.mean(), "critic/q_mean": q.mean(),
                                  "critic/target_mean": target.mean()}

    # ---- actor ----------------------------------------------------------------------------
    def actor_loss(self, params, critic_params, batch: dict, key: jax.Array
                   ) -> tuple[jax.Array, dict]:
        """BC loss + eta * normalized Q loss; ``a_pi`` keeps gradients through the whole chain."""
        bc_key, pi_key, pick_key = jax.random.split(key, 3)
        obs = batch["observations"]
        actor_obs = self.actor.model.encode(params, obs)   # images: encoded once for BC and pi
        bc = self.actor.model.loss(params, actor_obs, batch["actions"], bc_key, batch["valid"])
        a_pi, _ = self.actor.model.sample(params, actor_obs, pi_key, unroll=self.unroll_chains)
        q = self.critic_net.apply(critic_params, obs, a_pi)                       # [E, B]
        E = q.shape[0]
        i = jax.random.randint(pick_key, (), 0, E)
        # Dividing by the other critic's |Q| (no gradient) makes eta scale-free across tasks.
        scale = jax.lax.stop_gradient(jnp.abs(q[(i + 1) % E]).mean())
        q_loss = -q[i].mean() / jnp.maximum(scale, 1e-6)
        loss = bc + self.config.eta * q_loss
        return loss, {"actor/loss": loss, "actor/bc_loss": bc, "actor/q_loss": q_loss,
                      "actor/q_pi_mean": q.mean()}

    # ---- updates --------------------------------------------------------------------------
    @jax.jit
    def update(self, batch: dict) -> tuple["Agent", dict]:
        """One DQL step: critics on the TD target, actor on BC + Q, then targets and EMA."""
        cfg = self.config
        key, target_key, actor_key = jax.random.split(self.key, 3)
        ret, boot = chunk_return(batch, cfg.discount)
        target = jax.lax.stop_gradient(
            ret + boot * self.target_q(batch["next_observations"], target_key))
        critic, c_info = apply_loss(self.critic, lambda p: self.critic_loss(p, batch, target),
                                    "critic")
        actor, a_info = apply_loss(
            self.actor, lambda p: self.actor_loss(p, critic.params, batch, actor_key), "actor")
        target_params = polyak(self.target_critic_params, critic.params, cfg.tau)
        agent = self.replace(actor=actor, critic=critic, target_critic_params=target_params,
                             key=key, critic_step=self.critic_step + 1)
        return agent, {**c_info, **a_info}

    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        """Diffusion BC only (critics untouched)."""
        return pretrain_step(self, batch)

    # ---- acting ---------------------------------------------------------------------------
    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> chunks ``[B, H, A]``: the pick among N EMA-actor
        draws."""
        N, B = int(self.config.num_samples), batch_size_of(observations)
        sample_key, pick_key = jax.random.split(key)
        chunks, _ = self.actor.sample(repeat_rows(self.actor.encode(observations), N), sample_key)
        return self.select(observations, chunks.reshape(B, N, *chunks.shape[1:]), pick_key), {}

    def select(self, observations: jax.Array, candidates: jax.Array, key: jax.Array
               ) -> jax.Array:
        """One of ``candidates [B, N, H, A]`` per observation -> ``[B, H, A]``, by softmax (or
        argmax) of the target critics' min Q."""
        cfg = self.config
        B, N = candidates.shape[:2]
        if N == 1:
            return candidates[:, 0]
        params = self.target_critic_params
        rep = repeat_rows(encode_once(self.critic_net, params, observations), N)  # [B * N, ...]
        flat = candidates.reshape(B * N, *candidates.shape[2:])
        q = self.critic_net.apply(params, rep, flat).min(axis=0)
        # Untrained critics (BC pretraining only) would pick by noise: pick uniformly instead.
        q = jnp.where(self.critic_step > 0, q.reshape(B, N), 0.0)
        if cfg.action_selection == "argmax":
            idx = q.argmax(axis=1)
        else:
            idx = jax.random.categorical(key, q / cfg.selection_temperature, axis=1)
        return candidates[jnp.arange(B), idx]

    def teacher_sample(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """The EMA actor's deterministic sample (DDIM, eta 0) ``[B, H, A]`` from ``noise``."""
        return teacher_actions(self.actor.model, self.actor.policy_params, observations, noise)

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.FrozenConfigDict(config)
        if config.action_selection not in ("softmax", "argmax"):
            raise ValueError(f"dql.action_selection must be 'softmax' or 'argmax', "
                             f"not {config.action_selection!r}")
        if config.num_critics < 1 or config.num_samples < 1:
            raise ValueError("dql.num_critics and dql.num_samples must be >= 1")
        key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        obs = jax.tree.map(jnp.asarray, example_batch["observations"])  # flat or pixel
        decay_steps = config.lr_decay_steps or (config.run.pretrain_steps + config.run.offline_steps)
        opt = dict(grad_clip=config.grad_clip, lr_schedule=config.lr_schedule,
                   total_steps=int(decay_steps))
        actor = BCStage.init(actor_from_config(config), actor_key, obs,
                             make_optimizer(config.actor_lr, **opt), EMA.from_config(config))
        critic_params = critic_from_config(config).init(critic_key, obs,
                                                        jnp.asarray(example_batch["actions"]))
        return cls(actor=actor,
                   critic=create_state(critic_params, make_optimizer(config.critic_lr, **opt)),
                   target_critic_params=critic_params, key=key,
                   critic_step=jnp.zeros((), jnp.int32), config=config)
