"""Transitions on device and episode-aware chunk sampling, offline (+) online.

A ``Buffer`` holds flat transitions in episode order (the offline dataset, or the online
transitions as they come) and samples DESIGN.md's batches inside jit, so that many gradient steps
run in one ``lax.scan`` without touching the host:

  observations       [B, O] or [B, K, O]  (normalized; history padded with the episode's first frame)
  actions            [B, H, A]  (past the episode's end: the last valid action repeated)
  valid              [B, H]     (1 where the step is inside the episode)
  rewards            [B, H]     (0 where not valid)
  terminals          [B, H]     (1 where the env terminated; 0 where not valid)
  next_observations  like observations: the observation after the chunk's last valid step
  masks              [B]        (0 when a valid step of the chunk is terminal: bootstrap or not)
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dprl.data.frames import PixelSpec, is_pixel
from dprl.data.offline import Normalizer, OfflineData
from dprl.models.augment import augment_observations

FIELDS = ("observations", "actions", "rewards", "terminals", "dones", "next_observations")


class Buffer(flax.struct.PyTreeNode):
    """Fixed-capacity transition storage on device. ``size`` is a traced scalar."""

    observations: jax.Array       # [C, O] normalized
    actions: jax.Array            # [C, A]
    rewards: jax.Array            # [C]
    terminals: jax.Array          # [C] float
    dones: jax.Array              # [C] float: last step of an episode
    next_observations: jax.Array  # [C, O] normalized
    size: jax.Array               # [] int32
    # Pixel data (dprl.data.frames): every episode step's frame once, uint8 [F, H, W, C];
    # observations / next_observations are then {'frame': int32 [C] (an index into frames),
    # 'state': [C, S] normalized}, and batches carry {'image': uint8, 'state'}.
    frames: Any = None
    augment: str = flax.struct.field(pytree_node=False, default="none")  # of sampled batches

    @property
    def capacity(self) -> int:
        return int(self.actions.shape[0])

    @classmethod
    def from_offline(cls, data: OfflineData, normalizer: Normalizer) -> "Buffer":
        if is_pixel(data.observations):
            return cls._from_pixel_data(data, normalizer)
        return cls(
            observations=jnp.asarray(normalizer(data.observations), jnp.float32),
            actions=jnp.asarray(data.actions, jnp.float32),
            rewards=jnp.asarray(data.rewards, jnp.float32),
            terminals=jnp.asarray(data.terminals, jnp.float32),
            dones=jnp.asarray(data.dones, jnp.float32),
            next_observations=jnp.asarray(normalizer(data.next_observations), jnp.float32),
            size=jnp.asarray(data.size, jnp.int32),
        )

    @classmethod
    def _from_pixel_data(cls, data: OfflineData, normalizer: Normalizer) -> "Buffer":
        obs, nxt = data.observations, data.next_observations
        if obs["image"].store is not nxt["image"].store:
            raise ValueError("pixel observations and next observations must share one frame store")
        part = lambda o: {"frame": jnp.asarray(o["image"].index, jnp.int32),  # noqa: E731
                          "state": jnp.asarray(normalizer(o)["state"], jnp.float32)}
        return cls(
            observations=part(obs), actions=jnp.asarray(data.actions, jnp.float32),
            rewards=jnp.asarray(data.rewards, jnp.float32),
            terminals=jnp.asarray(data.terminals, jnp.float32),
            dones=jnp.asarray(data.dones, jnp.float32), next_observations=part(nxt),
            size=jnp.asarray(data.size, jnp.int32), frames=jnp.asarray(obs["image"].store),
            augment=data.metadata.get("augment", "none"))

    def nbytes_per_transition(self) -> float:
        """Device bytes per stored transition (frames, indices, states and the rest)."""
        leaves = jax.tree.leaves(self.replace(size=jnp.zeros((), jnp.int32)))
        return sum(x.nbytes for x in leaves) / max(int(self.size), 1)

    def _observations_at(self, which: Any, idx: jax.Array) -> Any:
        """``which`` (observations or next_observations) at rows ``idx [B, ...]``; pixel rows
        have their frames looked up."""
        if self.frames is None:
            return which[idx]
        return {"image": self.frames[which["frame"][idx]], "state": which["state"][idx]}

    @classmethod
    def empty(cls, capacity: int, obs_dim: int, action_dim: int) -> "Buffer":
        if isinstance(obs_dim, PixelSpec):
            raise ValueError(
                "online off-policy finetuning from pixels is not supported yet (its replay "
                "buffer stores flat observations): run pixel tasks with --online_steps=0")
        z = lambda *s: jnp.zeros(s, jnp.float32)  # noqa: E731
        return cls(z(capacity, obs_dim), z(capacity, action_dim), z(capacity), z(capacity),
                   z(capacity), z(capacity, obs_dim), jnp.zeros((), jnp.int32))

    @jax.jit
    def add(self, transitions: dict) -> "Buffer":
        """Append ``n`` transitions (each field ``[n, ...]``, normalized) at ``size``.

        The caller keeps ``size + n <= capacity`` (the runner sizes the online buffer for the
        whole online phase): XLA clamps the start of a write that would run past the end, which
        would overwrite earlier rows.
        """
        return self.insert(transitions, transitions["actions"].shape[0])

    def insert(self, transitions: dict, count: jax.Array) -> "Buffer":
        """``add`` for a fixed-shape block: the first ``count`` of ``P`` rows (each field
        ``[P, ...]``) are appended, so that a jitted caller sees one shape for every chunk.

        All ``P`` rows are written at ``size`` (the rows past ``count`` lie beyond the new
        ``size``, where sampling never looks, and the next insert overwrites them), so the caller
        keeps ``size + P <= capacity``.
        """
        updates = {k: jax.lax.dynamic_update_slice_in_dim(
            getattr(self, k), jnp.asarray(transitions[k], jnp.float32), self.size, axis=0)
            for k in FIELDS}
        return self.replace(**updates, size=self.size + jnp.asarray(count, jnp.int32))

    def sample(self, key: jax.Array, batch_size: int, horizon: int = 1,
               obs_history: int = 1) -> dict:
        """A batch of chunks of length ``horizon`` that never cross an episode end (see module doc)."""
        if self.frames is not None and self.augment != "none":
            key, aug_key = jax.random.split(key)
            batch = self.gather(jax.random.randint(key, (batch_size,), 0,
                                                   jnp.maximum(self.size, 1)),
                                horizon, obs_history)
            for i, k in enumerate(("observations", "next_observations")):
                batch[k] = augment_observations(batch[k], jax.random.fold_in(aug_key, i),
                                                self.augment)
            return batch
        idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
        return self.gather(idx, horizon, obs_history)

    def gather(self, idx: jax.Array, horizon: int = 1, obs_history: int = 1) -> dict:
        """The batch whose chunks start at transitions ``idx [B]``."""
        H = horizon
        offsets = jnp.arange(H)
        pos = idx[:, None] + offsets[None, :]                                   # [B, H]
        in_range = pos < self.size
        pos_c = jnp.minimum(pos, self.capacity - 1)
        # Step j is valid when no episode ended at steps 0..j-1 of the chunk.
        ended_before = jnp.cumsum(self.dones[pos_c] * in_range, axis=1) - self.dones[pos_c] * in_range
        valid = in_range & (ended_before == 0)
        n_valid = valid.sum(axis=1)                                              # [B] >= 1
        eff = idx[:, None] + jnp.minimum(offsets[None, :], n_valid[:, None] - 1)  # pad: repeat last
        last = idx + n_valid - 1
        validf = valid.astype(jnp.float32)
        batch = {
            "actions": self.actions[eff],
            "valid": validf,
            "rewards": self.rewards[eff] * validf,
            "terminals": self.terminals[eff] * validf,
            # Terminals are episode ends except in success_masks data, where a success inside
            # a chunk also stops its bootstrap.
            "masks": 1.0 - (self.terminals[eff] * validf).max(axis=1),
        }
        if obs_history == 1:
            batch["observations"] = self._observations_at(self.observations, idx)
            batch["next_observations"] = self._observations_at(self.next_observations, last)
        else:
            hist = self._history(idx, obs_history)                               # [B, K, O]
            last_hist = self._history(last, obs_history)
            batch["observations"] = hist
            batch["next_observations"] = jax.tree.map(
                lambda h, n: jnp.concatenate([h[:, 1:], n[:, None]], axis=1), last_hist,
                self._observations_at(self.next_observations, last))
        return batch

    def _history(self, idx: jax.Array, K: int) -> jax.Array:
        """Observations ``[B, K, O]`` ending at ``idx``, padded with the episode's first frame."""
        back = jnp.arange(1, K)                                                  # 1..K-1
        prev = idx[:, None] - back[None, :]                                       # [B, K-1]
        ok = prev >= 0
        # frame idx-k is in the same episode if no episode ended at idx-k .. idx-1
        same = ok & (jnp.cumsum(self.dones[jnp.maximum(prev, 0)] * ok, axis=1) == 0)
        n_back = same.sum(axis=1)                                                 # [B]
        ks = jnp.arange(K - 1, -1, -1)                                            # K-1 .. 0
        frames = idx[:, None] - jnp.minimum(ks[None, :], n_back[:, None])
        return self._observations_at(self.observations, frames)


