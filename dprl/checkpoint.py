"""A run's state on disk: atomic orbax checkpoints, resuming, starting from another run
(``run.init_from``) and loading a run for inspection (``load_run``).

A checkpoint holds the run state ``{'agent', 'online' (replay buffer or None), 'key'}`` and a JSON
``meta`` (counters, scores, timing, the observation normalizer, the agent config). Orbax writes
each step into a temporary directory and renames it when complete (and marks it with
``commit_success.txt``), so a run killed mid-save keeps its previous checkpoint. Restoring needs
a target pytree of the same structure: ``initial_state`` builds it the way a run starts.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

import dprl
from dprl.agent import AgentLookup
from dprl.buffer import Buffer, example_batch
from dprl.data import Normalizer

logging.getLogger("absl").setLevel(logging.WARNING)


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

    def save(self, step: int, state: Any, meta: dict) -> None:
        if step in self.manager.all_steps():
            # Same step saved again (e.g. end-of-phase scores added): replace it; the previous
            # checkpoint (max_to_keep >= 2) stays on disk meanwhile.
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def read_meta(self, step: int) -> dict:
        """The JSON meta of checkpoint ``step`` alone (no target state needed)."""
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, target_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore into the structure of ``target_state``; raises FileNotFoundError if none."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"No checkpoint in {self.directory}. Train first (experiments/train.py with this "
                f"--run_dir), or point --run_dir at a run that has checkpoints/.")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target_state), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.close()


# ---------------------------------------------------------------------------------------------
# The run state
# ---------------------------------------------------------------------------------------------
def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(key, eval_key)`` of a run: the training key stream and the fixed evaluation key."""
    key, _, eval_key = jax.random.split(jax.random.PRNGKey(seed), 3)  # the middle key once
    return key, eval_key                                                # sampled the example batch


def initial_state(agent_cls, config, obs_dim: int, seed: int) -> dict:
    """A run's state before training: the created agent, an empty replay buffer for the online
    phase of an off-policy agent (None otherwise), the training key."""
    example = example_batch(obs_dim, config.action_dim, config.horizon, config.obs_history)
    online = None
    if config.run.online_steps and not agent_cls.on_policy:
        capacity = config.run.online_steps + config.act_steps * config.run.num_envs
        online = Buffer.empty(capacity, obs_dim, config.action_dim)
    return {"agent": agent_cls.create(seed, example, config), "online": online,
            "key": run_keys(seed)[0]}


def run_record(config, task_name: str, task: dict, seed: int, data) -> dict:
    """config.json: the resolved config and where the data and the code came from."""
    return {"agent": config.to_dict(), "task": task_name, "task_preset": task, "seed": seed,
            "dataset_id": data.dataset_id, "dataset_source": data.source,
            "dataset_provenance": data.metadata.get("dprl", {}),
            "reward_relabel": data.metadata.get("dprl_relabel"),
            "dprl_version": dprl.__version__, "git_commit": git_commit(),
            "jax_backend": jax.default_backend()}


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
    """The latest checkpoint restored into ``target`` as ``(state, meta)``; None without one.

    ``record`` is this run's config.json-to-be: a checkpoint of another agent config is refused
    (the phase lengths may differ: a finished run can be extended), and the record keeps how the
    run started (``init_from``) from the config.json already there.
    """
    if ckpt.latest_step() is None:
        return None
    state, meta = ckpt.restore(target)
    if _comparable(meta.get("config")) != _comparable(record["agent"]):
        raise ValueError(f"{ckpt.directory.parent} holds a run with a different agent config; "
                         f"resume it with the same command, or choose a new --run_dir.")
    config_path = ckpt.directory.parent / "config.json"
    previous = json.loads(config_path.read_text()) if config_path.exists() else {}
    if "init_from" in previous:
        record["init_from"] = previous["init_from"]
    return state, meta


def _comparable(agent_config: dict | None) -> dict | None:
    """A config without the phase lengths: a resumed run may be extended."""
    if agent_config is None:
        return None
    cfg = json.loads(json.dumps(agent_config, default=str))
    for k in ("pretrain_steps", "offline_steps", "online_steps"):
        cfg.get("run", {}).pop(k, None)
    return cfg


def init_from(spec: str, agent, agent_name: str, get_agent: AgentLookup
              ) -> tuple[Any, Normalizer, dict]:
    """``(agent, normalizer, record)`` taken from another run's checkpoint ``RUN_DIR[:STEP]``:
    its agent state (parameters, optimizers, EMA, targets) in the structure of ``agent``, whose
    config applies from here on, so its network shapes must match."""
    source, sep, step = spec.rpartition(":")
    if not (sep and step.isdigit()):
        source, step = spec, ""
    theirs, normalizer, resolved = load_run(source, get_agent, int(step) if step else None)
    if resolved["agent"]["agent_name"] != agent_name:
        raise ValueError(f"run.init_from={spec!r} holds a {resolved['agent']['agent_name']!r} "
                         f"agent, but this run trains {agent_name!r}.")
    own, leaves = jax.tree.leaves(agent), jax.tree.leaves(theirs)
    if [jnp.shape(x) for x in own] != [jnp.shape(x) for x in leaves]:
        raise ValueError(f"run.init_from={spec!r}: its networks differ in shape from this "
                         f"run's config; use the same network sizes (hidden_dims, horizon, "
                         f"obs_history) as {source}/config.json.")
    # load_run has checked that source is a run directory: reading its latest step is safe.
    step = int(step) if step else Checkpointer(source).latest_step()
    record = {"run_dir": str(Path(source).absolute()), "step": step,
              "dataset_id": resolved["dataset_id"]}
    return jax.tree.unflatten(jax.tree.structure(agent), leaves), normalizer, record


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
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {run_dir / 'checkpoints'}: the run saved none yet.")
    normalizer = Normalizer.from_dict(ckpt.read_meta(step)["normalizer"])
    target = initial_state(get_agent(config.agent_name), config, normalizer.dim,
                           int(resolved["seed"]))
    state, _ = ckpt.restore(target, step)
    ckpt.close()
    return state["agent"], normalizer, resolved
