"""Diffusion Q-Learning (Wang, Hunt & Zhou, ICLR 2023), on action chunks.

The actor is the generative (diffusion) policy of ``agents/bc.py``; on top of its BC loss it is
pushed up the critics' landscape through the whole denoising chain:

  actor loss   L_bc(theta) + eta * ( -Q_i(s, a_pi) / sg(mean |Q_j(s, a_pi)|) ),
               a_pi ~ pi_theta(. | s) sampled with gradients through all N denoising steps;
               i random, j = the next critic (the reference code's random q1/q2 pick)
  critic loss  sum_e mean_b (Q_e(s, a) - y)^2 over an ensemble of E critics (E = 2: twin)
  target       y = sum_{j < n} gamma^j r_j + gamma^n * mask * min_e Q'_e(s', a'),
               n = valid steps of the chunk, a' ~ EMA actor (max over ``max_q_samples`` draws per
               critic when ``max_q_backup``, as the paper does on AntMaze)

Targets are Polyak-averaged critics, and an EMA of the actor samples the next actions and acts.
Acting draws ``num_action_samples`` chunks from the EMA actor and picks one by softmax (or argmax)
of the target critics' min Q. With ``horizon > 1`` the critics score whole chunks ``[H, A]`` and the
target is the chunk's h-step return. ``pretrain`` is diffusion BC alone (the shared first stage);
``update`` is the DQL step; offline and online use the same ``update``.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training.train_state import TrainState

from dprl.actor import GenerativeActor, actor_from_config
from dprl.nets import CriticEnsemble, critic_from_config
from dprl.training import apply_loss, create_state, ema, make_optimizer


# ---- the h-step backup (pure; checked against numpy in tests) ---------------------------------
def chunk_backup(rewards: jax.Array, valid: jax.Array, masks: jax.Array, next_q: jax.Array,
                 discount: float) -> jax.Array:
    """``sum_j gamma^j r_j valid_j + gamma^{n_valid} * masks * next_q``.

    ``rewards, valid [B, H]``; ``masks, next_q [B]``; returns ``[B]``. A terminal can only sit at a
    chunk's last valid step (chunks stop at episode ends), so ``masks`` covers it.
    """
    H = rewards.shape[1]
    powers = discount ** jnp.arange(H, dtype=jnp.float32)
    n_valid = valid.sum(axis=1)
    return (rewards * valid * powers).sum(axis=1) + discount ** n_valid * masks * next_q


class Agent(flax.struct.PyTreeNode):
    actor: TrainState
    ema_params: Any
    critic: TrainState
    target_critic_params: Any
    key: jax.Array
    step: jax.Array          # gradient steps (pretrain + update): drives the EMA schedule
    critic_step: jax.Array   # DQL updates so far: 0 = the critics are untrained
    config: Any = flax.struct.field(pytree_node=False)

    on_policy = False

    # ---- networks -------------------------------------------------------------------------
    @property
    def generative(self) -> GenerativeActor:
        return _generative(self.config)

    @property
    def critic_net(self) -> CriticEnsemble:
        return _critic(self.config)

    # ---- critic ---------------------------------------------------------------------------
    def target_q(self, next_observations: jax.Array, key: jax.Array) -> jax.Array:
        """``min_e Q'_e(s', a')`` ``[B]``, ``a'`` from the EMA actor (max over draws if max-Q).

        ``key`` samples the next actions directly (tests reproduce the draw with it).
        """
        n = self.config.max_q_samples if self.config.max_q_backup else 1
        B = next_observations.shape[0]
        rep = jnp.repeat(next_observations, n, axis=0)                   # [B * n, ...], row-major
        next_actions, _ = self.generative.sample(self.ema_params, rep, key)
        q = self.critic_net.apply(self.target_critic_params, rep, next_actions)  # [E, B * n]
        q = q.reshape(q.shape[0], B, n).max(axis=-1)                     # per critic: max over draws
        return q.min(axis=0)

    def critic_loss(self, params, batch: dict, target: jax.Array) -> tuple[jax.Array, dict]:
        q = self.critic_net.apply(params, batch["observations"], batch["actions"])  # [E, B]
        loss = ((q - target[None]) ** 2).mean(axis=1).sum()
        return loss, {"critic/loss": loss, "critic/q_mean": q.mean(),
                      "critic/target_mean": target.mean()}

    # ---- actor ----------------------------------------------------------------------------
    def actor_loss(self, params, critic_params, batch: dict, key: jax.Array
                   ) -> tuple[jax.Array, dict]:
        """BC loss + eta * normalized Q loss; ``a_pi`` keeps gradients through the whole chain."""
        bc_key, pi_key, pick_key = jax.random.split(key, 3)
        obs = batch["observations"]
        bc = self.generative.loss(params, obs, batch["actions"], bc_key, batch["valid"])
        a_pi, _ = self.generative.sample(params, obs, pi_key)
        q = self.critic_net.apply(critic_params, obs, a_pi)                       # [E, B]
        E = q.shape[0]
        i = jax.random.randint(pick_key, (), 0, E)
        # Dividing by the other critic's |Q| (no gradient) makes eta scale-free across tasks.
        scale = jax.lax.stop_gradient(jnp.abs(q[(i + 1) % E]).mean())
        q_loss = -q[i].mean() / jnp.maximum(scale, 1e-6)
        loss = bc + self.config.eta * q_loss
        return loss, {"actor/loss": loss, "actor/bc_loss": bc, "actor/q_loss": q_loss,
                      "actor/q_pi_mean": q.mean()}

    def _ema_step(self, actor_params) -> Any:
        """EMA actor: a copy until ``ema_start``, then Polyak every ``ema_every`` steps."""
        cfg = self.config
        warm = self.step < cfg.ema_start
        decay = jnp.where(warm, 0.0, cfg.ema_decay)
        new = ema(self.ema_params, actor_params, decay)
        due = warm | (self.step % cfg.ema_every == 0)
        return jax.tree.map(lambda n, o: jnp.where(due, n, o), new, self.ema_params)

    # ---- updates --------------------------------------------------------------------------
    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        """Diffusion BC only (critics untouched)."""
        key, loss_key = jax.random.split(self.key)

        def loss_fn(p):
            loss = self.generative.loss(p, batch["observations"], batch["actions"], loss_key,
                                        batch["valid"])
            return loss, {"bc/loss": loss}

        actor, info = apply_loss(self.actor, loss_fn)
        info = {"bc/loss": info["bc/loss"], "bc/grad_norm": info["grad_norm"]}
        return self.replace(actor=actor, ema_params=self._ema_step(actor.params), key=key,
                            step=self.step + 1), info

    @jax.jit
    def update(self, batch: dict) -> tuple["Agent", dict]:
        """One DQL step: critics on the TD target, actor on BC + Q, then targets and EMA."""
        cfg = self.config
        key, target_key, actor_key = jax.random.split(self.key, 3)
        target = chunk_backup(batch["rewards"], batch["valid"], batch["masks"],
                              self.target_q(batch["next_observations"], target_key), cfg.discount)
        target = jax.lax.stop_gradient(target)
        critic, c_info = apply_loss(self.critic, lambda p: self.critic_loss(p, batch, target))
        actor, a_info = apply_loss(
            self.actor, lambda p: self.actor_loss(p, critic.params, batch, actor_key))
        target_params = optax.incremental_update(critic.params, self.target_critic_params,
                                                 cfg.tau)
        info = {**{k: v for k, v in c_info.items() if k != "grad_norm"},
                "critic/grad_norm": c_info["grad_norm"],
                **{k: v for k, v in a_info.items() if k != "grad_norm"},
                "actor/grad_norm": a_info["grad_norm"]}
        return self.replace(actor=actor, ema_params=self._ema_step(actor.params), critic=critic,
                            target_critic_params=target_params, key=key,
                            step=self.step + 1, critic_step=self.critic_step + 1), info

    # ---- acting ---------------------------------------------------------------------------
    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> chunks ``[B, H, A]``: the best of N EMA-actor draws."""
        cfg = self.config
        N = int(cfg.num_action_samples)
        B = observations.shape[0]
        sample_key, pick_key = jax.random.split(key)
        rep = jnp.repeat(observations, N, axis=0)                          # [B * N, ...]
        chunks, _ = self.generative.sample(self.ema_params, rep, sample_key)  # [B * N, H, A]
        if N == 1:
            return chunks, {}
        q = self.critic_net.apply(self.target_critic_params, rep, chunks).min(axis=0)
        # Untrained critics (BC pretraining only) would pick by noise: pick uniformly instead.
        q = jnp.where(self.critic_step > 0, q.reshape(B, N), 0.0)
        if cfg.action_selection == "argmax":
            idx = q.argmax(axis=1)
        else:
            idx = jax.random.categorical(pick_key, q / cfg.selection_temperature, axis=1)
        chunks = chunks.reshape(B, N, *chunks.shape[1:])
        return chunks[jnp.arange(B), idx], {}

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.FrozenConfigDict(config)
        if config.action_selection not in ("softmax", "argmax"):
            raise ValueError(f"dql.action_selection must be 'softmax' or 'argmax', "
                             f"not {config.action_selection!r}")
        if config.num_critics < 1 or config.num_action_samples < 1:
            raise ValueError("dql.num_critics and dql.num_action_samples must be >= 1")
        key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        obs = jnp.asarray(example_batch["observations"])
        actions = jnp.asarray(example_batch["actions"])
        actor_params = _generative(config).init(actor_key, obs)
        critic_params = _critic(config).init(critic_key, obs, actions)
        decay_steps = config.lr_decay_steps or (config.run.pretrain_steps + config.run.offline_steps)
        opt = dict(grad_clip=config.grad_norm, lr_schedule=config.lr_schedule,
                   total_steps=int(decay_steps))
        return cls(actor=create_state(actor_params, make_optimizer(config.lr, **opt)),
                   ema_params=actor_params,
                   critic=create_state(critic_params, make_optimizer(config.critic_lr, **opt)),
                   target_critic_params=critic_params, key=key, step=jnp.zeros((), jnp.int32),
                   critic_step=jnp.zeros((), jnp.int32), config=config)


def _generative(config) -> GenerativeActor:
    return actor_from_config(config)


def _critic(config) -> CriticEnsemble:
    return critic_from_config(config)