def example_batch(obs_dim: "int | PixelSpec", action_dim: int, horizon: int,
                  obs_history: int = 1, batch_size: int = 2) -> dict:
    """A batch of zeros with the schema's shapes, for ``Agent.create`` (which reads shapes only).
    ``obs_dim``: a ``PixelSpec`` gives pixel observations ``{'image': uint8 [B, (K,) H, W, C],
    'state': [B, (K,) S]}``."""
    lead = (batch_size,) if obs_history == 1 else (batch_size, obs_history)
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    if isinstance(obs_dim, PixelSpec):
        obs = {"image": np.zeros(lead + tuple(obs_dim.image_shape), np.uint8),
               "state": z(*lead, obs_dim.state_dim)}
        return {"observations": obs, "actions": z(batch_size, horizon, action_dim),
                "valid": z(batch_size, horizon) + 1, "rewards": z(batch_size, horizon),
                "terminals": z(batch_size, horizon), "next_observations": obs,
                "masks": z(batch_size) + 1}
    obs_shape = lead + (obs_dim,)
    return {"observations": z(*obs_shape), "actions": z(batch_size, horizon, action_dim),
            "valid": z(batch_size, horizon) + 1, "rewards": z(batch_size, horizon),
            "terminals": z(batch_size, horizon), "next_observations": z(*obs_shape),
            "masks": z(batch_size) + 1}


