"""A run's state on disk: atomic orbax checkpoints, resuming, starting from another run
(``run.init_from``) and loading a run for inspection (``load_run``).

A checkpoint holds the run state ``{'agent', 'online' (replay buffer or None), 'key'}`` and a JSON
``meta`` (counters, scores, timing, the observation normalizer, the agent config). Orbax writes
each step into a temporary directory and renames it when complete (and marks it with
``commit_success.txt``), so a run killed mid-save keeps its previous checkpoint; a save that fails
(a full disk) removes its temporary directory. Restoring needs a target pytree of the same
structure: ``initial_state`` builds it the way a run starts. ``resume`` restores the newest
readable checkpoint: an unreadable newer one (truncated file, empty metadata) is moved to
``run_dir/corrupt_checkpoints/`` with one line saying which and why.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

import dprl
from dprl.run import rundir
from dprl.run.agent import AgentLookup
from dprl.run.one_step import acting
from dprl.data.buffer import Buffer, example_batch
from dprl.data.offline import Normalizer
from dprl.models.training import BCStage
from dprl.envs.vector import executor_state, set_executor_state
from dprl.base.logging import log

logging.getLogger("absl").setLevel(logging.WARNING)
CORRUPT_DIR = "corrupt_checkpoints"


# After a failed read or write, tensorstore's threads still call back into the asyncio loops orbax
# has closed: each call prints "RuntimeError: Event loop is closed" (an unraisable exception),
# and asyncio logs the failed orbax tasks again when they are collected. The exception the run
# raises already says what failed; these echoes (often a hundred tracebacks) are dropped.
def _drop_closed_loop_echo(unraisable, _previous=sys.unraisablehook):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
        _previous(unraisable)


class _OrbaxTaskEcho(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Task exception was never retrieved")
                    and "orbax" in message)


sys.unraisablehook = _drop_closed_loop_echo
logging.getLogger("asyncio").addFilter(_OrbaxTaskEcho())


class CheckpointError(RuntimeError):
    """No checkpoint of a run can be read; the message names them and the fix."""


class Checkpointer:
    """Saves ``{'state': pytree, 'meta': json dict}`` per step under ``run_dir/checkpoints``.

    The latest ``max_to_keep`` checkpoints are kept, and also every step in ``keep_steps`` (the
    runner passes the phase ends, so the BC actor and the offline-RL agent of a run that went on
    online stay loadable with ``load_run(run_dir, step)``).
    """

    def __init__(self, run_dir: str | os.PathLike, max_to_keep: int = 2,
                 keep_steps: tuple[int, ...] = ()):
        self.directory = Path(run_dir).absolute() / "checkpoints"
        policies = [checkpoint_managers.LatestN(max_to_keep)]
        if keep_steps:
            policies.append(checkpoint_managers.CustomSteps(sorted(set(keep_steps))))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                create=True, enable_async_checkpointing=False,
                preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies)))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        if step in self.manager.all_steps():
            # Same step saved again (e.g. end-of-phase scores added): replace it; the previous
            # checkpoint (max_to_keep >= 2) stays on disk meanwhile.
            self.manager.delete(step)
        try:
            with _held_stderr():
                self.manager.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                    force=True)
                self.manager.wait_until_finished()
        except BaseException:
            # A failed save (disk full, interrupted) leaves no half-written directory behind.
            for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
            raise

    def path(self, step: int) -> Path:
        return self.directory / str(step)

    def move_aside(self, step: int) -> Path:
        """Move checkpoint ``step`` out of the way (kept for inspection, not deleted)."""
        target = self.directory.parent / CORRUPT_DIR / str(step)
        n = 1
        while target.exists():
            target, n = target.with_name(f"{step}.{n}"), n + 1
        target.parent.mkdir(exist_ok=True)
        shutil.move(str(self.path(step)), str(target))
        self.manager.reload()
        return target

    def read_meta(self, step: int) -> dict:
        """The JSON meta of checkpoint ``step`` alone (no target state needed)."""
        with _held_stderr():
            return self.manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, target_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore into the structure of ``target_state``; raises FileNotFoundError if none.

        A checkpoint that also holds entries the target no longer has (a retired field, such as
        the ``one_step: None`` every off-policy agent carried before one-step acting became a
        wrapper) restores what the target has; anything the target has that the checkpoint
        lacks still fails."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"No checkpoint in {self.directory}. Train first (experiments/train.py with this "
                f"--run_dir), or point --run_dir at a run that has checkpoints/.")
        with _held_stderr():
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target_state), meta=ocp.args.JsonRestore()))
            except ValueError as e:
                if "tree structures do not match" not in str(e):
                    raise
                checkpointer = ocp.PyTreeCheckpointer()
                path = self.path(step) / "state"
                missing = _leaf_paths(target_state) - _leaf_paths(
                    checkpointer.metadata(path).item_metadata.tree)
                if missing:   # partial restore would keep the target's values there: refuse
                    raise
                state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
                    target_state, partial_restore=True,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target_state)))
                checkpointer.close()
                return state, self.read_meta(step)
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.close()


def _leaf_paths(tree) -> set[str]:
    """'a/b/0'-style names of a pytree's leaves (a state, or orbax's metadata tree of one)."""
    def name(entry) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(name(e) for e in path) for path, _ in leaves}


@contextlib.contextmanager
def _held_stderr():
    """Hold back what is written to stderr (fd 2) inside the block: printed after it succeeds,
    dropped when it raises. A failed orbax read or write prints its error from every thread of
    tensorstore (and asyncio tracebacks), often a hundred lines; the exception raised carries it,
    and the run reports it in one line. Linux (memfd); elsewhere a no-op."""
    try:
        held = os.memfd_create("dprl-held-stderr")
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no memfd, or no fd 2 to hold back
        yield
        return
    os.dup2(held, 2)
    ok = False
    try:
        yield
        ok = True
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if ok and os.lseek(held, 0, os.SEEK_END):
            os.lseek(held, 0, os.SEEK_SET)
            while chunk := os.read(held, 1 << 16):
                os.write(2, chunk)
        os.close(held)


# ---------------------------------------------------------------------------------------------
# The run state
# ---------------------------------------------------------------------------------------------
def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(key, eval_key)`` of a run: the training key stream and the fixed evaluation key."""
    key, _, eval_key = jax.random.split(jax.random.PRNGKey(seed), 3)  # the middle key once
    return key, eval_key                                                # sampled the example batch


