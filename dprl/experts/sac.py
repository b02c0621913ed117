"""Soft Actor-Critic in JAX: trains expert (and medium) policies for D4RL-style datasets.

The agent is an immutable ``flax.struct.PyTreeNode``; ``update_many`` fuses ``N`` gradient steps
(critic, actor, temperature, target EMA) into one ``lax.scan`` under one ``jax.jit``. The training
loop alternates ``N`` env steps with one fused call of ``N`` updates (update-to-data ratio 1).

During training it writes, under ``--out``:
  ``curve.csv``              step, wall_s, eval return (deterministic), training episode returns
  ``snapshots/step_<k>.npz`` the actor in dprl's policy format (``dprl/experts/policies.py``)
  ``medium.npz``             the first snapshot whose eval return reaches ``medium_fraction`` of the
                             expert's return (D4RL's medium: a policy part-way through training)
  ``medium_replay.npz``      the replay buffer up to that snapshot (D4RL's medium-replay)
  ``final.npz``, ``replay.npz``  the last actor and the whole replay buffer
  ``curve.png``              the learning curve (eval and training returns vs env steps)
  ``checkpoint/``            the whole loop state every ``--checkpoint-every`` env steps (at the
                             next episode end): kill the run and re-run the same command, it goes
                             on bit for bit; a larger ``--steps`` extends a finished run

Usage: ``python -m dprl.sac --env Hopper-v5 --steps 300000 --out /tmp/sac_hopper``
"""
from __future__ import annotations

import argparse
import csv
import functools
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
import numpy as np
import optax

from dprl.base.files import atomic_write
from dprl.models.training import polyak

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
                   alpha_opt=al_tx.init(log_alpha), key=key, config=config,
                   action_dim=action_dim)

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
                             key=key)
        info = {"critic/loss": c_loss, "critic/q_mean": q_mean, "actor/loss": a_loss,
                "actor/entropy": entropy, "alpha": alpha}
        return agent, info

    @jax.jit
    def update_many(self, batches: dict[str, jnp.ndarray]) -> tuple["SACAgent", dict]:
        """``N`` fused updates: every array in ``batches`` is ``[N, B, ...]``; info is the mean."""
        agent, infos = jax.lax.scan(lambda a, b: a._update(b), self, batches)
        return agent, jax.tree_util.tree_map(jnp.mean, infos)

    @functools.partial(jax.jit, static_argnames=("deterministic",))
    def sample_actions(self, observations: jnp.ndarray, key: jnp.ndarray,
                       deterministic: bool = False) -> jnp.ndarray:
        """Actions in [-1, 1], ``[B, A]`` for ``observations [B, O]``."""
        mean, log_std = self.actor.apply({"params": self.actor_params}, observations)
        if deterministic:
            return jnp.tanh(mean)
        return _sample_tanh_gaussian(mean, log_std, key)[0]

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