def chunk_return(batch: dict, discount: float) -> tuple[jax.Array, jax.Array]:
    """The h-step backup of a batch of chunks: ``target = ret + boot * Q'(next_observations)``.

    ``ret [B]`` = ``sum_j discount^j rewards_j`` over the chunk's valid steps; ``boot [B]`` =
    ``discount^n * masks`` with ``n`` the number of valid steps. A chunk cut by its episode's end
    bootstraps from the observation after its last valid step (the correct n-step return); one
    cut by termination has ``masks = 0``, so it does not bootstrap. So has a chunk with a terminal
    inside it, which happens where terminals are not episode ends (``success_masks`` tasks:
    OGBench's play data goes on after a success; QC takes the minimum of the masks over the
    chunk).
    """
    H = batch["rewards"].shape[1]
    powers = discount ** jnp.arange(H, dtype=jnp.float32)
    ret = (batch["rewards"] * batch["valid"] * powers).sum(1)
    boot = discount ** batch["valid"].sum(1) * batch["masks"]
    return ret, boot


MIXES = ("ratio", "uniform")


def sample_mixed(offline: Buffer, online: Buffer, key: jax.Array, batch_size: int,
                 offline_ratio: float, horizon: int = 1, obs_history: int = 1,
                 mix: str = "ratio") -> dict:
    """A batch from the offline data and the online buffer.

    ``mix='ratio'``: ``offline_ratio`` of the batch from the offline data, the rest from the
    online buffer (0.5 = RLPD's symmetric sampling); the split is static,
    ``round(batch_size * ratio)``. ``mix='uniform'``: the two as one buffer sampled uniformly
    (QC's offline-to-online protocol), so each chunk is offline with probability
    ``n_off / (n_off + n_on) = 1 / (1 + n_on / n_off)``; ``offline_ratio`` is unused. Chunks never
    cross from one buffer into the other.
    """
    if mix == "uniform":
        return _sample_uniform(offline, online, key, batch_size, horizon, obs_history)
    if mix != "ratio":
        raise ValueError(f"offline_mix must be one of {MIXES}, not {mix!r}")
    n_off = int(round(batch_size * offline_ratio))
    n_on = batch_size - n_off
    if n_on == 0:
        return offline.sample(key, batch_size, horizon, obs_history)
    if n_off == 0:
        return online.sample(key, batch_size, horizon, obs_history)
    k1, k2 = jax.random.split(key)
    a = offline.sample(k1, n_off, horizon, obs_history)
    b = online.sample(k2, n_on, horizon, obs_history)
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y], axis=0), a, b)


