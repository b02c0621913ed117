"""Q-chunking (QC; Li, Zhou, Levine 2025, "Reinforcement Learning with Action Chunking") and the
paper's baselines, in one agent as in the paper's code.

RL in the space of action chunks: a critic ``Q(s_t, a_{t:t+h})`` over the flattened chunk is
trained with the unbiased h-step backup

    y = sum_{i<h} gamma^i r_{t+i} + gamma^h (1 - terminal) Q'(s_{t+h}, a'),

and the behaviour policy is a flow BC model over chunks that is never updated by Q (the
expressive behaviour constraint); it keeps behaviour-cloning the data in every update. Two
switches give the paper's six methods (presets in ``configs/qc.py``):

  ``policy_extraction``  'best_of_n': N samples of the BC flow, the one with the highest Q acts
                         (and is a' in the target). 'one_step': FQL's noise-conditioned policy
                         mu(s, z), trained with alpha * ||mu(s, z) - flow(s, z)||^2 - Q(s, mu)
                         (``dprl/models/one_step.py``), acts and gives a'. (QC's code: actor_type.)
  ``action_chunking``    True: policy and critic over chunks of ``horizon`` actions, executed
                         open-loop. False: policy and critic over single actions, acting every
                         step, with the (uncorrected) n-step return, n = ``horizon``, in the
                         target.

  QC = best_of_n, h = 5, N = 32        BFN = best_of_n, h = 1, N = 4
  BFN-n = best_of_n, n = 5, no chunks  QC-FQL = one_step, h = 5   FQL = one_step, h = 1
  FQL-n = one_step, n = 5, no chunks

As in the reference, a' in a best-of-N target is chosen with the online critic (as acting does)
and valued by the target critic; every loss of one update is computed from the parameters before
that update (the reference sums them into one loss).

Departures from the reference code, for chunks that run past an episode's end (``valid``):
  * kept in the critic loss (the reference drops every chunk whose last step is invalid), so a
    sparse terminal reward inside a chunk trains every chunk that reaches it;
  * a chunk cut by a time limit after n < h valid steps bootstraps with gamma^n from the
    observation after its last valid step (the correct n-step return); a chunk cut by
    termination does not bootstrap.

Both switches are read once, at construction: the extraction is a field, ``BestOfN`` or ``FQL``
(each acts, gives a', and takes its own training step), and the critic's actions are the chunk's
first ``policy_horizon`` (h with chunking, else 1) while the return always spans h steps.

Phases: ``pretrain`` = flow BC (the shared ``dprl.models.training.BCStage``, without an EMA);
``update`` = the algorithm box below, every loss from the parameters before the update:

    a'  = extraction.act(s')                           best of N flow samples by Q, or mu(s', z)
    y   = sum_{i<h} gamma^i r_i + gamma^h (1 - d) Q'(s', a')
    critic      <- grad of mean_e (Q_e(s, a) - y)^2
    flow        <- grad of the flow-matching BC loss on (s, a)
    extraction  <- its own step: FQL alpha ||mu(s, z) - flow(s, z)||^2 - Q(s, mu(s, z));
                   best-of-N none
    Q'          <- Polyak average of Q

A one-step actor distilled for acting alone (best-of-N picking among its draws) is the run's
``OneStep`` wrapper, which every off-policy agent can have from ``teacher_sample`` and
``select``; FQL acts with its mu already (``acts_in_one_step``).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from dprl.data.buffer import chunk_return
from dprl.models.actor import GenerativeActor, action_dim_of, make_actor
from dprl.models.encoders import batch_size_of, encode_once, repeat_rows
from dprl.models.nets import CriticEnsemble, critic_from_config
from dprl.models.one_step import OneStepActor, init_one_step, one_step_loss
from dprl.models.teacher import check_teacher, teacher_actions
from dprl.models.training import (BCStage, apply_loss, create_state, make_optimizer, polyak,
                                  pretrain_step)


# ---- the pieces the tests check against plain Python --------------------------------------------
def aggregate(qs: jax.Array, how: str) -> jax.Array:
    """Ensemble ``[E, ...]`` -> ``[...]`` by 'mean' (QC's default) or 'min' (clipped double Q)."""
    return qs.min(axis=0) if how == "min" else qs.mean(axis=0)


def select_best(candidates: jax.Array, scores: jax.Array) -> jax.Array:
    """Best-of-N: ``candidates [B, N, H, A]``, ``scores [B, N]`` -> the argmax ``[B, H, A]``."""
    best = jnp.argmax(scores, axis=1)
    return jnp.take_along_axis(candidates, best[:, None, None, None], axis=1)[:, 0]


def policy_horizon(config) -> int:
    """Actions per policy output and critic input: ``horizon`` with chunking, else 1 (the
    n-step critic over single actions)."""
    return int(config.horizon) if config.action_chunking else 1


# ---- the two policy extractions --------------------------------------------------------------
class BestOfN(flax.struct.PyTreeNode):
    """QC, BFN, BFN-n: of N samples of the BC flow, the one with the highest Q (online critic)
    acts and is a'. Nothing of its own to train."""

    def act(self, agent: "Agent", observations: jax.Array, key: jax.Array
            ) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> ``(actions [B, Hp, A], {'q': best Q [B]})``."""
        actions, q = agent.best_of_n(agent.critic.params, observations, key)
        return actions, {"q": q}

    def improve(self, agent: "Agent", batch: dict, key: jax.Array
                ) -> tuple["BestOfN", dict, jax.Array]:
        return self, {}, key


class FQL(flax.struct.PyTreeNode):
    """QC-FQL, FQL, FQL-n: FQL's noise-conditioned policy ``mu(s, z)`` acts and is a', trained
    with ``alpha * ||mu(s, z) - flow(s, z)||^2 - Q(s, clip(mu(s, z)))`` (the same z for both;
    Q the ensemble mean, as in FQL and QC, whatever ``q_agg``)."""

    mu: OneStepActor

    def student(self, params, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """``mu(s, z)`` ``[B, Hp, A]``, unclipped."""
        return self.mu.net.apply(params, observations, noise)

    def act(self, agent: "Agent", observations: jax.Array, key: jax.Array
            ) -> tuple[jax.Array, dict]:
        """``clip(mu(s, z), -1, 1)`` ``[B, Hp, A]`` with ``z ~ N(0, I)``."""
        return self.mu.sample(observations, key), {}

    def loss(self, params, agent: "Agent", batch: dict, key: jax.Array
             ) -> tuple[jax.Array, dict]:
        obs = batch["observations"]
        noise = self.mu.noise(key, batch_size_of(obs))
        flow = teacher_actions(agent.actor.model, agent.actor.params, obs, noise)

        def q_fn(actions):
            return agent.critic_net.apply(agent.critic.params, obs, actions).mean(axis=0)

        cfg = agent.config
        return one_step_loss(self.student(params, obs, noise), flow, q_fn, cfg.alpha,
                             cfg.normalize_q_loss)

    def improve(self, agent: "Agent", batch: dict, key: jax.Array
                ) -> tuple["FQL", dict, jax.Array]:
        """One step of ``loss`` on a key split off ``key``; returns the rest of ``key``."""
        key, pi_key = jax.random.split(key)
        mu, info = apply_loss(self.mu, lambda p: self.loss(p, agent, batch, pi_key), "actor")
        return self.replace(mu=mu), info, key


EXTRACTIONS = {"best_of_n": BestOfN, "one_step": FQL}


class Agent(flax.struct.PyTreeNode):
    actor: BCStage              # the BC flow (or diffusion) policy over [policy_horizon, A], no EMA
    critic: TrainState          # Q ensemble over (observation, flattened actions) -> [E, B]
    target_critic_params: Any   # Polyak-averaged copy
    extraction: BestOfN | FQL   # how the acting policy comes from the flow and Q
    key: jax.Array
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = False

    @classmethod
    def acts_in_one_step(cls, config) -> bool:
        """FQL's extraction acts with its own mu: a one-step wrapper adds nothing."""
        return config.policy_extraction == "one_step"

    @property
    def critic_net(self) -> CriticEnsemble:
        return critic_from_config(self.config)

    @property
    def mu(self) -> OneStepActor:
        """FQL's one-step policy (the FQL extractions only)."""
        return self.extraction.mu

    def policy_batch(self, batch: dict) -> dict:
        """The batch as the policy and critic see it: actions and ``valid`` of the whole chunk
        ``[B, H, ...]``, or of its first step ``[B, 1, ...]`` without chunking (the rewards keep
        all ``horizon`` steps for the n-step return)."""
        Hp = policy_horizon(self.config)
        return {**batch, "actions": batch["actions"][:, :Hp], "valid": batch["valid"][:, :Hp]}

    # ---- best-of-N ------------------------------------------------------------------------
    def candidates(self, critic_params, observations: jax.Array, key: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
        """N samples per observation from the BC policy and their aggregated Q.

        ``observations [B, (K,) O]`` -> ``(actions [B, N, Hp, A], q [B, N])``.
        """
        B, N = batch_size_of(observations), self.config.num_samples
        # [B*N, (K,) O]; images are encoded once per network, then their features repeated
        actor_obs = repeat_rows(self.actor.encode(observations), N)
        critic_obs = repeat_rows(encode_once(self.critic_net, critic_params, observations), N)
        actions, _ = self.actor.sample(actor_obs, key)                   # [B*N, Hp, A]
        q = aggregate(self.critic_net.apply(critic_params, critic_obs, actions), self.config.q_agg)
        return actions.reshape(B, N, *actions.shape[1:]), q.reshape(B, N)

    def best_of_n(self, critic_params, observations, key) -> tuple[jax.Array, jax.Array]:
        actions, q = self.candidates(critic_params, observations, key)
        return select_best(actions, q), q.max(axis=1)

    # ---- losses ---------------------------------------------------------------------------
    def td_target(self, batch: dict, key: jax.Array) -> jax.Array:
        """``[B]``: the h-step (or n-step) return + gamma^h Q'(s_{t+h}, a'), a' from the policy
        (chosen as acting does, valued by the target critic)."""
        next_obs = batch["next_observations"]
        next_actions, _ = self.extraction.act(self, next_obs, key)
        next_q = aggregate(self.critic_net.apply(self.target_critic_params, next_obs,
                                                 next_actions), self.config.q_agg)
        ret, boot = chunk_return(batch, self.config.discount)
        return ret + boot * next_q

    def critic_loss(self, params, batch, target) -> tuple[jax.Array, dict]:
        actions = self.policy_batch(batch)["actions"]
        q = self.critic_net.apply(params, batch["observations"], actions)   # [E, B]
        loss = jnp.mean((q - target[None]) ** 2)
        return loss, {"critic/loss": loss, "critic/q_mean": q.mean(), "critic/q_max": q.max(),
                      "critic/q_min": q.min()}

    # ---- updates --------------------------------------------------------------------------
    @jax.jit
    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        """One BC step of the behaviour policy."""
        return pretrain_step(self, self.policy_batch(batch))

    @jax.jit
    def update(self, batch: dict) -> tuple["Agent", dict]:
        """Critic TD step + BC step + the extraction's step, all from the current parameters."""
        cfg = self.config
        key, next_key, bc_key = jax.random.split(self.key, 3)
        target = jax.lax.stop_gradient(self.td_target(batch, next_key))
        critic, c_info = apply_loss(self.critic, lambda p: self.critic_loss(p, batch, target),
                                    "critic")
        info = {**c_info, "critic/target_mean": target.mean()}
        actor = self.actor
        if cfg.bc_in_update:  # the reference trains BC and critic jointly on every batch
            actor, a_info = self.actor.pretrain(self.policy_batch(batch), bc_key)
            info["bc/loss"] = a_info["bc/loss"]
        extraction, e_info, key = self.extraction.improve(self, batch, key)
        info.update(e_info)
        return self.replace(actor=actor, critic=critic, extraction=extraction, key=key,
                            target_critic_params=polyak(self.target_critic_params,
                                                        critic.params, cfg.tau)), info

    # ---- acting ---------------------------------------------------------------------------
    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> actions ``[B, Hp, A]`` (Hp = horizon, or 1 without
        chunking): the best of N BC samples under Q, or mu(s, z) (FQL)."""
        return self.extraction.act(self, observations, key)

    def select(self, observations: jax.Array, candidates: jax.Array, key: jax.Array
               ) -> jax.Array:
        """Best-of-N among given ``candidates [B, N, Hp, A]`` (a one-step actor's draws) by the
        online critic's aggregated Q -> ``[B, Hp, A]``."""
        B, N = candidates.shape[:2]
        obs = repeat_rows(encode_once(self.critic_net, self.critic.params, observations), N)
        flat = candidates.reshape(B * N, *candidates.shape[2:])
        q = aggregate(self.critic_net.apply(self.critic.params, obs, flat), self.config.q_agg)
        return select_best(candidates, q.reshape(B, N))

    def teacher_sample(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """The BC flow's deterministic sample ``[B, Hp, A]`` from ``noise [B, Hp, A]``."""
        return teacher_actions(self.actor.model, self.actor.params, observations, noise)

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, seed: int, example_batch: dict, config: ml_collections.ConfigDict) -> "Agent":
        config = ml_collections.FrozenConfigDict(config)
        _check_config(config)
        key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        obs = jax.tree.map(jnp.asarray, example_batch["observations"])  # flat or pixel
        actions = jnp.asarray(example_batch["actions"])[:, :policy_horizon(config)]
        critic_params = critic_from_config(config).init(critic_key, obs, actions)
        extraction = BestOfN()
        if config.policy_extraction == "one_step":
            key, pi_key = jax.random.split(key)  # best-of-N keeps the three keys above
            extraction = FQL(init_one_step(config, policy_horizon(config), action_dim_of(config),
                                           pi_key, obs))
        return cls(
            actor=BCStage.init(_actor(config), actor_key, obs,
                               make_optimizer(config.actor_lr, grad_clip=config.grad_clip),
                               ema=None),
            critic=create_state(critic_params, make_optimizer(config.critic_lr,
                                                              grad_clip=config.grad_clip)),
            target_critic_params=critic_params, extraction=extraction, key=key, config=config)


def _check_config(config) -> None:
    """Clear errors for settings the agent cannot run, before any work."""
    if config.policy_extraction not in EXTRACTIONS:
        raise ValueError(f"qc: policy_extraction must be one of {tuple(EXTRACTIONS)}, "
                         f"not {config.policy_extraction!r}")
    if config.actor.model not in ("flow", "diffusion"):
        raise ValueError(f"qc: actor.model must be 'flow' or 'diffusion', "
                         f"not {config.actor.model!r}")
    if config.q_agg not in ("mean", "min"):
        raise ValueError(f"qc: q_agg must be 'mean' or 'min', not {config.q_agg!r}")
    if config.action_chunking and config.act_steps != config.horizon:
        raise ValueError(f"qc executes whole chunks open-loop: act_steps ({config.act_steps}) "
                         f"must equal horizon ({config.horizon}) with action_chunking=True")
    if not config.action_chunking and config.act_steps != 1:
        raise ValueError(f"qc without action chunking acts one step at a time (horizon "
                         f"{config.horizon} is the n of its n-step return): set act_steps=1, "
                         f"not {config.act_steps}")
    if config.policy_extraction == "one_step":
        check_teacher(config.actor)
        if config.get("act_with", "one_step") != "one_step":
            raise ValueError(f"qc: policy_extraction='one_step' (FQL) acts with its one-step "
                             f"policy mu by construction: set act_with='one_step' (its presets "
                             f"do), not {config.act_with!r}")
        if config.alpha < 0:
            raise ValueError(f"qc: alpha (distillation weight) must be >= 0, not {config.alpha}")


def _actor(config) -> GenerativeActor:
    return make_actor(config.actor, policy_horizon(config), action_dim_of(config))