def online_capacity(config) -> int:
    """The online replay buffer's rows for ``config`` (a ConfigDict or its saved dict): the
    online phase's env steps plus one chunk per env, which the last chunk may run past."""
    return config["run"]["online_steps"] + config["act_steps"] * config["run"]["num_envs"]


def initial_state(agent_cls, config, obs_dim: int, seed: int) -> dict:
    """A run's state before training: the created agent (acting one-step around it when the
    config says so: ``dprl.run.one_step.acting``), an empty replay buffer for the online phase
    of an off-policy agent (None otherwise; keeping the agent's ``replay_acting`` records), the
    training key."""
    example = example_batch(obs_dim, config.action_dim, config.horizon, config.obs_history)
    online = None
    if config.run.online_steps and not agent_cls.on_policy:
        capacity = online_capacity(config)
        records = getattr(agent_cls, "replay_acting", lambda c: {})(config)
        online = Buffer.empty(capacity, obs_dim, config.action_dim, acting=records)
    return {"agent": acting(agent_cls, config).create(seed, example, config), "online": online,
            "key": run_keys(seed)[0]}


def run_record(config, task_name: str, task: dict, seed: int, dataset, num_seeds: int = 1
               ) -> dict:
    """config.json: what identifies the run (``dprl.run.rundir.IDENTITY``: the agent config, task,
    dataset id and fingerprint, seed, num_seeds), where the data and the code came from.
    ``dataset`` is the run's ``dprl.data.offline.TaskDataset``."""
    return {"agent": config.to_dict(), "task": task_name, "task_preset": task, "seed": seed,
            "num_seeds": num_seeds, "dataset_id": dataset.dataset_id,
            "dataset_source": dataset.source, "dataset_fingerprint": dataset.fingerprint,
            "task_env_id": task["env_id"], "dataset_env_id": dataset.env_id,
            "dprl_version": dprl.__version__, "git_commit": git_commit(),
            "jax_backend": jax.default_backend()}


