"""DPPO: Diffusion Policy Policy Optimization (Ren et al. 2024).

A two-level MDP. The outer level is the environment: one step executes ``act_steps`` actions of
a sampled chunk ``[H, A]``. Inside every environment step, each denoising step
``x^{k} -> x^{k-1}`` is itself a Gaussian policy ``N(mean_theta(x^k, k, s), sigma_k^2)``, so the
likelihood of a chunk is the product of the per-step Gaussians along the sampled chain and PPO
applies to every denoising step as if it were an action.

  * Only the last ``ft_denoising_steps`` (K) steps are finetuned, with a copy of the pretrained
    actor; the earlier steps keep the frozen pretrained (BC) actor: the EMA of the shared BC stage
    (``dprl.models.training.BCStage``) that ``pretrain`` trains.
  * Exploration comes from a floor on the sampling std (``min_sampling_std``); likelihoods use
    their own floor (``min_logprob_std``); the sampling noise is clipped (``noise_clip``) and
    per-element log-probs are clamped to ``[logprob_min, logprob_max]`` as in the paper's code.
  * PPO: GAE over environment steps, advantages discounted by ``gamma_denoising`` towards the
    noisier steps, a clip ratio that grows exponentially from ``clip_base`` (noisiest finetuned
    step) to ``clip_max`` (the step that emits the action), a value function ``V(s)``, target-KL
    early stopping, rewards scaled by a running std of the discounted return, optional BC
    regularization. The whole update (reward scaling, values, GAE, epochs x minibatches) is one
    jitted call; epochs x minibatches are one ``lax.scan`` (purejaxrl style).

Shapes: T rollout chunk-steps, E envs, N = T * E samples, K finetuned denoising steps, H chunk
length, A action dim, O observation dim.

Observations are flat ``[..., (K,) O]`` or pixel dicts (``{'image': uint8, 'state'}`` with the
same leading axes, docs/pixels.md): rollouts keep images uint8, and the update reshapes, repeats
and slices minibatches part by part. The finetuned actor (and the frozen BC stage) and V each
build their own encoder from ``config.encoder``; the PPO loss trains the actor's and V's.
"""
from __future__ import annotations

import math
import distrax
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training.train_state import TrainState

from dprl.models import diffusion
from dprl.models.actor import actor_from_config
from dprl.models.nets import ValueMLP, value_from_config
from dprl.models.training import BCStage, EMA, create_state, make_optimizer, pretrain_step
from dprl.run.sharding import constrain_batch


# ---------------------------------------------------------------------------------------------
# Pure building blocks (tested on their own)
# ---------------------------------------------------------------------------------------------
def gae(rewards, values, next_values, terminals, dones, gamma: float, lam: float):
    """Generalized advantage estimation over environment steps, as one reverse ``lax.scan``.

    All inputs ``[T, E]``. ``next_values[t]`` is V of the state after step t (the final state
    when the episode ended there); ``terminals`` cut the bootstrap, ``dones`` (terminated or
    truncated) cut the recursion. Returns ``(advantages, returns)``, each ``[T, E]``.
    """
    deltas = rewards + gamma * (1.0 - terminals) * next_values - values

    def step(carry, inputs):
        delta, done = inputs
        adv = delta + gamma * lam * (1.0 - done) * carry
        return adv, adv

    _, advantages = jax.lax.scan(step, jnp.zeros_like(rewards[0]), (deltas, dones), reverse=True)
    return advantages, advantages + values


class RewardScaler(flax.struct.PyTreeNode):
    """Running std of the discounted return per env (the paper's ``reward_scale_running``)."""

    returns: jax.Array  # [E] discounted return so far of each env's current episode
    mean: jax.Array     # running mean of the discounted returns
    var: jax.Array      # running variance of the discounted returns
    count: jax.Array

    @classmethod
    def create(cls, num_envs: int) -> "RewardScaler":
        return cls(returns=jnp.zeros((num_envs,)), mean=jnp.zeros(()), var=jnp.ones(()),
                   count=jnp.full((), 1e-4))

    def __call__(self, rewards, dones, gamma: float) -> tuple["RewardScaler", jax.Array]:
        """``rewards, dones [T, E]`` -> (new state, rewards / running std)."""
        def step(ret, inputs):
            r, d = inputs
            ret = gamma * ret + r
            return ret * (1.0 - d), ret

        returns, rets = jax.lax.scan(step, self.returns, (rewards, dones))
        # Chan et al.'s parallel merge of (mean, var, count) with the batch's moments.
        b_mean, b_var, b_count = rets.mean(), rets.var(), rets.size
        delta, total = b_mean - self.mean, self.count + b_count
        mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        new = self.replace(returns=returns, mean=mean, var=m2 / total, count=total)
        return new, rewards / jnp.sqrt(new.var + 1e-8)


