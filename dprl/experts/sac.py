"""Soft Actor-Critic in JAX: trains expert (and medium) policies for D4RL-style datasets.

SAC is an agent of dprl's off-policy interface (``update(batch)``, ``sample_actions(obs, key)``)
trained by the runner's online loop (``dprl.run.runner.replay_loop``): one env step per chunk
(``act_steps = 1``), stored in the core's ``Buffer``; every ``fuse`` env steps one jitted replay
step runs the updates owed (update-to-data ratio 1 from ``start_steps`` on) on batches sampled on
device, then acts. Until its first update the agent acts uniformly at random (the warm-up).
Checkpoints are ``dprl.run.checkpoint``'s (agent, buffer, PRNG key and the next action, with the
loop's counters), the output directory is locked as a run directory (``dprl.run.rundir``).

During training it writes, under ``--out``:
  ``curve.csv``              step, wall_s, eval return (deterministic), training episode returns
  ``snapshots/step_<k>.npz`` the actor in dprl's policy format (``dprl/experts/policies.py``)
  ``medium.npz``             the first snapshot whose eval return reaches ``medium_fraction`` of the
                             expert's return (D4RL's medium: a policy part-way through training)
  ``medium_replay.npz``      the replay buffer up to that snapshot (D4RL's medium-replay)
  ``final.npz``, ``replay.npz``  the last actor and the whole replay buffer
  ``curve.png``              the learning curve (eval and training returns vs env steps)
  ``checkpoints/``           the whole loop state every ``--checkpoint-every`` env steps (at the
                             next episode end): kill the run and re-run the same command, it goes
                             on bit for bit; a larger ``--steps`` extends a finished run

Usage: ``python -m dprl.sac --env Hopper-v5 --steps 300000 --out /tmp/sac_hopper``
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dprl.base.files import atomic_write
from dprl.base.logging import progress_bar
from dprl.data.buffer import Buffer
from dprl.models.training import polyak
from dprl.run import rundir
from dprl.run.checkpoint import Checkpointer
from dprl.run.runner import replay_loop
from dprl.run.schedule import Schedule
from dprl.run.updates import Learner

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@flax.struct.dataclass
class SACConfig:
    hidden: tuple[int, ...] = (256, 256)  # MLP widths of actor and critics (Haarnoja et al.: 256x2)
    actor_lr: float = 3e-4                # Haarnoja et al. / CleanRL: 3e-4
    # Critic and temperature at 1e-3 (CleanRL's q_lr, also used for alpha): with 3e-4 for all
    # three, seed 0 on Hopper-v5 sat at the "lunge forward and fall" optimum (eval ~300,
    # episodes ~130 steps) from 20k to 150k env steps.
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-3
    discount: float = 0.99
    tau: float = 0.005                    # target EMA rate
    init_alpha: float = 1.0
    target_entropy_scale: float = 1.0     # target entropy = -scale * action_dim
    batch_size: int = 256


class Actor(nn.Module):
    """Tanh-squashed Gaussian: ``obs [B, O] -> (mean [B, A], log_std [B, A])`` (pre-squash)."""

    hidden: tuple[int, ...]
    action_dim: int

    @nn.compact
    def __call__(self, obs):
        h = obs
        for i, w in enumerate(self.hidden):
            h = nn.relu(nn.Dense(w, name=f"hidden_{i}")(h))
        mean = nn.Dense(self.action_dim, name="mean")(h)
        log_std = nn.Dense(self.action_dim, name="log_std")(h)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class _QNet(nn.Module):
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        h = x
        for w in self.hidden:
            h = nn.relu(nn.Dense(w)(h))
        return nn.Dense(1)(h)[..., 0]


class Critic(nn.Module):
    """Twin Q: ``(obs [B, O], act [B, A]) -> q [2, B]`` (two MLPs via ``nn.vmap``)."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs, act):
        ensemble = nn.vmap(_QNet, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=2)
        return ensemble(self.hidden)(jnp.concatenate([obs, act], -1))


