"""The run: BC pretraining -> offline RL -> online finetuning, for any agent (``dprl.run.agent``).

    setup     data <- the task's offline dataset, checked against its env   (dprl.data.offline)
              normalizer <- the dataset's observation statistics
              agent <- Agent.create(seed, example batch, config), or the checkpoint this run
                       resumes from, or another run's (run.init_from)        (dprl.run.checkpoint)
    pretrain  run.pretrain_steps gradient steps of agent.pretrain on offline batches
    offline   run.offline_steps gradient steps of agent.update on offline batches
    online    run.online_steps env steps:
              off-policy  run one chunk in the env, then one jitted step: store it, the updates
                          owed (run.utd per env step, every run.update_every chunks) on batches
                          mixing offline and online data (run.offline_ratio), act the next chunk
              on-policy   a rollout of run.rollout_steps chunk-steps from run.num_envs envs, then
                          one agent.update(rollout)                          (dprl.run.collect)
    each loop a Schedule (dprl.run.schedule) says after which dispatches it writes a metrics row,
              evaluates and checkpoints

``train(config, task, run_dir, get_agent)`` writes DESIGN.md's run contract into ``run_dir``
(config.json, metrics.csv, summary.json, checkpoints/); calling it again resumes from the last
checkpoint. ``run_dir`` is one run's record (``dprl.run.rundir``: lock, identity, clean stops). The
runner never looks inside an agent, and knows agents only through ``get_agent`` (name -> class;
the entry points pass ``agents.get_agent``).
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import ml_collections
import numpy as np

from dprl.run import checkpoint, rundir
from dprl.run.agent import AgentLookup
from dprl.data.buffer import Buffer, transition_block
from dprl.run.collect import collect_rollout, evaluate_agent, make_executor, recent_return, run_chunk
from dprl.run.config import run_config
from dprl.data.offline import Normalizer, load_task_data, task_dataset
from dprl.base.files import atomic_write, read_record
from dprl.base.logging import MetricsLogger, check_finite, log, postfix, progress_bar, timed
from dprl.run.schedule import Due, Schedule
from dprl.envs.tasks import get_task
from dprl.run.updates import fused_updates, replay_step


def train(config: ml_collections.ConfigDict, task: str, run_dir: str,
          get_agent: AgentLookup, seed: int = 0, dataset: str | None = None,
          progress: bool = True, **options) -> dict:
    """Run (or resume) one training run and return its summary (see DESIGN.md's run contract).
    ``options``: ``num_seeds`` (recorded), ``restart``, ``allow_env_mismatch`` (see ``Run``)."""
    with rundir.owned(run_dir), rundir.stop_signals():
        run = Run(config, task, run_dir, get_agent, seed=seed, dataset=dataset,
                  progress=progress, **options)
        try:
            return run.train()
        finally:
            run.close()


class Run:
    """One run's data, agent, counters and loops; ``train`` runs it in its locked ``run_dir``.
    ``restart``: start over even if ``run_dir`` holds another run; ``allow_env_mismatch``: train
    on data of another env than the task's; ``num_seeds``: seeds in the program (multiseed)."""

    def __init__(self, config: ml_collections.ConfigDict, task_name: str, run_dir: str,
                 get_agent: AgentLookup, seed: int = 0, dataset: str | None = None,
                 progress: bool = True, num_seeds: int = 1, restart: bool = False,
                 allow_env_mismatch: bool = False):
        self.run_dir = Path(run_dir)
        self.task_name, self.task = task_name, get_task(task_name)
        self.seed, self.progress = int(seed), progress
        self.agent_cls = get_agent(config.agent_name)
        self.config = run_config(config, self.task, self.agent_cls.on_policy)
        # Identity before the dataset is looked up (or made), again once it is known.
        rundir.check_identity(self.run_dir, {"agent": self.config.to_dict(), "task": task_name,
                                             "seed": self.seed, "num_seeds": num_seeds}, restart)
        # The task and its data source are resolved here, once, and handed down.
        source = task_dataset(self.task, dataset, allow_env_mismatch)  # its metadata only
        self.resolved = checkpoint.run_record(self.config, task_name, self.task, self.seed,
                                              source, num_seeds)
        self.recorded = rundir.check_identity(self.run_dir, self.resolved)
        self.processes = rundir.ProcessLog(self.run_dir)
        self.data = load_task_data(self.task, source, allow_env_mismatch)
        log(f"task {task_name}: dataset {source.dataset_id} ({source.source}, {source.env_id})")
        self.config.action_dim = int(self.data.actions.shape[1])
        self.resolved.update(agent=self.config.to_dict(),
                             reward_relabel=self.data.metadata.get("dprl_relabel"))
        run = self.config.run
        self.normalizer = (Normalizer.fit(self.data.observations) if run.normalize_obs
                           else Normalizer.identity(self.data.observations.shape[1]))
        state = checkpoint.initial_state(self.agent_cls, self.config, self.normalizer.dim, seed)
        self.agent, self.online, self.key = state["agent"], state["online"], state["key"]
        self.eval_key = checkpoint.run_keys(self.seed)[1]
        self.counters = {"pretrain": 0, "offline": 0, "env_steps": 0}
        # The online phase's envs and pending chunk, and what a checkpoint kept of them.
        self.executor, self.loop, self.saved_online = None, None, None
        self.scores = {"offline_score": None, "online_score": None, "best_score": None}
        self.timing = {"update_s": 0.0, "updates": 0, "env_s": 0.0, "env_steps": 0}
        # Phase ends (global steps) outlive the rolling window of checkpoints.
        self.ckpt = checkpoint.Checkpointer(self.run_dir, keep_steps=tuple(
            s for s in (run.pretrain_steps, run.pretrain_steps + run.offline_steps) if s > 0))
        self.resumed_from = self.start(get_agent)
        self.offline = Buffer.from_offline(self.data, self.normalizer)
        self.logger = MetricsLogger(self.run_dir, tensorboard=run.tensorboard,
                                    wandb_project=run.wandb_project or None, config=self.resolved,
                                    resume_step=self.resumed_from)

    # ---- setup and state ------------------------------------------------------------------------
    def start(self, get_agent) -> int | None:
        """Resume from this run's newest readable checkpoint, or start from run.init_from's;
        write config.json if new or extended. Returns the step resumed from (None: fresh)."""
        target, room = self.state(), self.saved_online_room()
        if room is not None:   # the checkpoint's replay buffer, grown below if this run is longer
            target["online"] = self.online.like(room)
        restored = checkpoint.resume(self.ckpt, target, self.resolved)
        if restored is not None:
            state, meta = restored
            online = state["online"]
            if online is not None and online.capacity < self.online.capacity:
                online = online.grown(self.online.room)
            self.agent, self.online, self.key = state["agent"], online, state["key"]
            self.counters, self.scores, self.timing = meta["counters"], meta["scores"], \
                meta["timing"]
            self.normalizer = Normalizer.from_dict(meta["normalizer"])
            self.saved_online = meta.get("online_loop")
            log(f"resuming from checkpoint at step {self.global_step}")
        elif self.config.run.init_from:
            # A run of the same agent gives its whole state, another agent's its BC stage (DSRL
            # takes only the BC stage from any run: ``init_from_bc_stage_only``).
            take = functools.partial(
                checkpoint.init_from, agent=self.agent, config=self.config,
                bc_stage_only=getattr(self.agent, "init_from_bc_stage_only", False))
            self.agent, self.normalizer, self.resolved["init_from"] = take(
                self.config.run.init_from, get_agent=get_agent)
            source = self.resolved["init_from"]
            log(f"initialized from {source['run_dir']} (checkpoint {source['step']}, dataset "
                f"{source['dataset_id']})")
        rundir.write_record(self.run_dir, self.resolved, self.recorded)
        return None if restored is None else self.global_step

    def saved_online_room(self) -> dict | None:
        """The shape of the replay buffer in this run's newest checkpoint (``Buffer.room``), when
        it differs from this run's (the online phase was extended); None otherwise."""
        if self.online is None:
            return None
        for step in reversed(self.ckpt.all_steps()):
            try:
                meta = self.ckpt.read_meta(step)
            except Exception:  # noqa: BLE001  an unreadable checkpoint: resume() reports it
                continue
            room = meta.get("online_room")
            if room is None and meta.get("config"):   # saved before rooms were recorded:
                rows = checkpoint.online_capacity(meta["config"])   # that config's capacity
                room = {"rows": rows, "frames": None if self.online.frames is None else 2 * rows}
            return room if room and room != self.online.room else None
        return None

    @property
    def env_steps(self) -> int:
        return self.counters["env_steps"]

    @property
    def global_step(self) -> int:
        return self.counters["pretrain"] + self.counters["offline"] + self.env_steps

    def state(self) -> dict:
        return {"agent": self.agent, "online": self.online, "key": self.key}

    def save(self) -> None:
        self.processes.wall_s()
        meta = {"counters": self.counters, "scores": self.scores, "timing": self.timing,
                "normalizer": self.normalizer.to_dict(), "config": self.resolved["agent"],
                "record": self.resolved}   # the run's identity, should config.json be lost
        if self.online is not None:
            meta["online_room"] = self.online.room
        if self.executor is not None and self.loop is not None:
            online_loop = checkpoint.online_loop_record(self.executor, self.loop)
            if online_loop is not None:
                meta["online_loop"] = online_loop
        self.ckpt.save(self.global_step, self.state(), meta)

    # ---- the algorithm ----------------------------------------------------------------------
    def train(self) -> dict:
        run = self.config.run
        if self.finished():
            log("run already finished; summary.json is up to date")
            return read_summary(self.run_dir)
        self.gradient_phase("pretrain", "pretrain")
        self.prepare_offline()
        self.gradient_phase("offline", "update")
        self.offline = self.offline.replace(support=None)   # online batches mix in fresh data
        if self.scores["offline_score"] is None:
            if self.logger.latest("eval/normalized_score") is None and run.init_from:
                # Started from another run with no training before online: score the start.
                self.logger.log("offline", self.counters["offline"], self.env_steps,
                                self.processes.wall_s(), self.evaluate(), self.global_step)
            self.scores["offline_score"] = self.logger.latest("eval/normalized_score")
            self.save()
        if run.online_steps:
            self.online_rollouts() if self.agent_cls.on_policy else self.online_replay()
            self.scores["online_score"] = self.logger.latest("eval/normalized_score")
        return self.finish()

    def prepare_offline(self) -> None:
        """Before (or on resuming) the offline phase: what the agent derives from the offline
        data once (``Agent.prepare_offline``, e.g. QGPO's support set), from a key of the run's
        seed, so a resumed run derives the same."""
        prepare = getattr(self.agent, "prepare_offline", None)
        if prepare is None or self.counters["offline"] >= self.config.run.offline_steps:
            return
        key = jax.random.fold_in(checkpoint.run_keys(self.seed)[1], 1)
        # A stop asked for meanwhile ends the run at the last checkpoint (nothing is lost: what
        # prepare derives is derived again on resuming).
        self.offline = prepare(self.offline, key, progress=self.progress,
                               after_chunk=lambda: rundir.raise_if_stopped(self.global_step))

    def gradient_phase(self, phase: str, method: str) -> None:
        """``pretrain`` or ``offline``: fused gradient steps of ``agent.<method>``."""
        gradient_loop(self, phase, method)

    def online_replay(self) -> None:
        """Off-policy online: run a chunk in the env (on the host), then one jitted step stores
        it, runs the updates owed (utd per env step) and samples the next chunk."""
        schedule = Schedule.of(self.config.run, "online")
        if self.env_steps >= schedule.total:
            return
        executor = make_executor(self.task, self.config, self.normalizer, 1, self.env_seed())
        with progress_bar("online", schedule.total, self.env_steps, "env-step",
                          self.progress) as bar:
            def boundary(due: Due, info: dict, updated: bool, chunks) -> None:
                self.loop = {"chunks": chunks}   # what a checkpoint keeps of the loop
                if updated:
                    check_finite(info, "online", self.env_steps, self.ckpt)
                self.at_boundary("online", self.env_steps, due, info, bar,
                                 recent_return(executor, 10))
            replay_loop(self, executor, schedule, boundary,
                        chunks=self.resume_envs(executor).get("chunks"))

    def online_rollouts(self) -> None:
        """On-policy online: collect a rollout from every env, then one update on it."""
        run, schedule = self.config.run, Schedule.of(self.config.run, "online")
        if self.env_steps >= schedule.total:
            return
        executor = make_executor(self.task, self.config, self.normalizer, run.num_envs,
                                 self.env_seed())
        self.loop = self.resume_envs(executor)
        with progress_bar("online", schedule.total, self.env_steps, "env-step",
                          self.progress) as bar:
            while (before := self.env_steps) < schedule.total:
                self.key, key = jax.random.split(self.key)
                with timed(self.timing, "env_s"):
                    rollout, n = collect_rollout(self.agent, executor, run.rollout_steps, key)
                self.timing["env_steps"] += n
                with timed(self.timing, "update_s"):
                    self.agent, info = self.agent.update(rollout)
                    info = jax.device_get(info)
                self.timing["updates"] += 1
                self.counters["env_steps"] += n
                check_finite(info, "online", self.env_steps, self.ckpt)
                self.at_boundary("online", self.env_steps, schedule.due(before, self.env_steps),
                                 info, bar, recent_return(executor, run.num_envs))

    # ---- pieces of the loops, and the end -------------------------------------------------------
    def fused(self, method: str, num_steps: int, phase: str, step: int) -> dict:
        """``num_steps`` fused gradient steps of ``agent.<method>`` on offline batches; their
        mean info."""
        self.key, key = jax.random.split(self.key)
        with timed(self.timing, "update_s"):
            self.agent, info = fused_updates(
                self.agent, self.offline, None, key, num_steps=num_steps, method=method,
                batch_size=self.config.run.batch_size, horizon=self.config.horizon,
                obs_history=self.config.obs_history)
            info = jax.device_get(info)
        self.timing["updates"] += num_steps
        check_finite(info, phase, step, self.ckpt)
        return info

    def at_boundary(self, phase: str, step: int, due: Due, info: dict, bar=None,
                    train_stats: dict | None = None) -> None:
        """What the schedule says is due after a dispatch: a metrics row (the latest info, the
        loop's training statistics, an evaluation), a checkpoint."""
        if due.row:
            row = {**info, **(train_stats or {}), **(self.evaluate() if due.eval else {})}
            if row:
                self.logger.log(phase, step, self.env_steps, self.processes.wall_s(), row,
                                self.global_step)
        if bar is not None:
            bar.update(step - bar.n)
            bar.set_postfix(postfix(info, self.scores["best_score"]), refresh=False)
        if due.save or rundir.stop_requested():
            self.save()
        rundir.raise_if_stopped(self.global_step)

    def evaluate(self) -> dict:
        metrics = evaluate_agent(self.agent, self.eval_key, self.task, self.config,
                                 self.normalizer, self.data.ref_min_score, self.data.ref_max_score)
        score = metrics["eval/normalized_score"]
        if math.isfinite(score) and (self.scores["best_score"] is None
                                     or score > self.scores["best_score"]):
            self.scores["best_score"] = score
        return metrics

    def env_seed(self) -> int:  # from the run's seed and progress (see resume_envs)
        return self.seed * 7919 + self.env_steps

    def resume_envs(self, executor) -> dict:
        """Put the online phase's envs where the checkpoint left them (env state, episode
        counters; the pending chunk is returned), so that the resumed run equals an uninterrupted
        one. Envs whose state cannot be saved (``dprl.envs.vector.saveable``) restart, said in
        one line. Returns what the loop needs (``{'chunks'}`` or ``{}``)."""
        self.executor = executor
        if self.env_steps == 0:
            return {}
        if self.saved_online is not None:
            loop = checkpoint.restore_online_loop(executor, self.saved_online)
            log(f"online: the envs resume where they were at env step {self.env_steps} (env "
                f"state, episodes and the pending chunk restored)")
            return loop
        log(f"online: the envs of {self.task['env_id']} restart at env step {self.env_steps} "
            f"(their state cannot be saved): new episodes from seed {self.env_seed()}, so from "
            f"here on the run differs from an uninterrupted one")
        return {}

    def finished(self) -> bool:
        run, c = self.config.run, self.counters
        return read_summary(self.run_dir) is not None and self.resumed_from is not None and \
            c["pretrain"] >= run.pretrain_steps and c["offline"] >= run.offline_steps and \
            self.env_steps >= run.online_steps

    def finish(self) -> dict:
        self.save()
        summary = checkpoint.summary_record(self.config, self.task_name, self.task, self.seed,
                                            self.resolved, self.scores, self.timing,
                                            self.processes.wall_s())
        atomic_write(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        return summary

    def close(self) -> None:
        self.logger.close()
        self.ckpt.close()


def read_summary(run_dir) -> dict | None:
    """``run_dir``'s summary.json, or None when it is missing or unreadable (not written whole:
    the run is then not finished)."""
    return read_record(Path(run_dir) / "summary.json")[0]


# ---- the loops, for a Run or anything that holds what they advance -------------------------------
def gradient_loop(run, phase: str, method: str) -> None:
    """``pretrain`` or ``offline`` of ``run``: dispatches of fused gradient steps that land on the
    schedule's boundaries, each followed by ``run.at_boundary``. ``run``: a ``Run``, or anything
    with its ``config``, ``counters``, ``progress``, ``fused`` and ``at_boundary`` (multiseed's
    stack of seeds)."""
    schedule = Schedule.of(run.config.run, phase)
    if run.counters[phase] >= schedule.total:
        return
    with progress_bar(phase, schedule.total, run.counters[phase], "upd", run.progress) as bar:
        while (done := run.counters[phase]) < schedule.total:
            n = schedule.next_dispatch(done)
            info = run.fused(method, n, phase, done + n)
            run.counters[phase] = done + n
            run.at_boundary(phase, done + n, schedule.due(done, done + n), info, bar)


def replay_loop(run, executor, schedule: Schedule, on_chunk=None, chunks=None) -> None:
    """The off-policy online loop up to ``schedule.total`` env steps: per chunk, the env steps on
    the host (``run_chunk``), then one ``replay_step`` (store the chunk, the updates owed, act the
    next chunk) and one host sync; then ``on_chunk(due, info, updated, chunks)`` (``info``: the
    latest updates' mean info; ``updated``: whether this chunk ran updates; ``chunks``: the next
    chunks to run). ``chunks``: the first chunks to run (None: sampled for the executor's
    observations). ``run``: a ``Run``, or anything with its ``agent``, ``offline``, ``online``,
    ``key``, ``config``, ``counters`` (``env_steps``) and ``timing``
    (``dprl.run.updates.Learner``). ``counters`` keeps the updates paid (``online_updates``) and
    the chunks collected since the last update dispatch (``online_pending``), so that a run
    resumed from them pays the same updates at the same chunks."""
    slots = schedule.update_slots(run.config.act_steps)
    counters = run.counters
    counters.setdefault("online_updates", schedule.updates_owed(counters["env_steps"]))
    counters.setdefault("online_pending", 0)
    if chunks is None:
        chunks = replay(run, None, 0, executor, slots)[0]
    info = {}
    while (before := counters["env_steps"]) < schedule.total:
        with timed(run.timing, "env_s"):
            transitions = run_chunk(executor, chunks, schedule.total - before)
        counters["env_steps"] += len(transitions["actions"])
        run.timing["env_steps"] += len(transitions["actions"])
        due, owed = schedule.due(before, counters["env_steps"]), 0
        counters["online_pending"] += 1
        if schedule.store_due(counters["online_pending"], due):  # pay what is owed, up to slots
            owed = min(slots, schedule.updates_owed(counters["env_steps"])
                       - counters["online_updates"])
            counters["online_pending"] = 0
        chunks, new_info = replay(run, transitions, owed, executor, slots)
        info = new_info if owed else info
        if on_chunk is not None:
            on_chunk(due, info, owed > 0, chunks)


def replay(run, transitions: dict | None, num_updates: int, executor, slots: int
           ) -> tuple[np.ndarray, dict]:
    """One ``replay_step`` of ``run`` (as ``replay_loop``): store ``transitions`` (None: none),
    run ``num_updates`` updates, sample the next chunks for the executor's observations.
    ``(chunks, info)`` on the host."""
    c = run.config
    block, count = transition_block(transitions, c.act_steps, run.online.obs_spec, c.action_dim)
    with timed(run.timing, "update_s"):
        run.agent, run.online, run.key, chunks, info = replay_step(
            run.agent, run.offline, run.online, run.key, block, np.int32(count),
            np.int32(num_updates), executor.policy_observations(), update_slots=slots,
            batch_size=c.run.batch_size, horizon=c.horizon, obs_history=c.obs_history,
            offline_ratio=float(c.run.offline_ratio),
            offline_mix=c.run.get("offline_mix", "ratio"))
        chunks, info = jax.device_get((chunks, info))  # the one host sync per chunk
    run.timing["updates"] += num_updates
    run.counters["online_updates"] += num_updates
    return chunks, info
