"""The pole task's demonstrations (dprl/envs/pole.py): half pass the pole on the left, half on the right.

``make_pole_dataset('pole')`` writes ``dprl/pole/demos-v0``; ``'pole-right'`` writes the same
demonstrations under the reward that pays only for passing on the right
(``dprl/pole-right/demos-v0``). A few seconds; the runner makes them on first use.
"""
from __future__ import annotations

import numpy as np

from dprl.data.io import dataset_exists, record_episode, write_minari_dataset

POLE_TASKS = {
    "pole": ("dprl/pole/demos-v0", "dprl/Pole-v0"),
    "pole-right": ("dprl/pole-right/demos-v0", "dprl/PoleRight-v0"),
    "pixel-pole": ("dprl/pole/demos-v0", "dprl/Pole-v0"),   # pole's demos, rendered at load time
}


def rollout_demos(env_id: str, num_episodes: int, seed: int = 0, noise: float = 0.1) -> list[dict]:
    """Scripted demonstrations, sides alternating left/right; each episode records its reset seed."""
    from dprl.envs.vector import make_env
    from dprl.envs.pole import demo_action

    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(num_episodes):
        side = ("left", "right")[i % 2]
        episode, _ = record_episode(env, seed * 100_000 + i,
                                    lambda obs: demo_action(obs[:2], side, rng, noise))
        episodes.append({**episode, "side": side})
    return episodes


def make_pole_dataset(task_name: str = "pole", num_episodes: int = 200, seed: int = 0,
                      overwrite: bool = False) -> str:
    """Write the pole task's demonstrations as a Minari dataset; returns its id."""
    if task_name not in POLE_TASKS:
        raise KeyError(f"Unknown pole task {task_name!r}; use one of {sorted(POLE_TASKS)}")
    dataset_id, env_id = POLE_TASKS[task_name]
    if dataset_exists(dataset_id) and not overwrite:
        return dataset_id
    episodes = rollout_demos(env_id, num_episodes, seed)
    write_minari_dataset(
        dataset_id, episodes, env_id, ref_min_score=0.0, ref_max_score=1.0,
        provenance={"recipe": "pole-demos", "policy": "dprl.envs.pole.demo_action (scripted)",
                    "seed": seed, "num_episodes": num_episodes,
                    "sides": {"left": sum(e["side"] == "left" for e in episodes),
                              "right": sum(e["side"] == "right" for e in episodes)}},
        description="2D pole task: scripted demonstrations passing left or right, half each.",
        overwrite=overwrite)
    return dataset_id