def _sample_tanh_gaussian(mean, log_std, key):
    """Reparameterized sample and its log-prob (with the tanh Jacobian), ``[B, A]`` / ``[B]``."""
    std = jnp.exp(log_std)
    eps = jax.random.normal(key, mean.shape)
    pre = mean + std * eps
    action = jnp.tanh(pre)
    logp = jnp.sum(-0.5 * eps**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)
    # log|d tanh(x)/dx| = 2 (log 2 - x - softplus(-2x)), numerically stable.
    logp -= jnp.sum(2.0 * (jnp.log(2.0) - pre - jax.nn.softplus(-2.0 * pre)), -1)
    return action, logp


class SACAgent(flax.struct.PyTreeNode):
    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    log_alpha: jnp.ndarray
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    key: jnp.ndarray
    updates: jnp.ndarray                  # gradient steps taken (acting is random before one)
    config: SACConfig = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    @property
    def actor(self) -> Actor:
        return Actor(self.config.hidden, self.action_dim)

    @property
    def critic(self) -> Critic:
        return Critic(self.config.hidden)

    def _txs(self):
        c = self.config
        return optax.adam(c.actor_lr), optax.adam(c.critic_lr), optax.adam(c.alpha_lr)

    @classmethod
    def create(cls, seed: int, obs_dim: int, action_dim: int,
               config: SACConfig = SACConfig()) -> "SACAgent":
        key = jax.random.PRNGKey(seed)
        key, k_actor, k_critic = jax.random.split(key, 3)
        obs = jnp.zeros((1, obs_dim))
        act = jnp.zeros((1, action_dim))
        actor_params = Actor(config.hidden, action_dim).init(k_actor, obs)["params"]
        critic_params = Critic(config.hidden).init(k_critic, obs, act)["params"]
        log_alpha = jnp.asarray(np.log(config.init_alpha), jnp.float32)
        a_tx, c_tx, al_tx = (optax.adam(config.actor_lr), optax.adam(config.critic_lr),
                             optax.adam(config.alpha_lr))
        return cls(actor_params=actor_params, critic_params=critic_params,
                   target_critic_params=critic_params, log_alpha=log_alpha,
                   actor_opt=a_tx.init(actor_params), critic_opt=c_tx.init(critic_params),
                   alpha_opt=al_tx.init(log_alpha), key=key,
                   updates=jnp.zeros((), jnp.int32), config=config, action_dim=action_dim)

    def _update(self, batch: dict[str, jnp.ndarray]) -> tuple["SACAgent", dict]:
        """One SAC step on ``batch`` (``observations [B, O]``, ``actions [B, A]``, ``rewards [B]``,
        ``masks [B]`` = 1 - terminated, ``next_observations [B, O]``)."""
        c = self.config
        a_tx, c_tx, al_tx = self._txs()
        key, k_next, k_pi = jax.random.split(self.key, 3)
        alpha = jnp.exp(self.log_alpha)

        # Critic: soft Bellman target from the target critics' min (clipped double Q).
        mean, log_std = self.actor.apply({"params": self.actor_params},
                                         batch["next_observations"])
        next_act, next_logp = _sample_tanh_gaussian(mean, log_std, k_next)
        next_q = self.critic.apply({"params": self.target_critic_params},
                                   batch["next_observations"], next_act).min(0)
        target = batch["rewards"] + c.discount * batch["masks"] * (next_q - alpha * next_logp)
        target = jax.lax.stop_gradient(target)

        def critic_loss(params):
            q = self.critic.apply({"params": params}, batch["observations"], batch["actions"])
            return ((q - target[None]) ** 2).mean(), q.mean()

        (c_loss, q_mean), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(
            self.critic_params)
        c_upd, critic_opt = c_tx.update(c_grads, self.critic_opt, self.critic_params)
        critic_params = optax.apply_updates(self.critic_params, c_upd)

        # Actor: maximize min Q - alpha log pi with the freshly updated critics.
        def actor_loss(params):
            mean, log_std = self.actor.apply({"params": params}, batch["observations"])
            act, logp = _sample_tanh_gaussian(mean, log_std, k_pi)
            q = self.critic.apply({"params": critic_params}, batch["observations"], act).min(0)
            return (alpha * logp - q).mean(), logp.mean()

        (a_loss, logp_mean), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            self.actor_params)
        a_upd, actor_opt = a_tx.update(a_grads, self.actor_opt, self.actor_params)
        actor_params = optax.apply_updates(self.actor_params, a_upd)

        # Temperature: keep the policy's entropy near -scale * action_dim.
        target_entropy = -c.target_entropy_scale * self.action_dim
        entropy = -jax.lax.stop_gradient(logp_mean)

        def alpha_loss(log_alpha):
            return log_alpha * (entropy - target_entropy)

        al_grad = jax.grad(alpha_loss)(self.log_alpha)
        al_upd, alpha_opt = al_tx.update(al_grad, self.alpha_opt, self.log_alpha)
        log_alpha = optax.apply_updates(self.log_alpha, al_upd)

        target_critic_params = polyak(self.target_critic_params, critic_params, c.tau)
        agent = self.replace(actor_params=actor_params, critic_params=critic_params,
                             target_critic_params=target_critic_params, log_alpha=log_alpha,
                             actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt,
                             key=key, updates=self.updates + 1)
        info = {"critic/loss": c_loss, "critic/q_mean": q_mean, "actor/loss": a_loss,
                "actor/entropy": entropy, "alpha": alpha}
        return agent, info

    def update(self, batch: dict[str, jnp.ndarray]) -> tuple["SACAgent", dict]:
        """One SAC step on a batch of the core's schema (``dprl.data.buffer``, horizon 1):
        ``actions [B, 1, A]``, ``rewards [B, 1]``, ``masks [B]``."""
        return self._update({"observations": batch["observations"],
                             "actions": batch["actions"][:, 0],
                             "rewards": batch["rewards"][:, 0], "masks": batch["masks"],
                             "next_observations": batch["next_observations"]})

    def sample_actions(self, observations: jnp.ndarray, key: jnp.ndarray
                       ) -> tuple[jnp.ndarray, dict]:
        """Chunks of one action in [-1, 1], ``[B, 1, A]`` for ``observations [B, O]`` (and no
        aux): sampled from the policy, or uniform before the first update (the warm-up)."""
        policy_key, explore_key = jax.random.split(key)
        mean, log_std = self.actor.apply({"params": self.actor_params}, observations)
        action = _sample_tanh_gaussian(mean, log_std, policy_key)[0]
        explore = jax.random.uniform(explore_key, action.shape, minval=-1.0, maxval=1.0)
        return jnp.where(self.updates > 0, action, explore)[:, None], {}

    @jax.jit
    def act(self, observations: jnp.ndarray) -> jnp.ndarray:
        """The deterministic action (tanh of the mean), ``[B, A]``: evaluation and experts."""
        mean, _ = self.actor.apply({"params": self.actor_params}, observations)
        return jnp.tanh(mean)

    def save_policy(self, path, meta: dict | None = None):
        """Write the actor in dprl's ``.npz`` policy format (``squash='tanh'``)."""
        from dprl.experts.policies import save_policy
        p = jax.device_get(self.actor_params)
        hidden = [(p[f"hidden_{i}"]["kernel"], p[f"hidden_{i}"]["bias"])
                  for i in range(len(self.config.hidden))]
        return save_policy(path, hidden=hidden, W_out=p["mean"]["kernel"],
                           b_out=p["mean"]["bias"], W_log_std=p["log_std"]["kernel"],
                           b_log_std=p["log_std"]["bias"], activation="relu", squash="tanh",
                           log_std_min=LOG_STD_MIN, log_std_max=LOG_STD_MAX, meta=meta)


