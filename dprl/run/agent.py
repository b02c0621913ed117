"""The agent interface: everything the runner, the collectors and the tests rely on.

An agent is an immutable ``flax.struct.PyTreeNode`` holding its train states and PRNG key, with
its config as a static field; every method is pure (the jitted ones compile once per shape). The
runner never looks inside an agent. Agents live in ``agents/`` (one file each) and follow this
protocol structurally (they do not import it); ``tests/test_layers.py`` checks every registered
agent against it.

Batches (off-policy ``pretrain`` / ``update``) follow ``dprl.data.buffer``'s schema; rollouts
(on-policy ``update``) follow ``dprl.run.collect.Rollout``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import jax

from dprl.run.collect import Rollout


@runtime_checkable
class Agent(Protocol):
    on_policy: ClassVar[bool]   # True: ``update`` takes a Rollout from ``run.num_envs`` envs
                                # (DPPO); False: batches from the offline data and replay buffer
    config: Any                 # the agent config (a FrozenConfigDict), static

    @classmethod
    def create(cls, seed: int, example_batch: dict, config) -> "Agent":
        """A fresh agent; ``example_batch`` gives the batch shapes (its values are not used)."""

    def pretrain(self, batch: dict) -> tuple["Agent", dict]:
        """One BC step on an offline batch (the shared first stage); info: flat scalars."""

    def update(self, batch: dict | Rollout) -> tuple["Agent", dict]:
        """The agent's RL step: on a batch (offline RL, off-policy online) or, for on-policy
        agents, on a Rollout; info: flat scalars."""

    def sample_actions(self, observations: jax.Array, key: jax.Array
                       ) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> ``(chunks [B, H, A] in [-1, 1], aux)``; ``aux`` is
        what ``update`` needs from acting (DPPO's denoising chain; ``{}`` for most agents).
        ``H = config.horizon``, except for a policy over single actions (qc with
        ``action_chunking=False``, whose horizon is the n of its n-step return): ``H = 1``;
        the executor runs the first ``act_steps`` (<= H) actions."""


AgentLookup = Callable[[str], type]   # agent name -> its class (``agents.get_agent``)
