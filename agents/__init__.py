"""Agents: one file each. ``get_agent(name)`` maps a config's ``agent_name`` to its class.

Every agent follows DESIGN.md's interface::

    Agent.create(seed, example_batch, config) -> Agent
    agent.pretrain(batch) -> (agent, info)       # BC on offline data
    agent.update(batch)   -> (agent, info)       # the agent's RL step
    agent.sample_actions(observations, key) -> (chunks [B, H, A], aux)

and a class attribute ``on_policy`` (True: the runner hands ``update`` rollouts from vector envs).
"""
from __future__ import annotations

import importlib

REGISTRY = {
    "bc": "agents.bc",
    "dql": "agents.dql",
    "guided": "agents.guided",
    "dppo": "agents.dppo",
    "qc": "agents.qc",
}


def get_agent(name: str):
    if name not in REGISTRY:
        raise KeyError(f"Unknown agent {name!r}; known agents: {', '.join(REGISTRY)}. "
                       f"Register new ones in agents/__init__.py.")
    return importlib.import_module(REGISTRY[name]).Agent
