"""Which dataset a task uses, and whether a dataset directory is whole and belongs to the task.

``resolve_dataset(task)`` picks the official Minari dataset when it is stored locally, else dprl's
generated stand-in (``dprl/...``), and says which; when neither exists its error names the command
that makes one. ``check_dataset_dir(id)`` turns a corrupted or half-written directory and a dataset
whose env is not installed into an error that says what to run. ``check_dataset_env`` refuses a
dataset recorded in another env than the task's, ``episode_boundary_problem`` an episode whose
flags end it anywhere but at its last step; ``dataset_fingerprint`` identifies a stored dataset
cheaply (metadata and file sizes). The loader (``dprl.data.offline``) and ``python -m dprl.datasets
verify`` (``dprl.datasets.verify``) share these checks.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from dprl.data.formats import (DataSource, SourceError, check_source, download_command,
                               parse_source, source_exists)
from dprl.base.logging import log
from dprl.data.io import DPRL_NAMESPACE, dataset_dir, dataset_exists, datasets_root
from dprl.envs.tasks import TASKS, Task, get_task

OFFICIAL, GENERATED = "official", "dprl-generated"

# A dataset that is missing, corrupted or unusable here; the message says what to run.
DatasetError = SourceError


def source_of(dataset_id: str) -> str:
    """``'dprl-generated'`` for ids in dprl's namespace, ``'official'`` otherwise."""
    return GENERATED if dataset_id.split("/")[0] == DPRL_NAMESPACE else OFFICIAL


def task_for_dataset(dataset_id: str) -> str | None:
    for name, preset in TASKS.items():
        if dataset_id in (preset["dataset_id"], preset.get("official_dataset_id")) or \
                f"minari:{dataset_id}" in preset.get("official_sources", ()):
            return name
    return None


def remedy(dataset_id: str, task_name: str | None = None) -> str:
    """The command(s) that (re)create ``dataset_id``."""
    task_name = task_name or task_for_dataset(dataset_id)
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


def read_metadata(dataset_id: str) -> dict:
    """``data/metadata.json`` of a stored dataset."""
    path = dataset_dir(dataset_id) / "data" / "metadata.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"metadata.json of dataset {dataset_id!r} is unreadable ({e}); delete "
                           f"{path.parent.parent} and run {remedy(dataset_id)}.") from e


def dataset_fingerprint(dataset_id: str, meta: dict | None = None) -> dict:
    """What identifies a stored dataset without reading its data: its metadata's sizes, spaces,
    env and creation time, and the bytes of its data files (a regenerated dataset differs)."""
    meta = read_metadata(dataset_id) if meta is None else meta
    files = sorted((dataset_dir(dataset_id) / "data").glob("main_data.*"))
    return {"total_steps": meta.get("total_steps"), "total_episodes": meta.get("total_episodes"),
            "env_id": env_id_of(meta), "observation_space": meta.get("observation_space"),
            "action_space": meta.get("action_space"),
            "created_unix": (meta.get("dprl") or {}).get("created_unix"),
            "data_bytes": sum(f.stat().st_size for f in files)}


class DatasetEnvMismatch(ValueError):
    """A dataset recorded in another env than the task's."""


def check_dataset_env(meta: dict, dataset_id: str, task_name: str, task_env_id: str) -> None:
    """Raise ``DatasetEnvMismatch`` unless the dataset was recorded in the task's env: data of
    another env (even of the same shapes) would be scored as if it were this task's."""
    recorded = env_id_of(meta)
    if recorded == task_env_id:
        return
    what = (f"was recorded in env {recorded!r}" if recorded else "records no env id")
    raise DatasetEnvMismatch(
        f"Dataset {dataset_id!r} {what}, but task {task_name!r} runs in {task_env_id!r}: its "
        f"data belong to another task. Use the task's own dataset (`python -m dprl.datasets "
        f"list`), or pass --allow_env_mismatch to train on it anyway (scores then use the "
        f"reference scores of task {task_name}).")


def episode_boundary_problem(episode_id, terminations, truncations, num_steps: int,
                             num_observations: int, require_end: bool = True) -> str | None:
    """What is wrong with an episode's length and end flags, or None: a terminal or timeout
    before its last step, observations not one more than actions, and (``require_end``) a last
    step with neither flag."""
    term = np.asarray(terminations, bool)
    trunc = np.asarray(truncations, bool)
    if num_observations != num_steps + 1:
        return (f"episode {episode_id} has {num_observations} observations for {num_steps} "
                f"actions (expected one more: the reset observation)")
    early = np.flatnonzero(term[:-1] | trunc[:-1])
    if early.size:
        return (f"episode {episode_id} is marked terminal or truncated at step {early[0]} of "
                f"{num_steps} (only its last step may end it)")
    if require_end and num_steps and not (term[-1] or trunc[-1]):
        return f"episode {episode_id} ends without a terminal or timeout flag"
    return None


