"""RLPD (Ball, Smith, Kostrikov, Levine 2023, "Efficient Online Reinforcement Learning with Offline
Data") and the QC paper's chunked variants RLPD-AC and QC-RLPD, in one agent as in the QC paper's
code (ColinQiyangLi/qc ``agents/acrlpd.py``, run by ``main_online.py``).

SAC with a tanh-squashed Gaussian actor over (possibly chunked) actions and a LayerNorm ensemble
of E critics, trained online on batches that mix offline and online transitions half and half:

  critic   sum_e mean_b (Q_e(s, a) - y)^2 / E,
           y = sum_{j<n} gamma^j r_j + gamma^n mask * agg_e Q'_e(s', a'),  a' ~ pi(s') (no grad)
  actor    mean_b [ alpha * log pi(a_pi | s) - mean_e Q_e(s, a_pi) ]  -  bc_alpha * log pi(a | s)
  alpha    alpha * (H(pi) - target_entropy),  H = -mean log pi (no grad)

``agg`` (``q_agg``): 'mean' of the E target values (the QC code), 'pair_min' = the minimum of a
random pair of them, one pair per update (the RLPD paper's code: num_min_qs = 2 of 10), or 'min'
of all. ``backup_entropy`` adds ``- gamma^n mask alpha log pi(a' | s')`` to y (RLPD's code; the QC
code has none). With ``horizon = h > 1`` the actor outputs a chunk of h actions executed
open-loop and the critic scores the flattened chunk (RLPD-AC); ``bc_alpha > 0`` adds the
log-likelihood of the data's chunk to the actor loss (QC-RLPD).

As in the reference every loss of one update is computed from the parameters before that update
(it sums them into one loss under one Adam; separate Adams with the same rate are the same
step). Departures from the QC code, each stated:
  * the target critic moves toward the critic *after* the step (RLPD's code and every other dprl
    agent); the QC code averages in the critic from before the step (one step of lag);
  * chunks that run past an episode's end are handled as in ``agents/qc.py`` (kept, with the
    correct n-step return; the reference drops chunks whose last step is invalid);
  * the reference acts uniformly at random for its first ``start_training`` env steps; here the
    (untrained, near-uniform) actor acts and ``run.start_online_updates`` delays the updates.

``pretrain`` (not used by the presets: RLPD has no BC stage) is one maximum-likelihood step of
the actor on the data's chunks.

Shapes: B batch, H chunk length (1 without chunking), A action dim, E critics.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from dprl.data.buffer import chunk_return
from dprl.models.actor import action_dim_of
from dprl.models.nets import flatten_observations, get_activation, get_kernel_init
from dprl.models.training import apply_loss, create_state, make_optimizer, polyak

Q_AGGREGATIONS = ("mean", "pair_min", "min")
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0   # RLPD's (and SB3's) clip of the actor's log std


# ---- networks --------------------------------------------------------------------------------
class NormMLP(nn.Module):
    """Dense layers, each followed (when ``activate_final`` or not last) by LayerNorm (optional)
    then the activation: RLPD's MLP (``use_layer_norm``) and SB3's with ``post_linear_modules``,
    where the norm comes before the activation."""

    hidden_dims: Sequence[int]
    activation: str = "relu"
    layer_norm: bool = False
    activate_final: bool = False
    kernel_init: str = "fan_avg_uniform"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act, init = get_activation(self.activation), get_kernel_init(self.kernel_init)
        for i, dim in enumerate(self.hidden_dims):
            x = nn.Dense(dim, kernel_init=init)(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
                x = act(x)
        return x


class TanhGaussianPolicy(nn.Module):
    """``observations [B, (K,) O] -> (mean [B, D], log_std [B, D])`` of a Gaussian squashed by
    tanh (RLPD's TanhNormal: MLP with its final activation, two Dense heads, log std clipped to
    [-20, 2])."""

    out_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = False
    kernel_init: str = "fan_avg_uniform"

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        init = get_kernel_init(self.kernel_init)
        x = NormMLP(self.hidden_dims, self.activation, self.layer_norm, activate_final=True,
                    kernel_init=self.kernel_init)(flatten_observations(observations))
        mean = nn.Dense(self.out_dim, kernel_init=init)(x)
        log_std = nn.Dense(self.out_dim, kernel_init=init)(x)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class StateActionValue(nn.Module):
    """``Q(obs [B, (K,) O], actions [B, ...]) -> [B]``: NormMLP with its final activation, then
    Dense(1) (RLPD's StateActionValue)."""

    hidden_dims: Sequence[int] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = True
    kernel_init: str = "fan_avg_uniform"

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        x = jnp.concatenate([flatten_observations(observations),
                             actions.reshape(actions.shape[0], -1)], axis=-1)
        x = NormMLP(self.hidden_dims, self.activation, self.layer_norm, activate_final=True,
                    kernel_init=self.kernel_init)(x)
        return nn.Dense(1, kernel_init=get_kernel_init(self.kernel_init))(x)[..., 0]


class NormCriticEnsemble(nn.Module):
    """``E`` independent ``StateActionValue`` networks, vmapped: ``(obs, actions) -> [E, B]``."""

    num_critics: int = 10
    hidden_dims: Sequence[int] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = True
    kernel_init: str = "fan_avg_uniform"

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        ensemble = nn.vmap(StateActionValue, variable_axes={"params": 0},
                           split_rngs={"params": True}, in_axes=None, out_axes=0,
                           axis_size=self.num_critics)
        return ensemble(self.hidden_dims, self.activation, self.layer_norm,
                        self.kernel_init)(observations, actions)


class Temperature(nn.Module):
    """SAC's entropy temperature ``alpha = exp(log_alpha)`` (a scalar parameter)."""

    initial: float = 1.0

    @nn.compact
    def __call__(self) -> jax.Array:
        return jnp.exp(self.param("log_alpha", lambda _: jnp.log(jnp.float32(self.initial))))


# ---- the tanh-Gaussian's sample and likelihood (tests check them against plain formulas) ------
def _log_normal(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    z = (u - mean) * jnp.exp(-log_std)
    return (-0.5 * z ** 2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)).sum(-1)


def _tanh_log_det(u: jax.Array) -> jax.Array:
    """``sum log |d tanh(u) / du|`` over the last axis, in a stable form."""
    return (2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))).sum(-1)