class ReplayBuffer:
    """Flat numpy transitions in insertion order, with episode bookkeeping for datasets.

    ``episode_id [N]`` and per-episode ``seeds`` let a dataset recipe cut the buffer back into
    the episodes it came from (observation ``[T+1]`` per episode).
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminations = np.zeros(capacity, bool)
        self.truncations = np.zeros(capacity, bool)
        self.episode_id = np.zeros(capacity, np.int64)
        self.seeds: list[int] = []
        self.size = 0

    def add(self, obs, action, reward, terminated, truncated, next_obs, episode: int):
        i = self.size
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.terminations[i], self.truncations[i] = terminated, truncated
        self.next_obs[i] = next_obs
        self.episode_id[i] = episode
        self.size += 1

    _FIELDS = ("obs", "next_obs", "actions", "rewards", "terminations", "truncations",
               "episode_id")

    def arrays(self, start: int, end: int) -> dict[str, np.ndarray]:
        """Transitions ``[start, end)`` of every field (for incremental checkpoints)."""
        return {k: getattr(self, k)[start:end] for k in self._FIELDS}

    def load_arrays(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["obs"])
        for k in self._FIELDS:
            getattr(self, k)[start:start + n] = arrays[k]
        self.size = max(self.size, start + n)

    def sample(self, rng: np.random.Generator, n: int, batch_size: int) -> dict[str, np.ndarray]:
        idx = rng.integers(0, self.size, size=(n, batch_size))
        return {"observations": self.obs[idx], "actions": self.actions[idx],
                "rewards": self.rewards[idx],
                "masks": 1.0 - self.terminations[idx].astype(np.float32),
                "next_observations": self.next_obs[idx]}

    def save(self, path, upto: int | None = None, meta: dict | None = None) -> Path:
        """Write the first ``upto`` transitions (default all) as ``.npz`` (no pickle)."""
        n = self.size if upto is None else upto
        path = Path(path)
        n_eps = int(self.episode_id[n - 1]) + 1 if n else 0
        return atomic_write(path, lambda f: np.savez(
            f, observations=self.obs[:n], actions=self.actions[:n], rewards=self.rewards[:n],
            terminations=self.terminations[:n], truncations=self.truncations[:n],
            next_observations=self.next_obs[:n], episode_id=self.episode_id[:n],
            seeds=np.asarray(self.seeds[:n_eps], np.int64),
            meta=np.array(json.dumps(meta or {}, default=str))))


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
    key = jax.random.PRNGKey(0)
    return rollout_returns(
        lambda obs: agent.sample_actions(jnp.asarray(obs, jnp.float32), key, deterministic=True),
        env_id, episodes, seed, env_kwargs)


def default_expert_return(env_id: str) -> float | None:
    """D4RL's reference expert score for a locomotion env (the medium target's base)."""
    from dprl.envs.tasks import D4RL_REF_SCORES, LOCOMOTION_ENVS
    for robot, eid in LOCOMOTION_ENVS.items():
        if eid.split("-")[0] == env_id.split("-")[0]:
            return D4RL_REF_SCORES[robot][1]
    return None


class _Checkpoint:
    """Resumable training state under ``out/checkpoint/``, written at episode boundaries.

    ``agent.msgpack`` (flax serialization of the agent pytree), ``replay_<start>_<end>.npz``
    (the transitions added since the previous checkpoint: a 1M-step buffer is written once, not
    every time) and ``progress.json`` (counters, numpy and JAX RNG states, wall time), written last
    with an atomic rename: it is the commit point. Taken right after an env reset, the checkpoint
    holds the whole state of the loop, so a resumed run continues bit for bit as if never stopped.
    """

    def __init__(self, out: Path):
        self.dir = out / "checkpoint"

    def exists(self) -> bool:
        return (self.dir / "progress.json").exists()

    def save(self, agent: "SACAgent", buffer: "ReplayBuffer", progress: dict) -> None:
        from flax import serialization
        self.dir.mkdir(parents=True, exist_ok=True)
        saved = progress.get("buffer_saved", 0)
        if buffer.size > saved:
            seg = self.dir / f"replay_{saved:09d}_{buffer.size:09d}.npz"
            atomic_write(seg, lambda f: np.savez(f, **buffer.arrays(saved, buffer.size)))
        atomic_write(self.dir / "agent.msgpack", serialization.to_bytes(agent))
        progress = {**progress, "buffer_saved": buffer.size, "seeds": list(buffer.seeds)}
        atomic_write(self.dir / "progress.json", json.dumps(progress))

    def load(self, agent: "SACAgent", buffer: "ReplayBuffer") -> tuple["SACAgent", dict]:
        """Restore into ``agent`` (a template of the same shapes) and the empty ``buffer``."""
        from flax import serialization
        progress = json.loads((self.dir / "progress.json").read_text())
        agent = serialization.from_bytes(agent, (self.dir / "agent.msgpack").read_bytes())
        n = progress["buffer_saved"]
        if n > len(buffer.obs):
            raise ValueError(f"{self.dir} holds {n} transitions, more than --steps allows; "
                             f"pass --steps >= {progress['step']} to resume this run.")
        segments = sorted(self.dir.glob("replay_*_*.npz"))
        covered = 0
        for seg in segments:
            s, e = (int(x) for x in seg.stem.split("_")[1:])
            if e > n:      # written by a save that never reached its commit point
                seg.unlink()
                continue
            if s != covered:
                raise ValueError(f"{self.dir}: replay segments do not join at {covered} "
                                 f"({seg.name}); the checkpoint is damaged. Move {self.dir} "
                                 f"aside to start this run over.")
            buffer.load_arrays(s, dict(np.load(seg, allow_pickle=False)))
            covered = e
        if covered != n:
            raise ValueError(f"{self.dir}: replay segments cover {covered} of {n} transitions; "
                             f"the checkpoint is damaged. Move {self.dir} aside to start over.")
        buffer.seeds = list(progress["seeds"])
        return agent, progress


def train(env_id: str, steps: int, out: str | os.PathLike, *, seed: int = 0,
          start_steps: int = 5000, fuse: int = 50, eval_every: int = 10_000,
          eval_episodes: int = 5, snapshot_every: int = 10_000, checkpoint_every: int = 10_000,
          expert_return: float | None = None, medium_fraction: float = 1 / 3,
          env_kwargs: dict | None = None, config: SACConfig = SACConfig(),
          progress: bool = True, _interrupt_at: int | None = None) -> dict:
    """Train SAC on ``env_id`` for ``steps`` env steps; see the module docstring for outputs.

    ``fuse`` env steps are collected, then ``fuse`` gradient updates run in one jitted call.
    Every ``checkpoint_every`` env steps (at the next episode end) the whole loop state is
    checkpointed; calling ``train`` again with the same ``out`` resumes from there (a larger
    ``steps`` extends a finished run). Returns a summary dict (also ``out/summary.json``).
    """
    from tqdm import tqdm

    from dprl.envs.vector import make_env

    out = Path(out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    env = make_env(env_id, **(env_kwargs or {}))
    obs_dim = env.observation_space.shape[0]
    action_dim = env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    agent = SACAgent.create(seed, obs_dim, action_dim, config)
    buffer = ReplayBuffer(steps, obs_dim, action_dim)
    rng = np.random.default_rng(seed)
    act_key = jax.random.PRNGKey(seed + 1)
    if expert_return is None:
        expert_return = default_expert_return(env_id)
    medium_target = None if expert_return is None else medium_fraction * expert_return
    meta_base = {"env_id": env_id, "env_kwargs": env_kwargs or {}, "seed": seed,
                 "algorithm": "SAC", "config": {k: getattr(config, k) for k in
                                                 config.__dataclass_fields__}}
    columns = ["step", "wall_s", "eval_return_mean", "eval_return_std", "train_return_mean",
               "updates", "critic_loss", "q_mean", "alpha", "entropy"]
    ckpt = _Checkpoint(out)
    state = {"step": 0, "episode": 0, "updates": 0, "medium_step": None, "recent": [],
             "wall_s": 0.0, "buffer_saved": 0}
    if ckpt.exists():
        agent, state = ckpt.load(agent, buffer)
        if state["step"] > steps:
            raise ValueError(f"{out} is checkpointed at env step {state['step']}, beyond "
                             f"--steps {steps}; pass --steps >= {state['step']}.")
        rng.bit_generator.state = state["rng"]
        act_key = jnp.asarray(np.asarray(state["act_key"], np.uint32))
        # Keep the curve rows up to the checkpoint: the steps after it are trained again.
        rows = list(csv.DictReader(open(out / "curve.csv"))) if (out / "curve.csv").exists() \
            else []
        rows = [r for r in rows if int(r["step"]) <= state["step"]]
        print(f"SAC {env_id}: resuming {out} from env step {state['step']} "
              f"({buffer.size} transitions, {state['updates']} updates)", file=sys.stderr)
    else:
        rows = []
        buffer.seeds.append(seed * 1_000_000)
    curve_f = open(out / "curve.csv", "w", newline="")
    curve = csv.DictWriter(curve_f, columns)
    curve.writeheader()
    curve.writerows(rows)
    curve_f.flush()
    start = time.perf_counter() - state["wall_s"]
    episode, updates, medium_step = state["episode"], state["updates"], state["medium_step"]
    recent = list(state["recent"])
    ep_return = 0.0
    obs, _ = env.reset(seed=buffer.seeds[-1])
    info: dict = {}
    rets = np.full(1, np.nan)
    checkpoint_due = False
    # Logs (nohup) get a line every 30 s rather than a redraw per step.
    bar = tqdm(total=steps, initial=state["step"], disable=not progress, desc=f"SAC {env_id}",
               smoothing=0.05, mininterval=0.5 if sys.stderr.isatty() else 30.0)
    for step in range(state["step"] + 1, steps + 1):
        if step == _interrupt_at:                     # tests: a kill at a known step
            raise KeyboardInterrupt(step)
        if step <= start_steps:
            action = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
        else:
            act_key, k = jax.random.split(act_key)
            action = np.asarray(agent.sample_actions(jnp.asarray(obs[None], jnp.float32), k))[0]
        env_action = low + (action + 1.0) * 0.5 * (high - low)
        next_obs, reward, terminated, truncated, _ = env.step(env_action)
        buffer.add(obs, action, reward, terminated, truncated, next_obs, episode)
        ep_return += reward
        obs = next_obs
        if step >= start_steps and step % fuse == 0:
            batches = buffer.sample(rng, fuse, config.batch_size)
            agent, info = agent.update_many(jax.tree_util.tree_map(jnp.asarray, batches))
            updates += fuse
        if step % eval_every == 0 or step == steps:
            rets = evaluate_agent(agent, env_id, eval_episodes, seed=10_000 + step,
                                  env_kwargs=env_kwargs)
            info_np = {k: float(v) for k, v in jax.device_get(info).items()}
            curve.writerow(dict(zip(columns, [
                step, round(time.perf_counter() - start, 1), rets.mean(), rets.std(),
                np.mean(recent) if recent else float("nan"), updates,
                info_np.get("critic/loss"), info_np.get("critic/q_mean"), info_np.get("alpha"),
                info_np.get("actor/entropy")])))
            curve_f.flush()
            bar.set_postfix(eval_return=f"{rets.mean():.0f}",
                            train_return=f"{np.mean(recent or [0]):.0f}")
            meta = {**meta_base, "step": step, "eval_return_mean": float(rets.mean()),
                    "eval_return_std": float(rets.std())}
            if step % snapshot_every == 0 or step == steps:
                agent.save_policy(out / "snapshots" / f"step_{step}.npz", meta)
            if (medium_step is None and medium_target is not None
                    and rets.mean() >= medium_target):
                # D4RL's medium policy: the first snapshot at about 1/3 of the expert's return;
                # medium-replay is everything the agent saw until then.
                medium_step = step
                agent.save_policy(out / "medium.npz", {**meta, "medium_target": medium_target})
                buffer.save(out / "medium_replay.npz", meta={**meta, "upto_step": step})
        checkpoint_due |= step % checkpoint_every == 0
        if terminated or truncated:
            recent = (recent + [ep_return])[-10:]
            episode += 1
            ep_return = 0.0
            buffer.seeds.append(seed * 1_000_000 + episode)
            obs, _ = env.reset(seed=buffer.seeds[-1])
            if checkpoint_due and step < steps:
                state = {**state, "step": step, "episode": episode, "updates": updates,
                         "medium_step": medium_step, "recent": recent,
                         "wall_s": time.perf_counter() - start,
                         "rng": rng.bit_generator.state,
                         "act_key": np.asarray(jax.device_get(act_key)).tolist()}
                ckpt.save(agent, buffer, state)
                state["buffer_saved"] = buffer.size
                checkpoint_due = False
        bar.update(1)
    bar.close()
    curve_f.close()
    agent.save_policy(out / "final.npz", {**meta_base, "step": steps,
                                          "eval_return_mean": float(rets.mean()),
                                          "eval_return_std": float(rets.std())})
    buffer.save(out / "replay.npz", meta={**meta_base, "upto_step": steps})
    wall = time.perf_counter() - start
    summary = {"env_id": env_id, "steps": steps, "seed": seed, "wall_s": wall,
               "updates": updates, "medium_step": medium_step, "medium_target": medium_target,
               "final_eval_return": float(rets.mean())}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_curve(out)
    print(f"SAC {env_id}: wrote {out} (final.npz, curve.png, summary.json)", file=sys.stderr)
    return summary


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
    p.add_argument("--start-steps", type=int, default=5000, help="uniform-random warm-up steps")
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
