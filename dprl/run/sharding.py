"""Several devices in one run, with JAX's own sharding: a 1-D ``Mesh`` over the local devices.

Two uses, neither with a hand-written collective (XLA's SPMD partitioner inserts them):

- **seeds** (``--num_seeds=S``, ``dprl.run.multiseed``): the stacked agents ``[S, ...]`` and their
  keys ``[S, 2]`` are laid out ``NamedSharding(mesh, P('devices'))`` over ``D' = min(S, D)`` of
  the ``D`` local devices, so each device updates ``S / D'`` seeds; the offline data is
  replicated. When ``S`` is not a multiple of ``D'`` the stack is **padded** with copies of the
  last seed up to the next multiple (``SeedPlacement.padded``); the copies' results are dropped.
  Seeds never interact, so each seed's numbers are those of a one-device run up to float
  rounding (the batched matmuls may sum in another order).
- **data parallel** (``run.data_parallel``): one agent, its parameters replicated on every device,
  and each batch ``[B, ...]`` constrained to ``P('devices')`` inside the jitted update
  (``constrain_batch``): every device computes the losses of ``B / D`` rows and the compiler
  all-reduces the gradients (the mean over the whole batch, as on one device, up to the order of
  the sum). ``run.batch_size`` must be a multiple of ``D`` (``validate_config`` checks it).

On one device both are the plain program. Checkpoints hold plain arrays (each seed's agent is
gathered before it is saved) and restore into whatever devices the resuming process has.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "devices"


def local_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh (axis ``'devices'``) over the first ``num_devices`` local devices (all)."""
    devices = jax.local_devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices; this process has {len(devices)} "
                         f"({devices[0].platform})")
    return Mesh(np.array(devices[:n]), (AXIS,))


@dataclasses.dataclass(frozen=True)
class SeedPlacement:
    """Where ``num_seeds`` stacked seeds live: ``mesh`` over ``min(num_seeds, devices)`` devices,
    the stack padded to ``padded`` (a multiple of the mesh size) rows."""

    mesh: Mesh
    num_seeds: int

    @classmethod
    def of(cls, num_seeds: int, num_devices: int | None = None) -> "SeedPlacement":
        available = jax.local_device_count() if num_devices is None else int(num_devices)
        return cls(local_mesh(min(num_seeds, available)), int(num_seeds))

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    @property
    def padded(self) -> int:
        return math.ceil(self.num_seeds / self.num_devices) * self.num_devices

    def put(self, tree):
        """A stack ``[num_seeds, ...]`` (every leaf) padded to ``[padded, ...]`` with copies of
        its last row, sharded over the mesh along the leading axis."""
        extra = self.padded - self.num_seeds

        def pad(x):
            x = jnp.asarray(x)
            if extra:
                x = jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)])
            return x
        return jax.device_put(jax.tree.map(pad, tree), NamedSharding(self.mesh, P(AXIS)))

    def replicate(self, tree):
        """Every leaf of ``tree`` in full on each device of the mesh."""
        return jax.device_put(tree, NamedSharding(self.mesh, P()))


def batch_devices(run_config) -> int:
    """Devices that split each batch: all local ones with ``run.data_parallel``, else 1."""
    return jax.local_device_count() if run_config.get("data_parallel", False) else 1


def check_data_parallel(run_config, ppo_batch_size: int | None = None) -> str | None:
    """Why ``run_config`` cannot split its batches over the local devices (None: it can);
    ``ppo_batch_size``: an on-policy agent's minibatch, split the same way."""
    n = batch_devices(run_config)
    if n > 1 and run_config.batch_size % n:
        return (f"--agent.run.batch_size={run_config.batch_size}: must be a multiple of the {n} "
                f"local devices with run.data_parallel (each device takes batch_size / {n} rows)")
    if n > 1 and ppo_batch_size and ppo_batch_size % n:
        return (f"--agent.ppo_batch_size={ppo_batch_size}: must be a multiple of the {n} local "
                f"devices with run.data_parallel (each PPO minibatch is split over them)")
    return None


def constrain_batch(batch, config):
    """Inside a jitted update: lay ``batch`` (every leaf ``[B, ...]``) out over the local devices
    along ``B`` when ``config.run.data_parallel`` (the agent's static config) and there are several
    devices; else return it unchanged. Parameters stay replicated; XLA averages the gradients."""
    run = config.get("run") if hasattr(config, "get") else None
    if run is None or batch_devices(run) == 1:
        return batch
    return jax.lax.with_sharding_constraint(batch, NamedSharding(local_mesh(), P(AXIS)))
