"""OGBench-style manipulation datasets (cube-single/double/triple/quadruple, scene, puzzle-3x3/4x4),
made here.

The ``ogbench`` package ships the manipulation envs and the scripted oracles its authors used to
make the published ``*-play-v0`` datasets. The published play recipe (OGBench, Park et al. 2024,
``data_gen_scripts/generate_manipspace.py``), which we follow:
  * the goal-conditioned env made with ``terminate_at_goal=False, mode='data_collection'`` and
    ``max_episode_steps=1001``; 1000 episodes of 1001 steps (~1M transitions);
  * non-Markovian *plan* oracles (``ogbench.manipspace.oracles.plan``) with ``noise=0.1``,
    ``noise_smoothing=0.5``, no random actions; puzzle's button oracle keeps the gripper closed;
  * whenever the oracle finishes its sub-task the env draws a new target
    (``set_new_target(p_stack)``), with ``p_stack`` 0 (cube-single), U(0, 0.25) per episode
    (cube-double), U(0.05, 0.35) (cube-triple), U(0.1, 0.5) (cube-quadruple), 0.5 (scene,
    puzzle);
  * scene episodes where the cube leaves the visible area are discarded and redone.

Two datasets come out of one collection:
  ``dprl/<task>/play-v0``             the play data as collected (env ``<task>-v0``; reward = the
                                      collection env's, i.e. success of the oracle's current
                                      sub-task, which is not meaningful for RL);
  ``dprl/<task>/play-singletask-v0``  the same transitions relabeled with the single-task reward
                                      that QC and FQL train and evaluate on (env
                                      ``<task>-singletask-v0``, the default task): reward of
                                      (s_t, a_t) = (#satisfied sub-goals - #sub-goals) at s_t
                                      (OGBench's ``success_timing='pre'``), so 0 means success.
                                      OGBench uses ``masks = 1 - success`` (= ``reward < 0``) for
                                      these; episodes still end only at the 1001-step time limit.
The play dataset also stores, as Minari episode infos, ``qpos`` (float32) and ``button_states`` at
every state, as OGBench's files do, so any of the five single tasks can be relabeled without
replaying (``relabel_successes``). Every episode records its reset seed: replaying its actions in
the collection env reproduces the observations, and relabeling the replayed states reproduces the
single-task rewards.

Collection is resumable (``collect_play_episodes_resumable``): episode k's randomness comes only
from ``episode_seeds(seed, k)`` (the env's reset seed and the seed of numpy's global RNG, from
which the oracles draw their noise and OGBench draws p_stack), and episodes are saved in chunks,
so a collection that is stopped and started again gives the same data, bit for bit, as one that
ran through. ``play_statistics`` compares the data with what OGBench documents.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dprl.base.files import atomic_write

# task -> (collection env id, single-task evaluation env id)
MANIPULATION_TASKS = {
    "cube-single": ("cube-single-v0", "cube-single-singletask-v0"),
    "cube-double": ("cube-double-v0", "cube-double-singletask-v0"),
    "scene": ("scene-v0", "scene-singletask-v0"),
    "puzzle-3x3": ("puzzle-3x3-v0", "puzzle-3x3-singletask-v0"),
    "cube-triple": ("cube-triple-v0", "cube-triple-singletask-v0"),
    "cube-quadruple": ("cube-quadruple-v0", "cube-quadruple-singletask-v0"),
    "puzzle-4x4": ("puzzle-4x4-v0", "puzzle-4x4-singletask-v0"),
}
EPISODE_LENGTH = 1001
ORACLE_NOISE = 0.1
ORACLE_NOISE_SMOOTHING = 0.5


def collection_env_kwargs(episode_length: int = EPISODE_LENGTH) -> dict:
    return {"terminate_at_goal": False, "mode": "data_collection",
            "max_episode_steps": episode_length}


def _make_oracles(task: str, env) -> dict:
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    kw = {"noise": ORACLE_NOISE, "noise_smoothing": ORACLE_NOISE_SMOOTHING}
    if task.startswith("cube"):
        return {"cube": CubePlanOracle(env=env, **kw)}
    if task == "scene":
        return {"cube": CubePlanOracle(env=env, **kw), "button": ButtonPlanOracle(env=env, **kw),
                "drawer": DrawerPlanOracle(env=env, **kw),
                "window": WindowPlanOracle(env=env, **kw)}
    if task.startswith("puzzle"):
        return {"button": ButtonPlanOracle(env=env, gripper_always_closed=True, **kw)}
    raise KeyError(task)


def _p_stack(task: str, rng: np.random.Generator) -> float:
    if task == "cube-single":
        return 0.0
    if task == "cube-double":
        return float(rng.uniform(0.0, 0.25))
    if task == "cube-triple":
        return float(rng.uniform(0.05, 0.35))
    if task == "cube-quadruple":
        return float(rng.uniform(0.1, 0.5))
    return 0.5


class SingleTaskRelabeler:
    """Single-task reward of a collection env's current state, computed by the task env itself.

    Copies the collection env's physical state (qpos, qvel, button states) into a single-task env
    reset to its task goal and asks that env which sub-goals hold, so the reward is exactly the
    one the evaluation env would give.
    """

    def __init__(self, singletask_env_id: str):
        import mujoco

        from dprl.envs.vector import make_env
        self._mujoco = mujoco
        self.env = make_env(singletask_env_id)
        self.env.reset(seed=0)   # sets the task goal (fixed per task id)
        self.u = self.env.unwrapped

    def successes(self, collection_env) -> np.ndarray:
        src = collection_env.unwrapped
        return self.successes_at(src._data.qpos, src._data.qvel,
                                 getattr(src, "_cur_button_states", None))

    def successes_at(self, qpos, qvel=None, button_states=None) -> np.ndarray:
        """Sub-goal successes ``[S]`` of the state ``qpos [nq]`` (``qvel``, ``button_states``)."""
        u = self.u
        u._data.qpos[:] = qpos
        u._data.qvel[:] = 0.0 if qvel is None else qvel
        if button_states is not None and hasattr(u, "_cur_button_states"):
            u._cur_button_states = np.array(button_states).copy()
        self._mujoco.mj_forward(u._model, u._data)
        flat = []
        for s in _as_tuple(u._compute_successes()):
            flat.extend(np.atleast_1d(np.asarray(s, bool)).tolist())
        return np.asarray(flat, bool)

    def reward(self, collection_env) -> tuple[float, bool]:
        s = self.successes(collection_env)
        return float(s.sum() - len(s)), bool(s.all())


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _scene_healthy(block_xyz: np.ndarray) -> bool:
    """Scene episodes keep the cube visible unless it is in the drawer (OGBench's check)."""
    y, z = block_xyz[:, 1], block_xyz[:, 2]
    too_right = (y >= 0.29).any()
    too_left = ((y <= -0.3) & ((z < 0.06) | (z > 0.08))).any()
    return not (too_right or too_left)


# ----------------------------------------------------------------------------- one play episode
# Every episode is a pure function of (task, seed, episode index, episode_length): its env reset
# seed and the seed of numpy's global RNG (which the oracles and OGBench's p_stack draw from) are
# derived from those numbers, so a collection can stop after any episode and go on later (or be
# split across processes) and still give the same data bit for bit.
RECIPE_VERSION = 2           # 2: per-episode seeds (resumable); 1: one RNG stream per collection
CHUNK_EPISODES = 10          # episodes per saved chunk of a resumable collection (~1 min of work)
MAX_ATTEMPTS = 100           # scene episodes redone at most this often before giving up
PER_STATE_KEYS = ("observations", "qpos", "button_states")          # T + 1 rows, s_0 first
PER_STEP_KEYS = ("actions", "rewards", "terminations", "truncations", "singletask_rewards",
                 "singletask_success")                                # T rows
PER_EPISODE_KEYS = ("index", "seed", "noise_seed", "attempt", "num_subtasks", "seconds")


def episode_seeds(seed: int, index: int, attempt: int = 0) -> tuple[int, int]:
    """``(env reset seed, numpy global-RNG seed)`` of episode ``index`` of collection ``seed``.

    ``attempt`` counts redone scene episodes (OGBench discards those where the cube leaves the
    visible area and collects that episode again)."""
    reset_seed, noise_seed = np.random.SeedSequence([seed, index, attempt]).generate_state(2)
    return int(reset_seed), int(noise_seed)


class _PlayCollector:
    """The collection env, the single-task relabeler and the oracles of one task, built once."""

    def __init__(self, task: str, episode_length: int):
        import ogbench  # noqa: F401  registers the manipulation envs

        from dprl.envs.vector import make_env
        collect_id, single_id = MANIPULATION_TASKS[task]
        self.task = task
        self.env = make_env(collect_id, **collection_env_kwargs(episode_length))
        self.relabel = SingleTaskRelabeler(single_id)
        self.oracles = _make_oracles(task, self.env)

    def episode(self, seed: int, index: int) -> dict:
        t0 = time.perf_counter()
        for attempt in range(MAX_ATTEMPTS):
            ep = self._attempt(seed, index, attempt)
            if ep is not None:
                ep["seconds"] = time.perf_counter() - t0
                return ep
        raise RuntimeError(f"{self.task} episode {index} (seed {seed}) was unhealthy "
                           f"{MAX_ATTEMPTS} times in a row; the env or oracles are broken")

    def _attempt(self, seed: int, index: int, attempt: int) -> dict | None:
        env, task = self.env, self.task
        u = env.unwrapped
        reset_seed, noise_seed = episode_seeds(seed, index, attempt)
        np.random.seed(noise_seed)
        ob, info = env.reset(seed=reset_seed)
        # OGBench draws p_stack from the global RNG right after the reset; so do we.
        p_stack = _p_stack(task, np.random)
        agent = self.oracles[info["privileged/target_task"]]
        agent.reset(ob, info)
        has_buttons = hasattr(u, "_cur_button_states")
        states = {"observations": [], "qpos": [], "button_states": []}
        steps = {k: [] for k in PER_STEP_KEYS}

        def record_state(ob):
            states["observations"].append(np.asarray(ob, np.float32))
            states["qpos"].append(u._data.qpos.copy())
            if has_buttons:
                states["button_states"].append(np.array(u._cur_button_states).copy())

        record_state(ob)
        num_subtasks = 0
        done = False
        while not done:
            # Single-task reward of (s_t, a_t) is judged at s_t ('pre' success timing).
            r_single, success = self.relabel.reward(env)
            # float32 before stepping: the stored action is exactly the executed one, so a
            # replay reproduces the episode bit for bit.
            action = np.clip(np.asarray(agent.select_action(ob, info)), -1, 1).astype(np.float32)
            ob, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            record_state(ob)
            if agent.done:
                # New sub-task when the oracle finished its current one.
                num_subtasks += 1
                ob_t, info_t = u.set_new_target(p_stack=p_stack)
                agent = self.oracles[info_t["privileged/target_task"]]
                agent.reset(ob_t, info_t)
            for k, v in zip(PER_STEP_KEYS, (action, float(reward), bool(terminated),
                                            bool(truncated), r_single, success)):
                steps[k].append(v)
        ep = {k: np.asarray(v) for k, v in steps.items()}
        ep |= {k: np.asarray(v) for k, v in states.items() if v}
        if task == "scene" and not _scene_healthy(ep["qpos"][:-1, 14:17]):
            return None  # OGBench checks the states s_0 .. s_{T-1} (its 'prev_qpos')
        return ep | {"index": index, "seed": reset_seed, "noise_seed": noise_seed,
                     "attempt": attempt, "num_subtasks": num_subtasks}


@contextlib.contextmanager
def _global_rng_kept():
    """Give the caller's numpy global RNG state back afterwards (the oracles reseed it)."""
    saved = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(saved)


def _check_collection_args(task: str, num_episodes: int, seed: int, episode_length: int):
    if task not in MANIPULATION_TASKS:
        raise ValueError(f"Unknown manipulation task {task!r}; known: "
                         f"{', '.join(MANIPULATION_TASKS)}")
    if num_episodes < 1 or episode_length < 1:
        raise ValueError(f"num_episodes ({num_episodes}) and episode_length ({episode_length}) "
                         f"must be >= 1")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (it seeds numpy's SeedSequence), got {seed}")


def _progress_bar(task: str, total: int, initial: int, enabled: bool):
    from tqdm import tqdm
    # In a log file (nohup) a redraw every half minute is plenty.
    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=f"play {task}", unit="ep",
                disable=not enabled, mininterval=0.5 if interactive else 30.0,
                smoothing=0.1 if interactive else 0.0)


def collect_play_episodes(task: str, num_episodes: int, *, seed: int = 0,
                          episode_length: int = EPISODE_LENGTH, progress: bool = False,
                          first_episode: int = 0) -> list[dict]:
    """Play episodes ``first_episode .. first_episode + num_episodes - 1`` of collection ``seed``.

    Each episode holds ``observations [T+1, O]`` (float32), ``qpos [T+1, nq]``, ``button_states
    [T+1, B]`` (scene, puzzle), ``actions [T, A]``, ``rewards [T]`` (collection env),
    ``singletask_rewards [T]``, ``singletask_success [T]``, ``terminations``/``truncations [T]``
    and ``index``, ``seed`` (env reset seed), ``noise_seed``, ``attempt``, ``num_subtasks``,
    ``seconds``. Episode k is the same whichever call or process collects it."""
    _check_collection_args(task, num_episodes, seed, episode_length)
    if first_episode < 0:
        raise ValueError(f"first_episode must be >= 0, got {first_episode}")
    collector = _PlayCollector(task, episode_length)
    bar = _progress_bar(task, num_episodes, 0, progress)
    episodes = []
    try:
        with _global_rng_kept():
            for k in range(first_episode, first_episode + num_episodes):
                episodes.append(collector.episode(seed, k))
                bar.update(1)
    finally:
        bar.close()
    return episodes


# ----------------------------------------------------------------------------- resumable chunks
def collection_config(task: str, seed: int, episode_length: int) -> dict:
    """What fixes the episodes of a collection; a partial directory is only resumed with it."""
    import ogbench
    return {"recipe": "play", "recipe_version": RECIPE_VERSION, "task": task, "seed": seed,
            "episode_length": episode_length, "oracle_noise": ORACLE_NOISE,
            "oracle_noise_smoothing": ORACLE_NOISE_SMOOTHING,
            "ogbench_version": getattr(ogbench, "__version__", "unknown")}


def default_partial_dir(task: str, seed: int = 0, episode_length: int = EPISODE_LENGTH) -> Path:
    """Where ``make_manipulation_dataset`` keeps the chunks of an unfinished collection."""
    from dprl.data.io import DPRL_NAMESPACE, datasets_root
    # Hidden, so Minari's dataset listing skips it.
    return datasets_root() / DPRL_NAMESPACE / task / f".partial-play-seed{seed}-len{episode_length}"


def unfinished_collections(task: str) -> list[tuple[Path, int]]:
    """``(partial directory, episodes saved)`` of every unfinished collection of ``task``."""
    from dprl.data.io import DPRL_NAMESPACE, datasets_root
    if task not in MANIPULATION_TASKS:
        return []
    out = []
    for path in sorted((datasets_root() / DPRL_NAMESPACE / task).glob(".partial-play-*")):
        try:
            chunks = _list_chunks(path)
        except ValueError:
            chunks = []
        out.append((path, chunks[-1][1] if chunks else 0))
    return out


def _open_partial_dir(partial_dir: Path, config: dict) -> None:
    cfg_path = partial_dir / "config.json"
    if cfg_path.is_file():
        stored = json.loads(cfg_path.read_text())
        if stored != config:
            diff = {k: (stored.get(k), config.get(k)) for k in set(stored) | set(config)
                    if stored.get(k) != config.get(k)}
            raise ValueError(
                f"The unfinished collection in {partial_dir} was made with other settings "
                f"(stored, requested): {diff}. Run the command it was started with, or delete "
                f"that directory (rm -r '{partial_dir}') to start afresh.")
        return
    partial_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(cfg_path, json.dumps(config, indent=1))


def _chunk_name(start: int, stop: int) -> str:
    return f"episodes-{start:06d}-{stop:06d}.npz"


def _list_chunks(partial_dir: Path) -> list[tuple[int, int, Path]]:
    """``(start, stop, path)`` of the saved chunks, checked to cover 0 .. n without gaps."""
    chunks = []
    for p in partial_dir.glob("episodes-*-*.npz"):
        _, start, stop = p.stem.split("-")
        chunks.append((int(start), int(stop), p))
    chunks.sort()
    expected = 0
    for start, stop, p in chunks:
        if start != expected:
            raise ValueError(f"Chunks in {partial_dir} do not follow each other at {p.name} "
                             f"(expected one starting at episode {expected}). Delete the chunks "
                             f"from {p.name} on and run the command again.")
        expected = stop
    return chunks


def _save_chunk(partial_dir: Path, episodes: list[dict]) -> Path:
    arrays = {}
    for key in PER_STATE_KEYS + PER_STEP_KEYS:
        if key in episodes[0]:
            arrays[key] = np.concatenate([e[key] for e in episodes])
    for key in PER_EPISODE_KEYS:
        arrays[key] = np.asarray([e[key] for e in episodes])
    arrays["num_steps"] = np.asarray([len(e["actions"]) for e in episodes])
    path = partial_dir / _chunk_name(episodes[0]["index"], episodes[-1]["index"] + 1)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def _load_chunk(path: Path) -> list[dict]:
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    steps = data["num_steps"]
    step_ends = np.cumsum(steps)
    state_ends = np.cumsum(steps + 1)
    episodes = []
    for i in range(len(steps)):
        ep = {}
        for key in PER_STATE_KEYS:
            if key in data:
                ep[key] = data[key][state_ends[i] - steps[i] - 1:state_ends[i]]
        for key in PER_STEP_KEYS:
            ep[key] = data[key][step_ends[i] - steps[i]:step_ends[i]]
        for key in PER_EPISODE_KEYS:
            ep[key] = data[key][i].item()
        episodes.append(ep)
    return episodes


def collect_play_episodes_resumable(task: str, num_episodes: int, partial_dir, *, seed: int = 0,
                                    episode_length: int = EPISODE_LENGTH,
                                    chunk_episodes: int = CHUNK_EPISODES, progress: bool = False,
                                    on_chunk=None, workers: int = 1) -> list[dict]:
    """``collect_play_episodes(task, num_episodes, ...)``, saved chunk by chunk in ``partial_dir``.

    ``workers`` > 1 collects the chunks in that many processes (each builds its own envs and
    oracles); episode k depends only on ``(seed, k)``, so the episodes are the same as one
    process collects (only their ``seconds`` differ) and chunks are saved in order.

    Every ``chunk_episodes`` episodes are written atomically (temporary file, then rename) as
    ``episodes-<start>-<stop>.npz``; calling again with the same task, seed and episode_length
    loads the saved chunks and collects only the rest, so a killed run loses at most the chunk
    in progress. ``on_chunk(episodes_done, num_episodes)`` is called after each saved chunk.
    The directory is left in place (the caller removes it once the data is stored elsewhere).
    """
    _check_collection_args(task, num_episodes, seed, episode_length)
    if chunk_episodes < 1:
        raise ValueError(f"chunk_episodes must be >= 1, got {chunk_episodes}")
    partial_dir = Path(partial_dir)
    _open_partial_dir(partial_dir, collection_config(task, seed, episode_length))
    for leftover in partial_dir.glob(".tmp-*"):   # a chunk being written when a run was killed
        leftover.unlink()
    episodes: list[dict] = []
    for start, stop, path in _list_chunks(partial_dir):
        if start >= num_episodes:
            break
        episodes.extend(_load_chunk(path))
    episodes = episodes[:num_episodes]
    if len(episodes) == num_episodes:
        return episodes
    if episodes:
        print(f"resuming {task}: {len(episodes)} of {num_episodes} episodes already in "
              f"{partial_dir}", file=sys.stderr, flush=True)
    chunks_left = -(-(num_episodes - len(episodes)) // chunk_episodes)
    workers = min(workers, chunks_left)
    if workers > 1:
        return _collect_parallel(task, num_episodes, partial_dir, episodes, seed=seed,
                                 episode_length=episode_length, chunk_episodes=chunk_episodes,
                                 progress=progress, on_chunk=on_chunk, workers=workers)
    collector = _PlayCollector(task, episode_length)
    bar = _progress_bar(task, num_episodes, len(episodes), progress)
    t0, steps_now = time.perf_counter(), 0
    try:
        with _global_rng_kept():
            while len(episodes) < num_episodes:
                start = len(episodes)
                chunk = []
                for k in range(start, min(start + chunk_episodes, num_episodes)):
                    chunk.append(collector.episode(seed, k))
                    steps_now += len(chunk[-1]["actions"])
                    bar.set_postfix_str(f"{steps_now / (time.perf_counter() - t0):.0f} steps/s",
                                        refresh=False)
                    bar.update(1)
                _save_chunk(partial_dir, chunk)
                episodes.extend(chunk)
                if on_chunk is not None:
                    on_chunk(len(episodes), num_episodes)
    finally:
        bar.close()
    return episodes


_WORKER: "_PlayCollector | None" = None


def _worker_init(task: str, episode_length: int) -> None:
    global _WORKER
    _WORKER = _PlayCollector(task, episode_length)


def _worker_chunk(args: tuple[int, int, int]) -> list[dict]:
    seed, start, stop = args
    with _global_rng_kept():
        return [_WORKER.episode(seed, k) for k in range(start, stop)]


def _collect_parallel(task: str, num_episodes: int, partial_dir: Path, episodes: list[dict], *,
                      seed: int, episode_length: int, chunk_episodes: int, progress: bool,
                      on_chunk, workers: int) -> list[dict]:
    """The rest of a resumable collection in ``workers`` processes (spawned: no state of the
    parent, e.g. JAX's threads, is forked), chunks saved in order as they come back."""
    import multiprocessing as mp

    starts = range(len(episodes), num_episodes, chunk_episodes)
    jobs = [(seed, a, min(a + chunk_episodes, num_episodes)) for a in starts]
    bar = _progress_bar(task, num_episodes, len(episodes), progress)
    try:
        with mp.get_context("spawn").Pool(workers, _worker_init, (task, episode_length)) as pool:
            for chunk in pool.imap(_worker_chunk, jobs):
                _save_chunk(partial_dir, chunk)
                episodes.extend(chunk)
                bar.update(len(chunk))
                if on_chunk is not None:
                    on_chunk(len(episodes), num_episodes)
    finally:
        bar.close()
    return episodes


# ----------------------------------------------------------------------------- statistics
# What OGBench (and the Q-chunking paper, which trains on these datasets) document about the
# published play datasets, each with its source. Neither documents success or coverage statistics
# of the data (we found none in OGBench's README or data scripts, nor in QC's Appendix B), so the
# per-task success numbers in ``play_statistics`` are ours alone.
OGBENCH_SOURCES = {
    "ogbench_recipe": "github.com/seohongpark/ogbench data_gen_scripts/commands.sh and "
                      "generate_manipspace.py: --num_episodes=1000 --max_episode_steps=1001 "
                      "--dataset_type=play, noise 0.1, noise_smoothing 0.5, p_random_action 0",
    "ogbench_readme": "ogbench README: 'Dataset APIs' (a stored trajectory's last observation "
                      "has no successor: 1001 steps give 1000 (s, a, s') transitions) and the "
                      "table of default tasks",
    "qc_table2": "Q-chunking paper (Li, Zhou, Levine 2025), Appendix B, Table 2 'Domain "
                 "metadata': dataset size (transitions), episode length (evaluation), action "
                 "dimension 5",
    "ogbench_package": "the ogbench package's envs (observation_space, max_episode_steps); "
                       "not a published number, the same code",
}
OGBENCH_DOCUMENTED = {   # quantity -> (value, or {task: value}; source key)
    "num_episodes": (1000, "ogbench_recipe"),
    "env_steps_per_episode": (1001, "ogbench_recipe"),
    "transitions": ({"cube-double": 1_000_000, "scene": 1_000_000, "puzzle-3x3": 1_000_000},
                    "qc_table2"),
    "action_dim": (5, "qc_table2"),
    "evaluation_episode_length": ({"cube-double": 500, "scene": 750, "puzzle-3x3": 500},
                                  "qc_table2"),
    "observation_dim": ({"cube-single": 28, "cube-double": 37, "scene": 40, "puzzle-3x3": 55},
                        "ogbench_package"),
    "default_task": ({"cube-single": 2, "cube-double": 2, "scene": 2, "puzzle-3x3": 4},
                     "ogbench_readme"),
}


def ogbench_documented(task: str) -> dict:
    """``{quantity: {"value": ..., "source": ...}}`` that OGBench/QC document for ``task``."""
    out = {}
    for key, (value, source) in OGBENCH_DOCUMENTED.items():
        if isinstance(value, dict):
            if task not in value:
                continue
            value = value[task]
        out[key] = {"value": value, "source": OGBENCH_SOURCES[source]}
    return out


def relabel_successes(task: str, task_id: int, qpos: np.ndarray,
                      button_states: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(rewards [N], masks [N])`` of single-task ``task_id`` (1..5) at the states
    ``qpos [N, nq]`` (and ``button_states [N, B]``), by OGBench's own ``relabel_dataset``:
    reward = #satisfied sub-goals - #sub-goals, mask = 0 where all are satisfied."""
    import ogbench  # noqa: F401
    from ogbench.relabel_utils import relabel_dataset

    from dprl.envs.vector import make_env
    env_name = f"{task}-singletask-task{task_id}-v0"
    env = make_env(env_name)
    data = {"qpos": np.asarray(qpos)}
    if button_states is not None:
        data["button_states"] = np.asarray(button_states)
    relabel_dataset(env_name, env, data)
    return data["rewards"], data["masks"]


def play_statistics(task: str, episodes: list[dict]) -> dict:
    """Statistics of collected play episodes, next to what OGBench documents for its datasets.

    ``ours`` counts dprl's layout: every env step is a transition (T = episode_length per episode,
    T + 1 observations). ``per_task`` relabels every state s_0 .. s_{T-1} with each of the five
    single-task goals (OGBench's ``relabel_dataset`` on the float32 qpos stored in the play
    dataset): the fraction of transitions at a success state (mask 0) and of episodes that reach
    one. ``collected_rewards_label_agreement``: the largest fraction of transitions where a task's
    relabeling equals the single-task rewards computed during collection (float64 state), and
    ``tasks_matching_collected_rewards`` the task(s) reaching it (OGBench's default task)."""
    T = np.array([len(e["actions"]) for e in episodes])
    actions = np.concatenate([e["actions"] for e in episodes])
    qpos = np.concatenate([e["qpos"][:-1] for e in episodes]).astype(np.float32)
    buttons = (np.concatenate([e["button_states"][:-1] for e in episodes])
               if "button_states" in episodes[0] else None)
    ends = np.cumsum(T)
    per_task, agreement = {}, {}
    collected = np.concatenate([e["singletask_rewards"] for e in episodes])
    for task_id in range(1, 6):
        rewards, masks = relabel_successes(task, task_id, qpos, buttons)
        success = masks == 0
        per_episode = np.logical_or.reduceat(success, ends - T)
        per_task[f"task{task_id}"] = {
            "success_fraction_of_transitions": round(float(success.mean()), 5),
            "episodes_reaching_success": round(float(per_episode.mean()), 5),
            "mean_reward": round(float(rewards.mean()), 4)}
        agreement[task_id] = float((collected == rewards).mean())
    # Which single task our collection-time rewards (env <task>-singletask-v0) are: the one(s)
    # whose relabeling they equal best (short collections can tie); OGBench's README names the
    # default task of every env.
    best = max(agreement.values())
    default_tasks = [k for k, a in agreement.items() if a == best]
    ours = {
        "num_episodes": len(episodes),
        "env_steps_per_episode": sorted(set(T.tolist())),
        "transitions": int(T.sum()),
        "transitions_in_ogbench_layout": int((T - 1).sum()),
        "observation_dim": int(episodes[0]["observations"].shape[-1]),
        "action_dim": int(actions.shape[-1]),
        "action_mean": np.round(actions.mean(0, dtype=np.float64), 4).tolist(),
        "action_std": np.round(actions.std(0, dtype=np.float64), 4).tolist(),
        "action_fraction_at_bounds": round(float((np.abs(actions) >= 1).mean()), 5),
        "subtasks_completed_per_episode_mean": round(float(np.mean(
            [e["num_subtasks"] for e in episodes])), 3),
        "collection_reward_mean": round(float(np.mean(np.concatenate(
            [e["rewards"] for e in episodes]))), 5),
        "redone_episodes": int(sum(e["attempt"] for e in episodes)),
        "per_task": per_task,
        "tasks_matching_collected_rewards": [f"task{k}" for k in default_tasks],
        "collected_rewards_label_agreement": best,
    }
    import gymnasium as gym
    _, single_id = MANIPULATION_TASKS[task]
    mine = {**ours, "env_steps_per_episode": ours["env_steps_per_episode"][0] if len(
                ours["env_steps_per_episode"]) == 1 else ours["env_steps_per_episode"],
            # OGBench counts (s, a, s') pairs: the last step of an episode has no successor.
            "transitions": ours["transitions_in_ogbench_layout"],
            "evaluation_episode_length": gym.spec(single_id).max_episode_steps,
            "default_task": default_tasks[0] if len(default_tasks) == 1 else default_tasks}
    documented = ogbench_documented(task)
    comparison = {key: {"ours": mine[key], "ogbench": doc["value"],
                        "match": mine[key] == doc["value"]} for key, doc in documented.items()}
    if len(default_tasks) > 1:   # a tie: ours is consistent with the default, not proof of it
        comparison["default_task"]["match"] = documented["default_task"]["value"] in default_tasks
    return {"ours": ours, "ogbench_documented": documented, "comparison": comparison}


# ----------------------------------------------------------------------------- datasets
def _collection_key(config: dict, num_episodes: int) -> str:
    return hashlib.sha1(json.dumps([config, num_episodes], sort_keys=True).encode()).hexdigest()[:16]


def _made_by(dataset_id: str, key: str) -> bool:
    from dprl.data.io import dataset_dir
    try:
        meta = json.loads((dataset_dir(dataset_id) / "data" / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("dprl", {}).get("collection_key") == key


def make_manipulation_dataset(task: str, steps: int = 1_000_000, *, seed: int = 0,
                              episode_length: int = EPISODE_LENGTH, overwrite: bool = False,
                              progress: bool = False, num_episodes: int | None = None,
                              chunk_episodes: int = CHUNK_EPISODES, partial_dir=None,
                              on_chunk=None, workers: int = 1) -> dict:
    """Collect ``num_episodes`` (default ``ceil(steps / episode_length)``) play episodes,
    resumably (see ``collect_play_episodes_resumable``; chunks in ``partial_dir``, by default
    ``default_partial_dir(task, seed, episode_length)``), and write both datasets; the partial
    directory is removed once both are stored."""
    from dprl.envs.tasks import get_task
    from dprl.data.io import dataset_dir, write_minari_dataset

    preset = get_task(task)
    collect_id, single_id = MANIPULATION_TASKS[task]
    if num_episodes is None:
        num_episodes = max(1, -(-steps // episode_length))
    _check_collection_args(task, num_episodes, seed, episode_length)
    partial_dir = Path(partial_dir) if partial_dir else default_partial_dir(task, seed,
                                                                           episode_length)
    config = collection_config(task, seed, episode_length)
    key = _collection_key(config, num_episodes)
    play_id, single_ds = f"dprl/{task}/play-v0", preset["dataset_id"]
    resuming = partial_dir.is_dir()
    for ds in (single_ds, play_id):
        # A dataset written by this very collection before a kill may be replaced when resuming.
        if dataset_dir(ds).exists() and not overwrite and not (resuming and _made_by(ds, key)):
            raise FileExistsError(
                f"Dataset {ds!r} already exists at {dataset_dir(ds)}. Pass overwrite=True "
                f"(CLI: --overwrite) to replace it, or delete that directory.")
    t0 = time.perf_counter()
    episodes = collect_play_episodes_resumable(
        task, num_episodes, partial_dir, seed=seed, episode_length=episode_length,
        chunk_episodes=chunk_episodes, progress=progress, on_chunk=on_chunk, workers=workers)
    t_collect = time.perf_counter() - t0
    collect_seconds = float(sum(e["seconds"] for e in episodes))
    total_steps = int(sum(len(e["actions"]) for e in episodes))
    import ogbench
    stats = play_statistics(task, episodes)
    prov = {
        "recipe": "play", "task": task, "seed": seed, "recipe_version": RECIPE_VERSION,
        "collection_key": key,
        "episode_seeds": "episode k, attempt j (redone scene episodes): (env reset seed, numpy "
                         "global RNG seed) = np.random.SeedSequence([seed, k, j])"
                         ".generate_state(2); the global RNG (oracle noise, p_stack) is reseeded "
                         "before every reset",
        "collection_env_id": collect_id, "collection_env_kwargs": collection_env_kwargs(
            episode_length),
        "oracles": "ogbench.manipspace.oracles.plan (non-Markovian plan oracles)",
        "oracle_noise": ORACLE_NOISE, "oracle_noise_smoothing": ORACLE_NOISE_SMOOTHING,
        "p_random_action": 0.0, "ogbench_version": getattr(ogbench, "__version__", "unknown"),
        "num_episodes": len(episodes), "total_steps": total_steps,
        "singletask_success_fraction_of_steps": float(np.mean(np.concatenate(
            [e["singletask_success"] for e in episodes]))),
        "collection_seconds": round(collect_seconds, 1),
        "collection_steps_per_second": round(total_steps / max(collect_seconds, 1e-9), 1),
        "collection_command": f"python -m dprl.datasets make {task} --seed {seed}",
        "statistics": stats,
    }
    common = [{k: e[k] for k in ("observations", "actions", "terminations", "truncations",
                                 "seed")} for e in episodes]
    write_minari_dataset(
        single_ds, [c | {"rewards": e["singletask_rewards"]} for c, e in zip(common, episodes)],
        single_id, ref_min_score=0.0, ref_max_score=1.0, overwrite=True,
        provenance={**prov, "singletask_env_id": single_id,
                    "rewards": "single-task reward at s_t: #satisfied - #sub-goals (0 = success); "
                               "OGBench masks = 1 - success = (reward < 0)",
                    "score": "success rate (info['success'])"},
        description=f"dprl stand-in for OGBench {task}-play-singletask-v0 (default task)")
    infos_note = ("infos: qpos [T+1, nq] float32" + (", button_states [T+1, B]" if
                  "button_states" in episodes[0] else "") + " at s_0 .. s_T (OGBench stores "
                  "the same at s_0 .. s_{T-1}), so any of the five single tasks can be "
                  "relabeled like ogbench.relabel_utils.relabel_dataset does")

    def play_infos(e):
        infos = {"qpos": e["qpos"].astype(np.float32)}
        if "button_states" in e:
            infos["button_states"] = e["button_states"].astype(np.int64)
        return infos

    write_minari_dataset(
        play_id, [c | {"rewards": e["rewards"], "infos": play_infos(e)}
                  for c, e in zip(common, episodes)], collect_id,
        env_kwargs=collection_env_kwargs(episode_length), overwrite=True,
        provenance={**prov, "infos": infos_note,
                    "rewards": "collection env reward: 1 while the oracle's current "
                               "sub-task is achieved (goal-conditioned play data)"},
        description=f"dprl stand-in for OGBench {task}-play-v0 (plan oracles, noise 0.1)")
    # Renamed first, so a kill during the removal cannot leave a partial directory with chunks
    # missing (which a rerun would take for an unfinished collection).
    doomed = partial_dir.with_name(f".removing-{partial_dir.name}-{os.getpid()}")
    os.replace(partial_dir, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return {"dataset_id": single_ds, "play_dataset_id": play_id, "rollout_s": t_collect,
            "collection_seconds": prov["collection_seconds"],
            "collection_steps_per_second": prov["collection_steps_per_second"],
            "total_s": time.perf_counter() - t0, "num_episodes": len(episodes),
            "total_steps": total_steps,
            "singletask_success_fraction_of_steps": prov["singletask_success_fraction_of_steps"],
            "statistics_comparison": stats["comparison"]}


# ---------------------------------------------------------------------------------------------
# Single-task rewards of any task id, relabeled from the play data at load time
# ---------------------------------------------------------------------------------------------
# One play dataset per env serves its five tasks: ``<env>-singletask-task{k}-v0`` judges the
# state s_t of every transition (OGBench's success_timing='pre') by its own sub-goals. The
# sub-goal states are read from the observations (they hold the cube positions, the button states
# and the drawer and window positions, scaled); the float32 observations give positions to
# ~1e-8 m, so a step whose distance lies within ``SUCCESS_MARGIN_M`` of OGBench's 4 cm threshold
# is judged again by replaying its episode in the collection env and asking the task env
# (``SingleTaskRelabeler``). The labels are thereby exactly the task env's.
OB_XYZ_CENTER = np.array([0.425, 0.0, 0.0])   # ogbench's observation scaling (compute_observation)
OB_XYZ_SCALER, OB_DRAWER_SCALER, OB_WINDOW_SCALER = 10.0, 18.0, 15.0
PROPRIO_DIM = 19            # joints 6 + 6, effector xyz 3, yaw cos/sin 2, gripper 2
CUBE_OB_DIM = 9             # xyz 3, quaternion 4, yaw cos/sin 2
SUCCESS_TOL = 0.04          # ogbench: a cube within 4 cm of its target, drawer/window within 4 cm
SUCCESS_MARGIN_M = 1e-6     # closer than this to the threshold: replay the episode to decide


def task_goal(singletask_env_id: str) -> dict:
    """The sub-goals of a single-task env (its fixed task) and where the observation holds them.

    ``{'env_id', 'cube_targets' [C, 3], 'button_targets' [K], 'drawer_target', 'window_target'
    (None when absent), 'num_button_states', 'obs_dim'}``.
    """
    return copy.deepcopy(_task_goal(singletask_env_id))


@functools.lru_cache(maxsize=None)
def _task_goal(singletask_env_id: str) -> dict:
    from dprl.envs.vector import make_env

    env = make_env(singletask_env_id)
    env.reset(seed=0)   # sets the task's goal (fixed per task id)
    u = env.unwrapped
    n_cubes = getattr(u, "_num_cubes", 0)
    n_buttons = getattr(u, "_num_buttons", 0)
    n_states = getattr(u, "_num_button_states", 0)
    goal = {
        "env_id": singletask_env_id,
        "cube_targets": np.array([u._data.mocap_pos[u._cube_target_mocap_ids[i]]
                                  for i in range(n_cubes)], np.float64).reshape(n_cubes, 3),
        "button_targets": np.asarray(getattr(u, "_target_button_states", np.zeros(0)),
                                     np.int64)[:n_buttons],
        "drawer_target": getattr(u, "_target_drawer_pos", None) if n_buttons and n_cubes else None,
        "window_target": getattr(u, "_target_window_pos", None) if n_buttons and n_cubes else None,
        "num_button_states": int(n_states),
        "obs_dim": int(env.observation_space.shape[0]),
    }
    env.close()
    return goal


def successes_from_observations(observations: np.ndarray, goal: dict
                                ) -> tuple[np.ndarray, np.ndarray]:
    """Sub-goal successes ``[N, S]`` (ogbench's ``_compute_successes`` order: cubes, buttons,
    drawer, window) of states ``observations [N, O]``, and ``ambiguous [N]``: a distance within
    ``SUCCESS_MARGIN_M`` of the threshold (decide those by replay)."""
    obs = np.asarray(observations, np.float64)
    n_cubes, n_buttons = len(goal["cube_targets"]), len(goal["button_targets"])
    scene = goal["drawer_target"] is not None
    layout = PROPRIO_DIM + CUBE_OB_DIM * n_cubes + n_buttons * (goal["num_button_states"] + 2)
    layout += 4 if scene else 0
    if obs.shape[1] != layout or obs.shape[1] != goal["obs_dim"]:
        raise ValueError(f"observations of dim {obs.shape[1]} do not have the layout of "
                         f"{goal['env_id']} (dim {goal['obs_dim']}; computed {layout}): relabel "
                         f"only play data of the same env")
    cols, dists = [], []
    i = PROPRIO_DIM
    for c in range(n_cubes):
        xyz = obs[:, i:i + 3] / OB_XYZ_SCALER + OB_XYZ_CENTER
        d = np.linalg.norm(xyz - goal["cube_targets"][c], axis=-1)
        cols.append(d <= SUCCESS_TOL)
        dists.append(d)
        i += CUBE_OB_DIM
    for b in range(n_buttons):
        state = np.argmax(obs[:, i:i + goal["num_button_states"]], axis=-1)
        cols.append(state == goal["button_targets"][b])
        i += goal["num_button_states"] + 2
    if scene:
        for scaler, target in ((OB_DRAWER_SCALER, goal["drawer_target"]),
                               (OB_WINDOW_SCALER, goal["window_target"])):
            d = np.abs(obs[:, i] / scaler - target)
            cols.append(d <= SUCCESS_TOL)
            dists.append(d)
            i += 2
    successes = np.stack(cols, axis=1)
    ambiguous = np.zeros(len(obs), bool)
    for d in dists:
        ambiguous |= np.abs(d - SUCCESS_TOL) <= SUCCESS_MARGIN_M
    return successes, ambiguous


def replay_successes(data, rows: np.ndarray, singletask_env_ids: Sequence[str]) -> np.ndarray:
    """Sub-goal successes ``[len(ids), len(rows), S]`` at transitions ``rows`` of ``data`` (an
    ``OfflineData`` of a dprl play dataset), judged by each task env on the replayed states.

    Replays each episode holding one of ``rows`` from its recorded reset seed in the collection
    env (``metadata['dprl']``), checking that the replay reproduces the stored observations.
    """
    import minari

    from dprl.envs.vector import make_env

    prov = data.metadata.get("dprl", {})
    if "collection_env_id" not in prov:
        raise ValueError(f"dataset {data.dataset_id!r} records no collection env: it cannot be "
                         f"replayed to relabel {', '.join(singletask_env_ids)}")
    ds = minari.load_dataset(data.dataset_id)
    seeds = [m.get("seed") for m in ds.storage.get_episode_metadata(range(ds.total_episodes))]
    ends = np.flatnonzero(data.dones)
    starts = np.concatenate([[0], ends[:-1] + 1])
    rows = np.asarray(rows, np.int64)
    episode_of = np.searchsorted(ends, rows)
    needed = np.unique(episode_of).tolist()
    env = make_env(prov["collection_env_id"], **prov.get("collection_env_kwargs", {}))
    judges = [SingleTaskRelabeler(i) for i in singletask_env_ids]
    out: dict[int, list[np.ndarray]] = {}
    for e, ep in zip(needed, ds.iterate_episodes(episode_indices=needed)):
        if seeds[e] is None:
            raise ValueError(f"episode {e} of {data.dataset_id!r} has no reset seed; make the "
                             f"dataset again to relabel it")
        wanted = set(rows[episode_of == e].tolist())
        env.reset(seed=int(seeds[e]))
        for t in range(max(wanted) - starts[e] + 1):
            if not np.allclose(env.unwrapped.compute_observation(), ep.observations[t],
                               atol=1e-5):
                raise ValueError(f"replaying episode {e} of {data.dataset_id!r} diverges at step "
                                 f"{t}: the dataset was not made by this ogbench version")
            if starts[e] + t in wanted:
                out[int(starts[e] + t)] = [j.successes(env) for j in judges]
            env.step(ep.actions[t])
    env.close()
    return np.stack([np.stack([out[int(r)][i] for r in rows]) for i in range(len(judges))])


def singletask_labels(data, singletask_env_id: str) -> np.ndarray:
    """Sub-goal successes ``[N, S]`` of every transition's state s_t under the task env."""
    if isinstance(data.observations, dict):     # visual-* frames: judge s_t on its stored state
        if "qpos" not in data.extras:
            raise ValueError(f"{data.dataset_id}: camera observations without qpos: the task's "
                             f"rewards cannot be relabeled (use the released visual-* file)")
        return stored_state_successes(data.extras, np.arange(data.size), singletask_env_id)
    goal = task_goal(singletask_env_id)
    successes, ambiguous = successes_from_observations(data.observations, goal)
    rows = np.flatnonzero(ambiguous)
    if len(rows):
        if "qpos" in getattr(data, "extras", {}):
            successes[rows] = stored_state_successes(data.extras, rows, singletask_env_id)
        else:
            successes[rows] = replay_successes(data, rows, [singletask_env_id])[0]
    return successes


def stored_state_successes(extras: dict, rows: np.ndarray, singletask_env_id: str) -> np.ndarray:
    """Sub-goal successes ``[len(rows), S]`` judged by the task env on the states a file stores
    (OGBench's ``qpos``, ``qvel``, ``button_states`` of s_t), for data that cannot be replayed."""
    judge = SingleTaskRelabeler(singletask_env_id)
    out = []
    for r in np.asarray(rows):
        out.append(judge.successes_at(
            extras["qpos"][r], extras["qvel"][r] if "qvel" in extras else None,
            extras["button_states"][r] if "button_states" in extras else None))
    judge.env.close()
    return np.stack(out)


def singletask_rewards(successes: np.ndarray, sparse: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(rewards [N], success [N])`` from sub-goal successes ``[N, S]``.

    Dense (OGBench): ``#satisfied - #sub-goals`` (0 = solved). Sparse (the QC paper's
    ``--sparse`` on scene and puzzle: ``(r != 0) * -1``): -1 until solved, 0 then. OGBench's
    masks are ``1 - success`` either way.
    """
    successes = np.asarray(successes, bool)
    dense = successes.sum(axis=1) - successes.shape[1]
    success = successes.all(axis=1)
    rewards = -(dense != 0).astype(np.float32) if sparse else dense.astype(np.float32)
    return rewards, success


def relabel_singletask(data, preset: dict):
    """The play data of ``data`` with the rewards of ``preset['singletask_env_id']`` (sparse when
    ``preset['sparse_reward']``) and ``terminals = success`` (OGBench's masks); the task preset's
    ``reward_relabel`` hook. Returns a new ``OfflineData``."""
    import dataclasses

    successes = singletask_labels(data, preset["singletask_env_id"])
    rewards, success = singletask_rewards(successes, bool(preset.get("sparse_reward")))
    meta = dict(data.metadata)
    meta["dprl_relabel"] = {
        "singletask_env_id": preset["singletask_env_id"],
        "sparse_reward": bool(preset.get("sparse_reward")),
        "rewards": ("-1 until solved, 0 then (QC --sparse)" if preset.get("sparse_reward")
                    else "#satisfied - #sub-goals at s_t (OGBench)"),
        "terminals": "success at s_t (OGBench masks = 1 - success)",
        "success_fraction_of_steps": float(success.mean()),
    }
    return dataclasses.replace(data, rewards=rewards, terminals=success, metadata=meta)


# ---------------------------------------------------------------------------------------------
# dprl's stand-in in OGBench's file layout
# ---------------------------------------------------------------------------------------------
def ogbench_export_path(task: str) -> Path:
    """Where ``make <env> --format ogbench`` writes: beside the stand-in, never into OGBench's
    own data directory (which holds only released files)."""
    from dprl.data.io import DPRL_NAMESPACE, datasets_root
    return datasets_root() / DPRL_NAMESPACE / task / f"{task}-play-v0.npz"


def export_play_ogbench(task: str, out=None) -> Path:
    """Write the stored play stand-in ``dprl/<task>/play-v0`` as an OGBench npz file
    (``dprl.data.formats.write_ogbench_npz``: observations, actions, terminals, qpos,
    button_states of every state), so ``--dataset=ogbench:<that file>`` trains on the same data
    through OGBench's reader. The file has no qvel (the stand-in does not store it)."""
    import minari

    from dprl.data.formats import write_ogbench_npz
    from dprl.data.registry import check_dataset_dir

    play_id = f"dprl/{task}/play-v0"
    check_dataset_dir(play_id)
    ds = minari.load_dataset(play_id)
    episodes = []
    for ep in ds.iterate_episodes():
        e = {"observations": np.asarray(ep.observations, np.float32),
             "actions": np.asarray(ep.actions, np.float32)}
        for k in ("qpos", "button_states"):
            if k in (ep.infos or {}):
                e[k] = np.asarray(ep.infos[k])
        episodes.append(e)
    return write_ogbench_npz(out or ogbench_export_path(task), episodes)
