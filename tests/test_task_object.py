"""A task is resolved once: ``get_task`` gives a typed, read-only ``Task`` that the runner hands
to the data layer and the registry, which never look the preset up again by name."""
from __future__ import annotations

import copy
import json
import pickle

import pytest


def test_task_is_typed_read_only_and_recordable():
    from dprl.envs.tasks import Task, get_task

    task = get_task("scene-task2")
    assert isinstance(task, Task) and task.name == "scene-task2"
    assert task.env_id == task["env_id"] == "dprl/scene-singletask-task2-sparse-v0"
    assert task.data_env_id == "scene-v0" and task.stand_in_id == "dprl/scene/play-v0"
    assert task.official_sources == ["ogbench:scene-play-v0"] and task.eval_episodes == 50
    with pytest.raises(TypeError, match="read-only"):
        task["env_id"] = "other"
    with pytest.raises(TypeError, match="read-only"):
        task.update(score="x")
    assert get_task(task) is task                       # a Task passes through unchanged
    for clone in (copy.deepcopy(task), pickle.loads(pickle.dumps(task))):
        assert isinstance(clone, Task) and clone == task and clone.name == task.name
    assert json.loads(json.dumps(task))["env_id"] == task.env_id   # config.json records it


def test_data_and_registry_receive_the_task_and_never_look_it_up(pole_datasets, monkeypatch):
    """Resolving the data source and loading the data of a resolved Task reads the preset table
    zero times; a name is looked up once."""
    import dprl.envs.tasks as tasks
    from dprl.data.offline import load_task_data, task_dataset

    class Counting(dict):
        lookups = 0

        def __getitem__(self, key):
            Counting.lookups += 1
            return super().__getitem__(key)

    task = tasks.get_task("pole")
    monkeypatch.setattr(tasks, "TASKS", Counting(tasks.TASKS))
    source = task_dataset(task)
    data = load_task_data(task, source)
    assert Counting.lookups == 0
    assert source.dataset_id == "dprl/pole/demos-v0" and data.size > 0
    load_task_data("pole")                               # by name: one lookup
    assert Counting.lookups == 1
