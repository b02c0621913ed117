"""``python -m dprl.datasets verify ID``: check a stored dataset, one line per check, stopping at
the first problem.

The checks a run makes when it loads data are the same functions here: the directory is whole
(``check_dataset_dir``), episode boundaries and finite values (``dprl.data.offline.load_dataset``), the
recorded env is the task's (``check_dataset_env``), the spaces match the env's
(``dprl.data.offline.check_compatible``). Beyond a run's: the stored spaces equal the env's exactly, every
episode ends with a flag (a timeout at the env's step limit), the reference scores agree with the
task's, and the first episodes replay in their env to the stored observations, rewards and flags
(play data in its collection env, single-task rewards recomputed by ``SingleTaskRelabeler``).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from dprl.data.registry import (DatasetError, check_dataset_dir, check_dataset_env,
                                    env_id_of, episode_boundary_problem, read_metadata,
                                    source_of, task_for_dataset, GENERATED)


class VerifyError(DatasetError):
    """A dataset failed one of ``verify_dataset``'s checks."""


def verify_steps(dataset_id: str, replay_episodes: int = 2, atol: float = 1e-5
                 ) -> Iterator[tuple[str, str]]:
    """Run the checks in order, yielding ``(check, what was found)`` for each that passes;
    raise ``VerifyError`` / ``DatasetError`` / ``ValueError`` at the first problem. A released
    file (``ogbench:...``, ``robomimic:...``) gets ``released_file_steps``."""
    from dprl.data.formats import parse_source
    if parse_source(dataset_id).kind != "minari":
        yield from released_file_steps(dataset_id)
        return
    import minari

    from dprl.data.offline import check_compatible, load_dataset
    from dprl.envs.vector import make_env
    from dprl.envs.tasks import get_task

    path = check_dataset_dir(dataset_id)
    yield "stored whole", f"{path} (metadata, data file, env installed)"
    data = load_dataset(dataset_id)
    yield "episode boundaries", f"{data.num_episodes} episodes end only at their last step"
    yield "finite values", f"{data.size} transitions, no NaN or inf"
    meta = read_metadata(dataset_id)
    ds = minari.load_dataset(dataset_id)
    spec = ds.spec.env_spec
    env = make_env(spec.id, **(spec.kwargs or {}))
    _check(ds.observation_space == env.observation_space,
           f"observation space {ds.observation_space} != env's {env.observation_space}")
    _check(ds.action_space == env.action_space,
           f"action space {ds.action_space} != env's {env.action_space}")
    check_compatible(data, env)
    yield "spaces", f"equal to {spec.id}'s"
    task_name = task_for_dataset(dataset_id)
    if task_name is None:
        yield "env id", f"{env_id_of(meta)} (no task preset uses this dataset: not compared)"
    else:
        task = get_task(task_name)
        if task["data_env_id"] is not None:
            check_dataset_env(meta, dataset_id, task_name, task["data_env_id"])
        yield "env id", f"{env_id_of(meta)}, the env of task {task_name}"
        yield "reference scores", _reference_scores(dataset_id, meta, task_name, task)
    n = _replay(ds, meta, env, replay_episodes, atol)
    yield "replayed", (f"{n} episode(s) reproduce the stored observations, rewards and flags"
                       if n or not replay_episodes else
                       "0 episodes: the dataset stores no reset seeds (official data), so its "
                       "episodes cannot be replayed")


def released_file_steps(spec: str) -> Iterator[tuple[str, str]]:
    """The checks of a released file or shard directory: whole (headers), readable, episode
    ends, finite values, the env it was recorded in and the tasks whose released source it is,
    and (shard directories) the RAM a run needs."""
    from dprl.data.formats import (check_source, load_ogbench, load_robomimic,
                                   ogbench_ram_bytes, parse_source, recorded_env_id)
    from dprl.data.offline import check_finite
    from dprl.envs.tasks import TASKS

    src = parse_source(spec)
    check_source(src)
    yield "stored whole", f"{src.path} (headers of every array / demo)"
    if src.kind == "ogbench" and src.sharded:
        ram = ogbench_ram_bytes(src)
        yield "memory", (f"{ram['transitions_at_most']} transitions: {ram['peak_bytes'] / 1e9:.1f}"
                         f" GB of host RAM to load (the training buffer needs as much again)")
    data = load_ogbench(src) if src.kind == "ogbench" else load_robomimic(src)
    _check(bool(data.dones[-1]), "the last transition does not end an episode")
    yield "episode boundaries", f"{data.num_episodes} episodes, {data.size} transitions"
    check_finite(data)
    yield "finite values", "no NaN or inf"
    env = recorded_env_id(src)
    users = sorted(t for t, p in TASKS.items() if p["data_env_id"] == env and any(
        parse_source(s).kind == src.kind for s in p.get("official_sources", ())))
    yield "env id", f"{env} (tasks: {', '.join(users) or 'none'})"


