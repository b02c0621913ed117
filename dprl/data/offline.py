"""Minari datasets -> flat transition arrays, validation, the observation normalizer, scores.

``load_dataset(id)`` reads any Minari dataset stored locally (dprl's generated stand-ins and
official downloads alike) into an ``OfflineData`` of flat numpy arrays in episode order, with
actions mapped to [-1, 1]. ``task_dataset(task)`` says which dataset a run of a task uses and
refuses one recorded in another env, from its metadata alone; ``load_task_data`` then loads it.
Their checks (the directory is whole, episode boundaries, finite values, the env id, the spaces)
stop a run early with a message that says what to do, and are the checks of
``python -m dprl.datasets verify`` (``dprl.datasets.verify``).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax.struct
import gymnasium as gym
import jax.numpy as jnp
import numpy as np

from dprl.data.formats import (ROBOMIMIC_OBS_KEYS, DataSource, load_ogbench, load_robomimic,
                               recorded_env_id, source_fingerprint)
from dprl.data.frames import PixelSpec, apply_observation_transform, is_pixel, pixel_spec
from dprl.data.io import dataset_dir
from dprl.data.registry import (check_dataset_dir, check_dataset_env, dataset_fingerprint,
                                    env_id_of, episode_boundary_problem, read_metadata,
                                    resolve_task_source, run_relabel, source_of)
from dprl.envs.benchmarks import REWARDS
from dprl.envs.vector import from_env_action, make_env
from dprl.envs.tasks import Task, get_task


@dataclasses.dataclass
class OfflineData:
    """A dataset as flat transitions ``[N, ...]`` in episode order.

    ``dones`` marks the last transition of every episode (terminated or truncated), so that
    chunks and observation histories never cross an episode boundary. ``terminals`` is true only
    where the environment terminated (no bootstrapping); timeouts are not terminals.
    """

    observations: np.ndarray       # [N, O] raw (unnormalized)
    actions: np.ndarray            # [N, A] in [-1, 1]
    rewards: np.ndarray            # [N]
    terminals: np.ndarray          # [N] bool
    timeouts: np.ndarray           # [N] bool: truncated by a time limit
    dones: np.ndarray              # [N] bool: terminals | timeouts | the dataset's last step
    next_observations: np.ndarray  # [N, O] raw
    dataset_id: str = ""
    source: str = ""               # 'official' (Minari) or 'dprl-generated'
    env_id: str | None = None
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    # Per-transition arrays [N, ...] a task may relabel from (OGBench: qpos, qvel, button_states
    # of s_t); the runner does not use them.
    extras: dict = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.dones.sum())

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, ``[num_episodes]``."""
        ends = np.flatnonzero(self.dones)
        starts = np.concatenate([[0], ends[:-1] + 1])
        csum = np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])
        return csum[ends + 1] - csum[starts]


def _flatten_obs(obs: Any) -> np.ndarray:
    """Dict observations (goal-conditioned datasets) -> one array, keys in sorted order."""
    if isinstance(obs, dict):
        return np.concatenate([np.asarray(obs[k]).reshape(len(obs[k]) if np.ndim(obs[k]) else 1, -1)
                               for k in sorted(obs)], axis=-1)
    return np.asarray(obs)


def _read_episodes(dataset, dataset_id: str) -> tuple[list, ...]:
    """Per-episode arrays ``(obs, next_obs, actions, rewards, terminations, truncations)``,
    checked for episode boundaries (``episode_boundary_problem``)."""
    obs, next_obs, acts, rews, terms, truncs = [], [], [], [], [], []
    for ep in dataset.iterate_episodes():
        o = _flatten_obs(ep.observations)
        T = len(ep.actions)
        # An episode cut by the dataset's end may lack a final flag (its last step still ends it).
        problem = episode_boundary_problem(ep.id, ep.terminations, ep.truncations, T,
                                           len(o), require_end=False)
        if problem:
            raise ValueError(f"Dataset {dataset_id!r}: {problem}. Regenerate it ({dataset_id} "
                             f"at {dataset_dir(dataset_id)}), or drop that episode.")
        obs.append(o[:T])
        next_obs.append(o[1:T + 1])
        acts.append(np.asarray(ep.actions).reshape(T, -1))
        rews.append(np.asarray(ep.rewards, np.float32))
        terms.append(np.asarray(ep.terminations, bool))
        truncs.append(np.asarray(ep.truncations, bool))
    if not acts:
        raise ValueError(f"Dataset {dataset_id!r} has no episodes; make it again.")
    return obs, next_obs, acts, rews, terms, truncs


