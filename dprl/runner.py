"""The run: BC pretraining -> offline RL -> online finetuning, for any registered agent.

``train(config, task, run_dir)`` writes DESIGN.md's run contract into ``run_dir``: config.json,
metrics.csv (+ TensorBoard), summary.json and orbax checkpoints; calling it again with the same
run_dir resumes from the last checkpoint. The runner never looks inside an agent: it samples
batches, calls ``pretrain`` / ``update`` fused over many steps in one ``lax.scan``, and acts with
``sample_actions``.

Phases (each optional):
  pretrain  ``config.run.pretrain_steps`` BC gradient steps on the offline data
  offline   ``config.run.offline_steps`` RL gradient steps on the offline data
  online    ``config.run.online_steps`` env steps. Off-policy agents: transitions go into a device
            buffer, batches mix offline and online data (``offline_ratio``), ``utd`` updates per
            env step. On-policy agents (``Agent.on_policy``): rollouts of ``rollout_steps``
            chunk-steps from ``num_envs`` envs are handed to ``update`` (schema: ``collect_rollout``).
"""
from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

import dprl
from agents import get_agent
from configs.tasks import get_task
from dprl.buffer import Buffer, sample_mixed, transitions_from_chunks
from dprl.checkpoint import Checkpointer
from dprl.data import Normalizer, OfflineData, check_compatible, load_dataset
from dprl.envs import ChunkExecutor, VecEnv, evaluate, make_env
from dprl.logging import MetricsLogger

PHASES = ("pretrain", "offline", "online")


class TrainingDiverged(FloatingPointError):
    """A loss or metric became NaN or inf."""


# ---------------------------------------------------------------------------------------------
# Dataset resolution
# ---------------------------------------------------------------------------------------------
def resolve_task_dataset(task_name: str, task: dict, forced_id: str | None = None
                         ) -> tuple[str, str]:
    """``(dataset_id, source)`` for a task: the official Minari dataset when stored locally, else
    dprl's generated stand-in (made on the spot for presets with ``auto_make``: the toy tasks)."""
    from dprl.datasets.io import dataset_exists
    from dprl.datasets.registry import resolve_dataset, run_generator

    if task.get("auto_make") and not forced_id and not dataset_exists(task["dataset_id"]):
        run_generator(task_name, task)
    return resolve_dataset(task_name, forced_id)


# ---------------------------------------------------------------------------------------------
# Fused updates
# ---------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("num_steps", "method", "batch_size", "horizon",
                                             "obs_history", "offline_ratio"))
def fused_updates(agent, offline: Buffer, online: Buffer | None, key: jax.Array, *,
                  num_steps: int, method: str, batch_size: int, horizon: int, obs_history: int,
                  offline_ratio: float = 1.0):
    """``num_steps`` gradient steps in one dispatch; batches are sampled on device.

    Returns the new agent and the mean of each info scalar over the steps.
    """
    def body(agent, step_key):
        if online is None:
            batch = offline.sample(step_key, batch_size, horizon, obs_history)
        else:
            batch = sample_mixed(offline, online, step_key, batch_size, offline_ratio, horizon,
                                 obs_history)
        return getattr(agent, method)(batch)

    agent, infos = jax.lax.scan(body, agent, jax.random.split(key, num_steps))
    return agent, jax.tree.map(jnp.mean, infos)


@jax.jit
def _add(buffer: Buffer, transitions: dict) -> Buffer:
    return buffer.add(transitions)