def verify_dataset(dataset_id: str, replay_episodes: int = 2, atol: float = 1e-5,
                   echo: Callable[[str], None] | None = None) -> dict:
    """Every check of ``verify_steps`` (each passing one echoed as ``ok  check: found``); raises
    at the first problem. Returns a small report."""
    checks = {}
    for check, found in verify_steps(dataset_id, replay_episodes, atol):
        checks[check] = found
        if echo is not None:
            echo(f"ok    {check}: {found}")
    from dprl.data.formats import parse_source
    if parse_source(dataset_id).kind != "minari":
        return {"dataset_id": dataset_id, "checks": checks}
    import minari
    ds = minari.load_dataset(dataset_id)
    return {"dataset_id": dataset_id, "episodes": ds.total_episodes, "steps": ds.total_steps,
            "replayed": int(checks["replayed"].split()[0]), "checks": checks}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise VerifyError(message)


def _reference_scores(dataset_id: str, meta: dict, task_name: str, task: dict) -> str:
    lo, hi = task["ref_min_score"], task["ref_max_score"]
    _check(lo is not None and hi is not None and np.isfinite([lo, hi]).all() and lo < hi,
           f"task {task_name!r} has no usable reference scores ({lo}, {hi}): set "
           f"ref_min_score < ref_max_score in dprl/envs/tasks.py")
    recorded = (meta.get("ref_min_score"), meta.get("ref_max_score"))
    if None in recorded or np.allclose(recorded, (lo, hi)):
        return f"({lo}, {hi}), those of task {task_name}"
    # dprl writes the task's scores into its datasets; official ones may carry their own.
    _check(source_of(dataset_id) != GENERATED,
           f"the dataset records reference scores {recorded}, task {task_name!r} has "
           f"({lo}, {hi}): remake it (`python -m dprl.datasets make {task_name} --overwrite`)")
    return (f"runs score with task {task_name!r}'s ({lo}, {hi}); the dataset records "
            f"{recorded} (not used)")


def _replay(ds, meta: dict, env, replay_episodes: int, atol: float) -> int:
    """Reset each of the first episodes with its stored seed and replay its actions; returns how
    many were replayed. Every episode's end flag is checked against the env's step limit."""
    from dprl.envs.vector import make_env

    prov = meta.get("dprl", {})
    relabel = None
    if "collection_env_id" in prov:
        replay_env = make_env(prov["collection_env_id"], **prov["collection_env_kwargs"])
        if "singletask_env_id" in prov:
            from dprl.datasets.ogbench_recipes import SingleTaskRelabeler
            relabel = SingleTaskRelabeler(prov["singletask_env_id"])
    else:
        replay_env = env
    limit = replay_env.spec.max_episode_steps
    seeds = {int(m["id"]): m.get("seed") for m in ds.storage.get_episode_metadata(
        range(ds.total_episodes))}
    if all(s is None for s in seeds.values()):
        replay_episodes = 0      # nothing to reset with; the flags are still checked
    n_replayed = 0
    for ep in ds.iterate_episodes():
        T = len(ep.actions)
        term, trunc = np.asarray(ep.terminations, bool), np.asarray(ep.truncations, bool)
        problem = episode_boundary_problem(ep.id, term, trunc, T, len(ep.observations))
        _check(problem is None, str(problem))
        if trunc[-1] and not term[-1] and limit is not None:
            _check(T == limit, f"episode {ep.id} truncated at {T} steps, env limit {limit}")
        if n_replayed >= replay_episodes:
            continue
        seed = seeds.get(int(ep.id))
        _check(seed is not None, f"episode {ep.id} has no reset seed: it cannot be replayed")
        obs, _ = replay_env.reset(seed=int(seed))
        _check(np.allclose(obs, ep.observations[0], atol=atol),
               f"episode {ep.id}: the reset observation differs from the stored one")
        for t in range(T):
            if relabel is not None:
                r_single, _ = relabel.reward(replay_env)
            obs, r, te, tr, _ = replay_env.step(ep.actions[t])
            r = r_single if relabel is not None else r
            _check(np.allclose(obs, ep.observations[t + 1], atol=atol),
                   f"episode {ep.id} step {t}: replayed observation differs")
            _check(abs(r - ep.rewards[t]) <= atol * max(1.0, abs(r)),
                   f"episode {ep.id} step {t}: replayed reward {r} != stored {ep.rewards[t]}")
            _check((bool(te), bool(tr)) == (bool(term[t]), bool(trunc[t])),
                   f"episode {ep.id} step {t}: replayed (terminated, truncated) = {(te, tr)}, "
                   f"stored {(term[t], trunc[t])}")
        n_replayed += 1
    return n_replayed
