"""Value-guided sampling: a frozen diffusion BC actor steered, while it samples, by a value on
noisy actions (Diffuser, Janner et al. 2022; QGPO, Lu et al. 2023).

Two methods, as presets of ``configs/guided.py``:
  'qgpo'          QGPO as its paper and code run it: Q by the in-support softmax backup over BC
                  samples, frozen after half its steps; contrastive energy prediction (CEP) of J
                  with beta 3 on rewards scaled by 1000 / (return range); 'score' guidance in a
                  deterministic DPM-Solver-2 sampler (15 evaluations, no x0 clipping); evaluated
                  over QGPO's grid of guidance scales.
  'mse-guidance'  (the default) QGPO's MSE baseline energy (J regressed on beta Q) with
                  Diffuser-style 'mean' guidance in a stochastic DDPM sampler, on an IQL critic:
                  not QGPO, a cheaper relative of it and of Diffuser.

  pretrain  diffusion BC of the actor (the BC stage every agent shares, ``dprl.models.training.BCStage``,
            with its EMA). Afterwards the actor is frozen (unless ``finetune_actor``).
  update    * twin critics ``Q(s, a)`` with target networks, trained by TD with next actions from
              the guided sampler ('td'), by IQL's expectile regression with a ``V(s)`` network
              ('iql', Kostrikov et al. 2022; no sampling inside the update), or by QGPO's
              in-support softmax backup ('softmax': ``V(s') = sum_m softmax(q_alpha Q')_m Q'_m``
              over M unguided BC samples at s'; with ``precompute_support``, as QGPO: drawn
              once per dataset state after BC, ``prepare_offline``); with ``critic_freeze_steps``
              the critic (and its target) stop changing after that many updates (QGPO: half of
              them). Rewards
              enter the backup as ``reward_scale * r + reward_bias``;
            * the guide ``J(s, a^k, k)`` on noisy actions: regression of ``beta * Q(s, a^0) / q`` on
              dataset actions noised to a random step ``k`` ('regression', Diffuser's value), or
              QGPO's contrastive energy prediction over ``M`` actions sampled from the actor
              ('contrastive': ``J -> log E[exp(beta Q / q)]``, the exact energy guidance);
              ``q`` = a running mean of |Q| (``normalize_q``; 1 otherwise), so that one guidance
              scale means the same on tasks with different reward scales;
            * with ``finetune_actor``: BC of the actor on the batch chunks whose Q beats the
              guided policy's at the same state (advantage > 0).
  act       ``GenerativeActor.sample`` with ``guidance_fn = J(s, ., .)``: every denoising step's mean
            moves by ``guidance_scale * std^2 * grad_x J`` ('mean', Diffuser) or the predicted noise
            by ``-guidance_scale * sqrt(1 - abar) * grad_x J`` ('score', QGPO); steps below
            ``guidance_min_step`` are not guided; optional best-of-N by Q on top.
  teacher   for a one-step actor distilled from it: the guided sampler run deterministically
            (DDIM, eta 0; 'score' guidance, since 'mean' guidance scales with the step's noise,
            which eta 0 removes); its candidates are picked by Q as acting does (``select``).

Shapes: B batch, H chunk length, A action dim, O observation dim, M support actions, N candidates.

Observations are flat ``[B, (K,) O]`` or pixel dicts (``{'image': uint8 [B, (K,) H, W, C],
'state': [B, (K,) S]}``, docs/pixels.md), repeated and sliced part by part. The actor, the critic
ensemble (its heads share one), V and the guide J each build their own encoder from
``config.encoder``, so each loss trains its own network's encoder only.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from dprl.models.actor import actor_from_config
from dprl.data.buffer import chunk_return
from dprl.models.diffusion import q_sample
from dprl.models.encoders import (batch_size_of, encode_observations, encode_once,
                                  frozen_encoder_config, repeat_rows)
from dprl.models.nets import (MLP, CriticEnsemble, NoisyActionValue, critic_from_config,
                              value_from_config)
from dprl.models.teacher import teacher_actions
from dprl.models.training import (BCStage, EMA, apply_loss, create_state, make_optimizer, polyak,
                          pretrain_step)

CRITIC_MODES = ("td", "iql", "softmax")
GUIDE_LOSSES = ("regression", "contrastive")
GUIDE_TIME_EMBEDDINGS = ("mlp", "fourier")


def gaussian_fourier_features(tau: jax.Array, dim: int, scale: float = 30.0) -> jax.Array:
    """``[sin(2 pi tau W), cos(2 pi tau W)] [B, dim]`` with fixed ``W ~ N(0, scale^2) [dim / 2]``
    (QGPO's time features). W is a constant drawn from PRNGKey(0), not a parameter: QGPO does
    not train it either."""
    w = scale * jax.random.normal(jax.random.PRNGKey(0), (dim // 2,))
    proj = tau.astype(jnp.float32)[:, None] * w[None, :] * 2.0 * jnp.pi
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class FourierNoisyActionValue(nn.Module):
    """QGPO's energy net ``J(obs [B, O], a^k [B, H, A], k [B]) -> [B]``: an MLP over
    ``[obs, a^k, Dense(fourier(tau))]`` with ``tau = (k + 1) / time_scale`` (the continuous time of
    step k on the 'vp_sde' schedule, ``time_scale`` = its T)."""

    hidden_dims: tuple = (256, 256, 256, 256)
    activation: str = "silu"
    time_dim: int = 32
    time_scale: float = 1000.0
    encoder: Any = None   # a frozen config.encoder: pixel observations get their own encoder

    @nn.compact
    def __call__(self, observations, noisy_actions, t):
        B = noisy_actions.shape[0]
        tau = (jnp.asarray(t, jnp.float32) + 1.0) / self.time_scale
        emb = nn.Dense(self.time_dim)(gaussian_fourier_features(tau, self.time_dim))
        x = jnp.concatenate([encode_observations(observations, self.encoder),
                             noisy_actions.reshape(B, -1), emb], axis=-1)
        return MLP((*self.hidden_dims, 1), self.activation)(x)[..., 0]


def guide_net(config) -> nn.Module:
    """The guide J(s, a^k, k) on noisy actions: Diffusion-QL's time MLP ('mlp', the critics'
    activation unless ``guide_activation``) or QGPO's Fourier-feature energy net ('fourier')."""
    activation = config.get("guide_activation", "") or config.critic_activation
    # J has its own encoder (from config.encoder): its loss trains that one only.
    encoder = frozen_encoder_config(config.get("encoder"))
    if config.get("guide_time_embedding", "mlp") == "fourier":
        return FourierNoisyActionValue(tuple(config.guide_hidden_dims), activation,
                                       int(config.guide_time_dim),
                                       float(config.actor.diffusion_steps), encoder)
    return NoisyActionValue(tuple(config.guide_hidden_dims), activation, config.actor.time_dim,
                            encoder=encoder)


