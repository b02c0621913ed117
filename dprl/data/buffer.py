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

Pixel observations (``dprl.data.frames``) are dicts ``{'image*': uint8 [B, (K,) H, W, C],
'state': [B, (K,) S]}``: the buffer keeps every camera's frames once on the device, uint8, and
its rows hold frame indices (``Buffer.frames``). Online, ``insert`` takes the chunk's images and
appends each frame that is not already the previous transition's next frame, so that an
episode's T steps take T + 1 frames, as the offline data do.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dprl.base.logging import progress_bar
from dprl.data.frames import PixelSpec, camera_keys, is_pixel
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
    # Pixel data (dprl.data.frames): per camera key ('image', 'image_wrist', ...) every stored
    # frame once, {key: uint8 [F, H, W, C]}; observations / next_observations are then
    # {key: int32 [C] (an index into frames[key]), 'state': [C, S] normalized}, and batches
    # carry {key: uint8 images, 'state'}. frame_count {key: int32 []}: the frames written (online).
    frames: Any = None
    frame_count: Any = None
    # Acting records, for agents that learn from how they acted (``Agent.replay_acting``:
    # DSRL-SAC's noise w): per row the record of the chunk it was executed in,
    # {name: [C, ...]}; chunk_step [C] int32 the row's step inside that chunk (batches then
    # start at chunk starts and carry the records); pending {name: [E, ...]} the records of the
    # chunks sampled for the E envs but not yet stored. None in every other buffer.
    acting: Any = None
    chunk_step: Any = None
    pending: Any = None
    # Per-state samples of a frozen policy, drawn once (``with_support``; QGPO's "fake actions"):
    # {'support_actions': [C, M, H, A] at observations[i], 'next_support_actions': [C, M, H, A]
    # at next_observations[i]}; batches carry them for their first and last step.
    support: Any = None
    augment: str = flax.struct.field(pytree_node=False, default="none")  # of sampled batches

    @property
    def capacity(self) -> int:
        return int(self.actions.shape[0])

    @property
    def obs_spec(self) -> "int | PixelSpec":
        """The observation size, or the ``PixelSpec`` of a pixel buffer."""
        if self.frames is None:
            return int(self.observations.shape[1])
        return PixelSpec.of(int(self.observations["state"].shape[1]),
                            {k: tuple(v.shape[1:]) for k, v in self.frames.items()})

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
        cams = camera_keys(obs)
        if camera_keys(nxt) != cams:
            raise ValueError(f"pixel next observations have cameras {camera_keys(nxt)}, the "
                             f"observations {cams}: give both the same keys")
        for k in cams:
            if obs[k].store is not nxt[k].store:
                raise ValueError(f"camera {k!r}: its observations and next observations must "
                                 f"share one frame store (Frames(store, index) with one store)")

        def part(o):
            return {**{k: jnp.asarray(o[k].index, jnp.int32) for k in cams},
                    "state": jnp.asarray(normalizer(o)["state"], jnp.float32)}

        frames = {k: jnp.asarray(obs[k].store) for k in cams}
        return cls(
            observations=part(obs), actions=jnp.asarray(data.actions, jnp.float32),
            rewards=jnp.asarray(data.rewards, jnp.float32),
            terminals=jnp.asarray(data.terminals, jnp.float32),
            dones=jnp.asarray(data.dones, jnp.float32), next_observations=part(nxt),
            size=jnp.asarray(data.size, jnp.int32), frames=frames,
            frame_count={k: jnp.asarray(v.shape[0], jnp.int32) for k, v in frames.items()},
            augment=data.metadata.get("augment", "none"))

    def nbytes_per_transition(self) -> float:
        """Device bytes per stored transition (frames, indices, states and the rest), of what is
        allocated (an online buffer's whole capacity: see ``nbytes_used_per_transition``)."""
        leaves = jax.tree.leaves(self.replace(size=jnp.zeros((), jnp.int32)))
        return sum(x.nbytes for x in leaves) / max(int(self.size), 1)

    def nbytes_used_per_transition(self) -> float:
        """Device bytes per stored transition of the rows and frames written so far."""
        size = max(int(self.size), 1)
        rows = sum(x.nbytes for x in jax.tree.leaves(
            (self.observations, self.actions, self.rewards, self.terminals, self.dones,
             self.next_observations))) * size / self.capacity
        frames = sum(int(self.frame_count[k]) * v[0].nbytes for k, v in self.frames.items()) \
            if self.frames is not None else 0
        return (rows + frames) / size

    def _observations_at(self, which: Any, idx: jax.Array) -> Any:
        """``which`` (observations or next_observations) at rows ``idx [B, ...]``; pixel rows
        have their frames looked up."""
        if self.frames is None:
            return which[idx]
        return {k: (self.frames[k][v[idx]] if k in self.frames else v[idx])
                for k, v in which.items()}

    @classmethod
    def empty(cls, capacity: int, obs_dim: "int | PixelSpec", action_dim: int,
              frame_capacity: int | None = None, acting: dict | None = None,
              num_envs: int = 1) -> "Buffer":
        """An empty buffer of ``capacity`` transitions. ``obs_dim``: a ``PixelSpec`` gives a pixel
        buffer: per camera a uint8 store of ``frame_capacity`` frames (default ``2 * capacity``,
        which no sequence of episodes can fill: a transition adds at most two frames, one when
        an episode starts; the frames in use are ``capacity + episodes``). ``acting``: the shapes
        of the acting records to keep, ``{name: shape of one chunk's record}``, for
        ``num_envs`` acting envs (``Agent.replay_acting``)."""
        buffer = cls._empty(capacity, obs_dim, action_dim, frame_capacity)
        if not acting:
            return buffer
        return buffer.replace(
            acting={k: jnp.zeros((capacity, *s), jnp.float32) for k, s in acting.items()},
            chunk_step=jnp.zeros(capacity, jnp.int32),
            pending={k: jnp.zeros((num_envs, *s), jnp.float32) for k, s in acting.items()})

    @classmethod
    def _empty(cls, capacity: int, obs_dim: "int | PixelSpec", action_dim: int,
               frame_capacity: int | None) -> "Buffer":
        z = lambda *s: jnp.zeros(s, jnp.float32)  # noqa: E731
        if not isinstance(obs_dim, PixelSpec):
            return cls(z(capacity, obs_dim), z(capacity, action_dim), z(capacity), z(capacity),
                       z(capacity), z(capacity, obs_dim), jnp.zeros((), jnp.int32))
        F = 2 * capacity if frame_capacity is None else int(frame_capacity)
        shapes = obs_dim.camera_shapes
        rows = lambda: {**{k: jnp.zeros(capacity, jnp.int32) for k in shapes},  # noqa: E731
                        "state": z(capacity, obs_dim.state_dim)}
        return cls(rows(), z(capacity, action_dim), z(capacity), z(capacity), z(capacity),
                   rows(), jnp.zeros((), jnp.int32),
                   frames={k: jnp.zeros((F, *s), jnp.uint8) for k, s in shapes.items()},
                   frame_count={k: jnp.zeros((), jnp.int32) for k in shapes})

    @property
    def room(self) -> dict:
        """What ``Buffer.empty`` needs to make a buffer of this one's shapes (a checkpoint's
        restore target): ``{'rows': capacity, 'frames': frame capacity or None}``."""
        frames = None if self.frames is None else int(next(iter(self.frames.values())).shape[0])
        return {"rows": self.capacity, "frames": frames}

    def like(self, room: dict) -> "Buffer":
        """An empty buffer of this one's observations, actions and acting records with ``room``
        (``room``)."""
        acting = None if self.acting is None else {
            k: tuple(v.shape[1:]) for k, v in self.acting.items()}
        envs = 1 if self.pending is None else int(next(iter(self.pending.values())).shape[0])
        return Buffer.empty(int(room["rows"]), self.obs_spec, int(self.actions.shape[1]),
                            room.get("frames"), acting, envs)

    def grown(self, room: dict) -> "Buffer":
        """This buffer with at least ``room`` (``{'rows', 'frames'}``): rows and frames padded
        with zeros past the end; its contents, ``size`` and frame counts unchanged. A resumed run
        whose online phase got longer continues with the replay data it had."""
        def pad(x, n):
            return jnp.concatenate([x, jnp.zeros((n - x.shape[0], *x.shape[1:]), x.dtype)]) \
                if n > x.shape[0] else x
        rows = max(int(room["rows"]), self.capacity)
        fields = {k: jax.tree.map(lambda x: pad(x, rows), getattr(self, k))
                  for k in FIELDS + ("acting", "chunk_step") if getattr(self, k) is not None}
        if self.frames is not None:
            F = max(int(room.get("frames") or 2 * rows), self.room["frames"])
            fields["frames"] = {k: pad(v, F) for k, v in self.frames.items()}
        return self.replace(**fields)

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
        count = jnp.asarray(count, jnp.int32)
        buf = self
        if self.frames is not None:
            buf, transitions = self._insert_frames(transitions, count)
        put = lambda old, new: jax.lax.dynamic_update_slice_in_dim(  # noqa: E731
            old, jnp.asarray(new, old.dtype), self.size, axis=0)
        updates = {k: jax.tree.map(put, getattr(self, k), transitions[k]) for k in FIELDS}
        if self.acting is not None:  # each row gets the record of the chunk that acted
            env = jnp.asarray(transitions["chunk_env"], jnp.int32)
            updates["acting"] = {k: put(v, self.pending[k][env]) for k, v in self.acting.items()}
            updates["chunk_step"] = put(self.chunk_step, transitions["chunk_step"])
        return buf.replace(**updates, size=self.size + count)

    def acted(self, records: dict) -> "Buffer":
        """This buffer with ``records`` (the agent's aux from ``sample_actions``, each leaf
        ``[E, ...]``) as the pending chunks' acting records, where it keeps any."""
        if self.acting is None:
            return self
        return self.replace(pending={k: jnp.asarray(records[k], jnp.float32)
                                     for k in self.acting})

    def _insert_frames(self, transitions: dict, count: jax.Array) -> tuple["Buffer", dict]:
        """Append a block's camera frames to the frame stores; the block with frame indices in
        place of its images.

        Per camera, row ``i``'s next frame is always appended, and its frame only when it differs
        from row ``i - 1``'s next frame (for row 0: the last stored row's), i.e. at an episode's
        start: one env's transitions come in time order, so an episode of T steps takes T + 1
        frames. Frames are compared by content, so a restarted env (whose previous episode has
        no ``done``) still gets its own first frame.
        """
        obs, nxt = dict(transitions["observations"]), dict(transitions["next_observations"])
        P = transitions["actions"].shape[0]
        valid = jnp.arange(P) < count
        last = jnp.maximum(self.size - 1, 0)
        frames, frame_count = dict(self.frames), dict(self.frame_count)
        for k, store in self.frames.items():
            img, nimg = jnp.asarray(obs[k], jnp.uint8), jnp.asarray(nxt[k], jnp.uint8)
            prev_idx = self.next_observations[k][last]                      # [] int32
            before = jnp.concatenate([store[prev_idx][None], nimg[:-1]])    # [P, H, W, C]
            same = jnp.all((img == before).reshape(P, -1), axis=1)
            same = same.at[0].set(same[0] & (self.size > 0))
            new = valid & ~same                                             # rows adding a frame
            adds = new.astype(jnp.int32) + valid.astype(jnp.int32)
            start = self.frame_count[k] + jnp.cumsum(adds) - adds           # row i's first slot
            next_idx = start + new.astype(jnp.int32)
            prev_next = jnp.concatenate([prev_idx[None], next_idx[:-1]])
            obs_idx = jnp.where(new, start, prev_next)
            F = store.shape[0]
            store = store.at[jnp.where(new, start, F)].set(img, mode="drop")
            store = store.at[jnp.where(valid, next_idx, F)].set(nimg, mode="drop")
            frames[k], frame_count[k] = store, self.frame_count[k] + adds.sum()
            obs[k], nxt[k] = obs_idx, next_idx
        return (self.replace(frames=frames, frame_count=frame_count),
                {**transitions, "observations": obs, "next_observations": nxt})

    def sample(self, key: jax.Array, batch_size: int, horizon: int = 1,
               obs_history: int = 1) -> dict:
        """A batch of chunks of length ``horizon`` that never cross an episode end (see module
        doc). A buffer with acting records samples the executed chunks' starts (each row's
        chunk, so a chunk cut short by its episode's end is drawn less often)."""
        augmented = self.frames is not None and self.augment != "none"
        if augmented:
            key, aug_key = jax.random.split(key)
        idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
        if self.chunk_step is not None:
            idx = idx - self.chunk_step[idx]
        batch = self.gather(idx, horizon, obs_history)
        return _augment(batch, aug_key, self.augment) if augmented else batch

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
        if self.acting is not None:
            batch.update({k: v[idx] for k, v in self.acting.items()})
        if self.support is not None:
            batch["support_actions"] = self.support["support_actions"][idx]
            batch["next_support_actions"] = self.support["next_support_actions"][last]
        return batch

    def with_support(self, sample_fn, key: jax.Array, chunk: int = 1024,
                     progress: bool = True, after_chunk=None) -> "Buffer":
        """This buffer with ``support`` filled in: ``sample_fn(observations [b, ...], key) ->
        [b, M, H, A]`` (M draws of a frozen policy per state) at every stored observation and
        next observation, ``chunk`` states per jitted call; ``after_chunk()`` after each (the
        runner's stop check). Deterministic in ``key``, so a resumed run draws the same support."""
        n = int(self.size)
        draw = jax.jit(sample_fn)
        parts = {"support_actions": [], "next_support_actions": []}
        with progress_bar("support", 2 * n, 0, "state", progress) as bar:
            for side, (name, source) in enumerate((("support_actions", self.observations),
                                                   ("next_support_actions",
                                                    self.next_observations))):
                for start in range(0, n, chunk):
                    # A fixed shape (the last chunk padded) compiles once.
                    idx = jnp.minimum(jnp.arange(start, start + chunk), n - 1)
                    obs = self._observations_at(source, idx)
                    step_key = jax.random.fold_in(jax.random.fold_in(key, side), start)
                    parts[name].append(draw(obs, step_key)[:min(chunk, n - start)])
                    bar.update(min(chunk, n - start))
                    if after_chunk is not None:
                        after_chunk()
        support = {k: jnp.concatenate(v) for k, v in parts.items()}
        return self.replace(support=support)

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