def save_replay(buffer: Buffer, path, seed: int, meta: dict | None = None):
    """Write ``buffer``'s transitions as a replay file: flat fields ``[N, ...]`` in insertion
    order, with ``episode_id [N]`` and each episode's reset ``seeds`` (``episode_seed``), so that
    a dataset recipe can cut it back into episodes (``replay_to_episodes``)."""
    b = jax.device_get(buffer)
    n = int(b.size)
    dones, terminals = b.dones[:n] > 0, b.terminals[:n] > 0
    episode_id = np.concatenate([[0], np.cumsum(dones[:-1])]).astype(np.int64)[:n]
    n_eps = int(episode_id[-1]) + 1 if n else 0
    return atomic_write(path, lambda f: np.savez(
        f, observations=b.observations[:n], actions=b.actions[:n], rewards=b.rewards[:n],
        terminations=terminals, truncations=dones & ~terminals,
        next_observations=b.next_observations[:n], episode_id=episode_id,
        seeds=episode_seed(seed, np.arange(n_eps)).astype(np.int64),
        meta=np.array(json.dumps(meta or {}, default=str))))


def episode_seed(seed: int, episode):
    """The env reset seed of training episode ``episode`` of a run seeded ``seed``."""
    return seed * 1_000_000 + episode


def replay_to_episodes(path, drop_unfinished: bool = True) -> list[dict[str, np.ndarray]]:
    """Cut a saved replay buffer back into episodes (``observations [T+1]``, ``actions [T]``, ...).

    The last episode is dropped when it did not end (the buffer was cut mid-episode), so every
    episode ends where the env ended it.
    """
    d = np.load(path, allow_pickle=False)
    ep = d["episode_id"]
    if len(ep) == 0:
        return []
    bounds = np.flatnonzero(np.diff(ep)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ep)]])
    episodes = []
    for s, e in zip(starts, ends):
        done = d["terminations"][e - 1] or d["truncations"][e - 1]
        if not done and drop_unfinished:
            continue
        episodes.append({
            "observations": np.concatenate([d["observations"][s:e],
                                            d["next_observations"][e - 1:e]]),
            "actions": d["actions"][s:e], "rewards": d["rewards"][s:e].astype(np.float64),
            "terminations": d["terminations"][s:e], "truncations": d["truncations"][s:e],
            "seed": int(d["seeds"][ep[s]]),
        })
    return episodes