def summary_record(config, task_name: str, task: dict, seed: int, record: dict, scores: dict,
                   timing: dict, wall_s: float) -> dict:
    """summary.json: the run's scores, budgets, data (both env ids: the task's and the one the
    dataset was recorded in), throughput and wall time (``wall_s``: every process of the run)."""
    run, t = config.run, timing
    preset = config.get("preset")
    return {
        "agent": config.agent_name, "preset": preset,
        "agent_label": f"{config.agent_name}:{preset}" if preset else config.agent_name,
        "task": task_name, "seed": seed,
        "dataset_id": record["dataset_id"], "dataset_source": record["dataset_source"],
        "task_env_id": record["task_env_id"], "dataset_env_id": record["dataset_env_id"],
        "pretrain_steps": run.pretrain_steps, "offline_steps": run.offline_steps,
        "online_steps": run.online_steps, **scores,
        "score_unit": ("100 x success rate" if task["score"] == "success"
                       else "D4RL normalized return (0 = ref min, 100 = ref max)"),
        "updates_per_s": t["updates"] / t["update_s"] if t["update_s"] else None,
        "env_steps_per_s": t["env_steps"] / t["env_s"] if t["env_s"] else None,
        "wall_s": wall_s}


def online_loop_record(executor, loop: dict) -> dict | None:
    """What a checkpoint keeps of the online loop (JSON): the executor's envs, episodes and
    observation history (``dprl.envs.vector.executor_state``) and the pending chunk
    (``loop['chunks']``, sampled but not yet run: off-policy); None when the envs' state cannot
    be saved (they restart on resume)."""
    envs = executor_state(executor)
    if envs is None:
        return None
    chunks = loop.get("chunks")
    return {"executor": envs, "chunks": None if chunks is None else
            {"a": np.asarray(chunks).tolist(), "dtype": str(np.asarray(chunks).dtype)}}


def restore_online_loop(executor, record: dict) -> dict:
    """Set the executor's envs from ``online_loop_record``'s record; returns ``{'chunks'}``
    (the pending chunk) when there was one."""
    set_executor_state(executor, record["executor"])
    chunks = record.get("chunks")
    return {} if chunks is None else {"chunks": np.asarray(chunks["a"], chunks["dtype"])}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------------------------
# Resume, init_from, load_run
# ---------------------------------------------------------------------------------------------
def resume(ckpt: Checkpointer, target: dict, record: dict) -> tuple[dict, dict] | None:
    """The newest readable checkpoint restored into ``target`` as ``(state, meta)``; None without
    any checkpoint.

    Unreadable newer checkpoints are moved aside (``Checkpointer.move_aside``), one line each;
    when none can be read, ``CheckpointError`` names them all. ``record`` is this run's
    config.json-to-be: a checkpoint of another agent config is refused (the phase lengths may
    differ: a finished run can be extended), and the record keeps how the run started
    (``init_from``) from the config.json already there.
    """
    restored = newest_readable(ckpt, lambda step: ckpt.restore(target, step), move=True)
    if restored is None:
        return None
    state, meta = restored
    diffs = rundir.differences({"agent": meta.get("config")}, {"agent": record["agent"]},
                               "checkpoint") if meta.get("config") is not None else []
    if diffs:
        raise rundir.RunMismatch(
            f"{ckpt.directory.parent} holds a run with a different agent config: "
            f"{'; '.join(diffs[:6])}. Resume it with the same command, or choose a new "
            f"--run_dir (or --restart to start over here).")
    config_path = ckpt.directory.parent / "config.json"
    previous = json.loads(config_path.read_text()) if config_path.exists() else {}
    if "init_from" in previous:
        record["init_from"] = previous["init_from"]
    return state, meta


