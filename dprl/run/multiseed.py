"""S seeds of one (agent, task) in one program: the gradient phases ``vmap``ped over seeds.

``train_seeds(config, task, run_dirs, seeds, get_agent)`` writes the same S run directories that
S separate ``dprl.run.runner.train`` calls would write (config.json, metrics.csv, summary.json,
checkpoints):

- each seed gets its own ``Run`` (same dataset, normalizer, ``Agent.create(seed)``, PRNG key
  stream, and the same ``Schedule`` of dispatches as a separate run);
- the pretrain and offline phases stack the S agents (leading axis) and run ``vmapped_updates``:
  one XLA program updates every seed per dispatch, with each seed's own key;
- after each dispatch every run handles what its schedule says is due (``Run.at_boundary``:
  log, evaluate, checkpoint) exactly as alone; the stack is unstacked into the runs first when
  they evaluate or save;
- the online phase (env interaction, Python-side) runs per seed, one after the other, through the
  ordinary runner.

Parameters after N vmapped steps equal those of N separate steps up to float rounding (batched
matmuls may sum in another order); ``tests/test_experiments.py`` checks it. Timing fields in each
summary count the shared vmapped wall time as that seed's update time.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dprl.run import rundir
from dprl.run.agent import AgentLookup
from dprl.base.logging import check_finite, postfix
from dprl.run.runner import Run, log
from dprl.run.schedule import Schedule
from dprl.run.updates import stack, unstack, vmapped_updates


def seed_dirs(run_dir: str | Path, seeds: Sequence[int]) -> list[str]:
    """``run_dir/seed<k>`` per seed (the grid's layout)."""
    return [str(Path(run_dir) / f"seed{s}") for s in seeds]


def vmapped_phase(runs: list[Run], phase: str, method: str) -> None:
    """``Run.gradient_phase`` for S runs at once: one vmapped dispatch updates every seed."""
    lead = runs[0]
    schedule = Schedule.of(lead.config.run, phase)
    done = lead.counters[phase]
    if any(r.counters[phase] != done for r in runs):
        raise ValueError(f"the runs stand at different {phase} steps "
                         f"({[r.counters[phase] for r in runs]}); resume them separately")
    if done >= schedule.total:
        return
    agents = stack([r.agent for r in runs])
    while done < schedule.total:
        n = schedule.next_dispatch(done)
        keys = []
        for r in runs:  # the same key stream as a separate run
            r.key, k = jax.random.split(r.key)
            keys.append(k)
        start = time.perf_counter()
        agents, infos = vmapped_updates(
            agents, lead.offline, jnp.stack(keys), num_steps=n, method=method,
            batch_size=lead.config.run.batch_size, horizon=lead.config.horizon,
            obs_history=lead.config.obs_history)
        infos = jax.device_get(infos)
        elapsed = time.perf_counter() - start
        due = schedule.due(done, done + n)
        done += n
        if due.eval or due.save or rundir.stop_requested():
            for r, a in zip(runs, unstack(agents, len(runs))):
                r.agent = a
        interrupted = None
        for i, r in enumerate(runs):
            info = {k: np.asarray(v)[i] for k, v in infos.items()}
            r.timing["update_s"] += elapsed
            r.timing["updates"] += n
            r.counters[phase] = done
            check_finite(info, phase, done, r.ckpt)
            try:
                r.at_boundary(phase, done, due, info)
            except rundir.Interrupted as e:  # every seed checkpoints before the stop
                interrupted = e
        if interrupted is not None:
            raise interrupted
        if lead.progress:
            log(f"{phase} {done}/{schedule.total} x{len(runs)} seeds "
                f"{postfix({k: np.mean(v) for k, v in infos.items()}, None)} "
                f"scores {[r.scores['best_score'] for r in runs]}")
    for r, a in zip(runs, unstack(agents, len(runs))):
        r.agent = a


def train_seeds(config: ml_collections.ConfigDict, task: str, run_dirs: Sequence[str],
                seeds: Sequence[int], get_agent: AgentLookup,
                dataset: str | None = None, progress: bool = True, **options) -> list[dict]:
    """Train ``len(seeds)`` seeds with the gradient phases in one vmapped program; return the
    summaries (each also in its run directory's summary.json). Every seed's directory is locked
    before any data is loaded; ``options`` as ``dprl.run.runner.train`` (``restart``,
    ``allow_env_mismatch``)."""
    if len(run_dirs) != len(seeds):
        raise ValueError("one run directory per seed")
    runs = []
    with rundir.owned(*run_dirs), rundir.stop_signals():
        try:
            for d, s in zip(run_dirs, seeds):
                runs.append(Run(config, task, d, get_agent, seed=s, dataset=dataset,
                                progress=progress, num_seeds=len(seeds), **options))
            unfinished = [r for r in runs if not (r.run_dir / "summary.json").exists()]
            if unfinished:
                vmapped_phase(unfinished, "pretrain", "pretrain")
                vmapped_phase(unfinished, "offline", "update")
            # The rest (offline score, online phase, summary) is the ordinary runner's, seed by
            # seed.
            return [r.train() for r in runs]
        finally:
            for r in runs:
                r.close()
