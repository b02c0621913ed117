"""Which dataset a task uses, and whether a dataset directory is whole.

``resolve_dataset(task)`` picks the official Minari dataset when it is stored locally, else dprl's
generated stand-in (``dprl/...``), and says which; when neither exists its error names the command
that makes one. ``check_dataset_dir(id)`` turns a corrupted or half-written directory and a dataset
whose env is not installed into an error that says what to run.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from dprl.datasets.io import DPRL_NAMESPACE, dataset_dir, dataset_exists, datasets_root
from dprl.tasks import TASKS, get_task

OFFICIAL, GENERATED = "official", "dprl-generated"


class DatasetError(FileNotFoundError):
    """A dataset that is missing, corrupted or unusable here; the message says what to run."""


def source_of(dataset_id: str) -> str:
    """``'dprl-generated'`` for ids in dprl's namespace, ``'official'`` otherwise."""
    return GENERATED if dataset_id.split("/")[0] == DPRL_NAMESPACE else OFFICIAL


def _task_for_dataset(dataset_id: str) -> str | None:
    for name, preset in TASKS.items():
        if dataset_id in (preset["dataset_id"], preset.get("official_dataset_id")):
            return name
    return None


def remedy(dataset_id: str, task_name: str | None = None) -> str:
    """The command(s) that (re)create ``dataset_id``."""
    task_name = task_name or _task_for_dataset(dataset_id)
    if source_of(dataset_id) == GENERATED:
        if task_name is None:
            return (f"`python -m dprl.datasets list` shows the tasks that can be made; "
                    f"{dataset_id!r} belongs to none of them")
        return f"`python -m dprl.datasets make {task_name} --overwrite`"
    cmd = f"`minari download {dataset_id}` (needs internet)"
    if task_name is not None:
        cmd += f", or make dprl's stand-in with `python -m dprl.datasets make {task_name}`"
    return cmd


def half_written_dirs(dataset_id: str) -> list[Path]:
    """Temporary directories a killed generator left beside ``dataset_id``'s place."""
    final = dataset_dir(dataset_id)
    if not final.parent.is_dir():
        return []
    return sorted(final.parent.glob(f".tmp-{final.name}-*"))


def check_dataset_dir(dataset_id: str, check_env: bool = True) -> Path:
    """Check that ``dataset_id`` is stored whole and its env can be made here; return its dir.

    Raises ``DatasetError`` (a ``FileNotFoundError``) naming the command to run when the directory
    is missing, half-written (a ``.tmp-*`` leftover, no ``metadata.json``), corrupted (unreadable
    metadata or data file), or when its env id is not registered with gymnasium.
    """
    path = dataset_dir(dataset_id)
    tmp = half_written_dirs(dataset_id)
    if not path.exists():
        if tmp:
            raise DatasetError(
                f"Dataset {dataset_id!r} is half-written: only {tmp[0]} exists (a generator was "
                f"killed before finishing). Delete it (rm -r '{tmp[0]}') and run "
                f"{remedy(dataset_id)}.")
        raise DatasetError(f"Dataset {dataset_id!r} is not stored in {datasets_root()} "
                           f"(MINARI_DATASETS_PATH). Run {remedy(dataset_id)}.")
    meta_path = path / "data" / "metadata.json"  # Minari: <id>/data/{metadata.json, main_data.*}
    if not meta_path.is_file():
        raise DatasetError(
            f"Dataset directory {path} has no data/metadata.json: it is half-written or corrupted. "
            f"Delete it (rm -r '{path}') and run {remedy(dataset_id)}.")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(
            f"{meta_path} is not valid JSON ({e}): the dataset is corrupted. Delete {path} and "
            f"run {remedy(dataset_id)}.") from e
    data_files = sorted((path / "data").glob("main_data.*")) if (path / "data").is_dir() else []
    if not data_files:
        raise DatasetError(
            f"Dataset {dataset_id!r} at {path} has no data file (data/main_data.*): it is "
            f"half-written or corrupted. Delete it and run {remedy(dataset_id)}.")
    _check_data_file(data_files[0], dataset_id, path)
    if check_env:
        _check_env(meta, dataset_id)
    return path