def softmax_backup(q_next: jax.Array, q_alpha: float) -> jax.Array:
    """QGPO's in-support value ``V(s') = sum_m softmax(q_alpha Q'[:, m]) Q'[:, m]`` of
    ``q_next [B, M]`` (the target critic at M actor samples per next state) -> ``[B]``."""
    return (jax.nn.softmax(q_alpha * q_next, axis=1) * q_next).sum(1)


def cep_loss(logits: jax.Array, q_support: jax.Array, beta: float) -> jax.Array:
    """QGPO's contrastive energy prediction loss ``-mean_b sum_m softmax(beta Q)_m log
    softmax(J)_m`` of ``logits, q_support [b, M]``: minimized, over J, by ``J = beta Q + c(b)``."""
    weights = jax.nn.softmax(beta * q_support, axis=1)
    return -(weights * jax.nn.log_softmax(logits, axis=1)).sum(1).mean()


def return_range_scale(rewards, dones, complete, target: float = 1000.0) -> float:
    """QGPO's locomotion reward scale ``target / (max return - min return)`` over a dataset's
    episodes (``rewards, dones, complete [N]``, ``complete`` = terminal or timeout; a last
    episode that ended neither way is left out, as in QGPO's ``return_range``)."""
    import numpy as np
    rewards, dones = np.asarray(rewards, np.float64), np.asarray(dones, bool)
    ends = np.flatnonzero(dones)
    if ends.size and not np.asarray(complete, bool)[ends[-1]]:
        ends = ends[:-1]
    if ends.size < 2:
        raise ValueError("the return range needs at least two complete episodes")
    starts = np.concatenate([[0], ends[:-1] + 1])
    csum = np.concatenate([[0.0], np.cumsum(rewards)])
    returns = csum[ends + 1] - csum[starts]
    spread = returns.max() - returns.min()
    if spread <= 0:
        raise ValueError("every episode has the same return: no return range to scale by")
    return float(target / spread)