def rollout_returns(act_fn, env_id: str, episodes: int, seed: int,
                    env_kwargs: dict | None = None) -> np.ndarray:
    """Returns ``[episodes]`` of ``act_fn(obs [E, O]) -> actions [E, A]`` in [-1, 1], the episodes
    run side by side from reset seeds ``seed, seed + 1, ...``."""
    from dprl.envs.vector import make_env
    envs = [make_env(env_id, **(env_kwargs or {})) for _ in range(episodes)]
    low, high = envs[0].action_space.low, envs[0].action_space.high
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    returns, done = np.zeros(episodes), np.zeros(episodes, bool)
    while not done.all():
        act = low + (np.asarray(act_fn(obs)) + 1.0) * 0.5 * (high - low)
        for i, env in enumerate(envs):
            if done[i]:
                continue
            obs[i], r, te, tr, _ = env.step(act[i])
            returns[i] += r
            done[i] = te or tr
    return returns


def evaluate_agent(agent: SACAgent, env_id: str, episodes: int, seed: int,
                   env_kwargs: dict | None = None) -> np.ndarray:
    """Deterministic (tanh of the mean) returns of ``episodes`` episodes."""
    return rollout_returns(lambda obs: agent.act(jnp.asarray(obs, jnp.float32)), env_id,
                           episodes, seed, env_kwargs)


def default_expert_return(env_id: str) -> float | None:
    """D4RL's reference expert score for a locomotion env (the medium target's base)."""
    from dprl.envs.tasks import D4RL_REF_SCORES, LOCOMOTION_ENVS
    for robot, eid in LOCOMOTION_ENVS.items():
        if eid.split("-")[0] == env_id.split("-")[0]:
            return D4RL_REF_SCORES[robot][1]
    return None


CURVE_COLUMNS = ["step", "wall_s", "eval_return_mean", "eval_return_std", "train_return_mean",
                 "updates", "critic_loss", "q_mean", "alpha", "entropy"]