def load_dataset(dataset_id: str) -> OfflineData:
    """Load a local Minari dataset by id into ``OfflineData``.

    Raises ``DatasetError`` (a FileNotFoundError), naming the command to run, when the dataset is
    not stored whole here; ValueError when it cannot be read or holds NaNs.
    """
    import minari

    check_dataset_dir(dataset_id)
    try:
        dataset = minari.load_dataset(dataset_id)
    except Exception as e:
        raise ValueError(
            f"Dataset {dataset_id!r} at {dataset_dir(dataset_id)} could not be read "
            f"({type(e).__name__}: {e}). It may be corrupted or half-written: delete that "
            f"directory and make it again.") from e

    obs, next_obs, acts, rews, terms, truncs = _read_episodes(dataset, dataset_id)
    dones = []
    for te, tr in zip(terms, truncs):
        d = te | tr
        d[-1] = True  # an episode cut by the dataset's end still ends there
        dones.append(d)

    space = dataset.action_space
    actions = np.concatenate(acts).astype(np.float32)
    if isinstance(space, gym.spaces.Box):
        low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
            actions = from_env_action(actions, low, high).astype(np.float32)

    meta = read_metadata(dataset_id)
    env_spec = meta.get("env_spec")
    env_id, env_kwargs = None, {}
    if env_spec:
        spec = json.loads(env_spec) if isinstance(env_spec, str) else env_spec
        env_id = spec.get("id")
        env_kwargs = spec.get("kwargs") or {}
    data = OfflineData(
        observations=np.concatenate(obs).astype(np.float32),
        actions=actions,
        rewards=np.concatenate(rews),
        terminals=np.concatenate(terms),
        timeouts=np.concatenate(truncs),
        dones=np.concatenate(dones),
        next_observations=np.concatenate(next_obs).astype(np.float32),
        dataset_id=dataset_id,
        source=source_of(dataset_id),
        env_id=env_id,
        env_kwargs=env_kwargs,
        ref_min_score=meta.get("ref_min_score"),
        ref_max_score=meta.get("ref_max_score"),
        metadata=meta,
    )
    check_finite(data)
    return data


@dataclasses.dataclass(frozen=True)
class TaskDataset:
    """The dataset a run of a task uses, known from its metadata before it is loaded."""

    dataset_id: str           # a Minari id, or kind:path of a released file (DataSource.ref)
    source: str               # 'official' or 'dprl-generated'
    env_id: str | None        # the env the dataset was recorded in
    fingerprint: dict         # metadata and file sizes: a regenerated dataset differs
    data_source: DataSource | None = None


def task_dataset(task_name: "str | Task", forced_id: str | None = None,
                 allow_env_mismatch: bool = False) -> TaskDataset:
    """Which dataset a run of ``task_name`` trains on (``resolve_task_source``, or ``forced_id``:
    any ``--dataset=`` string). A dataset recorded in another env than the task's is refused,
    even when the shapes match, unless ``allow_env_mismatch`` (``check_dataset_env``)."""
    task = get_task(task_name)
    task_name = task.name
    src, label = resolve_task_source(task, forced_id)
    if src.kind == "minari":
        meta = read_metadata(src.name)
        recorded, fingerprint = env_id_of(meta), dataset_fingerprint(src.name, meta)
    else:
        recorded, fingerprint = recorded_env_id(src), source_fingerprint(src)
        meta = {"env_spec": {"id": recorded}}
    if not allow_env_mismatch and task["data_env_id"] is not None:
        check_dataset_env(meta, src.ref, task_name, task["data_env_id"])
    return TaskDataset(src.ref, label, recorded, fingerprint, src)


