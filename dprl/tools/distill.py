"""A one-step actor for a finished run: distill its multi-step actor after training.

``distill_run`` loads a run (``dprl.run.checkpoint.load_run``), trains ``mu(s, z)`` on the
teacher's deterministic samples at the observations of the run's own dataset
(``OneStep.distill``, the step that ``act_with='one_step'`` takes alongside training:
``dprl.run.one_step``; ``dprl/models/one_step.py`` says why this method), saves it into
``RUN_DIR/one_step/`` (orbax, written to a temporary directory and renamed when complete) with
``RUN_DIR/one_step/one_step.json`` (settings, loss, wall time, scores) and evaluates the
multi-step actor, its deterministic teacher sampler and the one-step actor on the run's
evaluation episodes. ``load_one_step`` gives back the run's agent in the one-step wrapper, acting
with the saved ``mu``. The entry point is ``experiments/distill.py``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from dprl.run.agent import AgentLookup
from dprl.data.buffer import Buffer
from dprl.run.checkpoint import _held_stderr, load_run
from dprl.run.collect import evaluate_agent
from dprl.data.offline import load_task_data
from dprl.base.logging import log, progress_bar
from dprl.models.one_step import check_act_with
from dprl.base.files import atomic_write
from dprl.envs.tasks import get_task
from dprl.run.one_step import OneStep, acting
from dprl.run.updates import fused_updates

ONE_STEP_DIR = "one_step"


def one_step_config(agent_config: dict, get_agent: AgentLookup) -> ml_collections.ConfigDict:
    """The run's agent config acting one-step; ValueError (before any work) if it cannot."""
    config = ml_collections.ConfigDict(agent_config)
    agent_cls = get_agent(config.agent_name)
    if "act_with" not in config:  # a run recorded before the key existed
        config.act_with = "multi_step"
    if config.get("policy_extraction") == "one_step":
        raise ValueError(f"this {config.agent_name!r} run (policy_extraction='one_step', FQL) "
                         f"already acts with a one-step policy: nothing to distill")
    config.act_with = "one_step"
    check_act_with(config, agent_cls.on_policy)
    acting(agent_cls, config)   # the agent gives a teacher
    return config


