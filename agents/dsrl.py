"""Diffusion steering (DSRL; Wagenmaker et al. 2025, "Steering Your Diffusion Policy with Latent
Space Reinforcement Learning"): RL in the noise space of a frozen BC policy.

The BC policy (any dprl generative actor: diffusion or flow, chunked or not; trained by this
agent's ``pretrain`` or taken from a finished run, ``run.init_from``) is frozen and used as a
black box through its deterministic sampler,

    a = pi_dp(s, w)        DDIM with eta = 0 (diffusion) or the flow's Euler steps, from the
                           initial noise w [H, A] (``dprl.models.teacher.teacher_actions``),

and a SAC actor pi_w(s) chooses the noise: ``w = bound * tanh(u)``, ``u ~ N(mu(s), sigma(s))``
(SB3's squashed Gaussian scaled to the noise box, the reference's ``action_magnitude``). The
executed chunk is ``pi_dp(s, w)``; no gradient ever flows through the denoiser and the BC
weights never change in ``update``. Two variants (``variant``):

  'sac'  DSRL-SAC: SAC in the noise MDP. The critic is ``Q^w(s, w)`` on the noise that acted:
         target ``y = R + gamma' mask (min_e Q^w'_e(s', w') - alpha log pi_w(w'|s'))``,
         ``w' ~ pi_w(s')``. It learns from the noise that acted (``batch['noise']``,
         ``[B, H, A]``): the replay buffer keeps it as the chunk's acting record
         (``replay_acting``), and its batches start at the executed chunks' starts. Online
         only (``run.offline_ratio = 0``): offline data carry no noise.
  'na'   DSRL-NA (noise aliasing), which also learns from offline data: a critic ``Q(s, a)`` on
         actions, ``y = R + gamma' mask (min_e Q'_e(s', pi_dp(s', w')) - alpha log pi_w)``, and a
         noise critic distilled from it on fresh prior noise, ``w ~ N(0, I)``:
         ``Q^w_e(s, w) ~ Q_e(s, pi_dp(s, w))`` head by head. The actor maximizes ``Q^w``.

Both: actor loss ``mean(alpha log pi_w - min_e Q^w_e(s, w_pi))``; the temperature by SB3's
``-log_alpha (log pi + target_entropy)``; critics ``0.5 sum_e MSE`` (SB3). Each step updates the
temperature, then the critic, then the actor against the critic just updated, then the targets
(SB3's order); DSRL-NA then takes a noise-critic step every ``1 / noise_critic_ratio`` updates.
The critics see the squashed noise ``w / bound`` (what SB3 stores); the prior noise too.

``R, gamma'``: ``chunk_discount='step'`` is dprl's h-step return (``sum_j gamma^j r_j``,
``gamma^n``); 'chunk' is the reference's chunk MDP (``sum_j r_j``, ``gamma`` once per chunk).

Acting draws w from pi_w (stochastic, as the reference evaluates: ``deterministic_eval`` False).
Shapes: B batch, H chunk length, A action dim, E critics.
"""
from __future__ import annotations

from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from agents.rlpd import NormCriticEnsemble, Temperature, TanhGaussianPolicy, tanh_gaussian_sample
from dprl.data.buffer import chunk_return
from dprl.models.actor import actor_from_config, action_dim_of
from dprl.models.teacher import check_teacher, teacher_actions
from dprl.models.training import (BCStage, EMA, apply_loss, create_state, make_optimizer, polyak,
                                  pretrain_step)

VARIANTS = ("na", "sac")