def clip_schedule(num_steps: int, base: float, final: float, rate: float) -> jax.Array:
    """Per finetuned denoising step clip ratio ``[K]``: exponential from ``base`` (noisiest) to
    ``final`` (the step that emits the action)."""
    if num_steps == 1:
        return jnp.array([final], jnp.float32)
    u = jnp.arange(num_steps, dtype=jnp.float32) / (num_steps - 1)
    return base + (final - base) * (jnp.exp(rate * u) - 1.0) / (math.exp(rate) - 1.0)


def ppo_policy_loss(new_logp, old_logp, advantages, clip):
    """Clipped surrogate over (sample, denoising step) pairs.

    ``new_logp, old_logp, advantages [N, K]`` (advantages already discounted per step),
    ``clip [K]``. Returns ``(loss, (approx_kl, clipfrac, ratio_mean))``.
    """
    logratio = new_logp - old_logp
    ratio = jnp.exp(logratio)
    loss = jnp.maximum(-advantages * ratio,
                       -advantages * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)).mean()
    approx_kl = jax.lax.stop_gradient(((ratio - 1.0) - logratio).mean())
    clipfrac = jax.lax.stop_gradient((jnp.abs(ratio - 1.0) > clip).mean())
    return loss, (approx_kl, clipfrac, jax.lax.stop_gradient(ratio.mean()))


# ---------------------------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------------------------
def critic_net(config) -> ValueMLP:
    """V(s): the critics' MLP (critic_hidden_dims, activation), residual with ``critic_residual``
    (the paper's CriticObs, residual_style: Dense, one pre-activation block, Dense)."""
    return value_from_config(config).clone(residual=bool(config.get("critic_residual", False)))