def train(env_id: str, steps: int, out: str | os.PathLike, *, seed: int = 0,
          start_steps: int = 5000, fuse: int = 50, eval_every: int = 10_000,
          eval_episodes: int = 5, snapshot_every: int = 10_000, checkpoint_every: int = 10_000,
          expert_return: float | None = None, medium_fraction: float = 1 / 3,
          env_kwargs: dict | None = None, config: SACConfig = SACConfig(),
          progress: bool = True, _interrupt_at: int | None = None) -> dict:
    """Train SAC on ``env_id`` for ``steps`` env steps; see the module docstring for outputs.

    Every ``fuse`` env steps one jitted step runs the updates owed (one per env step from the
    first multiple of ``fuse`` at or after ``start_steps``, ``fuse`` per call). Every
    ``checkpoint_every`` env steps (at the next episode end) the whole loop state is checkpointed;
    calling ``train`` again with the same ``out`` resumes from there (a larger ``steps`` extends
    a finished run). Returns a summary dict (also ``out/summary.json``).
    """
    out = Path(out)
    with rundir.owned(out):
        training = _Training(env_id, steps, out, seed, start_steps, fuse, env_kwargs, config)
        try:
            return training.run(eval_every, eval_episodes, snapshot_every, checkpoint_every,
                                expert_return, medium_fraction, progress, _interrupt_at)
        finally:
            training.ckpt.close()