def newest_readable(ckpt: Checkpointer, read, move: bool, steps: list[int] | None = None):
    """``read(step)`` of the newest checkpoint it succeeds on (None without checkpoints); one
    line per unreadable newer one, which is moved to ``corrupt_checkpoints/`` when ``move`` (a
    resuming run) and left in place otherwise (inspection). ``CheckpointError`` when none can be
    read."""
    unreadable = []
    for step in (reversed(ckpt.all_steps()) if steps is None else steps):
        try:
            out = read(step)
        except Exception as e:  # noqa: BLE001  orbax/tensorstore raise many types for bad files
            unreadable.append((step, _first_line(e)))
            continue
        for bad, why in unreadable:
            where = f"moved to {ckpt.move_aside(bad)}" if move else "left in place"
            log(f"checkpoint {bad} in {ckpt.directory} is unreadable ({why}); {where}; "
                f"using the newest readable checkpoint, {step}")
        return out
    if unreadable:
        raise CheckpointError(
            "no checkpoint of this run can be read: " + "; ".join(
                f"{ckpt.path(s)} ({why})" for s, why in unreadable) + ". Start the run "
            "over with --restart (its contents are moved aside), or use another --run_dir")
    return None


def _first_line(e: BaseException, limit: int = 200) -> str:
    """Why a checkpoint could not be read, in one short line: the exception's first line without
    tensorstore's spec; a long one keeps its start (the error code) and its end (the cause)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = re.split(r"[\s\[]*tensorstore_spec", text)[0]
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else f"{text[:70]} ... {text[-(limit - 75):]}"


def init_from(spec: str, agent, config: ml_collections.ConfigDict, get_agent: AgentLookup,
              bc_stage_only: bool = False) -> tuple[Any, Normalizer, dict]:
    """``(agent, normalizer, record)`` taken from another run's checkpoint ``RUN_DIR[:STEP]``.

    A run of the same agent gives its whole state (parameters, optimizers, EMA, targets) in the
    structure of ``agent``, whose ``config`` applies from here on, so its network shapes must
    match. A run of another agent gives its BC stage only (``take_bc_stage``): e.g. DQL, DPPO
    and DSRL finetuned online from one BC actor. ``bc_stage_only``: the BC stage from a run of
    the same agent too."""
    source, step = split_spec(spec)
    theirs, normalizer, resolved = load_run(source, get_agent, step)
    # load_run has checked that source is a run directory: reading its latest step is safe.
    record = {"run_dir": str(Path(source).absolute()),
              "step": step if step is not None else Checkpointer(source).latest_step(),
              "dataset_id": resolved["dataset_id"]}
    if bc_stage_only or resolved["agent"]["agent_name"] != config.agent_name:
        stage = take_bc_stage(spec, theirs, resolved["agent"], config)
        record["taken"] = "the BC stage (actor weights, EMA and step; a fresh optimizer)"
        return agent.replace(**{bc_stage_field(agent): stage(bc_stage_of(agent))}), \
            normalizer, record
    own, leaves = jax.tree.leaves(agent), jax.tree.leaves(theirs)
    if [jnp.shape(x) for x in own] != [jnp.shape(x) for x in leaves]:
        raise ValueError(f"run.init_from={spec!r}: its networks differ in shape from this "
                         f"run's config; use the same network sizes (hidden_dims, horizon, "
                         f"obs_history) as {source}/config.json.")
    return jax.tree.unflatten(jax.tree.structure(agent), leaves), normalizer, record


def split_spec(spec: str) -> tuple[str, int | None]:
    """``'RUN_DIR[:STEP]'`` -> ``(RUN_DIR, STEP or None)``."""
    source, sep, step = spec.rpartition(":")
    return (source, int(step)) if sep and step.isdigit() else (spec, None)


# What makes two BC policies the same network and denoising process (not how they sample).
ACTOR_NETWORK_KEYS = ("model", "backbone", "hidden_dims", "activation", "residual", "time_dim",
                      "time_activation", "time_freqs", "kernel_init", "unet_channels",
                      "unet_kernel_size", "schedule", "diffusion_steps")


def bc_stage_field(agent) -> str:
    """The name of ``agent``'s BC stage field (``actor`` for most agents, ``bc`` for DPPO)."""
    names = [name for name in getattr(agent, "__dataclass_fields__", {})
             if isinstance(getattr(agent, name), BCStage)]
    if len(names) != 1:
        raise ValueError(f"{type(agent).__module__} has {len(names)} BC stages; "
                         f"run.init_from from another agent's run needs exactly one")
    return names[0]


