"""OGBench-style manipulation datasets (cube-single, cube-double, scene, puzzle-3x3), made here.

The ``ogbench`` package ships the manipulation envs and the scripted oracles its authors used to
make the published ``*-play-v0`` datasets. The published play recipe (OGBench, Park et al. 2024,
``data_gen_scripts/generate_manipspace.py``), which we follow:
  * the goal-conditioned env made with ``terminate_at_goal=False, mode='data_collection'`` and
    ``max_episode_steps=1001``; 1000 episodes of 1001 steps (~1M transitions);
  * non-Markovian *plan* oracles (``ogbench.manipspace.oracles.plan``) with ``noise=0.1``,
    ``noise_smoothing=0.5``, no random actions; puzzle's button oracle keeps the gripper closed;
  * whenever the oracle finishes its sub-task the env draws a new target
    (``set_new_target(p_stack)``), with ``p_stack`` 0 (cube-single), U(0, 0.25) per episode
    (cube-double), 0.5 (scene, puzzle);
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
Every episode records its reset seed: replaying its actions in the collection env reproduces the
observations, and relabeling the replayed states reproduces the single-task rewards.
"""
from __future__ import annotations

import copy
import functools
import time
from typing import Sequence

import numpy as np

# task -> (collection env id, single-task evaluation env id)
MANIPULATION_TASKS = {
    "cube-single": ("cube-single-v0", "cube-single-singletask-v0"),
    "cube-double": ("cube-double-v0", "cube-double-singletask-v0"),
    "scene": ("scene-v0", "scene-singletask-v0"),
    "puzzle-3x3": ("puzzle-3x3-v0", "puzzle-3x3-singletask-v0"),
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
    return 0.5


class SingleTaskRelabeler:
    """Single-task reward of a collection env's current state, computed by the task env itself.

    Copies the collection env's physical state (qpos, qvel, button states) into a single-task env
    reset to its task goal and asks that env which sub-goals hold, so the reward is exactly the
    one the evaluation env would give.
    """

    def __init__(self, singletask_env_id: str):
        import mujoco

        from dprl.envs import make_env
        self._mujoco = mujoco
        self.env = make_env(singletask_env_id)
        self.env.reset(seed=0)   # sets the task goal (fixed per task id)
        self.u = self.env.unwrapped

    def successes(self, collection_env) -> np.ndarray:
        src = collection_env.unwrapped
        u = self.u
        u._data.qpos[:] = src._data.qpos
        u._data.qvel[:] = src._data.qvel
        if hasattr(src, "_cur_button_states"):
            u._cur_button_states = np.array(src._cur_button_states).copy()
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


def collect_play_episodes(task: str, num_episodes: int, *, seed: int = 0,
                          episode_length: int = EPISODE_LENGTH, progress: bool = False
                          ) -> list[dict]:
    """Play episodes with both reward labels: ``rewards`` (collection env), ``singletask_rewards``
    and ``singletask_success``; every episode has ``seed`` (its reset seed)."""
    import ogbench  # noqa: F401  registers the manipulation envs

    from dprl.envs import make_env

    collect_id, single_id = MANIPULATION_TASKS[task]
    env = make_env(collect_id, **collection_env_kwargs(episode_length))
    relabel = SingleTaskRelabeler(single_id)
    oracles = _make_oracles(task, env)
    rng = np.random.default_rng(seed)
    # The oracles draw their plan noise from numpy's global RNG: seed it for reproducibility and
    # give the caller's global state back afterwards.
    saved_state = np.random.get_state()
    np.random.seed(seed)
    episodes: list[dict] = []
    next_seed = seed * 1_000_000
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=num_episodes, desc=f"play {task}", unit="ep")
    try:
        while len(episodes) < num_episodes:
            ep_seed = next_seed
            next_seed += 1
            ob, info = env.reset(seed=ep_seed)
            p_stack = _p_stack(task, rng)
            agent = oracles[info["privileged/target_task"]]
            agent.reset(ob, info)
            ep = {k: [] for k in ("actions", "rewards", "terminations", "truncations",
                                  "singletask_rewards", "singletask_success")}
            ep["observations"] = [ob]
            block_xyz = []
            done = False
            while not done:
                # Single-task reward of (s_t, a_t) is judged at s_t ('pre' success timing).
                r_single, success = relabel.reward(env)
                # float32 before stepping: the stored action is exactly the executed one, so a
                # replay reproduces the episode bit for bit.
                action = np.clip(np.asarray(agent.select_action(ob, info)), -1, 1)
                action = action.astype(np.float32)
                ob, reward, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                if agent.done:
                    # New sub-task when the oracle finished its current one.
                    ob_t, info_t = env.unwrapped.set_new_target(p_stack=p_stack)
                    agent = oracles[info_t["privileged/target_task"]]
                    agent.reset(ob_t, info_t)
                ep["actions"].append(action)
                ep["observations"].append(ob)
                ep["rewards"].append(float(reward))
                ep["terminations"].append(bool(terminated))
                ep["truncations"].append(bool(truncated))
                ep["singletask_rewards"].append(r_single)
                ep["singletask_success"].append(success)
                if task == "scene":
                    block_xyz.append(env.unwrapped._data.qpos[14:17].copy())
            if task == "scene" and not _scene_healthy(np.asarray(block_xyz)):
                continue  # redo with the next seed, as OGBench does
            episodes.append({k: np.asarray(v) for k, v in ep.items()} | {"seed": ep_seed})
            if bar is not None:
                bar.update(1)
    finally:
        np.random.set_state(saved_state)
        if bar is not None:
            bar.close()
    return episodes