def _check_data_file(data_file: Path, dataset_id: str, path: Path) -> None:
    if data_file.suffix == ".hdf5":
        try:
            import h5py
            with h5py.File(data_file, "r") as f:
                if len(f.keys()) == 0:
                    raise ValueError("it holds no episodes")
        except Exception as e:  # noqa: BLE001  h5py raises OSError/KeyError/... for broken files
            raise DatasetError(
                f"The data file {data_file} of dataset {dataset_id!r} cannot be read ({e}): the "
                f"dataset is corrupted or half-written. Delete {path} and run "
                f"{remedy(dataset_id)}.") from e
    elif data_file.stat().st_size == 0:
        raise DatasetError(f"The data file {data_file} is empty. Delete {path} and run "
                           f"{remedy(dataset_id)}.")


def env_id_of(meta: dict) -> str | None:
    spec = meta.get("env_spec")
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            return None
    return spec.get("id") if isinstance(spec, dict) else None


def _check_env(meta: dict, dataset_id: str) -> None:
    import gymnasium as gym

    from dprl.envs import make_env
    env_id = env_id_of(meta)
    if env_id is None or env_id in gym.registry:
        return
    try:
        # make_env imports ogbench on demand (which registers its ids); building is the sure test.
        make_env(env_id).close()
    except Exception as e:  # noqa: BLE001  NameNotFound, missing optional packages, ...
        hint = ("pip install -e '.[ogbench]'" if env_id.split("-")[0] in (
            "cube", "scene", "puzzle") else "pip install 'gymnasium[mujoco]'")
        raise DatasetError(
            f"Dataset {dataset_id!r} was recorded in env {env_id!r}, which is not installed "
            f"here ({e}). Run: {hint}") from e


def _function(spec: str):
    """The function a preset names as ``"module:function"``."""
    module, _, fn = spec.partition(":")
    return getattr(importlib.import_module(module), fn)


def run_generator(task: str, preset: dict, **kwargs) -> str:
    """Call a toy preset's ``generator`` ("module:function"); returns the dataset id."""
    return _function(preset["generator"])(task, **kwargs)


def resolve_task_dataset(task_name: str, forced_id: str | None = None) -> tuple[str, str]:
    """``resolve_dataset``, after making the dataset on the spot for presets with ``auto_make``
    (the toy tasks: seconds of work) when it is missing and no other id is forced."""
    task = get_task(task_name)
    if task["auto_make"] and not forced_id and not dataset_exists(task["dataset_id"]):
        run_generator(task_name, task)
    return resolve_dataset(task_name, forced_id)


def run_relabel(preset: dict, data):
    """Apply a task preset's ``reward_relabel`` ("module:function(data, preset) -> data"): the
    rewards and terminals of the preset's task on a shared dataset (OGBench's five tasks per env
    share one play dataset)."""
    return _function(preset["reward_relabel"])(data, preset)


def resolve_dataset(task_name: str, forced_id: str | None = None) -> tuple[str, str]:
    """``(dataset_id, source)`` for a task preset; source is ``'official'`` or ``'dprl-generated'``.

    ``forced_id`` (``--dataset=ID``) must exist. Otherwise the official Minari dataset wins when it
    is stored locally, else dprl's stand-in; a present but broken directory is an error (never a
    silent fallback). With neither, ``DatasetError`` names ``python -m dprl.datasets make <task>``.
    """
    task = get_task(task_name)
    if forced_id:
        check_dataset_dir(forced_id)
        return forced_id, source_of(forced_id)
    official = task.get("official_dataset_id")
    if official and (dataset_dir(official).exists() or half_written_dirs(official)):
        check_dataset_dir(official)
        return official, OFFICIAL
    generated = task["dataset_id"]
    if dataset_dir(generated).exists() or half_written_dirs(generated):
        check_dataset_dir(generated)
        return generated, GENERATED
    alt = (f" (or download the official one: `minari download {official}`, needs internet)"
           if official else "")
    raise DatasetError(
        f"No dataset for task {task_name!r} in {datasets_root()} (MINARI_DATASETS_PATH): neither "
        f"{(official + ' nor ') if official else ''}{generated} is stored. Run "
        f"`{task['make_command']}`{alt}.")