def _check_env(meta: dict, dataset_id: str) -> None:
    import gymnasium as gym

    from dprl.envs.vector import make_env
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
    with making(preset["dataset_id"]):
        return _function(preset["generator"])(task, **kwargs)


_MAKING: dict[str, int] = {}   # dataset dir -> the open lock file (this process holds it)


@contextlib.contextmanager
def making(dataset_id: str):
    """Hold ``dataset_id``'s make lock (``<root>/<ns>/<name>/.make-<version>.lock``; re-entrant
    within a process) for the ``with`` block: another make of the same id waits, and the
    ``.tmp-*`` directories found meanwhile were left by a killed make: they are removed, one line
    each."""
    final = dataset_dir(dataset_id)
    key = str(final)
    if key in _MAKING:
        yield
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(final.parent / f".make-{final.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)   # the kernel drops it when a make dies
        _MAKING[key] = fd
        for tmp in half_written_dirs(dataset_id):
            shutil.rmtree(tmp, ignore_errors=True)
            log(f"removed {tmp}: a half-written copy of {dataset_id} that a killed make left")
        yield
    finally:
        _MAKING.pop(key, None)
        os.close(fd)


def resolve_task_dataset(task_name: str, forced_id: str | None = None) -> tuple[str, str]:
    """``resolve_dataset``, after making the dataset on the spot for presets with ``auto_make``
    (the toy tasks: seconds of work) when it is missing and no other id is forced."""
    task = get_task(task_name)
    if task["auto_make"] and not forced_id and not dataset_exists(task["dataset_id"]):
        run_generator(task_name, task)
    return resolve_dataset(task_name, forced_id)


def resolve_task_source(task_name: "str | Task", forced: str | None = None
                        ) -> tuple[DataSource, str]:
    """``resolve_source`` after ``auto_make`` (as ``resolve_task_dataset``)."""
    task = get_task(task_name)
    if task["auto_make"] and not forced and not dataset_exists(task["dataset_id"]):
        run_generator(task.name, task)
    return resolve_source(task, forced)


def run_relabel(preset: dict, data):
    """Apply a task preset's ``reward_relabel`` ("module:function(data, preset) -> data"): the
    rewards and terminals of the preset's task on a shared dataset (OGBench's five tasks per env
    share one play dataset)."""
    return _function(preset["reward_relabel"])(data, preset)


def official_sources(task: dict) -> list[DataSource]:
    """The released datasets a preset can train on, in the order they are preferred."""
    return [parse_source(s) for s in task.get("official_sources") or ()]


def stand_in_source(task: dict) -> DataSource | None:
    """dprl's stand-in (a Minari dataset in the ``dprl/`` namespace), when the preset has one."""
    return DataSource("minari", task["dataset_id"]) if task.get("dataset_id") else None


def label_of(src: DataSource) -> str:
    return GENERATED if src.kind == "minari" and source_of(src.name) == GENERATED else OFFICIAL


def resolve_source(task_name: "str | Task", forced: str | None = None
                   ) -> tuple[DataSource, str]:
    """``(source, 'official' | 'dprl-generated')`` of a task's offline data.

    ``forced`` (``--dataset=``: ``ogbench:scene-play-v0``, ``minari:<id>``, ``robomimic:<path>``
    or a bare Minari / dprl id) must be on disk whole. Otherwise the first official dataset on
    disk wins, else dprl's stand-in; a present but broken one is an error (never a silent
    fallback). With none, one ``DatasetError`` line names the download command of each official
    source and the command that makes the stand-in.
    """
    task = get_task(task_name)
    task_name = task.name
    if forced:
        src = parse_source(forced)
        check_source(src)
        return src, label_of(src)
    candidates = official_sources(task) + [s for s in [stand_in_source(task)] if s]
    for src in candidates:
        if source_exists(src):
            check_source(src)
            return src, label_of(src)
    gets = [f"`{download_command(s)}` (needs internet)" for s in official_sources(task)]
    if task.get("dataset_id") and task.get("has_recipe", True):
        gets.append(f"make dprl's stand-in with `{task['make_command']}`")
    where = ", ".join(s.ref for s in candidates) or "none named by the preset"
    raise DatasetError(
        f"No dataset for task {task_name!r}: none of {where} is stored (Minari root "
        f"{datasets_root()}). Run " + ", or ".join(gets or ["nothing: add a source to the "
                                                          "preset in dprl/envs/tasks.py"]) + ".")


def resolve_dataset(task_name: "str | Task", forced_id: str | None = None) -> tuple[str, str]:
    """``(dataset ref, source)`` for a task preset (``resolve_source``): the bare id of a Minari
    dataset, ``kind:path`` of a file; source is ``'official'`` or ``'dprl-generated'``."""
    src, label = resolve_source(task_name, forced_id)
    return src.ref, label
