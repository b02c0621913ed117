"""S seeds of one (agent, task) in one program: the gradient phases ``vmap``ped over seeds.

``train_seeds(config, task, run_dirs, seeds, get_agent)`` writes the same S run directories that
S separate ``dprl.run.runner.train`` calls would write (config.json, metrics.csv, summary.json,
checkpoints):

- each seed gets its own ``Run`` (same dataset, normalizer, ``Agent.create(seed)``, PRNG key
  stream, and the same ``Schedule`` of dispatches as a separate run);
- the pretrain and offline phases are the runner's own loop (``gradient_loop``) driving
  ``Seeds``: the S agents stacked (leading axis), each dispatch one ``vmapped_updates``, one XLA
  program that updates every seed with each seed's own key;
- after each dispatch every run handles what its schedule says is due (``Run.at_boundary``:
  log, evaluate, checkpoint) exactly as alone; the stack is unstacked into the runs first when
  they evaluate or save; with several local devices the stack is spread over them
  (``dprl.run.sharding.SeedPlacement``: padded to a multiple of the devices used);
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
from dprl.run.runner import Run, gradient_loop
from dprl.run.schedule import Due
from dprl.run.sharding import SeedPlacement
from dprl.run.updates import stack, unstack, vmapped_updates


def seed_dirs(run_dir: str | Path, seeds: Sequence[int]) -> list[str]:
    """``run_dir/seed<k>`` per seed (the grid's layout)."""
    return [str(Path(run_dir) / f"seed{s}") for s in seeds]


class Seeds:
    """S runs standing at the same step of a gradient phase, driven as one run by the runner's
    loop (``dprl.run.runner.gradient_loop``): each dispatch is one vmapped program over the
    stacked agents ``[S, ...]``, after which every run handles what its schedule says is due
    (``Run.at_boundary``), the stack unstacked into the runs first when they evaluate or save."""

    def __init__(self, runs: list[Run], phase: str):
        steps = [r.counters[phase] for r in runs]
        if len(set(steps)) > 1:
            raise ValueError(f"the runs stand at different {phase} steps ({steps}); resume "
                             f"them separately")
        self.runs, lead = runs, runs[0]
        self.config, self.progress = lead.config, lead.progress
        self.counters = {phase: steps[0]}
        self.placement = SeedPlacement.of(len(runs))   # seeds spread over the local devices
        self.offline = self.placement.replicate(lead.offline)
        self.agents = self.placement.put(stack([r.agent for r in runs]))

    def fused(self, method: str, num_steps: int, phase: str, step: int) -> dict:
        """``Run.fused`` for every seed in one dispatch; the info scalars come back ``[S]``."""
        keys = []
        for r in self.runs:  # the same key stream as a separate run
            r.key, k = jax.random.split(r.key)
            keys.append(k)
        start = time.perf_counter()
        self.agents, infos = vmapped_updates(
            self.agents, self.offline, self.placement.put(jnp.stack(keys)), num_steps=num_steps,
            method=method,
            batch_size=self.config.run.batch_size, horizon=self.config.horizon,
            obs_history=self.config.obs_history)
        infos = jax.device_get(infos)
        elapsed = time.perf_counter() - start
        for i, r in enumerate(self.runs):
            r.timing["update_s"] += elapsed
            r.timing["updates"] += num_steps
            check_finite(self.info(infos, i), phase, step, r.ckpt)
        return infos

    @staticmethod
    def info(infos: dict, i: int) -> dict:
        return {k: np.asarray(v)[i] for k, v in infos.items()}

    def at_boundary(self, phase: str, step: int, due: Due, infos: dict, bar=None) -> None:
        """``Run.at_boundary`` of every seed; every seed checkpoints before a stop."""
        if due.eval or due.save or rundir.stop_requested():
            for r, a in zip(self.runs, unstack(self.agents, len(self.runs))):
                r.agent = a
        interrupted = None
        for i, r in enumerate(self.runs):
            r.counters[phase] = step
            try:
                r.at_boundary(phase, step, due, self.info(infos, i))
            except rundir.Interrupted as e:
                interrupted = e
        if bar is not None:
            bar.update(step - bar.n)
            bar.set_postfix(postfix({k: np.mean(v) for k, v in infos.items()},
                                    max((r.scores["best_score"] for r in self.runs
                                         if r.scores["best_score"] is not None), default=None)),
                            refresh=False)
        if interrupted is not None:
            raise interrupted


def train_seeds(config: ml_collections.ConfigDict, task: str, run_dirs: Sequence[str],
                seeds: Sequence[int], get_agent: AgentLookup,
                dataset: str | None = None, progress: bool = True, **options) -> list[dict]:
    """Train ``len(seeds)`` seeds with the gradient phases in one vmapped program; return the
    summaries (each also in its run directory's summary.json). Every seed's directory is locked
    before any data is loaded; ``options`` as ``dprl.run.runner.train`` (``restart``,
    ``allow_env_mismatch``)."""
    if len(run_dirs) != len(seeds):
        raise ValueError("one run directory per seed")
    if config.run.get("data_parallel", False):
        raise ValueError("--agent.run.data_parallel splits one seed's batches over the devices; "
                         "with --num_seeds the seeds are spread over them instead: drop one")
    runs = []
    with rundir.owned(*run_dirs), rundir.stop_signals():
        try:
            for d, s in zip(run_dirs, seeds):
                runs.append(Run(config, task, d, get_agent, seed=s, dataset=dataset,
                                progress=progress, num_seeds=len(seeds), **options))
            unfinished = [r for r in runs if not (r.run_dir / "summary.json").exists()]
            if unfinished:
                gradient_loop(Seeds(unfinished, "pretrain"), "pretrain", "pretrain")
                gradient_loop(Seeds(unfinished, "offline"), "offline", "update")
            # The rest (offline score, online phase, summary) is the ordinary runner's, seed by
            # seed.
            return [r.train() for r in runs]
        finally:
            for r in runs:
                r.close()
