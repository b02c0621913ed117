"""Agents: one file each. ``get_agent(name)`` maps a config's ``agent_name`` to its class; entry
points hand it to the core (``dprl.run.runner.train(config, task, run_dir, get_agent)``), which never
imports this package.

Every agent follows the interface ``dprl.run.agent.Agent`` (checked by ``tests/test_layers.py``)::

    Agent.create(seed, example_batch, config) -> Agent
    agent.pretrain(batch) -> (agent, info)       # BC on offline data (dprl.models.training.BCStage)
    agent.update(batch)   -> (agent, info)       # the agent's RL step
    agent.sample_actions(observations, key) -> (chunks [B, H, A], aux)

and a class attribute ``on_policy`` (True: ``update`` takes a ``dprl.run.collect.Rollout``).
An off-policy agent that can act through a distilled one-step actor (the run's ``OneStep``
wrapper) also has ``teacher_sample`` and, if it picks among candidates, ``select``
(``dprl.run.agent.Distillable``).
"""
from __future__ import annotations

import importlib

REGISTRY = {
    "bc": "agents.bc",
    "dql": "agents.dql",
    "guided": "agents.guided",
    "dppo": "agents.dppo",
    "qc": "agents.qc",
    "rlpd": "agents.rlpd",
    "dsrl": "agents.dsrl",
}


def get_agent(name: str):
    if name not in REGISTRY:
        raise KeyError(f"Unknown agent {name!r}; known agents: {', '.join(REGISTRY)}. "
                       f"Register new ones in agents/__init__.py.")
    return importlib.import_module(REGISTRY[name]).Agent