def make_manipulation_dataset(task: str, steps: int = 1_000_000, *, seed: int = 0,
                              episode_length: int = EPISODE_LENGTH, overwrite: bool = False,
                              progress: bool = False) -> dict:
    """Collect ``ceil(steps / episode_length)`` play episodes and write both datasets."""
    from dprl.tasks import get_task
    from dprl.datasets.io import write_minari_dataset

    import ogbench

    preset = get_task(task)
    collect_id, single_id = MANIPULATION_TASKS[task]
    num_episodes = max(1, -(-steps // episode_length))
    t0 = time.perf_counter()
    episodes = collect_play_episodes(task, num_episodes, seed=seed,
                                     episode_length=episode_length, progress=progress)
    t_roll = time.perf_counter() - t0
    success = np.array([e["singletask_success"].mean() for e in episodes])
    prov = {
        "recipe": "play", "task": task, "seed": seed,
        "episode_seeds": "seed * 1_000_000 + k (k counts resets, redone scene episodes included)",
        "collection_env_id": collect_id, "collection_env_kwargs": collection_env_kwargs(
            episode_length),
        "oracles": "ogbench.manipspace.oracles.plan (non-Markovian plan oracles)",
        "oracle_noise": ORACLE_NOISE, "oracle_noise_smoothing": ORACLE_NOISE_SMOOTHING,
        "p_random_action": 0.0, "ogbench_version": getattr(ogbench, "__version__", "unknown"),
        "num_episodes": len(episodes),
        "total_steps": int(sum(len(e["actions"]) for e in episodes)),
        "singletask_success_fraction_of_steps": float(success.mean()),
    }
    common = [{k: e[k] for k in ("observations", "actions", "terminations", "truncations",
                                 "seed")} for e in episodes]
    play_id = f"dprl/{task}/play-v0"
    write_minari_dataset(
        play_id, [c | {"rewards": e["rewards"]} for c, e in zip(common, episodes)], collect_id,
        env_kwargs=collection_env_kwargs(episode_length), overwrite=overwrite,
        provenance={**prov, "rewards": "collection env reward: 1 while the oracle's current "
                                      "sub-task is achieved (goal-conditioned play data)"},
        description=f"dprl stand-in for OGBench {task}-play-v0 (plan oracles, noise 0.1)")
    single_ds = preset["dataset_id"]
    write_minari_dataset(
        single_ds, [c | {"rewards": e["singletask_rewards"]} for c, e in zip(common, episodes)],
        single_id, ref_min_score=0.0, ref_max_score=1.0, overwrite=overwrite,
        provenance={**prov, "singletask_env_id": single_id,
                    "rewards": "single-task reward at s_t: #satisfied - #sub-goals (0 = success); "
                               "OGBench masks = 1 - success = (reward < 0)",
                    "score": "success rate (info['success'])"},
        description=f"dprl stand-in for OGBench {task}-play-singletask-v0 (default task)")
    return {"dataset_id": single_ds, "play_dataset_id": play_id, "rollout_s": t_roll,
            "total_s": time.perf_counter() - t0, "num_episodes": len(episodes),
            "total_steps": prov["total_steps"],
            "singletask_success_fraction_of_steps": prov["singletask_success_fraction_of_steps"]}


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
    from dprl.envs import make_env

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

    from dprl.envs import make_env

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
    goal = task_goal(singletask_env_id)
    successes, ambiguous = successes_from_observations(data.observations, goal)
    rows = np.flatnonzero(ambiguous)
    if len(rows):
        successes[rows] = replay_successes(data, rows, [singletask_env_id])[0]
    return successes


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
