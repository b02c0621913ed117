"""S seeds of one (agent, task) in one program: the gradient phases ``vmap``ped over seeds.

``train_seeds(config, task, run_dirs, seeds)`` writes the same S run directories that S separate
``dprl.runner.train`` calls would write (config.json, metrics.csv, summary.json, checkpoints):

- each seed gets its own ``Run`` (same dataset, normalizer, example batch, ``Agent.create(seed)``,
  PRNG key stream and dispatch boundaries as a separate run);
- the pretrain and offline phases stack the S agents (leading axis) and run ``fused_updates``
  under ``jax.vmap``: one XLA program updates every seed per dispatch, with each seed's own key;
- at log / eval / save boundaries the stack is unstacked into the runs, which evaluate, log and
  checkpoint exactly as alone;
- the online phase (env interaction, Python-side) runs per seed, one after the other, through the
  ordinary runner.

Parameters after N vmapped steps equal those of N separate steps up to float rounding (batched
matmuls may sum in another order); ``tests/test_experiments.py`` checks it. Timing fields in each
summary count the shared vmapped wall time as that seed's update time.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dprl.runner import Run, _check_finite, _postfix, dispatch_size, fused_updates


def stack(trees):
    """Stack same-shaped pytrees along a new leading axis, with the first tree's structure (the
    agents' static fields, e.g. optax closures, differ by identity between instances)."""
    treedef = jax.tree.structure(trees[0])
    leaves = [jax.tree.leaves(t) for t in trees]
    return jax.tree.unflatten(treedef, [jnp.stack(x) for x in zip(*leaves)])


def unstack(tree, n: int):
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


@functools.partial(jax.jit, static_argnames=("num_steps", "method", "batch_size", "horizon",
                                             "obs_history"))
def vmapped_updates(agents, offline, keys, *, num_steps: int, method: str, batch_size: int,
                    horizon: int, obs_history: int):
    """``fused_updates`` for a stack of agents ``[S, ...]`` with keys ``[S, 2]``, one dispatch."""
    def one(agent, key):
        return fused_updates(agent, offline, None, key, num_steps=num_steps, method=method,
                             batch_size=batch_size, horizon=horizon, obs_history=obs_history)
    return jax.vmap(one)(agents, keys)


def seed_dirs(run_dir: str | Path, seeds: Sequence[int]) -> list[str]:
    """``run_dir/seed<k>`` per seed (the grid's layout)."""
    return [str(Path(run_dir) / f"seed{s}") for s in seeds]


def _vmapped_phase(runs: list[Run], phase: str, total: int, method: str) -> None:
    lead = runs[0]
    run, cfg = lead.config.run, lead.config
    done = lead.counters[phase]
    if any(r.counters[phase] != done for r in runs):
        raise ValueError(f"the runs stand at different {phase} steps "
                         f"({[r.counters[phase] for r in runs]}); resume them separately")
    if done >= total:
        return
    S = len(runs)
    agents = stack([r.agent for r in runs])
    last_scores = [None] * S
    while done < total:
        n = dispatch_size(done, total, run)
        keys = []
        for r in runs:  # the same key stream as a separate run
            r.key, k = jax.random.split(r.key)
            keys.append(k)
        start = time.perf_counter()
        agents, infos = vmapped_updates(agents, lead.offline, jnp.stack(keys), num_steps=n,
                                        method=method, batch_size=run.batch_size,
                                        horizon=cfg.horizon, obs_history=cfg.obs_history)
        infos = jax.device_get(infos)
        elapsed = time.perf_counter() - start
        done += n
        log_now = bool(run.log_every and done % run.log_every == 0)
        eval_now = bool((run.eval_every and done % run.eval_every == 0) or done == total)
        save_now = bool((run.save_every and done % run.save_every == 0) or done == total)
        if eval_now or save_now:
            for r, a in zip(runs, unstack(agents, S)):
                r.agent = a
        for i, r in enumerate(runs):
            info = {k: np.asarray(v)[i] for k, v in infos.items()}
            r.timing["update_s"] += elapsed
            r.timing["updates"] += n
            r.counters[phase] = done
            _check_finite(info, phase, done, r.ckpt)
            metrics = {}
            if log_now:
                metrics.update(info)
            if eval_now:
                metrics.update(r.evaluate())
                last_scores[i] = metrics["eval/normalized_score"]
            if metrics or done == total:
                r._record(phase, done, {**info, **metrics})
            if save_now:
                r.save()
        if lead.progress:
            print(f"[dprl] {phase} {done}/{total} x{S} seeds "
                  f"{_postfix({k: np.mean(v) for k, v in infos.items()}, None)} "
                  f"scores {last_scores}", flush=True)
    for r, a in zip(runs, unstack(agents, S)):
        r.agent = a


def train_seeds(config: ml_collections.ConfigDict, task: str, run_dirs: Sequence[str],
                seeds: Sequence[int], dataset: str | None = None, progress: bool = True
                ) -> list[dict]:
    """Train ``len(seeds)`` seeds with the gradient phases in one vmapped program; return the
    summaries (each also in its run directory's summary.json)."""
    if len(run_dirs) != len(seeds):
        raise ValueError("one run directory per seed")
    runs = [Run(config, task, d, seed=s, dataset=dataset, progress=progress)
            for d, s in zip(run_dirs, seeds)]
    unfinished = [r for r in runs if not (r.run_dir / "summary.json").exists()]
    if unfinished:
        cfg = unfinished[0].config.run
        _vmapped_phase(unfinished, "pretrain", cfg.pretrain_steps, "pretrain")
        _vmapped_phase(unfinished, "offline", cfg.offline_steps, "update")
    # The rest (offline score, online phase, summary) is the ordinary runner's, seed by seed.
    return [r.train() for r in runs]


def benchmark(config: ml_collections.ConfigDict, task: str, num_seeds: int, steps: int = 100,
              repeats: int = 3, method: str = "pretrain", dataset: str | None = None) -> dict:
    """Gradient steps per second: S separate agents (one ``fused_updates`` dispatch each) versus
    one vmapped dispatch over the S-stack. Both are compiled first; the best of ``repeats``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        runs = [Run(config, task, str(Path(tmp) / f"seed{s}"), seed=s, dataset=dataset,
                    progress=False) for s in range(num_seeds)]
        lead = runs[0]
        cfg = lead.config
        kw = dict(num_steps=steps, method=method, batch_size=cfg.run.batch_size,
                  horizon=cfg.horizon, obs_history=cfg.obs_history)
        keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)

        def separate():
            out = [fused_updates(r.agent, lead.offline, None, k, **kw)[0]
                   for r, k in zip(runs, keys)]
            jax.block_until_ready(out)

        stacked = stack([r.agent for r in runs])

        def together():
            jax.block_until_ready(vmapped_updates(stacked, lead.offline, keys, **kw)[0])

        times = {}
        for name, fn in (("separate", separate), ("vmapped", together)):
            fn()  # compile
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
            times[name] = best
        for r in runs:
            r.ckpt.close()
            r.logger.close()
    total = num_seeds * steps
    return {"agent": cfg.agent_name, "task": task, "num_seeds": num_seeds, "method": method,
            "steps_per_seed": steps, "batch_size": cfg.run.batch_size,
            "separate_updates_per_s": total / times["separate"],
            "vmapped_updates_per_s": total / times["vmapped"],
            "speedup": times["separate"] / times["vmapped"], "backend": jax.default_backend()}
