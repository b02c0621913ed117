"""Many gradient steps in one dispatch: batches sampled on device, the agent's step scanned.

``fused_updates`` runs ``num_steps`` of ``agent.pretrain`` or ``agent.update`` in one
``lax.scan`` under one jit; ``vmapped_updates`` does the same for a stack of seeds ``[S, ...]``
(``stack`` / ``unstack`` move agents in and out of it).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dprl.buffer import Buffer, sample_mixed

STATIC = ("num_steps", "method", "batch_size", "horizon", "obs_history", "offline_ratio")


@functools.partial(jax.jit, static_argnames=STATIC)
def fused_updates(agent, offline: Buffer, online: Buffer | None, key: jax.Array, *,
                  num_steps: int, method: str, batch_size: int, horizon: int, obs_history: int,
                  offline_ratio: float = 1.0):
    """``num_steps`` calls of ``agent.<method>(batch)`` with batches drawn from ``offline`` (mixed
    with ``online`` at ``offline_ratio`` when given). Returns the new agent and the mean of each
    info scalar over the steps."""
    def body(agent, step_key):
        if online is None:
            batch = offline.sample(step_key, batch_size, horizon, obs_history)
        else:
            batch = sample_mixed(offline, online, step_key, batch_size, offline_ratio, horizon,
                                 obs_history)
        return getattr(agent, method)(batch)

    agent, infos = jax.lax.scan(body, agent, jax.random.split(key, num_steps))
    return agent, jax.tree.map(jnp.mean, infos)


@functools.partial(jax.jit, static_argnames=STATIC[:-1])
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