def load_source(src: DataSource, task: dict | None = None) -> OfflineData:
    """The offline data of ``src``, each format by its own reader (``dprl.data.formats``).
    ``task``: a preset whose relabeling a shard directory applies shard by shard."""
    if src.kind == "minari":
        return load_dataset(src.name)
    if src.kind == "ogbench":
        on_shard = (lambda d: run_relabel(task, d)) if task and task["reward_relabel"] else None
        data = load_ogbench(src, on_shard=on_shard if src.sharded else None)
        if task and task["reward_relabel"] and not src.sharded:
            data = run_relabel(task, data)
        data.metadata.setdefault("relabeled", bool(task and task["reward_relabel"]))
        return data
    keys = (task or {}).get("obs_keys") or ROBOMIMIC_OBS_KEYS
    return load_robomimic(src, keys, (task or {}).get("cameras"))


def load_task_data(task_name: "str | Task", forced_id: "str | TaskDataset | None" = None,
                   allow_env_mismatch: bool = False) -> OfflineData:
    """The offline data a run of ``task_name`` trains on, checked against the task's env.

    ``task_name``: a name or a resolved ``Task``; ``forced_id``: a ``--dataset=`` string, or
    the ``TaskDataset`` that ``task_dataset`` resolved. The dataset is ``task_dataset``'s, with the task's rewards when the preset has a
    ``reward_relabel`` (OGBench's five tasks per env share one play dataset) and its
    ``reward_transform`` (the papers' ``r - 1``). Scores always use the task's reference scores
    (a dataset may record others: Minari's official ones, or another task's); tasks with
    ``success_masks`` (OGBench's sparse rewards: 0 at success, negative before) mark every
    successful step terminal, so that no value is bootstrapped from a solved state (as QC and
    FQL do).
    """
    task = get_task(task_name)
    task_name = task.name
    # A TaskDataset is the source already resolved (the runner resolves it once).
    ref = (forced_id if isinstance(forced_id, TaskDataset)
           else task_dataset(task, forced_id, allow_env_mismatch))
    src = ref.data_source
    data = load_source(src, task)
    if src.kind == "minari" and task["reward_relabel"]:
        data = run_relabel(task, data)
    if task["success_masks"]:
        data.terminals = data.rewards >= 0
    if task.get("reward_transform"):
        data.rewards = transform_rewards(data.rewards, task["reward_transform"])
    data.source = ref.source
    if task["ref_min_score"] is not None and task["ref_max_score"] is not None:
        data.ref_min_score, data.ref_max_score = task["ref_min_score"], task["ref_max_score"]
    if task.get("observation_transform"):      # a pixel task: its frames from the state data
        data = apply_observation_transform(data, task)
    elif is_pixel(data.observations):          # a released image dataset: the task's augmentation
        data.metadata = {**data.metadata, "augment": task["augment"]}
    check_finite(data)
    env = make_env(task["env_id"], **task["env_kwargs"])
    try:
        check_compatible(data, env, task_name)
    finally:
        env.close()
    return data


def transform_rewards(rewards: np.ndarray, name: str) -> np.ndarray:
    """A preset's ``reward_transform`` (``dprl.envs.benchmarks.REWARDS``: 'minus_one' is IQL's
    and QC's ``r - 1``, 'cql_antmaze' Diffusion-QL's ``(r - 0.5) * 4``) applied to dataset
    rewards ``[N]``; the task's env applies the same to online rewards."""
    if name not in REWARDS:
        raise ValueError(f"Unknown reward_transform {name!r}; known: {', '.join(REWARDS)}")
    return REWARDS[name](np.asarray(rewards, np.float32)).astype(np.float32)


def check_finite(data: OfflineData) -> None:
    """Raise ValueError naming the field and the first bad transition when data has NaN/inf."""
    for name in ("observations", "actions", "rewards", "next_observations"):
        arr = getattr(data, name)
        if is_pixel(arr):                      # uint8 frames are finite; check the state
            arr, name = arr["state"], f"{name}['state']"
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(len(arr), -1).any(axis=1))
            raise ValueError(
                f"Dataset {data.dataset_id!r}: {name} has {bad.sum()} NaN/inf values in "
                f"{len(rows)} transitions (first at index {rows[0]}). Regenerate the dataset, or "
                f"drop those episodes before training.")