def bc_stage_of(agent):
    return getattr(agent, bc_stage_field(agent))


def take_bc_stage(spec: str, theirs, their_config: dict, config: ml_collections.ConfigDict):
    """``replace(own_stage) -> own_stage`` with another agent's BC stage in it: its weights, EMA
    weights and step (the EMA's schedule goes on from there); the optimizer's moments start
    fresh, as agents' optimizers differ (rates, clipping). The actor's network and denoising
    process (``ACTOR_NETWORK_KEYS``), ``horizon`` and ``obs_history`` must be the same; the
    sampler's settings need not."""
    source, _ = split_spec(spec)
    own = config.to_dict()
    plain = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731  json lists
    wrong = [f"{k}: {their_config.get(k)} there, {own.get(k)} here"
             for k in ("horizon", "obs_history") if their_config.get(k) != own.get(k)]
    wrong += [f"actor.{k}: {their_config['actor'].get(k)} there, {own['actor'].get(k)} here"
              for k in ACTOR_NETWORK_KEYS
              if plain(their_config["actor"].get(k)) != plain(own["actor"].get(k))]
    if wrong:
        raise ValueError(f"run.init_from={spec!r}: its BC policy differs from this config's "
                         f"({'; '.join(wrong)}); set them as in {source}/config.json")
    try:
        stage = bc_stage_of(theirs)
    except ValueError:
        raise ValueError(f"run.init_from={spec!r}: its {their_config['agent_name']!r} agent "
                         f"has no BC stage to take") from None

    def replace(own_stage):
        ema = None if own_stage.ema_params is None else (
            stage.policy_params if stage.ema_params is None else stage.ema_params)
        return own_stage.replace(params=stage.params, ema_params=ema, step=stage.step)
    return replace


def load_run(run_dir: str | os.PathLike, get_agent: AgentLookup,
             step: int | None = None) -> tuple[Any, Normalizer, dict]:
    """``(agent, normalizer, resolved_config)`` from a run directory's checkpoint (the latest,
    or ``step``); ``get_agent`` maps the config's agent name to its class (``agents.get_agent``)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} has no config.json: is it a dprl run directory?")
    resolved = json.loads(cfg_path.read_text())
    config = ml_collections.ConfigDict(resolved["agent"])
    ckpt = Checkpointer(run_dir)
    if not ckpt.all_steps():
        raise FileNotFoundError(f"No checkpoint in {run_dir / 'checkpoints'}: the run saved none yet.")

    def read(s):
        normalizer = Normalizer.from_dict(ckpt.read_meta(s)["normalizer"])
        target = initial_state(get_agent(config.agent_name), config, normalizer.dim,
                               int(resolved["seed"]))
        return ckpt.restore(target, s)[0]["agent"], normalizer

    try:   # the step asked for, or the newest readable one (as a resuming run, without moving)
        agent, normalizer = newest_readable(ckpt, read, move=False,
                                            steps=None if step is None else [step])
    finally:
        ckpt.close()
    return agent, normalizer, resolved