class Agent(flax.struct.PyTreeNode):
    actor: BCStage             # the BC denoiser and its EMA, which samples (Diffusion-QL); frozen
                               # after pretraining unless finetune_actor
    critic: TrainState         # twin Q(s, chunk) -> [E, B]
    target_critic_params: Any
    value: TrainState          # V(s), used by the 'iql' critic mode only
    guide: TrainState          # J(s, noisy chunk, k) -> [B]
    q_scale: jax.Array         # [] EMA of mean |Q| over batches: J sees Q / q_scale (normalize_q)
    critic_step: jax.Array     # [] critic/guide updates so far: 0 = J is untrained
    key: jax.Array
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = False

    @property
    def critic_net(self) -> CriticEnsemble:
        return critic_from_config(self.config)

    # ---- values -----------------------------------------------------------------------------
    def q_min(self, params, observations, actions) -> jax.Array:
        """Pessimistic ``min_e Q_e(s, a) [B]``."""
        return self.critic_net.apply(params, observations, actions).min(0)

    def guidance_fn(self, guide_params, observations):
        """``J(x [B, H, A], t [B]) -> [B]`` at fixed observations: the sampler differentiates it
        in the noisy action ``x``."""
        net = guide_net(self.config)
        return lambda x, t: net.apply(guide_params, observations, x, t)

    # ---- sampling ---------------------------------------------------------------------------
    @functools.partial(jax.jit, static_argnames=("num_samples", "return_chain"))
    def sample_guided(self, observations: jax.Array, key: jax.Array, guidance_scale,
                      num_samples: int = 1, return_chain: bool = False):
        """Guided chunks ``[B, H, A]`` (and the chain, for inspection). ``guidance_scale`` is
        traced (a sweep does not recompile); ``num_samples > 1`` draws N per observation and
        keeps the argmax of ``min_e Q``."""
        cfg = self.config
        B = batch_size_of(observations)
        obs = repeat_rows(observations, num_samples) if num_samples > 1 else observations
        actions, chain = self.actor.sample(
            obs, key, guidance_fn=self.guidance_fn(self.guide.params, obs),
            guidance_scale=guidance_scale, guidance_mode=cfg.guidance_mode,
            guidance_min_step=cfg.guidance_min_step, return_chain=return_chain)
        if num_samples > 1:
            q = self.q_min(self.critic.params, obs, actions).reshape(B, num_samples)
            best = jnp.argmax(q, axis=1)
            actions = actions.reshape(B, num_samples, *actions.shape[1:])[jnp.arange(B), best]
        return (actions, chain) if return_chain else actions

    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> guided chunks ``[B, H, A]`` (config's scale and N).

        Before the first critic/guide update (BC pretraining) J is random, so the actor samples
        unguided: pretraining evaluations score the BC actor itself."""
        trained = self.critic_step > 0
        return jax.lax.cond(
            trained,
            lambda: self.sample_guided(observations, key, self.config.guidance_scale,
                                       self.config.num_samples),
            lambda: self.sample_guided(observations, key, 0.0, 1)), {}

    # ---- a one-step actor's teacher and its pick among candidates -----------------------------
    def teacher_sample(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """One guided chunk ``[B, H, A]``, sampled deterministically (DDIM, eta 0) from ``noise
        [B, H, A]``; unguided before J is trained, as acting."""
        cfg = self.config
        if cfg.guidance_mode == "mean":
            raise ValueError("guided: a one-step actor distills the guided sampler run "
                             "deterministically (DDIM, eta 0), where 'mean' guidance (scaled by "
                             "the step's noise variance) is zero; use --agent.guidance_mode=score")
        scale = jnp.where(self.critic_step > 0, cfg.guidance_scale, 0.0)
        return teacher_actions(self.actor.model, self.actor.policy_params, observations, noise,
                               guidance_fn=self.guidance_fn(self.guide.params, observations),
                               guidance_scale=scale, guidance_mode=cfg.guidance_mode,
                               guidance_min_step=cfg.guidance_min_step)

    def select(self, observations: jax.Array, candidates: jax.Array, key: jax.Array
               ) -> jax.Array:
        """One of ``candidates [B, N, H, A]`` per observation -> ``[B, H, A]``: the argmax of
        ``min_e Q`` once the critic is trained (the first before, as acting unguided)."""
        B, N = candidates.shape[:2]
        if N == 1:
            return candidates[:, 0]
        obs = repeat_rows(encode_once(self.critic_net, self.critic.params, observations), N)
        q = self.q_min(self.critic.params, obs, candidates.reshape(B * N, *candidates.shape[2:]))
        best = jnp.argmax(jnp.where(self.critic_step > 0, q.reshape(B, N), 0.0), axis=1)
        return candidates[jnp.arange(B), best]

    # ---- losses -----------------------------------------------------------------------------
    def critic_loss(self, params, batch, target_q):
        q = self.critic_net.apply(params, batch["observations"], batch["actions"])  # [E, B]
        loss = ((q - target_q[None]) ** 2).mean()
        return loss, {"critic/loss": loss, "critic/q_mean": q.mean(), "critic/q_std": q.std(),
                      "critic/target_mean": target_q.mean()}

    def value_loss(self, params, batch, q_data):
        """IQL: expectile regression of ``V(s)`` on ``min Q_target(s, a_data)``."""
        v = value_from_config(self.config).apply(params, batch["observations"])
        diff = q_data - v
        weight = jnp.abs(self.config.expectile - (diff < 0).astype(jnp.float32))
        loss = (weight * diff**2).mean()
        return loss, {"value/loss": loss, "value/v_mean": v.mean()}

    def guide_regression_loss(self, params, batch, q_data, key):
        """``J(s, a^k, k) ~ beta * Q(s, a^0)`` on dataset chunks noised to a random step ``k``."""
        sched = self.actor.model.schedule
        B = batch["actions"].shape[0]
        k_key, n_key = jax.random.split(key)
        k = jax.random.randint(k_key, (B,), 0, sched.num_steps)
        noisy = q_sample(sched, batch["actions"], k, jax.random.normal(n_key, batch["actions"].shape))
        j = guide_net(self.config).apply(params, batch["observations"], noisy, k.astype(jnp.float32))
        target = self.config.beta * q_data
        loss = ((j - target) ** 2).mean()
        return loss, {"guide/loss": loss, "guide/j_mean": j.mean()}

    def guide_contrastive_loss(self, params, observations, support, q_support, key):
        """QGPO's contrastive energy prediction. ``support [b, M, H, A]`` are actor samples at
        each state with values ``q_support [b, M]``; all M are noised to one step ``k`` per state
        and ``softmax_M(J)`` is fitted to ``softmax_M(beta Q)`` by cross-entropy, so that
        ``J(s, a^k, k) -> log E[exp(beta Q(s, a^0)) | a^k] + c(s)``."""
        sched = self.actor.model.schedule
        b, M = q_support.shape
        k_key, n_key = jax.random.split(key)
        k = jnp.repeat(jax.random.randint(k_key, (b,), 0, sched.num_steps), M)
        flat = support.reshape(b * M, *support.shape[2:])
        noisy = q_sample(sched, flat, k, jax.random.normal(n_key, flat.shape))
        net = guide_net(self.config)
        obs = repeat_rows(encode_once(net, params, observations), M)   # each image encoded once
        logits = net.apply(params, obs, noisy, k.astype(jnp.float32)).reshape(b, M)
        weights = jax.nn.softmax(self.config.beta * q_support, axis=1)
        loss = cep_loss(logits, q_support, self.config.beta)
        return loss, {"guide/loss": loss, "guide/j_mean": logits.mean(),
                      "guide/weight_max": weights.max(1).mean()}

    # ---- the support set: M unguided BC samples per state -----------------------------------
    def support(self, batch: dict, name: str, observations, key: jax.Array) -> jax.Array:
        """``[B M, H, A]`` at ``observations``: the batch's precomputed ``name`` (QGPO's fake
        actions, ``prepare_offline``), else M fresh draws of the BC actor."""
        if name in batch:
            s = batch[name]
            return s.reshape(-1, *s.shape[2:])
        return self.draw_support(observations, key)

    def draw_support(self, observations, key: jax.Array) -> jax.Array:
        """``[B M, H, A]``: M unguided draws of the BC actor per observation (images encoded
        once)."""
        M = self.config.support_actions
        return self.actor.sample(repeat_rows(self.actor.encode(observations), M), key)[0]

    def prepare_offline(self, buffer, key: jax.Array, progress: bool = True, after_chunk=None):
        """With ``precompute_support`` (QGPO): the support set drawn once, after BC, at every
        dataset state and next state (the actor stays frozen from here on), as QGPO's code draws
        its fake actions before training Q and the energy net; batches then carry it."""
        if not self.config.get("precompute_support", False):
            return buffer
        def draw(observations, key):
            actions = self.draw_support(observations, key)
            return actions.reshape(batch_size_of(observations), -1, *actions.shape[1:])

        return buffer.with_support(draw, key, progress=progress, after_chunk=after_chunk)

    # ---- update -----------------------------------------------------------------------------
    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        """Diffusion BC of the actor (with its EMA)."""
        return pretrain_step(self, batch)

    @jax.jit
    def update(self, batch: dict) -> tuple["Agent", dict]:
        """Critic (+ V) and guide J; the actor only with ``finetune_actor``."""
        cfg = self.config
        key, next_key, guide_key, sup_key, pi_key, bc_key = jax.random.split(self.key, 6)
        scale, bias = cfg.get("reward_scale", 1.0), cfg.get("reward_bias", 0.0)
        scaled = batch if (scale, bias) == (1.0, 0.0) else dict(
            batch, rewards=batch["rewards"] * scale + bias)
        ret, boot = chunk_return(scaled, cfg.discount)
        obs = batch["observations"]
        info = {}

        # Critic: TD target from the guided sampler's next chunk, IQL's V(s'), or the softmax
        # over BC samples at s'.
        q_data = self.q_min(self.target_critic_params, obs, batch["actions"])   # [B]
        # J sees Q in units of its typical size, so guidance scales transfer across reward scales.
        batch_scale = jnp.abs(q_data).mean()
        q_scale = jnp.where(self.critic_step == 0, batch_scale,
                            cfg.q_scale_decay * self.q_scale + (1 - cfg.q_scale_decay) * batch_scale)
        unit = jnp.maximum(q_scale, 1e-3) if cfg.normalize_q else 1.0

        def critic_update():
            value, c_info = self.value, {}
            if cfg.critic_mode == "iql":
                value, v_info = apply_loss(value, lambda p: self.value_loss(p, batch, q_data),
                                           "value")
                c_info.update({"value/loss": v_info["value/loss"],
                               "value/v_mean": v_info["value/v_mean"]})
                next_v = value_from_config(self.config).apply(value.params,
                                                              batch["next_observations"])
            elif cfg.critic_mode == "softmax":
                M = cfg.support_actions
                next_obs, params = batch["next_observations"], self.target_critic_params
                support = self.support(batch, "next_support_actions", next_obs, next_key)
                critic_obs = repeat_rows(encode_once(self.critic_net, params, next_obs), M)
                q_next = self.q_min(params, critic_obs, support).reshape(-1, M)
                next_v = softmax_backup(q_next, cfg.q_alpha)
            else:
                next_actions = self.sample_guided(batch["next_observations"], next_key,
                                                  cfg.guidance_scale)
                next_v = self.q_min(self.target_critic_params, batch["next_observations"],
                                    next_actions)
            target_q = jax.lax.stop_gradient(ret + boot * next_v)
            critic, q_info = apply_loss(self.critic,
                                        lambda p: self.critic_loss(p, batch, target_q), "critic")
            c_info.update(q_info)
            return critic, polyak(self.target_critic_params, critic.params, cfg.tau), value, c_info

        freeze = cfg.get("critic_freeze_steps", 0)
        if freeze > 0:
            # After `freeze` updates Q, its target (and V) keep their weights; J goes on learning.
            frozen = self.critic_step >= freeze
            zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                                 jax.eval_shape(critic_update)[3])
            critic, target_critic_params, value, c_info = jax.lax.cond(
                frozen, lambda: (self.critic, self.target_critic_params, self.value, zeros),
                critic_update)
            c_info["critic/frozen"] = frozen.astype(jnp.float32)
        else:
            critic, target_critic_params, value, c_info = critic_update()
        info.update(c_info)

        # Guide J on noisy actions.
        if cfg.guide_loss == "regression":
            guide, g_info = apply_loss(self.guide, lambda p: self.guide_regression_loss(
                p, batch, q_data / unit, guide_key), "guide")
        else:
            B = batch_size_of(obs)
            b, M = min(cfg.contrastive_states or B, B), cfg.support_actions
            sub = jax.tree.map(lambda x: x[:b], batch)
            sub_obs = sub["observations"]
            support = self.support(sub, "support_actions", sub_obs, sup_key)  # [b M, H, A]
            # The energies of the support set: the target critic after this step's update (as
            # QGPO, which updates Q and its target before the energy net).
            sub_rep = repeat_rows(encode_once(self.critic_net, target_critic_params, sub_obs), M)
            q_sup = self.q_min(target_critic_params, sub_rep, support)
            support = support.reshape(b, M, *support.shape[1:])
            guide, g_info = apply_loss(self.guide, lambda p: self.guide_contrastive_loss(
                p, sub_obs, support, q_sup.reshape(b, M) / unit, guide_key), "guide")
        info.update(g_info)
        info["guide/q_scale"] = q_scale

        # Optional BC on the chunks that beat the current guided policy (advantage > 0).
        actor = self.actor
        if cfg.finetune_actor:
            pi = self.sample_guided(obs, pi_key, cfg.guidance_scale)
            better = (q_data > self.q_min(self.target_critic_params, obs, pi)).astype(jnp.float32)
            actor, a_info = apply_loss(actor, lambda p: actor.bc_loss(p, batch, bc_key, better),
                                       "bc")
            info.update({"bc/loss": a_info["bc/loss"], "bc/better_frac": better.mean()})

        new = self.replace(actor=actor, critic=critic, target_critic_params=target_critic_params,
                           value=value, guide=guide, q_scale=q_scale,
                           critic_step=self.critic_step + 1, key=key)
        return new, info

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.FrozenConfigDict(config)
        if config.critic_mode not in CRITIC_MODES:
            raise ValueError(f"critic_mode must be one of {CRITIC_MODES}, not {config.critic_mode!r}")
        if config.guide_loss not in GUIDE_LOSSES:
            raise ValueError(f"guide_loss must be one of {GUIDE_LOSSES}, not {config.guide_loss!r}")
        if config.get("guide_time_embedding", "mlp") not in GUIDE_TIME_EMBEDDINGS:
            raise ValueError(f"guide_time_embedding must be one of {GUIDE_TIME_EMBEDDINGS}, not "
                             f"{config.guide_time_embedding!r}")
        if not config.get("reward_scale", 1.0) > 0:
            raise ValueError(
                f"reward_scale must be > 0, got {config.get('reward_scale')}: QGPO scales "
                f"locomotion rewards by 1000 / (max - min episode return) of the dataset, which "
                f"experiments/guidance_sweep.py fills in; with experiments/train.py pass "
                f"--agent.reward_scale=<that value> (agents.guided.return_range_scale)")
        if config.actor.model != "diffusion":
            raise ValueError("guided sampling needs the diffusion actor (actor.model='diffusion')")
        if config.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {config.num_samples}")
        key, a_key, c_key, v_key, g_key = jax.random.split(jax.random.PRNGKey(seed), 5)
        obs = jax.tree.map(jnp.asarray, example_batch["observations"])  # flat or pixel
        actions = jnp.asarray(example_batch["actions"])
        t = jnp.zeros((actions.shape[0],), jnp.float32)
        opt = lambda lr: make_optimizer(lr, grad_clip=config.grad_clip)  # noqa: E731
        actor = BCStage.init(actor_from_config(config), a_key, obs, opt(config.actor_lr),
                             EMA.from_config(config))
        critic_params = critic_from_config(config).init(c_key, obs, actions)
        value_params = value_from_config(config).init(v_key, obs)
        guide_params = guide_net(config).init(g_key, obs, actions, t)
        return cls(actor=actor, critic=create_state(critic_params, opt(config.critic_lr)),
                   target_critic_params=critic_params,
                   value=create_state(value_params, opt(config.critic_lr)),
                   guide=create_state(guide_params, opt(config.guide_lr)),
                   q_scale=jnp.ones((), jnp.float32), critic_step=jnp.zeros((), jnp.int32),
                   key=key, config=config)
