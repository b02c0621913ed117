"""Acting with an agent in environments: what happened comes back as data.

``run_chunk`` (off-policy online: a chunk the agent sampled, run in one env, as buffer
transitions; the agent acts inside ``dprl.run.updates.replay_step``),
``collect_rollout`` (on-policy online: a rollout from many envs, the ``Rollout`` schema that
on-policy agents' ``update`` takes) and ``evaluate_agent`` (evaluation episodes, as ``eval/``
metrics). Observations reach the agent and the returned data normalized by the executor's
normalizer: the dataset's statistics, as in the offline batches.
"""
from __future__ import annotations

from typing import Any, TypedDict

import jax
import jax.numpy as jnp
import numpy as np

from dprl.data.buffer import transitions_from_chunks
from dprl.envs.vector import ChunkExecutor, VecEnv, evaluate


class Rollout(TypedDict):
    """What an on-policy agent's ``update`` takes: ``T`` chunk-steps from each of ``E`` envs.

    ``(K,)`` is the observation history (absent when ``obs_history = 1``). On a pixel task every
    observation field is a dict of the same layout part by part: ``{'image': uint8 [T, E, (K,)
    H, W, C], 'state': float32 [T, E, (K,) S]}`` (images stay uint8; the encoders make them
    float inside the jitted update).
    """

    observations: np.ndarray       # [T, E, (K,) O]  normalized policy inputs
    actions: np.ndarray            # [T, E, H, A]    the sampled chunks
    aux: Any                       # the agent's aux from sample_actions, each leaf [T, E, ...]
    rewards: np.ndarray            # [T, E]  sum of the executed steps' rewards
    terminals: np.ndarray          # [T, E]  the env terminated inside the chunk
    dones: np.ndarray              # [T, E]  the episode ended (terminated or truncated)
    next_observations: np.ndarray  # [T, E, O] normalized observation after the chunk (the final
                                   #           one when the episode ended: bootstraps truncations)
    last_observations: np.ndarray  # [E, (K,) O] policy inputs after the rollout (bootstrapping)


def make_executor(task: dict, config, normalizer, num_envs: int, seed: int) -> ChunkExecutor:
    """``num_envs`` envs of the task, reset with seeds from ``seed``, that run the agent's chunks
    (``act_steps`` of each, ``obs_history`` frames) and normalize what they observe."""
    vec = VecEnv(task["env_id"], num_envs, env_kwargs=task["env_kwargs"], seed=seed)
    executor = ChunkExecutor(vec, act_steps=config.act_steps, obs_history=config.obs_history,
                             normalize=normalizer)
    executor.reset()
    return executor


def run_chunk(executor: ChunkExecutor, chunks: np.ndarray, limit: int) -> dict:
    """Run ``chunks [E, H, A]`` (the agent's, sampled on device) in the executor's envs; the
    executed steps as buffer transitions (at most ``limit``)."""
    executed = executor.step_chunks(np.asarray(chunks))
    transitions = transitions_from_chunks(executed, executor.normalize)
    n = min(len(transitions["actions"]), limit)
    return jax.tree.map(lambda v: v[:n], transitions)


def collect_rollout(agent, executor: ChunkExecutor, num_steps: int, key: jax.Array
                    ) -> tuple[Rollout, int]:
    """``num_steps`` chunk-steps from every env of ``executor``: ``(rollout, env_steps)``."""
    steps = []
    env_steps = 0
    for _ in range(num_steps):
        key, act_key = jax.random.split(key)
        obs = executor.policy_observations()
        chunks, aux = agent.sample_actions(jax.tree.map(jnp.asarray, obs), act_key)
        executed = executor.step_chunks(np.asarray(chunks))
        valid = executed["valid"]
        env_steps += int(valid.sum())
        last = valid.sum(0) - 1
        # Each env's observation after its last executed step (part by part for pixel dicts).
        next_raw = jax.tree.map(lambda x: x[last, np.arange(valid.shape[1])],
                                executed["next_observations"])
        steps.append({
            "observations": obs, "actions": np.asarray(chunks), "aux": jax.device_get(aux),
            "rewards": (executed["rewards"] * valid).sum(0),
            "terminals": (executed["terminals"] & valid).any(0),
            "dones": ((executed["terminals"] | executed["truncations"]) & valid).any(0),
            "next_observations": _policy_dtypes(executor.normalize(next_raw))})
    rollout = jax.tree.map(lambda *x: np.stack(x), *steps)
    for name in ("rewards", "terminals", "dones"):
        rollout[name] = rollout[name].astype(np.float32)
    rollout["last_observations"] = executor.policy_observations()
    return rollout, env_steps


def _policy_dtypes(observations):
    """float32 flat observations / pixel states; pixel images stay uint8."""
    return jax.tree.map(lambda x: x if x.dtype == np.uint8 else np.asarray(x, np.float32),
                        observations)


def recent_return(executor: ChunkExecutor, episodes: int) -> dict:
    """``train/episode_return``: the mean return of the last ``episodes`` finished episodes."""
    if not executor.finished:
        return {}
    return {"train/episode_return": float(np.mean(
        [e["return"] for e in executor.finished[-episodes:]]))}


def evaluate_agent(agent, key: jax.Array, task: dict, config, normalizer, ref_min_score,
                   ref_max_score) -> dict:
    """``config.run.eval_episodes`` episodes of the task (seeded ``run.eval_seed`` on), acting
    with ``agent.eval_actions`` where the agent has one (an evaluation that differs from
    acting: DPPO's without the exploration floor), else ``agent.sample_actions``; their summary as
    ``eval/...`` metrics."""
    act = getattr(agent, "eval_actions", agent.sample_actions)

    def policy(obs):
        nonlocal key
        key, act_key = jax.random.split(key)
        return np.asarray(act(jax.tree.map(jnp.asarray, obs), act_key)[0])

    result = evaluate(policy, task["env_id"], config.run.eval_episodes, config.act_steps,
                      seed=config.run.eval_seed, obs_history=config.obs_history,
                      normalize=normalizer, env_kwargs=task["env_kwargs"],
                      ref_min_score=ref_min_score, ref_max_score=ref_max_score,
                      score=task["score"], max_envs=config.run.eval_envs)
    return {f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))}