class Agent(flax.struct.PyTreeNode):
    bc: BCStage             # the pretrained actor (trained by ``pretrain``, frozen online); its
                            # EMA is the frozen actor of the early denoising steps
    actor: TrainState       # the finetuned copy of that EMA (last K denoising steps)
    critic: TrainState      # V(s)
    reward_scaler: RewardScaler
    key: jax.Array
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = True

    # ---- networks -------------------------------------------------------------------------
    @property
    def value_net(self) -> ValueMLP:
        return critic_net(self.config)

    def _method_eta(self) -> tuple[str, float]:
        cfg = self.config.actor
        return cfg.sampler, (float(cfg.ddim_eta) if cfg.sampler == "ddim" else 1.0)

    def _ft_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """Step indices ``t`` and successors ``t_prev`` of the K finetuned steps, each ``[K]``."""
        actor = self.bc.model
        ts, prevs = diffusion.sampling_steps(actor.schedule.num_steps, actor.num_sampling_steps)
        K = self.config.ft_denoising_steps
        return ts[-K:], prevs[-K:]

    # ---- likelihoods ----------------------------------------------------------------------
    def step_log_probs(self, params, observations, chain) -> jax.Array:
        """Per-element log-probs ``[B, K, H, A]`` of ``chain [B, K+1, H, A]`` under the
        finetuned denoising steps' Gaussians (std floored at ``min_logprob_std``)."""
        actor, (method, eta) = self.bc.model, self._method_eta()
        ts, prevs = self._ft_steps()
        B = chain.shape[0]

        def step_logprob(x, x_next, t, t_prev):
            eps = actor.apply(params, observations, x, jnp.full((B,), t, jnp.float32))
            mean, std = diffusion.step_mean_std(actor.schedule, eps, x, t, t_prev, method, eta,
                                                actor.config.clip_x0)
            std = jnp.maximum(std, self.config.min_logprob_std)
            return distrax.Normal(mean, std).log_prob(x_next)

        return jax.vmap(step_logprob, in_axes=(1, 1, 0, 0), out_axes=1)(
            chain[:, :-1], chain[:, 1:], jnp.asarray(ts), jnp.asarray(prevs))

    def chain_log_prob(self, params, observations, chain) -> jax.Array:
        """``log pi(chain | s) [B]``: the sum over the finetuned steps' log-probs."""
        return self.step_log_probs(params, observations, chain).sum(axis=(1, 2, 3))

    def ppo_log_probs(self, params, observations, chain) -> jax.Array:
        """What the ratio uses, ``[B, K]``: per-element log-probs clamped (paper's code), over the
        executed ``act_steps`` of the chunk, averaged over (H, A) so the clip scale is
        independent of the chunk size."""
        lp = self.step_log_probs(params, observations, chain)
        lp = jnp.clip(lp, self.config.logprob_min, self.config.logprob_max)
        return lp[:, :, :self.config.act_steps].mean(axis=(2, 3))

    # ---- sampling -------------------------------------------------------------------------
    def _sample(self, observations, key, ft_params, min_std):
        """Chunks ``[B, H, A]`` and the finetuned part of the chain ``[B, K+1, H, A]``."""
        actor, (method, eta) = self.bc.model, self._method_eta()
        ts, _ = self._ft_steps()
        t_split = float(ts[0])  # steps t <= t_split are the finetuned ones

        # Each set of weights encodes the images once for the whole chain.
        ft_obs = actor.encode(ft_params, observations)
        bc_obs = actor.encode(self.bc.ema_params, observations)

        def denoise(_, x, t):
            return jax.lax.cond(t[0] <= t_split,
                                lambda: actor.apply(ft_params, ft_obs, x, t),
                                lambda: actor.apply(self.bc.ema_params, bc_obs, x, t))

        actions, chain = diffusion.sample(
            denoise, actor.schedule, observations, key, (actor.horizon, actor.action_dim),
            method=method, num_steps=actor.num_sampling_steps, eta=eta,
            clip_x0=actor.config.clip_x0, min_std=min_std, noise_clip=self.config.noise_clip,
            return_chain=True, **self.bc.sampler_options())
        K = self.config.ft_denoising_steps
        return actions, jnp.swapaxes(chain.xs[-(K + 1):], 0, 1)

    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> chunks ``[B, H, A]`` (with the exploration floor on
        every step's std) and ``aux = {'chain': [B, K+1, H, A]}`` for ``update``."""
        actions, chain = self._sample(observations, key, self.actor.params,
                                      self.config.min_sampling_std)
        return actions, {"chain": chain}

    @jax.jit
    def eval_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """Evaluation chunks ``[B, H, A]``: with ``deterministic_eval`` (the paper's evaluation)
        the std floor is ``eval_min_std`` instead of the exploration floor; else as acting."""
        cfg = self.config
        floor = cfg.eval_min_std if cfg.get("deterministic_eval", False) else cfg.min_sampling_std
        return self._sample(observations, key, self.actor.params, floor)[0], {}

    # ---- pretraining: diffusion BC --------------------------------------------------------
    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        """One diffusion-BC step; the finetuned copy starts from (tracks) its EMA."""
        agent, info = pretrain_step(self, batch, "bc")
        return agent.replace(actor=agent.actor.replace(params=agent.bc.ema_params)), info

    # ---- the PPO update -------------------------------------------------------------------
    def _loss(self, params, mb, key):
        """PPO loss on a minibatch; ``params = (actor, critic)``."""
        cfg = self.config
        actor_params, critic_params = params
        obs = mb["observations"]
        new_logp = self.ppo_log_probs(actor_params, obs, mb["chain"])
        adv = mb["advantages"]
        if cfg.normalize_advantages:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        K = cfg.ft_denoising_steps
        # The step that emits the action gets the full advantage, noisier ones gamma_den^j less.
        discount = cfg.gamma_denoising ** jnp.arange(K - 1, -1, -1, dtype=jnp.float32)
        clip = clip_schedule(K, cfg.clip_base, cfg.clip_max, cfg.clip_rate)
        pg_loss, (kl, clipfrac, ratio) = ppo_policy_loss(new_logp, mb["old_logp"],
                                                         adv[:, None] * discount, clip)
        values = self.value_net.apply(critic_params, obs)
        v_loss = 0.5 * ((values - mb["returns"]) ** 2).mean()
        loss = pg_loss + cfg.vf_coef * v_loss
        info = {"ppo/pg_loss": pg_loss, "ppo/v_loss": v_loss, "ppo/approx_kl": kl,
                "ppo/clipfrac": clipfrac, "ppo/ratio": ratio}
        if cfg.bc_coef > 0:
            # Likelihood of the frozen actor's own chains under the finetuned actor.
            base_chain = self._sample(obs, key, self.bc.ema_params, cfg.min_sampling_std)[1]
            bc_loss = -self.ppo_log_probs(actor_params, obs,
                                          jax.lax.stop_gradient(base_chain)).mean()
            loss = loss + cfg.bc_coef * bc_loss
            info["ppo/bc_loss"] = bc_loss
        return loss, info

    @jax.jit
    def update(self, rollout: dict) -> tuple["Agent", dict]:
        """One PPO iteration on a rollout (``dprl.run.collect.Rollout``)."""
        cfg = self.config
        # Observations are flat arrays or pixel dicts (uint8 images, float states): every
        # reshape, repeat and minibatch slice goes part by part.
        obs = jax.tree.map(jnp.asarray, rollout["observations"])
        chain = jnp.asarray(rollout["aux"]["chain"])
        rewards = jnp.asarray(rollout["rewards"])
        T, E = rewards.shape
        N = T * E
        flat = lambda tree: jax.tree.map(lambda x: x.reshape((N,) + x.shape[2:]), tree)  # noqa: E731
        terminals = jnp.asarray(rollout["terminals"])
        dones = jnp.asarray(rollout["dones"])

        # Values of every state; bootstrap from the observation after each chunk.
        V = lambda o: self.value_net.apply(self.critic.params, o)  # noqa: E731
        values = V(flat(obs)).reshape(T, E)
        last_values = V(jax.tree.map(jnp.asarray, rollout["last_observations"]))
        next_obs = jax.tree.map(jnp.asarray, rollout["next_observations"])
        if cfg.obs_history > 1:  # observation history: the final frame repeated, as after a reset
            next_obs = jax.tree.map(lambda x: jnp.repeat(x[:, :, None], cfg.obs_history, axis=2),
                                    next_obs)
        final_values = V(flat(next_obs)).reshape(T, E)
        next_values = jnp.where(dones > 0, final_values,
                                jnp.concatenate([values[1:], last_values[None]], axis=0))

        scaler = self.reward_scaler
        if cfg.reward_scale_running:
            scaler, rewards = scaler(rewards, dones, cfg.discount)
        advantages, returns = gae(rewards * cfg.reward_scale_const, values, next_values,
                                  terminals, dones, cfg.discount, cfg.gae_lambda)

        flat_obs, flat_chain = flat(obs), flat(chain)
        old_logp = self.ppo_log_probs(self.actor.params, flat_obs, flat_chain)
        data = {"observations": flat_obs, "chain": flat_chain, "old_logp": old_logp,
                "advantages": advantages.reshape(N), "returns": returns.reshape(N)}

        # Epochs x minibatches as one scan; the remainder of a permutation is skipped.
        mb_size = min(cfg.ppo_batch_size, N)
        M = N // mb_size
        key, perm_key, bc_key = jax.random.split(self.key, 3)
        perms = jax.vmap(lambda k: jax.random.permutation(k, N)[:M * mb_size].reshape(M, mb_size))(
            jax.random.split(perm_key, cfg.update_epochs)).reshape(cfg.update_epochs * M, mb_size)
        mb_keys = jax.random.split(bc_key, cfg.update_epochs * M)

        def minibatch(carry, inputs):
            actor, critic, stopped = carry
            idx, mb_key = inputs
            mb = constrain_batch(jax.tree.map(lambda x: x[idx], data), cfg)
            grads, info = jax.grad(self._loss, has_aux=True)((actor.params, critic.params),
                                                            mb, mb_key)
            # Target-KL early stop: once the policy moved too far, skip every later minibatch.
            stop = stopped | (info["ppo/approx_kl"] > cfg.target_kl)
            actor, critic = jax.lax.cond(
                stop, lambda: (actor, critic),
                lambda: (actor.apply_gradients(grads=grads[0]),
                         critic.apply_gradients(grads=grads[1])))
            info = dict(info, **{"ppo/applied": 1.0 - stop.astype(jnp.float32)})
            return (actor, critic, stop), info

        (actor, critic, _), infos = jax.lax.scan(
            minibatch, (self.actor, self.critic, jnp.zeros((), bool)), (perms, mb_keys))
        info = {k: v.mean() for k, v in infos.items()}
        info.update({"critic/value_mean": values.mean(), "ppo/return_mean": returns.mean(),
                     "ppo/adv_std": advantages.std(), "ppo/reward_std": jnp.sqrt(scaler.var),
                     "ppo/old_logp": old_logp.mean(), "ppo/chunk_reward": jnp.asarray(
                         rollout["rewards"]).mean()})
        return self.replace(actor=actor, critic=critic, reward_scaler=scaler, key=key), info

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.FrozenConfigDict(config)
        if config.actor.model != "diffusion":
            raise ValueError("DPPO needs a diffusion actor (actor.model='diffusion')")
        if config.actor.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"DPPO's likelihoods need a Gaussian denoising step: actor.sampler "
                             f"must be 'ddpm' or 'ddim', not {config.actor.sampler!r}")
        actor = actor_from_config(config)
        if not 1 <= config.ft_denoising_steps <= actor.num_sampling_steps:
            raise ValueError(f"ft_denoising_steps ({config.ft_denoising_steps}) must be in "
                             f"[1, {actor.num_sampling_steps}] (the sampling steps)")
        key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        obs = jax.tree.map(jnp.asarray, example_batch["observations"])  # flat or pixel
        bc = BCStage.init(actor, actor_key, obs,
                          make_optimizer(config.actor_lr, grad_clip=config.grad_clip),
                          EMA.from_config(config))
        return cls(
            bc=bc,
            actor=create_state(bc.params, make_optimizer(config.ft_actor_lr,
                                                         grad_clip=config.grad_clip)),
            critic=create_state(critic_net(config).init(critic_key, obs),
                                make_optimizer(config.critic_lr)),
            reward_scaler=RewardScaler.create(config.run.num_envs), key=key, config=config)