def _augment(batch: dict, key: jax.Array, method: str) -> dict:
    """The batch's observations and next observations augmented (``augment_observations``)."""
    for i, k in enumerate(("observations", "next_observations")):
        batch[k] = augment_observations(batch[k], jax.random.fold_in(key, i), method)
    return batch


def example_batch(obs_dim: "int | PixelSpec", action_dim: int, horizon: int,
                  obs_history: int = 1, batch_size: int = 2) -> dict:
    """A batch of zeros with the schema's shapes, for ``Agent.create`` (which reads shapes only).
    ``obs_dim``: a ``PixelSpec`` gives pixel observations ``{'image': uint8 [B, (K,) H, W, C],
    'state': [B, (K,) S]}`` (one uint8 entry per camera of ``obs_dim.camera_shapes``)."""
    lead = (batch_size,) if obs_history == 1 else (batch_size, obs_history)
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    if isinstance(obs_dim, PixelSpec):
        obs = {**{k: np.zeros(lead + s, np.uint8) for k, s in obs_dim.camera_shapes.items()},
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

    Pixel data: the mixed batch is augmented as the offline data's batches are
    (``offline.augment``), whichever buffer each chunk came from.

    ``mix='ratio'``: ``offline_ratio`` of the batch from the offline data, the rest from the
    online buffer (0.5 = RLPD's symmetric sampling); the split is static,
    ``round(batch_size * ratio)``. ``mix='uniform'``: the two as one buffer sampled uniformly
    (QC's offline-to-online protocol), so each chunk is offline with probability
    ``n_off / (n_off + n_on) = 1 / (1 + n_on / n_off)``; ``offline_ratio`` is unused. Chunks never
    cross from one buffer into the other.
    """
    if mix not in MIXES:
        raise ValueError(f"offline_mix must be one of {MIXES}, not {mix!r}")
    if offline.frames is not None and offline.augment != "none":
        key, aug_key = jax.random.split(key)
        batch = sample_mixed(offline.replace(augment="none"), online.replace(augment="none"),
                             key, batch_size, offline_ratio, horizon, obs_history, mix)
        return _augment(batch, aug_key, offline.augment)
    if mix == "uniform":
        return _sample_uniform(offline, online, key, batch_size, horizon, obs_history)
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
    stay contiguous; ``dones`` marks terminated or truncated steps; ``chunk_step`` / ``chunk_env``
    (int32) say at which step of its chunk, in which env, each was taken (for acting records).
    """
    valid = executed["valid"]                     # [S, E]
    S, E = valid.shape
    order = [(s, e) for e in range(E) for s in range(S) if valid[s, e]]
    pick = lambda k: jax.tree.map(  # noqa: E731
        lambda x: np.stack([x[s, e] for s, e in order]), executed[k])
    term = pick("terminals").astype(np.float32)
    done = (pick("terminals") | pick("truncations")).astype(np.float32)
    return {
        "chunk_step": np.asarray([s for s, _ in order], np.int32),
        "chunk_env": np.asarray([e for _, e in order], np.int32),
        "observations": _stored(normalizer(pick("observations"))),
        "actions": pick("actions").astype(np.float32),
        "rewards": pick("rewards").astype(np.float32),
        "terminals": term,
        "dones": done,
        "next_observations": _stored(normalizer(pick("next_observations"))),
    }


def _stored(observations):
    """float32 flat observations and pixel states; pixel images stay uint8."""
    if is_pixel(observations):
        return {k: np.asarray(v, np.uint8 if k in camera_keys(observations) else np.float32)
                for k, v in observations.items()}
    return np.asarray(observations, np.float32)


def transition_block(transitions: dict | None, rows: int, obs_dim: "int | PixelSpec",
                     action_dim: int) -> tuple[dict, int]:
    """Transitions (each field ``[n, ...]``, or a dict of such for pixel observations,
    ``n <= rows``; None: no transitions) as the fixed-shape block that ``Buffer.insert`` takes:
    ``(block, n)``, each field ``[rows, ...]``, zero past ``n``. ``obs_dim``: the observation
    size, or a ``PixelSpec`` (observations ``{'image*': uint8 [rows, H, W, C], 'state'}``)."""
    n = 0 if transitions is None else len(transitions["actions"])
    if n > rows:
        raise ValueError(f"{n} transitions do not fit a block of {rows} rows")
    if isinstance(obs_dim, PixelSpec):
        obs = {**{k: np.zeros((rows, *s), np.uint8) for k, s in obs_dim.camera_shapes.items()},
               "state": np.zeros((rows, obs_dim.state_dim), np.float32)}
    else:
        obs = np.zeros((rows, obs_dim), np.float32)
    block = {k: np.zeros(rows, np.int32) for k in ("chunk_step", "chunk_env")}
    for k in ("chunk_step", "chunk_env"):
        if n and k in transitions:
            block[k][:n] = transitions[k]
    for k in FIELDS:
        if k in ("observations", "next_observations"):
            block[k] = jax.tree.map(np.copy, obs)
        else:
            block[k] = np.zeros((rows, action_dim) if k == "actions" else (rows,), np.float32)
        if n:
            def fill(dst, src, k=k):
                if dst.shape[1:] != np.shape(src)[1:]:
                    raise ValueError(f"transitions' {k} have shape {np.shape(src)[1:]} per row, "
                                     f"the buffer {dst.shape[1:]}")
                dst[:n] = src
            jax.tree.map(fill, block[k], transitions[k])
    return block, n
