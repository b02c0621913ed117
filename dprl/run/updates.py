"""Many gradient steps in one dispatch: batches sampled on device, the agent's step scanned.

``fused_updates`` runs ``num_steps`` of ``agent.pretrain`` or ``agent.update`` in one
``lax.scan`` under one jit; ``vmapped_updates`` does the same for a stack of seeds ``[S, ...]``
(``stack`` / ``unstack`` move agents in and out of it); ``replay_step`` is the off-policy online
step of one env chunk (store it, the updates it is owed, act the next chunk), one program for the
whole online phase. A ``Learner`` holds what the runner's loops advance, for callers that have
no ``Run`` (the benchmark, SAC).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from dprl.data.buffer import Buffer, sample_mixed
from dprl.run.sharding import constrain_batch

@dataclasses.dataclass
class Learner:
    """An agent with its buffers, PRNG key and counters: what ``dprl.run.runner``'s loops
    (``replay_loop``) advance, as a ``Run`` holds them. ``counters``: ``env_steps`` (and
    ``online_updates``, set by the loop); ``timing``: seconds and counts (``update_s``,
    ``updates``, ``env_s``, ``env_steps``)."""

    agent: Any
    offline: Buffer
    online: Buffer
    key: jax.Array
    config: Any
    counters: dict = dataclasses.field(default_factory=lambda: {"env_steps": 0})
    timing: dict = dataclasses.field(default_factory=lambda: {
        "update_s": 0.0, "updates": 0, "env_s": 0.0, "env_steps": 0})


STATIC = ("num_steps", "method", "batch_size", "horizon", "obs_history", "offline_ratio",
          "offline_mix")


@functools.partial(jax.jit, static_argnames=STATIC)
def fused_updates(agent, offline: Buffer, online: Buffer | None, key: jax.Array, *,
                  num_steps: int, method: str, batch_size: int, horizon: int, obs_history: int,
                  offline_ratio: float = 1.0, offline_mix: str = "ratio"):
    """``num_steps`` calls of ``agent.<method>(batch)`` with batches drawn from ``offline`` (mixed
    with ``online`` at ``offline_ratio`` when given, or uniformly: ``offline_mix``, see
    ``dprl.data.buffer.sample_mixed``). Returns the new agent and the mean of each
    info scalar over the steps."""
    def body(agent, step_key):
        if online is None:
            batch = offline.sample(step_key, batch_size, horizon, obs_history)
        else:
            batch = sample_mixed(offline, online, step_key, batch_size, offline_ratio, horizon,
                                 obs_history, offline_mix)
        return getattr(agent, method)(constrain_batch(batch, agent.config))

    agent, infos = jax.lax.scan(body, agent, jax.random.split(key, num_steps))
    return agent, jax.tree.map(jnp.mean, infos)


REPLAY_STATIC = ("update_slots", "batch_size", "horizon", "obs_history", "offline_ratio",
                 "offline_mix")


@functools.partial(jax.jit, static_argnames=REPLAY_STATIC, donate_argnames=("online",))
def replay_step(agent, offline: Buffer, online: Buffer, key: jax.Array, transitions: dict,
                count: jax.Array, num_updates: jax.Array, observations: jax.Array, *,
                update_slots: int, batch_size: int, horizon: int, obs_history: int,
                offline_ratio: float, offline_mix: str = "ratio"):
    """One off-policy online step, in one dispatch: append the first ``count`` rows of
    ``transitions`` (the chunk just run, each field ``[P, ...]``, ``Buffer.insert``) to
    ``online``, run ``num_updates <= update_slots`` steps of ``agent.update`` on batches mixing
    ``offline`` and ``online`` at ``offline_ratio`` (or uniformly: ``offline_mix``), then sample
    the next chunks for ``observations [E, (K,) O]`` (their acting records, where the buffer keeps
    any, go to ``online``'s pending records: ``Buffer.acted``).

    Returns ``(agent, online, key, chunks [E, H, A], info)``: ``info`` is the mean of each info
    scalar over the ``num_updates`` steps (zeros when there were none). The scan always has
    ``update_slots`` iterations and skips those past ``num_updates`` with ``lax.cond`` (on CPU
    only the taken branch runs; a step with no updates skips the scan), so every chunk, whatever
    its length or its updates, runs the same compiled program. ``online`` is donated: the buffer
    is updated in place, not copied. The key stream is the one of acting, storing and updating
    in separate dispatches: an update key is split off only when there are updates, then the
    acting key.
    """
    online = online.insert(transitions, count)

    def update(agent, step_key):
        batch = sample_mixed(offline, online, step_key, batch_size, offline_ratio, horizon,
                             obs_history, offline_mix)
        return agent.update(constrain_batch(batch, agent.config))

    split_key, update_key = jax.random.split(key)
    key = jnp.where(num_updates > 0, split_key, key)
    info_shapes = jax.eval_shape(update, agent, update_key)[1]

    def skip(agent, step_key):
        return agent, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shapes)

    def body(agent, slot):
        i, step_key = slot
        return jax.lax.cond(i < num_updates, update, skip, agent, step_key)

    def run_slots(agent):
        slots = (jnp.arange(update_slots), jax.random.split(update_key, update_slots))
        return jax.lax.scan(body, agent, slots)

    def no_updates(agent):  # most chunks of a run with update_every > 1: not even the scan
        return agent, jax.tree.map(lambda s: jnp.zeros((update_slots, *s.shape), s.dtype),
                                   info_shapes)

    agent, infos = jax.lax.cond(num_updates > 0, run_slots, no_updates, agent)
    done = jnp.maximum(num_updates, 1).astype(jnp.float32)
    info = jax.tree.map(lambda x: x.sum() / done, infos)
    key, act_key = jax.random.split(key)
    chunks, aux = agent.sample_actions(observations, act_key)
    return agent, online.acted(aux), key, chunks, info


@functools.partial(jax.jit, static_argnames=STATIC[:-2])
def vmapped_updates(agents, offline: Buffer, keys: jax.Array, *, num_steps: int, method: str,
                    batch_size: int, horizon: int, obs_history: int):
    """``fused_updates`` on offline data for a stack of agents ``[S, ...]`` with keys ``[S, 2]``,
    in one dispatch; info scalars come back ``[S]``."""
    def one(agent, key):
        return fused_updates(agent, offline, None, key, num_steps=num_steps, method=method,
                             batch_size=batch_size, horizon=horizon, obs_history=obs_history)
    return jax.vmap(one)(agents, keys)


def stack(trees):
    """Stack same-shaped pytrees along a new leading axis, with the first tree's structure (the
    agents' static fields, e.g. optax closures, differ by identity between instances)."""
    treedef = jax.tree.structure(trees[0])
    leaves = [jax.tree.leaves(t) for t in trees]
    return jax.tree.unflatten(treedef, [jnp.stack(x) for x in zip(*leaves)])


def unstack(tree, n: int) -> list:
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]