class Agent(flax.struct.PyTreeNode):
    actor: BCStage                # the BC policy pi_dp (frozen in update; acts by its EMA if kept)
    noise_policy: TrainState      # pi_w: tanh-Gaussian over the flattened noise [H * A]
    critic: TrainState            # 'na': Q(s, a) on action chunks; 'sac': Q^w(s, w) -> [E, B]
    target_critic_params: Any
    noise_critic: TrainState | None  # 'na': Q^w(s, w) distilled from the critic; 'sac': None
    temperature: TrainState       # log alpha
    step: jax.Array               # updates so far (schedules the noise critic's steps)
    key: jax.Array
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = False

    @staticmethod
    def replay_acting(config) -> dict:
        """What the replay buffer keeps of acting, per chunk (``sample_actions``' aux):
        DSRL-SAC's critic learns Q^w(s, w) on the noise that acted, ``{'noise': (H, A)}``."""
        if config.variant != "sac":
            return {}
        return {"noise": (int(config.horizon), int(action_dim_of(config)))}

    # ---- networks ---------------------------------------------------------------------------
    @property
    def noise_shape(self) -> tuple[int, int]:
        return self.actor.model.horizon, self.actor.model.action_dim

    @property
    def policy_net(self) -> TanhGaussianPolicy:
        c = self.config
        H, A = self.noise_shape
        return TanhGaussianPolicy(H * A, tuple(c.noise_policy_hidden_dims), c.noise_activation,
                                  bool(c.noise_layer_norm), c.noise_kernel_init)

    @property
    def critic_net(self) -> NormCriticEnsemble:
        return _critic(self.config)

    def alpha(self) -> jax.Array:
        return Temperature(self.config.init_temperature).apply(self.temperature.params)

    # ---- the frozen policy and the noise policy ---------------------------------------------
    def decode(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """``pi_dp(s, w)``: the BC policy's deterministic sample ``[B, H, A]`` from ``noise
        [B, H, A]`` (DDIM eta 0 / Euler over ``decode_steps``, or the actor's own count)."""
        steps = {"num_steps": int(self.config.decode_steps)} if self.config.decode_steps else {}
        return teacher_actions(self.actor.model, self.actor.policy_params, observations, noise,
                               **self.actor.sampler_options(), **steps)

    def draw_noise(self, params, observations: jax.Array, key: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
        """``(w / bound [B, H, A] in (-1, 1), log pi_w [B])``: a draw of the noise policy,
        squashed (the noise itself is ``bound`` times it)."""
        squashed, log_prob = tanh_gaussian_sample(
            *self.policy_net.apply(params, observations), key)
        return squashed.reshape(-1, *self.noise_shape), log_prob

    # ---- losses ---------------------------------------------------------------------------
    def chunk_backup(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        """``(R [B], gamma' [B])`` of the batch's chunks (see the module doc)."""
        if self.config.chunk_discount == "chunk":
            return (batch["rewards"] * batch["valid"]).sum(1), \
                self.config.discount * batch["masks"]
        return chunk_return(batch, self.config.discount)

    def td_target(self, batch: dict, key: jax.Array) -> jax.Array:
        cfg, next_obs = self.config, batch["next_observations"]
        w, log_prob = self.draw_noise(self.noise_policy.params, next_obs, key)
        inputs = self.decode(next_obs, cfg.noise_bound * w) if cfg.variant == "na" else w
        next_q = self.critic_net.apply(self.target_critic_params, next_obs, inputs).min(axis=0)
        ret, boot = self.chunk_backup(batch)
        return ret + boot * (next_q - self.alpha() * log_prob)

    def critic_loss(self, params, batch: dict, target: jax.Array) -> tuple[jax.Array, dict]:
        cfg = self.config
        inputs = batch["actions"] if cfg.variant == "na" else batch["noise"] / cfg.noise_bound
        q = self.critic_net.apply(params, batch["observations"], inputs)          # [E, B]
        per_critic = ((q - target[None]) ** 2).mean(axis=1)
        return 0.5 * per_critic.sum(), {"critic/loss": per_critic.mean(),
                                        "critic/q_mean": q.mean(),
                                        "critic/target_mean": target.mean()}

    def actor_loss(self, params, noise_q_params, batch: dict, key: jax.Array
                   ) -> tuple[jax.Array, dict]:
        obs = batch["observations"]
        w, log_prob = self.draw_noise(params, obs, key)
        q = self.critic_net.apply(noise_q_params, obs, w).min(axis=0)
        loss = (jax.lax.stop_gradient(self.alpha()) * log_prob - q).mean()
        return loss, {"actor/loss": loss, "actor/q_mean": q.mean(),
                      "actor/entropy": -log_prob.mean(), "actor/noise_abs": jnp.abs(w).mean()}

    def temperature_loss(self, params, log_prob: jax.Array) -> tuple[jax.Array, dict]:
        log_alpha = params["params"]["log_alpha"]
        loss = -(log_alpha * (log_prob + self.config.target_entropy)).mean()
        return loss, {"alpha/loss": loss, "alpha/value": jnp.exp(log_alpha)}

    def noise_critic_loss(self, params, critic_params, observations: jax.Array,
                          key: jax.Array) -> tuple[jax.Array, dict]:
        """Noise aliasing: ``Q^w_e(s, w / bound)`` regresses onto ``Q_e(s, pi_dp(s, w))``, head
        by head, ``w ~ N(0, I)`` (the prior the BC policy was trained from)."""
        w = jax.random.normal(key, (observations.shape[0], *self.noise_shape))
        target = jax.lax.stop_gradient(self.critic_net.apply(
            critic_params, observations, self.decode(observations, w)))          # [E, B]
        q = self.critic_net.apply(params, observations, w / self.config.noise_bound)
        per_critic = ((q - target) ** 2).mean(axis=1)
        return 0.5 * per_critic.sum(), {"noise_critic/loss": per_critic.mean(),
                                        "noise_critic/q_mean": q.mean()}

    # ---- updates --------------------------------------------------------------------------
    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        """One BC step of pi_dp (the shared first stage); nothing else trains."""
        return pretrain_step(self, batch)

    @jax.jit
    def update(self, batch: dict) -> tuple["Agent", dict]:
        """Temperature, critic, actor, targets (SB3's order), then DSRL-NA's noise critic step
        when it is due. The BC policy is not touched."""
        cfg = self.config
        key, target_key, actor_key, noise_key = jax.random.split(self.key, 4)
        # alpha, the target and the actor's draw use the values before this update (SB3).
        _, log_prob = self.draw_noise(self.noise_policy.params, batch["observations"], actor_key)
        temperature, t_info = apply_loss(
            self.temperature,
            lambda p: self.temperature_loss(p, jax.lax.stop_gradient(log_prob)), "alpha")
        target = jax.lax.stop_gradient(self.td_target(batch, target_key))
        critic, c_info = apply_loss(self.critic,
                                    lambda p: self.critic_loss(p, batch, target), "critic")
        q_w = critic.params if cfg.variant == "sac" else self.noise_critic.params
        noise_policy, a_info = apply_loss(
            self.noise_policy, lambda p: self.actor_loss(p, q_w, batch, actor_key), "actor")
        info = {**t_info, **c_info, **a_info}
        agent = self.replace(critic=critic, noise_policy=noise_policy, temperature=temperature,
                             key=key, step=self.step + 1,
                             target_critic_params=polyak(self.target_critic_params,
                                                         critic.params, cfg.tau))
        if cfg.variant == "na":
            # Due when floor(step * ratio) advances: noise_critic_ratio steps per update.
            due = jnp.floor(agent.step * cfg.noise_critic_ratio) > \
                jnp.floor(self.step * cfg.noise_critic_ratio)

            def distill(noise_critic):
                return apply_loss(noise_critic, lambda p: agent.noise_critic_loss(
                    p, critic.params, batch["observations"], noise_key), "noise_critic")

            def skip(noise_critic):
                return noise_critic, jax.tree.map(jnp.zeros_like, jax.eval_shape(
                    distill, noise_critic)[1])

            noise_critic, n_info = jax.lax.cond(due, distill, skip, agent.noise_critic)
            agent = agent.replace(noise_critic=noise_critic)
            info.update(n_info)
        return agent, info

    # ---- acting ---------------------------------------------------------------------------
    def act(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(chunks pi_dp(s, w) [B, H, A], w [B, H, A])`` with ``w = bound * draw of pi_w``."""
        w, _ = self.draw_noise(self.noise_policy.params, observations, key)
        noise = self.config.noise_bound * w
        return self.decode(observations, noise), noise

    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> the frozen policy's chunks ``[B, H, A]`` at the noise
        pi_w chose; ``aux['noise']``: that noise ``[B, H, A]``."""
        chunks, noise = self.act(observations, key)
        return jnp.clip(chunks, -1.0, 1.0), {"noise": noise}

    # ---- starting from another run ---------------------------------------------------------
    # run.init_from takes a run's BC policy only (of any agent with a BC stage, DSRL too): it
    # becomes pi_dp, with the run's observation normalizer; the noise policy, critics and
    # temperature start fresh from this config and seed (a DSRL run continues by resuming in
    # its own run_dir). ``dprl.run.checkpoint.take_bc_stage`` checks the networks match.
    init_from_bc_stage_only: ClassVar[bool] = True

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict")
                                           else config)
        _check_config(config)
        if config.target_entropy is None:  # SB3 'auto': -dim of the noise
            config.target_entropy = -float(config.horizon * action_dim_of(config))
        config = ml_collections.FrozenConfigDict(config)
        # The BC stage's keys are DQL's and DPPO's (split of 3, the second): the same seed and
        # actor settings give the same BC policy in all three.
        key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        key, policy_key, noise_critic_key, temp_key = jax.random.split(key, 4)
        obs = jnp.asarray(example_batch["observations"])
        model = actor_from_config(config)
        actor = BCStage.init(model, actor_key, obs,
                             make_optimizer(config.actor_lr, grad_clip=config.grad_clip),
                             EMA.from_config(config))
        noise = jnp.zeros((obs.shape[0], model.horizon, model.action_dim))
        inputs = jnp.asarray(example_batch["actions"]) if config.variant == "na" else noise
        critic_params = _critic(config).init(critic_key, obs, inputs)
        opt = dict(grad_clip=config.grad_clip)
        noise_critic = None
        if config.variant == "na":
            noise_critic = create_state(_critic(config).init(noise_critic_key, obs, noise),
                                        make_optimizer(config.critic_lr, **opt))
        H, A = model.horizon, model.action_dim
        policy = TanhGaussianPolicy(H * A, tuple(config.noise_policy_hidden_dims),
                                    config.noise_activation, bool(config.noise_layer_norm),
                                    config.noise_kernel_init)
        return cls(
            actor=actor,
            noise_policy=create_state(policy.init(policy_key, obs),
                                      make_optimizer(config.noise_policy_lr, **opt)),
            critic=create_state(critic_params, make_optimizer(config.critic_lr, **opt)),
            target_critic_params=critic_params, noise_critic=noise_critic,
            temperature=create_state(Temperature(config.init_temperature).init(temp_key),
                                     make_optimizer(config.temperature_lr, **opt)),
            step=jnp.zeros((), jnp.int32), key=key, config=config)


def _critic(config) -> NormCriticEnsemble:
    return NormCriticEnsemble(int(config.num_critics), tuple(config.critic_hidden_dims),
                              config.critic_activation, bool(config.critic_layer_norm),
                              config.critic_kernel_init)


def _check_config(config) -> None:
    """Clear errors for settings the agent cannot run, before any work."""
    if config.variant not in VARIANTS:
        raise ValueError(f"dsrl: variant must be one of {VARIANTS} ('na': DSRL-NA, 'sac': "
                         f"DSRL-SAC), not {config.variant!r}")
    check_teacher(config.actor)
    if config.noise_bound <= 0:
        raise ValueError(f"dsrl: noise_bound must be > 0, not {config.noise_bound}")
    if config.chunk_discount not in ("step", "chunk"):
        raise ValueError(f"dsrl: chunk_discount must be 'step' or 'chunk', not "
                         f"{config.chunk_discount!r}")
    if not 0 < config.noise_critic_ratio <= 1:
        raise ValueError(f"dsrl: noise_critic_ratio must be in (0, 1], not "
                         f"{config.noise_critic_ratio}")
    if config.act_steps != config.horizon:
        raise ValueError(f"dsrl steers whole chunks: act_steps ({config.act_steps}) must equal "
                         f"horizon ({config.horizon})")
    if config.variant == "sac" and config.run.offline_steps:
        raise ValueError("dsrl variant 'sac' (DSRL-SAC) learns from the noise that acted, which "
                         "offline data do not have: set --offline_steps=0 (or use "
                         "--agent.variant=na, DSRL-NA, which learns offline too)")
    if config.variant == "sac" and config.run.online_steps and (
            config.run.offline_ratio or config.run.get("offline_mix", "ratio") != "ratio"):
        raise ValueError("dsrl variant 'sac' (DSRL-SAC) learns from the noise that acted, which "
                         "offline data do not have: its online batches must be all online "
                         "(--agent.run.offline_ratio=0 --agent.run.offline_mix=ratio; the "
                         "dsrl-sac preset's values)")