def tanh_gaussian_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
    """A reparameterized draw ``tanh(mean + std * eps)`` ``[B, D]`` and its log-likelihood
    ``[B]`` (computed from the pre-tanh value, never through atanh)."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.tanh(u), _log_normal(u, mean, log_std) - _tanh_log_det(u)


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    """``log pi(actions)`` ``[B]`` for ``actions [B, D]`` in (-1, 1)."""
    u = jnp.arctanh(actions)
    return _log_normal(u, mean, log_std) - _tanh_log_det(u)


def aggregate_target(qs: jax.Array, how: str, key: jax.Array) -> jax.Array:
    """Target values of the ensemble ``[E, B] -> [B]``: 'mean' (QC code), 'pair_min' (min of two
    distinct critics drawn with ``key``, the same two for the whole batch: RLPD), 'min'."""
    if how == "mean":
        return qs.mean(axis=0)
    if how == "min":
        return qs.min(axis=0)
    pair = jax.random.choice(key, qs.shape[0], (2,), replace=False)
    return qs[pair].min(axis=0)


# ---- the agent --------------------------------------------------------------------------------
class Agent(flax.struct.PyTreeNode):
    actor: TrainState            # the tanh-Gaussian policy over flattened chunks [H * A]
    critic: TrainState           # the LayerNorm Q ensemble -> [E, B]
    target_critic_params: Any    # Polyak-averaged copy
    temperature: TrainState      # log alpha
    key: jax.Array
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = False

    # ---- networks ---------------------------------------------------------------------------
    @property
    def actor_net(self) -> TanhGaussianPolicy:
        return actor_from_config(self.config)

    @property
    def critic_net(self) -> NormCriticEnsemble:
        return critic_from_config(self.config)

    def policy(self, params, observations: jax.Array, key: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
        """A draw of the actor: ``(actions [B, H * A] in (-1, 1), log pi [B])``."""
        return tanh_gaussian_sample(*self.actor_net.apply(params, observations), key)

    def alpha(self, params=None) -> jax.Array:
        return Temperature(self.config.init_temperature).apply(
            self.temperature.params if params is None else params)

    # ---- losses ---------------------------------------------------------------------------
    def td_target(self, batch: dict, key: jax.Array) -> jax.Array:
        """``[B]``: the chunk's n-step return + gamma^n mask (agg Q'(s', a') [- alpha log pi])."""
        cfg = self.config
        agg_key, next_key = jax.random.split(key)   # next_key: the reference's sample_rng
        next_obs = batch["next_observations"]
        next_actions, next_log_prob = self.policy(self.actor.params, next_obs, next_key)
        next_q = aggregate_target(self.critic_net.apply(self.target_critic_params, next_obs,
                                                        next_actions), cfg.q_agg, agg_key)
        if cfg.backup_entropy:
            next_q = next_q - self.alpha() * next_log_prob
        ret, boot = chunk_return(batch, cfg.discount)
        return ret + boot * next_q

    def critic_loss(self, params, batch: dict, target: jax.Array) -> tuple[jax.Array, dict]:
        q = self.critic_net.apply(params, batch["observations"], batch["actions"])   # [E, B]
        loss = jnp.mean((q - target[None]) ** 2)
        return loss, {"critic/loss": loss, "critic/q_mean": q.mean(), "critic/q_max": q.max(),
                      "critic/q_min": q.min(), "critic/target_mean": target.mean()}

    def actor_loss(self, params, batch: dict, key: jax.Array) -> tuple[jax.Array, dict]:
        """SAC's actor loss under the ensemble-mean Q (+ the BC term), and the entropy it had."""
        cfg, obs = self.config, batch["observations"]
        mean, log_std = self.actor_net.apply(params, obs)
        actions, log_prob = tanh_gaussian_sample(mean, log_std, key)
        q = self.critic_net.apply(self.critic.params, obs, actions).mean(axis=0)
        sac = (self.alpha() * log_prob - q).mean()
        data = jnp.clip(batch["actions"].reshape(obs.shape[0], -1), -1 + 1e-5, 1 - 1e-5)
        bc = -tanh_gaussian_log_prob(mean, log_std, data).mean() * cfg.bc_alpha
        loss = sac + bc
        return loss, {"actor/loss": loss, "actor/sac_loss": sac, "actor/bc_loss": bc,
                      "actor/q_mean": q.mean(), "actor/entropy": -log_prob.mean()}

    def temperature_loss(self, params, entropy: jax.Array) -> tuple[jax.Array, dict]:
        alpha = self.alpha(params)
        loss = alpha * (entropy - self.config.target_entropy)
        return loss, {"alpha/loss": loss, "alpha/value": alpha}

    # ---- updates --------------------------------------------------------------------------
    @jax.jit
    def update(self, batch: dict) -> tuple["Agent", dict]:
        """Critic, actor and temperature steps, each from the parameters before the update,
        then the target critics."""
        cfg = self.config
        key, step_key = jax.random.split(self.key)   # the reference's key stream
        _, actor_key, target_key = jax.random.split(step_key, 3)
        target = jax.lax.stop_gradient(self.td_target(batch, target_key))
        critic, c_info = apply_loss(self.critic, lambda p: self.critic_loss(p, batch, target),
                                    "critic")
        actor, a_info = apply_loss(self.actor, lambda p: self.actor_loss(p, batch, actor_key),
                                   "actor")
        entropy = jax.lax.stop_gradient(a_info["actor/entropy"])
        temperature, t_info = apply_loss(self.temperature,
                                         lambda p: self.temperature_loss(p, entropy), "alpha")
        agent = self.replace(actor=actor, critic=critic, temperature=temperature, key=key,
                             target_critic_params=polyak(self.target_critic_params,
                                                         critic.params, cfg.tau))
        return agent, {**c_info, **a_info, **t_info}

    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        """One maximum-likelihood step of the actor on the data's chunks (the BC stage)."""
        def loss_fn(params):
            mean, log_std = self.actor_net.apply(params, batch["observations"])
            data = jnp.clip(batch["actions"].reshape(mean.shape), -1 + 1e-5, 1 - 1e-5)
            loss = -tanh_gaussian_log_prob(mean, log_std, data).mean()
            return loss, {"bc/loss": loss}

        actor, info = apply_loss(self.actor, loss_fn, "bc")
        return self.replace(actor=actor), info

    # ---- acting ---------------------------------------------------------------------------
    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> a draw of the actor ``[B, H, A]`` (stochastic, as the
        reference acts and evaluates)."""
        actions, _ = self.policy(self.actor.params, observations, key)
        H, A = int(self.config.horizon), action_dim_of(self.config)
        return jnp.clip(actions, -1.0, 1.0).reshape(-1, H, A), {}

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict")
                                           else config)
        _check_config(config)
        if config.target_entropy is None:  # RLPD, QC: -multiplier * dim of the (chunked) action
            config.target_entropy = -float(config.target_entropy_multiplier) * \
                int(config.horizon) * action_dim_of(config)
        config = ml_collections.FrozenConfigDict(config)
        key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        obs = jnp.asarray(example_batch["observations"])
        actions = jnp.asarray(example_batch["actions"])
        critic_params = critic_from_config(config).init(critic_key, obs, actions)
        opt = dict(grad_clip=config.grad_clip)
        return cls(
            actor=create_state(actor_from_config(config).init(actor_key, obs),
                               make_optimizer(config.actor_lr, **opt)),
            critic=create_state(critic_params, make_optimizer(config.critic_lr, **opt)),
            target_critic_params=critic_params,
            temperature=create_state(Temperature(config.init_temperature).init(key),
                                     make_optimizer(config.temperature_lr, **opt)),
            key=key, config=config)


def actor_from_config(config) -> TanhGaussianPolicy:
    """The tanh-Gaussian over ``horizon * action_dim`` of ``config.actor`` (hidden_dims,
    activation, layer_norm, kernel_init)."""
    a = config.actor
    return TanhGaussianPolicy(int(config.horizon) * action_dim_of(config), tuple(a.hidden_dims),
                              a.activation, bool(a.get("layer_norm", False)),
                              a.get("kernel_init", "fan_avg_uniform"))


def critic_from_config(config) -> NormCriticEnsemble:
    return NormCriticEnsemble(int(config.num_critics), tuple(config.critic_hidden_dims),
                              config.critic_activation, bool(config.critic_layer_norm),
                              config.critic_kernel_init)


def _check_config(config) -> None:
    """Clear errors for settings the agent cannot run, before any work."""
    if config.q_agg not in Q_AGGREGATIONS:
        raise ValueError(f"rlpd: q_agg must be one of {Q_AGGREGATIONS}, not {config.q_agg!r}")
    if config.q_agg == "pair_min" and config.num_critics < 2:
        raise ValueError(f"rlpd: q_agg='pair_min' needs num_critics >= 2, not "
                         f"{config.num_critics}")
    if config.act_steps != config.horizon:
        raise ValueError(f"rlpd executes whole chunks open-loop: act_steps ({config.act_steps}) "
                         f"must equal horizon ({config.horizon})")
    if config.bc_alpha < 0:
        raise ValueError(f"rlpd: bc_alpha must be >= 0, not {config.bc_alpha}")
    if config.init_temperature <= 0:
        raise ValueError(f"rlpd: init_temperature must be > 0, not {config.init_temperature}")