def distill_run(run_dir: str | os.PathLike, get_agent: AgentLookup, steps: int = 20_000,
                batch_size: int = 256, steps_per_dispatch: int = 500, episodes: int = 0,
                seed: int = 0, progress: bool = True) -> dict:
    """Distill, save and evaluate (module docstring). Returns the record written to
    ``one_step.json``: steps, final loss, wall seconds, and per actor ``score`` (the task's
    normalized score) and ``return_mean``."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} has no config.json: is it a dprl run directory?")
    if steps < 1 or batch_size < 1 or steps_per_dispatch < 1:
        raise ValueError(f"steps ({steps}), batch_size ({batch_size}) and steps_per_dispatch "
                         f"({steps_per_dispatch}) must be >= 1")
    resolved = json.loads(cfg_path.read_text())
    config = one_step_config(resolved["agent"], get_agent)   # refuses before any work
    agent, normalizer, _ = load_run(run_dir, get_agent)
    agent = multi_step(agent)
    task_name, task = resolved["task"], get_task(resolved["task"])
    data = load_task_data(task_name, resolved["dataset_id"], allow_env_mismatch=True)
    offline = Buffer.from_offline(data, normalizer)
    key = jax.random.PRNGKey(seed)
    key, init_key, example_key = jax.random.split(key, 3)
    obs = offline.sample(example_key, 2, config.horizon, config.obs_history)["observations"]
    learner = OneStep.of(agent, config, init_key, obs)

    log(f"distilling {run_dir}'s {config.agent_name} actor into a one-step actor: {steps} "
        f"steps of batch {batch_size} on {len(data.observations)} dataset observations")
    start, done, info = time.perf_counter(), 0, {}
    bar = progress_bar("distill", steps, 0, "step", progress)
    while done < steps:
        n = min(steps_per_dispatch, steps - done)
        key, dispatch_key = jax.random.split(key)
        learner, info = fused_updates(learner, offline, None, dispatch_key, num_steps=n,
                                      method="distill", batch_size=batch_size,
                                      horizon=config.horizon, obs_history=config.obs_history)
        info = {k: float(v) for k, v in jax.device_get(info).items()}
        if not np.isfinite(info["one_step/distill_loss"]):
            raise FloatingPointError(f"distillation diverged at step {done + n}: {info}")
        done += n
        bar.update(n)
        bar.set_postfix(loss=f"{info['one_step/distill_loss']:.4g}")
    bar.close()
    distill_s = time.perf_counter() - start

    record = {"run_dir": str(run_dir.absolute()), "agent": config.agent_name, "task": task_name,
              "steps": steps, "batch_size": batch_size, "seed": seed,
              "distill_loss": info["one_step/distill_loss"], "distill_wall_s": distill_s,
              "hidden_dims": list(config.actor.hidden_dims),
              "activation": config.actor.activation,
              "teacher": ("flow Euler" if config.actor.model == "flow"
                          else "DDIM eta 0") + f", {agent.actor.model.num_sampling_steps} steps"}
    save_one_step(run_dir, learner.mu.params, record)

    run = ml_collections.ConfigDict(config.run.to_dict())
    if episodes:
        run.eval_episodes = episodes
    eval_config = ml_collections.ConfigDict({"act_steps": config.act_steps,
                                             "obs_history": config.obs_history, "run": run})
    eval_key = jax.random.PRNGKey(seed + 1000)
    actors = {"multi_step": agent, "multi_step_teacher_sampler": deterministic_sampler(agent),
              "one_step": learner}
    scores = {}
    for name, actor in actors.items():
        if actor is None:
            continue
        m = evaluate_agent(actor, eval_key, task, eval_config, normalizer, data.ref_min_score,
                           data.ref_max_score)
        scores[name] = {"score": m["eval/normalized_score"],
                        "return_mean": m["eval/return_mean"], "episodes": run.eval_episodes}
        log(f"{name}: score {scores[name]['score']:.1f} (return {m['eval/return_mean']:.1f}, "
            f"{run.eval_episodes} episodes)")
    record["eval"] = scores
    record["score_unit"] = ("100 x success rate" if task["score"] == "success"
                            else "D4RL normalized return (0 = ref min, 100 = ref max)")
    write_json(run_dir / ONE_STEP_DIR / "one_step.json", record)
    log(f"wrote the one-step actor to {run_dir / ONE_STEP_DIR} (one_step.json: its scores)")
    return record


def multi_step(agent):
    """The agent itself, out of the one-step wrapper a run acting one-step saved it in."""
    return agent.agent if isinstance(agent, OneStep) else agent


def deterministic_sampler(agent):
    """The agent acting multi-step with its teacher's sampler (DDIM eta 0) when its diffusion
    actor samples otherwise; None when it already is (a flow, or DDIM eta 0)."""
    model = agent.actor.model
    cfg = model.config
    if cfg.model != "diffusion" or (cfg.sampler == "ddim" and cfg.ddim_eta == 0.0):
        return None
    actor_cfg = ml_collections.ConfigDict(cfg.to_dict())
    actor_cfg.sampler, actor_cfg.ddim_eta = "ddim", 0.0
    model = dataclasses.replace(model, config=ml_collections.FrozenConfigDict(actor_cfg))
    return agent.replace(actor=agent.actor.replace(model=model))


def save_one_step(run_dir: Path, params, record: dict) -> Path:
    """``run_dir/one_step/`` = ``params/`` (orbax) + ``one_step.json``, written into a temporary
    directory beside it and renamed into place when complete (an earlier one is replaced)."""
    target = run_dir.absolute() / ONE_STEP_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".one_step-tmp-", dir=target.parent))
    try:
        with _held_stderr():
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(tmp / "params", params)
            checkpointer.wait_until_finished()
            checkpointer.close()
        write_json(tmp / "one_step.json", record)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=".one_step-old-", dir=target.parent))
            os.replace(target, old / ONE_STEP_DIR)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_json(path: Path, record: dict) -> None:
    atomic_write(path, json.dumps(record, indent=2))


def load_one_step(run_dir: str | os.PathLike, get_agent: AgentLookup):
    """``(agent, normalizer, record)``: the run's agent acting with the one-step actor that
    ``distill_run`` saved in ``run_dir/one_step/``."""
    run_dir = Path(run_dir)
    path = run_dir / ONE_STEP_DIR
    if not (path / "one_step.json").exists():
        raise FileNotFoundError(f"{path} holds no one-step actor: distill it first "
                                f"(python experiments/distill.py --run_dir {run_dir})")
    record = json.loads((path / "one_step.json").read_text())
    resolved = json.loads((run_dir / "config.json").read_text())
    config = one_step_config(resolved["agent"], get_agent)
    agent, normalizer, _ = load_run(run_dir, get_agent)
    agent = multi_step(agent)
    obs = jnp.zeros((2, normalizer.dim) if config.obs_history == 1
                    else (2, config.obs_history, normalizer.dim))
    learner = OneStep.of(agent, config, jax.random.PRNGKey(0), obs)
    with _held_stderr():
        checkpointer = ocp.StandardCheckpointer()
        params = checkpointer.restore((path / "params").absolute(), learner.mu.params)
        checkpointer.close()
    return learner.replace(mu=learner.mu.replace(params=params)), normalizer, record