class _Training:
    """One SAC run: its ``Learner`` (agent, buffer, key, counters) advanced by the runner's
    online loop, and what happens after each env step (evaluation, snapshots, checkpoints)."""

    def __init__(self, env_id, steps, out, seed, start_steps, fuse, env_kwargs, config):
        from dprl.envs.vector import make_env

        self.env_id, self.steps, self.out, self.seed = env_id, steps, out, seed
        self.env_kwargs = env_kwargs or {}
        env = make_env(env_id, **self.env_kwargs)
        obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
        env.close()
        loop = ml_collections.ConfigDict({
            "act_steps": 1, "horizon": 1, "obs_history": 1, "action_dim": action_dim,
            "run": {"batch_size": config.batch_size, "offline_ratio": 0.0}})
        # No offline data: every batch comes from the online buffer (offline_ratio 0).
        self.learner = Learner(SACAgent.create(seed, obs_dim, action_dim, config),
                               Buffer.empty(1, obs_dim, action_dim),
                               Buffer.empty(steps + 1, obs_dim, action_dim),
                               jax.random.PRNGKey(seed + 1), loop)
        first_update = -(-start_steps // fuse) * fuse    # the first multiple of fuse >= start
        self.schedule = Schedule(total=steps, log_every=0, eval_every=0, save_every=0,
                                 dispatch=fuse, update_every=fuse, utd=1.0,
                                 start_updates=max(0, first_update - fuse))
        self.meta = {"env_id": env_id, "env_kwargs": self.env_kwargs, "seed": seed,
                     "algorithm": "SAC",
                     "config": {k: getattr(config, k) for k in config.__dataclass_fields__}}
        self.state = {"episode": 0, "medium_step": None, "recent": [], "wall_s": 0.0}
        self.ckpt = Checkpointer(out)
        self.chunks = self.resume()

    def resume(self) -> np.ndarray | None:
        """Restore the newest checkpoint, if any; the next action to take (None: fresh)."""
        step = self.ckpt.latest_step()
        if step is None:
            return None
        if step > self.steps:
            raise ValueError(f"{self.out} is checkpointed at env step {step}, beyond --steps "
                             f"{self.steps}; pass --steps >= {step}.")
        meta = self.ckpt.read_meta(step)
        learner = self.learner
        saved = _resized(learner.online, meta["capacity"])
        target = {"agent": learner.agent, "online": saved, "key": learner.key,
                  "chunks": np.zeros((1, 1, learner.config.action_dim), np.float32)}
        restored, meta = self.ckpt.restore(target, step)
        learner.agent, learner.key = restored["agent"], restored["key"]
        learner.online = _resized(restored["online"], learner.online.capacity)
        learner.counters, self.state = meta["counters"], meta["state"]
        print(f"SAC {self.env_id}: resuming {self.out} from env step {step} "
              f"({int(learner.online.size)} transitions, {learner.counters['online_updates']} "
              f"updates)", file=sys.stderr)
        return np.asarray(restored["chunks"])

    def save(self, chunks) -> None:
        learner = self.learner
        self.state["wall_s"] = time.perf_counter() - self.start
        self.ckpt.save(learner.counters["env_steps"], {
            "agent": learner.agent, "online": learner.online, "key": learner.key,
            "chunks": jnp.asarray(chunks)}, {"counters": learner.counters, "state": self.state,
                                             "capacity": learner.online.capacity})

    def run(self, eval_every, eval_episodes, snapshot_every, checkpoint_every, expert_return,
            medium_fraction, progress, interrupt_at) -> dict:
        from dprl.envs.vector import ChunkExecutor, VecEnv

        out, learner, state = self.out, self.learner, self.state
        (out / "snapshots").mkdir(parents=True, exist_ok=True)
        if expert_return is None:
            expert_return = default_expert_return(self.env_id)
        medium_target = None if expert_return is None else medium_fraction * expert_return
        done = learner.counters["env_steps"]
        # The curve up to the checkpoint: the steps after it are trained again.
        rows = list(csv.DictReader(open(out / "curve.csv"))) if (out / "curve.csv").exists() \
            else []
        curve_f = open(out / "curve.csv", "w", newline="")
        curve = csv.DictWriter(curve_f, CURVE_COLUMNS)
        curve.writeheader()
        curve.writerows([r for r in rows if int(r["step"]) <= done])
        curve_f.flush()
        self.start = time.perf_counter() - state["wall_s"]
        executor = ChunkExecutor(VecEnv(self.env_id, 1, episode_seed(self.seed, state["episode"]),
                                        self.env_kwargs), act_steps=1)
        executor.reset()
        rets, checkpoint_due = np.full(1, np.nan), False

        def after_step(due, info, updated, chunks) -> None:
            nonlocal rets, checkpoint_due
            step = learner.counters["env_steps"]
            ended = bool(executor.finished)
            if ended:   # one env, one step: at most one episode ended
                state["recent"] = (state["recent"] + [executor.finished.pop()["return"]])[-10:]
                state["episode"] += 1
            if step % eval_every == 0 or step == self.steps:
                rets = evaluate_agent(learner.agent, self.env_id, eval_episodes,
                                      seed=10_000 + step, env_kwargs=self.env_kwargs)
                info = {k: float(v) for k, v in info.items()}
                curve.writerow(dict(zip(CURVE_COLUMNS, [
                    step, round(time.perf_counter() - self.start, 1), rets.mean(), rets.std(),
                    np.mean(state["recent"]) if state["recent"] else float("nan"),
                    learner.counters["online_updates"], info.get("critic/loss"),
                    info.get("critic/q_mean"), info.get("alpha"), info.get("actor/entropy")])))
                curve_f.flush()
                bar.set_postfix(eval_return=f"{rets.mean():.0f}",
                                train_return=f"{np.mean(state['recent'] or [0]):.0f}")
                meta = {**self.meta, "step": step, "eval_return_mean": float(rets.mean()),
                        "eval_return_std": float(rets.std())}
                if step % snapshot_every == 0 or step == self.steps:
                    learner.agent.save_policy(out / "snapshots" / f"step_{step}.npz", meta)
                if (state["medium_step"] is None and medium_target is not None
                        and rets.mean() >= medium_target):
                    # D4RL's medium policy: the first snapshot at about 1/3 of the expert's
                    # return; medium-replay is everything the agent saw until then.
                    state["medium_step"] = step
                    learner.agent.save_policy(out / "medium.npz",
                                              {**meta, "medium_target": medium_target})
                    save_replay(learner.online, out / "medium_replay.npz", self.seed,
                                meta={**meta, "upto_step": step})
            checkpoint_due |= step % checkpoint_every == 0
            if ended and checkpoint_due and step < self.steps:
                self.save(chunks)   # right after a reset: the whole state of the loop
                checkpoint_due = False
            bar.update(1)
            if step + 1 == interrupt_at:                    # tests: a kill at a known step
                raise KeyboardInterrupt(step + 1)

        # Logs (nohup) get a line every 10 s rather than a redraw per step.
        with progress_bar(f"SAC {self.env_id}", self.steps, done, "env-step", progress) as bar:
            replay_loop(learner, executor, self.schedule, after_step, self.chunks)
        curve_f.close()
        final = {**self.meta, "step": self.steps, "eval_return_mean": float(rets.mean()),
                 "eval_return_std": float(rets.std())}
        learner.agent.save_policy(out / "final.npz", final)
        save_replay(learner.online, out / "replay.npz", self.seed,
                    meta={**self.meta, "upto_step": self.steps})
        summary = {"env_id": self.env_id, "steps": self.steps, "seed": self.seed,
                   "wall_s": time.perf_counter() - self.start,
                   "updates": learner.counters["online_updates"],
                   "medium_step": state["medium_step"], "medium_target": medium_target,
                   "final_eval_return": float(rets.mean())}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        plot_curve(out)
        print(f"SAC {self.env_id}: wrote {out} (final.npz, curve.png, summary.json)",
              file=sys.stderr)
        return summary


def _resized(buffer: Buffer, capacity: int) -> Buffer:
    """``buffer`` with room for ``capacity`` transitions (its own cut or zero-padded)."""
    def fit(x):
        x = x[:capacity]
        return jnp.pad(x, [(0, capacity - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
    return buffer.replace(**{k: fit(getattr(buffer, k)) for k in
                             ("observations", "actions", "rewards", "terminals", "dones",
                              "next_observations")})


def plot_curve(out: str | os.PathLike) -> Path:
    """Draw ``out/curve.csv`` into ``out/curve.png`` (returns vs env steps); returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    rows = list(csv.DictReader(open(out / "curve.csv")))
    steps = np.array([int(r["step"]) for r in rows])
    mean = np.array([float(r["eval_return_mean"]) for r in rows])
    std = np.array([float(r["eval_return_std"]) for r in rows])
    train_ret = np.array([float(r["train_return_mean"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, mean, marker="o", ms=3, label="eval (deterministic), mean ± std")
    ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.plot(steps, train_ret, alpha=0.7, label="training episodes (sampled actions)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(f"SAC: {out}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)
    return out / "curve.png"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["plot"]:        # python -m dprl.sac plot DIR: redraw curve.png
        print(plot_curve(argv[1]))
        return
    p.add_argument("--env", required=True, help="gymnasium env id, e.g. Hopper-v5")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-steps", type=int, default=5000,
                   help="warm-up: no updates before this env step (uniform-random actions until "
                        "the first update)")
    p.add_argument("--fuse", type=int, default=50, help="updates per jitted call")
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--snapshot-every", type=int, default=10_000)
    p.add_argument("--checkpoint-every", type=int, default=10_000,
                   help="env steps between resumable checkpoints (taken at the next episode end)")
    p.add_argument("--expert-return", type=float, default=None,
                   help="expert return for the medium target (default: D4RL's ref max score)")
    p.add_argument("--medium-fraction", type=float, default=1 / 3)
    p.add_argument("--env-kwargs", type=json.loads, default={}, help="JSON dict")
    args = p.parse_args(argv)
    summary = train(args.env, args.steps, args.out, seed=args.seed, start_steps=args.start_steps,
                    fuse=args.fuse, eval_every=args.eval_every,
                    snapshot_every=args.snapshot_every,
                    checkpoint_every=args.checkpoint_every, expert_return=args.expert_return,
                    medium_fraction=args.medium_fraction, env_kwargs=args.env_kwargs)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