def _sample_uniform(offline: Buffer, online: Buffer, key: jax.Array, batch_size: int,
                    horizon: int, obs_history: int) -> dict:
    """``sample_mixed``'s 'uniform' mix: an index uniform over ``n_off + n_on`` transitions, the
    first ``n_off`` of which are the offline data's."""
    n_off, n_on = offline.size, online.size
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(n_off + n_on, 1))
    from_offline = idx < n_off                                                   # [B]
    a = offline.gather(jnp.minimum(idx, jnp.maximum(n_off - 1, 0)), horizon, obs_history)
    b = online.gather(jnp.clip(idx - n_off, 0, jnp.maximum(n_on - 1, 0)), horizon, obs_history)
    def pick(x, y):
        return jnp.where(from_offline.reshape(-1, *([1] * (x.ndim - 1))), x, y)

    return jax.tree.map(pick, a, b)


def transitions_from_chunks(executed: dict, normalizer: Normalizer) -> dict:
    """Executed chunk steps ``[act_steps, E, ...]`` (ChunkExecutor) -> flat buffer transitions.

    Keeps only the steps that were taken, env by env in time order, so a single env's transitions
    stay contiguous; ``dones`` marks terminated or truncated steps.
    """
    valid = executed["valid"]                     # [S, E]
    S, E = valid.shape
    order = [(s, e) for e in range(E) for s in range(S) if valid[s, e]]
    pick = lambda k: np.stack([executed[k][s, e] for s, e in order])  # noqa: E731
    term = pick("terminals").astype(np.float32)
    done = (pick("terminals") | pick("truncations")).astype(np.float32)
    return {
        "observations": np.asarray(normalizer(pick("observations")), np.float32),
        "actions": pick("actions").astype(np.float32),
        "rewards": pick("rewards").astype(np.float32),
        "terminals": term,
        "dones": done,
        "next_observations": np.asarray(normalizer(pick("next_observations")), np.float32),
    }


def transition_block(transitions: dict | None, rows: int, obs_dim: int, action_dim: int
                     ) -> tuple[dict, int]:
    """Flat transitions (each field ``[n, ...]``, ``n <= rows``; None: no transitions) as the
    fixed-shape block that ``Buffer.insert`` takes: ``(block, n)``, each field ``[rows, ...]``,
    zero past ``n``."""
    n = 0 if transitions is None else len(transitions["actions"])
    if n > rows:
        raise ValueError(f"{n} transitions do not fit a block of {rows} rows")
    block = {}
    for k in FIELDS:
        width = {"observations": (obs_dim,), "next_observations": (obs_dim,),
                 "actions": (action_dim,)}.get(k, ())
        block[k] = np.zeros((rows, *width), np.float32)
        if n:
            block[k][:n] = transitions[k]
    return block, n