# ---------------------------------------------------------------------------------------------
# Rollouts for on-policy agents
# ---------------------------------------------------------------------------------------------
def collect_rollout(agent, executor: ChunkExecutor, num_steps: int, key: jax.Array,
                    normalizer: Normalizer) -> tuple[dict, int]:
    """``num_steps`` chunk-steps from every env of ``executor``. Returns ``(rollout, env_steps)``:

      observations       [T, E, (K,) O]  normalized policy inputs
      actions            [T, E, H, A]    the sampled chunks
      aux                agent's aux from sample_actions, each leaf [T, E, ...]
      rewards            [T, E]          sum of the executed steps' rewards
      terminals          [T, E]          the env terminated inside the chunk
      dones              [T, E]          the episode ended (terminated or truncated)
      next_observations  [T, E, O]       normalized observation after the chunk (the final one
                                         when the episode ended; for bootstrapping truncations)
      last_observations  [E, (K,) O]     policy inputs after the rollout (for bootstrapping)
    """
    obs_l, act_l, aux_l, rew_l, term_l, done_l, next_l = [], [], [], [], [], [], []
    env_steps = 0
    for _ in range(num_steps):
        key, act_key = jax.random.split(key)
        obs = executor.policy_observations()
        chunks, aux = agent.sample_actions(jnp.asarray(obs), act_key)
        executed = executor.step_chunks(np.asarray(chunks))
        valid = executed["valid"]
        env_steps += int(valid.sum())
        rewards = (executed["rewards"] * valid).sum(0)
        terminals = (executed["terminals"] & valid).any(0)
        dones = ((executed["terminals"] | executed["truncations"]) & valid).any(0)
        last = valid.sum(0) - 1
        next_raw = executed["next_observations"][last, np.arange(valid.shape[1])]
        obs_l.append(obs)
        act_l.append(np.asarray(chunks))
        aux_l.append(jax.device_get(aux))
        rew_l.append(rewards)
        term_l.append(terminals)
        done_l.append(dones)
        next_l.append(np.asarray(normalizer(next_raw), np.float32))
    rollout = {
        "observations": np.stack(obs_l), "actions": np.stack(act_l),
        "aux": jax.tree.map(lambda *x: np.stack(x), *aux_l),
        "rewards": np.stack(rew_l).astype(np.float32),
        "terminals": np.stack(term_l).astype(np.float32),
        "dones": np.stack(done_l).astype(np.float32),
        "next_observations": np.stack(next_l),
        "last_observations": executor.policy_observations(),
    }
    return rollout, env_steps


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dispatch_size(done: int, total: int, run) -> int:
    """Gradient steps in the next fused dispatch: at most ``run.steps_per_dispatch``, and never
    past the next log / eval / save boundary (so they land on exact steps) or ``total``."""
    boundaries = [total]
    for every in (run.log_every, run.eval_every, run.save_every):
        if every:
            boundaries.append((done // every + 1) * every)
    return min(run.steps_per_dispatch, min(boundaries) - done)


def _check_finite(info: dict, phase: str, step: int, ckpt: Checkpointer) -> None:
    for k, v in info.items():
        if not math.isfinite(float(v)):
            last = ckpt.latest_step()
            where = (f"the last checkpoint is step {last} in {ckpt.directory}" if last is not None
                     else "no checkpoint was saved yet")
            raise TrainingDiverged(
                f"{k} became {float(v)} in phase {phase!r} at step {step}; {where}. Lower the "
                f"learning rate, clip gradients (grad_clip) or check the data for outliers.")


class Run:
    """One run's state and loops. ``Run(...).train()`` is what ``experiments/train.py`` calls."""

    def __init__(self, config: ml_collections.ConfigDict, task_name: str, run_dir: str,
                 seed: int = 0, dataset: str | None = None, progress: bool = True):
        self.t0 = time.perf_counter()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.task_name, self.seed, self.progress = task_name, int(seed), progress
        self.task = get_task(task_name)
        self.dataset_id, self.dataset_source = resolve_task_dataset(task_name, self.task, dataset)
        self._log(f"task {task_name}: dataset {self.dataset_id} ({self.dataset_source})")
        self.data: OfflineData = load_dataset(self.dataset_id)
        if self.task.get("reward_relabel"):
            # The task's own rewards on a shared dataset (OGBench: one play dataset per env).
            from dprl.datasets.registry import run_relabel
            self.data = run_relabel(self.task, self.data)
        if self.task.get("success_masks"):
            # Sparse single-task rewards are 0 at success, negative before (OGBench, QC, FQL).
            self.data.terminals = self.data.rewards >= 0
        env = make_env(self.task["env_id"], **self.task["env_kwargs"])
        check_compatible(self.data, env, task_name)
        env.close()

        config = ml_collections.ConfigDict(config.to_dict())  # a private, mutable copy
        config.action_dim = int(self.data.actions.shape[1])
        if config.act_steps > config.horizon:
            raise ValueError(f"act_steps ({config.act_steps}) must be <= horizon ({config.horizon})")
        run = config.run
        if not run.eval_episodes:
            run.eval_episodes = self.task["eval_episodes"]
        self.agent_cls = get_agent(config.agent_name)
        if run.online_steps and not self.agent_cls.on_policy and run.num_envs != 1:
            raise ValueError("Off-policy online finetuning collects with one env "
                             "(run.num_envs=1); on-policy agents use many.")
        self.config = config
        self.ref_min = (self.data.ref_min_score if self.data.ref_min_score is not None
                        else self.task["ref_min_score"])
        self.ref_max = (self.data.ref_max_score if self.data.ref_max_score is not None
                        else self.task["ref_max_score"])
        self.normalizer = (Normalizer.fit(self.data.observations) if run.normalize_obs
                           else Normalizer.identity(self.data.observations.shape[1]))
        self.offline = Buffer.from_offline(self.data, self.normalizer)
        key = jax.random.PRNGKey(self.seed)
        key, ex_key, self.eval_key = jax.random.split(key, 3)
        example = jax.device_get(self.offline.sample(ex_key, 2, config.horizon, config.obs_history))
        self.agent = self.agent_cls.create(self.seed, example, config)
        self.online = None
        if run.online_steps and not self.agent_cls.on_policy:
            capacity = run.online_steps + config.act_steps * run.num_envs
            self.online = Buffer.empty(capacity, self.data.observations.shape[1],
                                       config.action_dim)
        self.key = key
        self.counters = {"pretrain": 0, "offline": 0, "online": 0, "env_steps": 0}
        self.scores: dict[str, Any] = {"offline_score": None, "online_score": None,
                                       "best_score": None}
        self.timing = {"update_s": 0.0, "updates": 0, "env_s": 0.0, "env_steps": 0}
        # Phase ends (global steps) outlive the rolling window of checkpoints.
        self.ckpt = Checkpointer(self.run_dir, keep_steps=tuple(
            s for s in (run.pretrain_steps, run.pretrain_steps + run.offline_steps) if s > 0))
        self.resolved = {
            "agent": config.to_dict(), "task": task_name, "task_preset": self.task,
            "seed": self.seed, "dataset_id": self.dataset_id,
            "dataset_source": self.dataset_source, "dataset_provenance":
                self.data.metadata.get("dprl", {}),
            "reward_relabel": self.data.metadata.get("dprl_relabel"),
            "dprl_version": dprl.__version__, "git_commit": _git_commit(),
            "jax_backend": jax.default_backend(),
        }
        if run.init_from and self.ckpt.latest_step() is None:
            self.resolved["init_from"] = self._init_from(run.init_from)
        self._restore_or_start()
        self.logger = MetricsLogger(self.run_dir, tensorboard=run.tensorboard,
                                    wandb_project=run.wandb_project or None, config=self.resolved)
        if self.resumed_from is not None:
            self.logger.truncate_after(self.global_step)

    # ---- bookkeeping --------------------------------------------------------------------------
    def _log(self, msg: str) -> None:
        print(f"[dprl] {msg}", file=sys.stderr, flush=True)

    @property
    def global_step(self) -> int:
        c = self.counters
        return c["pretrain"] + c["offline"] + c["env_steps"]

    def _state(self) -> dict:
        return {"agent": self.agent, "online": self.online, "key": self.key}

    def _meta(self) -> dict:
        return {"counters": self.counters, "scores": self.scores, "timing": self.timing,
                "normalizer": self.normalizer.to_dict(), "config": self.resolved["agent"]}

    def save(self) -> None:
        self.ckpt.save(self.global_step, self._state(), self._meta())

    def _init_from(self, spec: str) -> dict:
        """Take the agent state (parameters, optimizers, EMA and targets) and the observation
        normalizer from another run's checkpoint ``RUN_DIR[:STEP]``; this run's config applies
        from here on, so its network shapes must match."""
        source, sep, step = spec.rpartition(":")
        if not (sep and step.isdigit()):
            source, step = spec, ""
        agent, normalizer, resolved = load_run(source, int(step) if step else None)
        if resolved["agent"]["agent_name"] != self.config.agent_name:
            raise ValueError(f"run.init_from={spec!r} holds a {resolved['agent']['agent_name']!r} "
                             f"agent, but this run trains {self.config.agent_name!r}.")
        own, theirs = jax.tree.leaves(self.agent), jax.tree.leaves(agent)
        if [jnp.shape(x) for x in own] != [jnp.shape(x) for x in theirs]:
            raise ValueError(f"run.init_from={spec!r}: its networks differ in shape from this "
                             f"run's config; use the same network sizes (hidden_dims, horizon, "
                             f"obs_history) as {source}/config.json.")
        self.agent = jax.tree.unflatten(jax.tree.structure(self.agent), theirs)
        self.normalizer = normalizer
        self.offline = Buffer.from_offline(self.data, normalizer)
        # load_run has checked that source is a run directory: reading its latest step is safe.
        step = int(step) if step else Checkpointer(source).latest_step()
        self._log(f"initialized from {source} (checkpoint {step}, dataset "
                  f"{resolved['dataset_id']})")
        return {"run_dir": str(Path(source).absolute()), "step": step,
                "dataset_id": resolved["dataset_id"]}

    def _restore_or_start(self) -> None:
        self.resumed_from = None
        cfg_path = self.run_dir / "config.json"
        if self.ckpt.latest_step() is not None:
            state, meta = self.ckpt.restore(self._state())
            if _comparable(meta.get("config")) != _comparable(self.resolved["agent"]):
                raise ValueError(
                    f"{self.run_dir} holds a run with a different agent config; resume it with "
                    f"the same command, or choose a new --run_dir.")
            self.agent, self.online, self.key = state["agent"], state["online"], state["key"]
            self.counters, self.scores, self.timing = meta["counters"], meta["scores"], meta["timing"]
            self.normalizer = Normalizer.from_dict(meta["normalizer"])
            self.offline = Buffer.from_offline(self.data, self.normalizer)
            self.resumed_from = self.ckpt.latest_step()
            self._log(f"resuming from checkpoint at step {self.resumed_from}")
            previous = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
            if "init_from" in previous:
                self.resolved["init_from"] = previous["init_from"]
        cfg_path.write_text(json.dumps(self.resolved, indent=2, default=str))

    def _record(self, phase: str, step: int, metrics: dict) -> None:
        self.logger.log(phase, step, self.counters["env_steps"], time.perf_counter() - self.t0,
                        metrics, self.global_step)

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(self) -> dict:
        cfg = self.config
        agent, key = self.agent, self.eval_key

        def policy(obs):
            nonlocal key
            key, k = jax.random.split(key)
            return np.asarray(agent.sample_actions(jnp.asarray(obs), k)[0])

        result = evaluate(
            policy, self.task["env_id"], cfg.run.eval_episodes, cfg.act_steps,
            seed=cfg.run.eval_seed, obs_history=cfg.obs_history, normalize=self.normalizer,
            env_kwargs=self.task["env_kwargs"], ref_min_score=self.ref_min,
            ref_max_score=self.ref_max, score=self.task["score"])
        score = result["normalized_score"]
        if math.isfinite(score) and (self.scores["best_score"] is None
                                     or score > self.scores["best_score"]):
            self.scores["best_score"] = score
        return {f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))}

    # ---- phases -------------------------------------------------------------------------------
    def _gradient_phase(self, phase: str, total: int, method: str) -> None:
        run = self.config.run
        done = self.counters[phase]
        if done >= total:
            return
        bar = tqdm(total=total, initial=done, desc=phase, unit="upd", disable=not self.progress,
                   dynamic_ncols=True)
        last_score = None
        while done < total:
            n = dispatch_size(done, total, run)
            self.key, k = jax.random.split(self.key)
            start = time.perf_counter()
            self.agent, info = fused_updates(
                self.agent, self.offline, None, k, num_steps=n, method=method,
                batch_size=run.batch_size, horizon=self.config.horizon,
                obs_history=self.config.obs_history)
            info = jax.device_get(info)
            self.timing["update_s"] += time.perf_counter() - start
            self.timing["updates"] += n
            done += n
            self.counters[phase] = done
            _check_finite(info, phase, done, self.ckpt)
            bar.update(n)
            metrics = {}
            if run.log_every and done % run.log_every == 0:
                metrics.update(info)
            if (run.eval_every and done % run.eval_every == 0) or done == total:
                metrics.update(self.evaluate())
                last_score = metrics["eval/normalized_score"]
            if metrics or done == total:
                self._record(phase, done, {**info, **metrics})
            bar.set_postfix(_postfix(info, last_score))
            if (run.save_every and done % run.save_every == 0) or done == total:
                self.save()
        bar.close()

    def _executor(self, num_envs: int) -> ChunkExecutor:
        """Online envs, seeded from the run's seed and progress (a resumed run gets fresh ones)."""
        cfg = self.config
        vec = VecEnv(self.task["env_id"], num_envs, env_kwargs=self.task["env_kwargs"],
                     seed=self.seed * 7919 + self.counters["env_steps"])
        executor = ChunkExecutor(vec, act_steps=cfg.act_steps, obs_history=cfg.obs_history,
                                 normalize=self.normalizer)
        executor.reset()
        return executor

    def _online_off_policy(self) -> None:
        run = self.config.run
        total = run.online_steps
        if self.counters["env_steps"] >= total:
            return
        executor = self._executor(1)
        bar = tqdm(total=total, initial=self.counters["env_steps"], desc="online", unit="env-step",
                   disable=not self.progress, dynamic_ncols=True)
        pending, chunks_since_update, info, last_score = [], 0, {}, None
        next_log = (self.counters["env_steps"] // run.online_log_every + 1) * run.online_log_every
        next_eval = (self.counters["env_steps"] // run.online_eval_every + 1) * run.online_eval_every
        next_save = (self.counters["env_steps"] // run.save_every + 1) * run.save_every
        new_steps = 0
        while self.counters["env_steps"] < total:
            self.key, act_key = jax.random.split(self.key)
            t_env = time.perf_counter()
            chunks, _ = self.agent.sample_actions(jnp.asarray(executor.policy_observations()),
                                                  act_key)
            executed = executor.step_chunks(np.asarray(chunks))
            transitions = transitions_from_chunks(executed, self.normalizer)
            n_new = len(transitions["actions"])
            n_new = min(n_new, total - self.counters["env_steps"])
            transitions = {k: v[:n_new] for k, v in transitions.items()}
            pending.append(transitions)
            self.counters["env_steps"] += n_new
            new_steps += n_new
            self.timing["env_s"] += time.perf_counter() - t_env
            self.timing["env_steps"] += n_new
            chunks_since_update += 1
            bar.update(n_new)
            at_end = self.counters["env_steps"] >= total
            if chunks_since_update >= run.update_every or at_end:
                batch = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
                self.online = _add(self.online, batch)
                pending, chunks_since_update = [], 0
                n_updates = int(round(run.utd * new_steps))
                new_steps = 0
                if self.counters["env_steps"] >= run.start_online_updates and n_updates > 0:
                    info = self._online_updates(n_updates)
            env_steps = self.counters["env_steps"]
            metrics = {}
            if env_steps >= next_log or at_end:
                metrics.update(info)
                if executor.finished:
                    metrics["train/episode_return"] = float(np.mean(
                        [e["return"] for e in executor.finished[-10:]]))
                next_log += run.online_log_every
            if env_steps >= next_eval or at_end:
                metrics.update(self.evaluate())
                last_score = metrics["eval/normalized_score"]
                next_eval += run.online_eval_every
            if metrics:
                self._record("online", env_steps, metrics)
            bar.set_postfix(_postfix(info, last_score))
            if env_steps >= next_save or at_end:
                self.save()
                next_save += run.save_every
        bar.close()

    def _online_updates(self, n_updates: int) -> dict:
        run, infos = self.config.run, []
        while n_updates > 0:
            n = min(n_updates, run.steps_per_dispatch)
            self.key, k = jax.random.split(self.key)
            start = time.perf_counter()
            self.agent, info = fused_updates(
                self.agent, self.offline, self.online, k, num_steps=n, method="update",
                batch_size=run.batch_size, horizon=self.config.horizon,
                obs_history=self.config.obs_history, offline_ratio=float(run.offline_ratio))
            info = jax.device_get(info)
            self.timing["update_s"] += time.perf_counter() - start
            self.timing["updates"] += n
            _check_finite(info, "online", self.counters["env_steps"], self.ckpt)
            infos.append(info)
            n_updates -= n
        return jax.tree.map(lambda *x: float(np.mean(x)), *infos)

    def _online_on_policy(self) -> None:
        run = self.config.run
        total = run.online_steps
        if self.counters["env_steps"] >= total:
            return
        if run.rollout_steps <= 0:
            raise ValueError("On-policy agents need run.rollout_steps > 0")
        executor = self._executor(run.num_envs)
        bar = tqdm(total=total, initial=self.counters["env_steps"], desc="online", unit="env-step",
                   disable=not self.progress, dynamic_ncols=True)
        last_score = None
        next_eval = (self.counters["env_steps"] // run.online_eval_every + 1) * run.online_eval_every
        next_save = (self.counters["env_steps"] // run.save_every + 1) * run.save_every
        while self.counters["env_steps"] < total:
            self.key, k = jax.random.split(self.key)
            t_env = time.perf_counter()
            rollout, n_env = collect_rollout(self.agent, executor, run.rollout_steps, k,
                                             self.normalizer)
            self.timing["env_s"] += time.perf_counter() - t_env
            self.timing["env_steps"] += n_env
            start = time.perf_counter()
            self.agent, info = self.agent.update(rollout)
            info = jax.device_get(info)
            self.timing["update_s"] += time.perf_counter() - start
            self.timing["updates"] += 1
            self.counters["env_steps"] += n_env
            _check_finite(info, "online", self.counters["env_steps"], self.ckpt)
            bar.update(n_env)
            env_steps = self.counters["env_steps"]
            at_end = env_steps >= total
            metrics = dict(info)
            if executor.finished:
                metrics["train/episode_return"] = float(np.mean(
                    [e["return"] for e in executor.finished[-run.num_envs:]]))
            if env_steps >= next_eval or at_end:
                metrics.update(self.evaluate())
                last_score = metrics["eval/normalized_score"]
                next_eval += run.online_eval_every
            self._record("online", env_steps, metrics)
            bar.set_postfix(_postfix(info, last_score))
            if env_steps >= next_save or at_end:
                self.save()
                next_save += run.save_every
        bar.close()

    def train(self) -> dict:
        run = self.config.run
        if (self.run_dir / "summary.json").exists() and self.resumed_from is not None and \
                self.counters["pretrain"] >= run.pretrain_steps and \
                self.counters["offline"] >= run.offline_steps and \
                self.counters["env_steps"] >= run.online_steps:
            self._log("run already finished; summary.json is up to date")
            return json.loads((self.run_dir / "summary.json").read_text())
        self._gradient_phase("pretrain", run.pretrain_steps, "pretrain")
        self._gradient_phase("offline", run.offline_steps, "update")
        if self.scores["offline_score"] is None:
            if self._latest_score() is None and run.init_from:
                # Started from another run with no training before online: score the start.
                self._record("offline", self.counters["offline"], self.evaluate())
            self.scores["offline_score"] = self._latest_score()
            self.save()
        if run.online_steps:
            if self.agent_cls.on_policy:
                self._online_on_policy()
            else:
                self._online_off_policy()
            self.scores["online_score"] = self._latest_score()
        summary = self._summary()
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.save()
        self.logger.close()
        self.ckpt.close()
        return summary

    def _latest_score(self) -> float | None:
        for row in reversed(self.logger.rows):
            v = row.get("eval/normalized_score")
            if v not in (None, ""):
                return float(v)
        return None

    def _summary(self) -> dict:
        run, t = self.config.run, self.timing
        return {
            "agent": self.config.agent_name, "task": self.task_name, "seed": self.seed,
            "dataset_id": self.dataset_id, "dataset_source": self.dataset_source,
            "pretrain_steps": run.pretrain_steps, "offline_steps": run.offline_steps,
            "online_steps": run.online_steps,
            "offline_score": self.scores["offline_score"],
            "online_score": self.scores["online_score"],
            "best_score": self.scores["best_score"],
            "score_unit": ("100 x success rate" if self.task["score"] == "success"
                           else "D4RL normalized return (0 = ref min, 100 = ref max)"),
            "updates_per_s": t["updates"] / t["update_s"] if t["update_s"] else None,
            "env_steps_per_s": t["env_steps"] / t["env_s"] if t["env_s"] else None,
            "wall_s": time.perf_counter() - self.t0,
        }


def _comparable(agent_config: dict | None) -> dict | None:
    """A config without the phase lengths: a resumed run may be extended."""
    if agent_config is None:
        return None
    cfg = json.loads(json.dumps(agent_config, default=str))
    for k in ("pretrain_steps", "offline_steps", "online_steps"):
        cfg.get("run", {}).pop(k, None)
    return cfg


def _postfix(info: dict, score: float | None) -> dict:
    out = {}
    for k, v in info.items():
        if "loss" in k:
            out[k.split("/")[-1] if len(out) == 0 else k] = f"{float(v):.3g}"
            if len(out) >= 2:
                break
    if score is not None:
        out["score"] = f"{score:.1f}"
    return out


def train(config: ml_collections.ConfigDict, task: str, run_dir: str, seed: int = 0,
          dataset: str | None = None, progress: bool = True) -> dict:
    """Run (or resume) one training run and return its summary (see DESIGN.md's run contract)."""
    return Run(config, task, run_dir, seed=seed, dataset=dataset, progress=progress).train()


def load_run(run_dir: str, step: int | None = None):
    """``(agent, normalizer, resolved_config)`` from a run directory's checkpoint, for notebooks."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} has no config.json: is it a dprl run directory?")
    resolved = json.loads(cfg_path.read_text())
    config = ml_collections.ConfigDict(resolved["agent"])
    ckpt = Checkpointer(run_dir)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"No checkpoint in {run_dir / 'checkpoints'}: the run saved none yet.")
    from dprl.data import load_dataset as _load
    data = _load(resolved["dataset_id"])
    normalizer = Normalizer.fit(data.observations)
    offline = Buffer.from_offline(data, normalizer)
    example = jax.device_get(offline.sample(jax.random.PRNGKey(0), 2, config.horizon,
                                            config.obs_history))
    agent = get_agent(config.agent_name).create(int(resolved["seed"]), example, config)
    target = {"agent": agent, "online": None, "key": jax.random.PRNGKey(0)}
    if config.run.online_steps and not get_agent(config.agent_name).on_policy:
        target["online"] = Buffer.empty(config.run.online_steps + config.act_steps,
                                        data.observations.shape[1], config.action_dim)
    state, meta = ckpt.restore(target, step)
    return state["agent"], Normalizer.from_dict(meta["normalizer"]), resolved
