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

import time

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
