"""The agent interface: everything the runner, the collectors and the tests rely on.

An agent is an immutable ``flax.struct.PyTreeNode`` holding its train states and PRNG key, with
its config as a static field; every method is pure (the jitted ones compile once per shape). The
runner never looks inside an agent. Agents live in ``agents/`` (one file each) and follow this
protocol structurally (they do not import it); ``tests/test_layers.py`` checks every registered
agent against it.

Batches (off-policy ``pretrain`` / ``update``) follow ``dprl.data.buffer``'s schema; rollouts
(on-policy ``update``) follow ``dprl.run.collect.Rollout``.

An off-policy agent with a generative actor can act one-step (``act_with='one_step'``:
``dprl.run.one_step`` wraps it, distills ``mu(s, z)`` from it and acts with mu) when it has the
hooks of ``Distillable``; an agent whose own policy is one-step already (QC's FQL extraction) has a
class method ``acts_in_one_step(config) -> bool`` and is not wrapped.
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
        the executor runs the first ``act_steps`` (<= H) actions.

        Optional: ``eval_actions(observations, key)`` with the same signature, which evaluation
        uses instead when an agent evaluates differently from how it acts (DPPO: no
        exploration floor)."""


class Distillable(Protocol):
    """What the one-step wrapper (``dprl.run.one_step.OneStep``) needs from an agent."""

    key: jax.Array              # the agent's PRNG key: mu's init and distillation keys split off it

    def teacher_sample(self, observations: jax.Array, noise: jax.Array) -> jax.Array:
        """The agent's sample ``[B, H, A]`` as a deterministic function of the initial ``noise
        [B, H, A]`` (e.g. ``dprl.models.teacher.teacher_actions``: flow Euler, DDIM eta 0),
        without gradient: what mu distills. ``H, A``: those of ``sample_actions``."""

    def select(self, observations: jax.Array, candidates: jax.Array, key: jax.Array
               ) -> jax.Array:
        """Optional (an agent without it acts with one draw of mu): one of ``candidates
        [B, N, H, A]`` per observation -> ``[B, H, A]``, as its own acting picks (e.g. by Q);
        N = ``config.num_samples``."""


AgentLookup = Callable[[str], type]   # agent name -> its class (``agents.get_agent``)
