"""Play data for the waypoint chain (dprl/envs/chain.py), QC's long-horizon sparse-reward toy.

``make_chain_dataset()`` writes ``dprl/chain/play-v0``: episodes of a demonstrator that goes from
waypoint to waypoint in random order (never the same one twice in a row) with steering noise,
until it happens to complete the chain A -> B -> C or the time limit ends the episode. Most
episodes fail (``chain_success_rate`` in the provenance). A few seconds.
"""
from __future__ import annotations

import numpy as np

from dprl.data.io import dataset_exists, record_episode, write_minari_dataset

CHAIN_TASKS = {"chain": ("dprl/chain/play-v0", "dprl/WaypointChain-v0"),
               "pixel-chain": ("dprl/chain/play-v0", "dprl/WaypointChain-v0")}  # rendered at load


def rollout_play(num_episodes: int, seed: int = 0, noise: float = 0.3) -> list[dict]:
    """Play episodes; each records its reset seed and whether it completed the chain."""
    from dprl.envs.chain import next_play_target, play_action
    from dprl.envs.vector import make_env

    env = make_env(CHAIN_TASKS["chain"][1])
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(num_episodes):
        target = next_play_target(-1, rng)

        def head_for_target(obs):
            return play_action(obs[:2], target, rng, noise)

        def next_target_when_visited(info):
            nonlocal target
            if info["visited"] == target:
                target = next_play_target(target, rng)

        episode, info = record_episode(env, seed * 100_000 + i, head_for_target,
                                       next_target_when_visited)
        episodes.append({**episode, "success": bool(info["success"])})
    return episodes


def make_chain_dataset(task_name: str = "chain", num_episodes: int = 300, seed: int = 0,
                       overwrite: bool = False) -> str:
    """Write the chain task's play data as a Minari dataset; returns its id."""
    if task_name not in CHAIN_TASKS:
        raise KeyError(f"Unknown chain task {task_name!r}; use one of {sorted(CHAIN_TASKS)}")
    dataset_id, env_id = CHAIN_TASKS[task_name]
    if dataset_exists(dataset_id) and not overwrite:
        return dataset_id
    episodes = rollout_play(num_episodes, seed)
    success = float(np.mean([e["success"] for e in episodes]))
    write_minari_dataset(
        dataset_id, episodes, env_id, ref_min_score=0.0, ref_max_score=1.0,
        provenance={"recipe": "chain-play", "policy": "dprl.envs.chain.play_action (scripted)",
                    "seed": seed, "num_episodes": num_episodes, "chain_success_rate": success},
        description="Waypoint chain: random-order play between three waypoints; mostly "
                    "unsuccessful (sparse reward only for visiting A, B, C in order).",
        overwrite=overwrite)
    return dataset_id