def verify_dataset(dataset_id: str, replay_episodes: int = 2, atol: float = 1e-5) -> dict:
    """Check a generated dataset against its env; raise ``AssertionError`` on the first mismatch.

    Checks: observation/action spaces equal the env's; every episode ends exactly where the env
    ended it (a termination or a time-limit truncation on its last step and nowhere else, the
    truncation at the env's step limit); and for the first ``replay_episodes`` episodes, resetting
    the env with the episode's stored seed and replaying its actions reproduces the stored
    observations, rewards and terminal flags. Manipulation play data is replayed in its collection
    env (``metadata['dprl']['collection_env_id']``); single-task rewards are recomputed with the
    task env (``SingleTaskRelabeler``). Returns a small report.
    """
    import minari

    from dprl.envs import make_env
    check_dataset_dir(dataset_id)
    ds = minari.load_dataset(dataset_id)
    meta = json.loads((dataset_dir(dataset_id) / "data" / "metadata.json").read_text())
    prov = meta.get("dprl", {})
    spec = ds.spec.env_spec
    env = make_env(spec.id, **(spec.kwargs or {}))
    assert ds.observation_space == env.observation_space, (
        f"observation space {ds.observation_space} != env's {env.observation_space}")
    assert ds.action_space == env.action_space, (
        f"action space {ds.action_space} != env's {env.action_space}")
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
    n_replayed = 0
    for ep in ds.iterate_episodes():
        T = len(ep.actions)
        term, trunc = np.asarray(ep.terminations, bool), np.asarray(ep.truncations, bool)
        assert not term[:-1].any() and not trunc[:-1].any(), (
            f"episode {ep.id}: terminal or timeout before its last step")
        assert term[-1] or trunc[-1], f"episode {ep.id} ends without terminal or timeout"
        if trunc[-1] and not term[-1] and limit is not None:
            assert T == limit, f"episode {ep.id} truncated at {T} steps, env limit {limit}"
        assert len(ep.observations) == T + 1
        if n_replayed >= replay_episodes:
            continue
        seed = seeds.get(int(ep.id))
        assert seed is not None, f"episode {ep.id} has no reset seed"
        obs, _ = replay_env.reset(seed=int(seed))
        assert np.allclose(obs, ep.observations[0], atol=atol), f"episode {ep.id}: reset differs"
        for t in range(T):
            if relabel is not None:
                r_single, _ = relabel.reward(replay_env)
            obs, r, te, tr, _ = replay_env.step(ep.actions[t])
            r = r_single if relabel is not None else r
            assert np.allclose(obs, ep.observations[t + 1], atol=atol), (
                f"episode {ep.id} step {t}: replayed observation differs")
            assert abs(r - ep.rewards[t]) <= atol * max(1.0, abs(r)), (
                f"episode {ep.id} step {t}: replayed reward {r} != stored {ep.rewards[t]}")
            assert (bool(te), bool(tr)) == (bool(term[t]), bool(trunc[t])), (
                f"episode {ep.id} step {t}: replayed (terminated, truncated) = {(te, tr)}, "
                f"stored {(term[t], trunc[t])}")
        n_replayed += 1
    return {"dataset_id": dataset_id, "episodes": ds.total_episodes, "steps": ds.total_steps,
            "replayed": n_replayed}