def check_compatible(data: OfflineData, env: gym.Env, task_name: str = "") -> None:
    """Raise ValueError when the dataset's spaces do not match the environment's."""
    obs_shape = tuple(data.observations.shape[1:])
    env_obs = env.observation_space.shape
    if is_pixel(data.observations):            # a Dict space: compare its parts
        space = env.observation_space
        obs_shape = (("image", data.observations["image"].shape[1:]),
                     ("state", data.observations["state"].shape[1:]))
        env_obs = (tuple((k, tuple(space[k].shape)) for k in ("image", "state"))
                   if isinstance(space, gym.spaces.Dict) else (("flat", space.shape),))
    act_dim = data.actions.shape[1]
    env_act = env.action_space.shape
    problems = []
    if env_obs is not None and tuple(env_obs) != obs_shape:
        problems.append(f"observations are {obs_shape} in the dataset but {tuple(env_obs)} in the env")
    if env_act is not None and (act_dim,) != tuple(env_act):
        problems.append(f"actions are ({act_dim},) in the dataset but {tuple(env_act)} in the env")
    if problems:
        env_id = env.spec.id if env.spec else type(env).__name__
        raise ValueError(
            f"Dataset {data.dataset_id!r} does not match env {env_id!r}"
            + (f" of task {task_name!r}" if task_name else "") + ": " + "; ".join(problems)
            + ". Use the dataset made for this env (python -m dprl.datasets list), or fix the "
            "task preset's env_id / env_kwargs in dprl/envs/tasks.py.")


class Normalizer(flax.struct.PyTreeNode):
    """Observation standardizer ``(obs - mean) / std``; its statistics travel with checkpoints.

    Pixel observations (``dprl.data.frames``): only their ``state`` is standardized; images stay
    uint8 (``image_shape`` records their shape, ``cameras`` every camera's where there are
    several, and ``dim`` is then a ``PixelSpec``).
    """

    mean: jnp.ndarray
    std: jnp.ndarray
    image_shape: tuple = flax.struct.field(pytree_node=False, default=())
    cameras: tuple = flax.struct.field(pytree_node=False, default=())

    @classmethod
    def fit(cls, observations: np.ndarray, eps: float = 1e-3) -> "Normalizer":
        if is_pixel(observations):
            state = np.asarray(observations["state"])
            spec = pixel_spec(observations)
            return cls(mean=np.asarray(state.mean(0), np.float32),
                       std=np.asarray(state.std(0) + eps, np.float32),
                       image_shape=tuple(spec.image_shape), cameras=spec.cameras or ())
        return cls(mean=np.asarray(observations.mean(0), np.float32),
                   std=np.asarray(observations.std(0) + eps, np.float32))

    @classmethod
    def identity(cls, dim: "int | PixelSpec") -> "Normalizer":
        if isinstance(dim, PixelSpec):
            return cls(mean=np.zeros(dim.state_dim, np.float32),
                       std=np.ones(dim.state_dim, np.float32),
                       image_shape=tuple(dim.image_shape), cameras=dim.cameras or ())
        return cls(mean=np.zeros(dim, np.float32), std=np.ones(dim, np.float32))

    @property
    def dim(self) -> "int | PixelSpec":
        if self.image_shape:
            return PixelSpec(int(np.shape(self.mean)[0]), tuple(self.image_shape),
                             self.cameras or None)
        return int(np.shape(self.mean)[0])

    def __call__(self, observations):
        if is_pixel(observations):
            return {**observations, "state": (observations["state"] - self.mean) / self.std}
        return (observations - self.mean) / self.std

    def to_dict(self) -> dict:
        out = {"mean": np.asarray(self.mean).tolist(), "std": np.asarray(self.std).tolist()}
        if self.image_shape:
            out["image_shape"] = list(self.image_shape)
        if self.cameras:
            out["cameras"] = {k: list(v) for k, v in self.cameras}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(mean=np.asarray(d["mean"], np.float32), std=np.asarray(d["std"], np.float32),
                   image_shape=tuple(d.get("image_shape", ())),
                   cameras=tuple(sorted((k, tuple(v)) for k, v in d.get("cameras", {}).items())))
