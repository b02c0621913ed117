"""Writing episodes as a Minari dataset, atomically, with provenance.

A dataset is written into a hidden temporary directory beside its final place and renamed into
place only when complete, so a killed generator never leaves a half-written dataset under a
valid id. dprl's own datasets live in the ``dprl`` namespace (``dprl/hopper/medium-v0``), never
under an official Minari id.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

DPRL_NAMESPACE = "dprl"


def datasets_root() -> Path:
    """Minari's dataset root: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    root = os.environ.get("MINARI_DATASETS_PATH") or os.path.join(
        os.path.expanduser("~"), ".minari", "datasets")
    return Path(root)


def dataset_dir(dataset_id: str) -> Path:
    return datasets_root() / dataset_id


def dataset_exists(dataset_id: str) -> bool:
    """True when a complete dataset (metadata and data) is stored locally under this id."""
    path = dataset_dir(dataset_id)
    return (path / "data" / "metadata.json").is_file()


def record_episode(env: gym.Env, seed: int, act: Callable[[np.ndarray], np.ndarray],
                   after_step: Callable[[dict], None] = lambda info: None) -> tuple[dict, dict]:
    """One episode of ``act(observation) -> action`` from ``env.reset(seed=seed)``, as the
    episode dict ``write_minari_dataset`` takes (with its reset ``seed``), and the last step's
    info. ``after_step(info)`` sees every step's info (a scripted policy that changes its goal)."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    while True:
        action = act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        after_step(info)
        if terminated or truncated:
            break
    episode = {"observations": np.stack(observations), "actions": np.stack(actions),
               "rewards": np.array(rewards), "terminations": np.array(terms),
               "truncations": np.array(truncs), "seed": seed}
    return episode, info


def write_minari_dataset(
    dataset_id: str,
    episodes: Sequence[dict[str, np.ndarray]],
    env_id: str,
    *,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    provenance: dict[str, Any] | None = None,
    description: str = "",
    algorithm_name: str = "dprl",
    env_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write episodes into ``$MINARI_DATASETS_PATH/<dataset_id>`` atomically.

    Args:
      dataset_id: ``namespace/name/dataset-vN``.
      episodes: each a dict with ``observations [T+1, O]`` (the reset observation first),
        ``actions [T, A]``, ``rewards [T]``, ``terminations [T]``, ``truncations [T]`` and
        optionally ``seed`` (the reset seed, so episodes can be replayed) and ``infos`` (a dict
        of per-state arrays ``[T+1, ...]``, stored as Minari's episode infos).
      env_id: a registered gymnasium id; its spec (with ``env_kwargs``) is stored.
      provenance: recipe, policy, seeds, ...; stored under ``metadata['dprl']``.
    Returns:
      The dataset's directory.
    """
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    import dprl
    import dprl.envs.vector  # noqa: F401  registers dprl's own env ids

    final = dataset_dir(dataset_id)
    if final.exists():
        if not overwrite:
            raise FileExistsError(
                f"Dataset {dataset_id!r} already exists at {final}. Pass overwrite=True "
                f"(CLI: --overwrite) to replace it, or delete that directory.")
    env = gym.make(env_id, **(env_kwargs or {}))
    env_spec = env.spec
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=False)
    try:
        # Minari's layout: <root>/<id>/data/{metadata.json, main_data.hdf5}
        storage = MinariStorage.new(
            tmp / "data", observation_space=env.observation_space, action_space=env.action_space,
            env_spec=env_spec)
        metadata = {
            "dataset_id": dataset_id,
            "algorithm_name": algorithm_name,
            "author": {"dprl"},
            "author_email": {"none"},
            "minari_version": _minari_version(),
            "description": description,
            "requirements": [],
        }
        if ref_min_score is not None and ref_max_score is not None:
            metadata["ref_min_score"] = float(ref_min_score)
            metadata["ref_max_score"] = float(ref_max_score)
        storage.update_metadata(metadata)
        buffers = []
        for i, ep in enumerate(episodes):
            buffers.append(EpisodeBuffer(
                id=i, seed=ep.get("seed"),
                observations=np.asarray(ep["observations"], np.float32 if np.asarray(
                    ep["observations"]).dtype.kind == "f" else None),
                actions=np.asarray(ep["actions"], np.float32),
                rewards=list(np.asarray(ep["rewards"], np.float64)),
                terminations=list(np.asarray(ep["terminations"], bool)),
                truncations=list(np.asarray(ep["truncations"], bool)),
                infos=ep.get("infos") or {}))
        storage.update_episodes(buffers)
        # dprl's provenance lives in its own key of metadata.json (Minari keeps unknown keys).
        meta_path = tmp / "data" / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["dprl"] = {
            "dprl_version": dprl.__version__,
            "created_unix": time.time(),
            **(provenance or {}),
        }
        meta_path.write_text(json.dumps(meta, default=_json_default))
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _minari_version() -> str:
    import minari
    return str(getattr(minari, "__version__", "unknown"))


def _json_default(obj):
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
