"""Pixel observations on the host: camera frames stored once, a transition's frames as indices.

A pixel task's ``OfflineData.observations`` is a ``PixelObservations`` dict:

  image  ``Frames``: uint8 ``[N, H, W, C]`` seen through an index into one store of frames
         ``[N + episodes, H, W, C]`` (every episode step once); ``next_observations['image']``
         indexes the same store one frame later, so no frame is held twice
  state  float ``[N, S]``

``PixelObservations.shape`` is ``(N, PixelSpec)``: where a flat dataset's ``observations.shape[1]``
is its observation size, a pixel dataset's is its spec (state size and image shape), which
``Normalizer.identity``, ``example_batch`` and ``Buffer.empty`` take in its place.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class PixelSpec:
    """What a pixel observation holds: ``state [state_dim]`` and ``image [*image_shape]``."""

    state_dim: int
    image_shape: tuple[int, ...]


class Frames:
    """uint8 frames ``store[index]`` without the copy: ``shape``, ``len``, ``[i]`` and
    ``np.asarray`` (which does copy) as if it were the indexed array."""

    def __init__(self, store: np.ndarray, index: np.ndarray):
        self.store, self.index = store, np.asarray(index, np.int32)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index),) + tuple(self.store.shape[1:])

    @property
    def dtype(self):
        return self.store.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        return self.store[self.index[i]]

    def __array__(self, dtype=None, copy=None):
        out = self.store[self.index]
        return out if dtype is None else out.astype(dtype)


class PixelObservations(dict):
    """``{'image': Frames, 'state': [N, S]}`` with ``shape = (N, PixelSpec)`` (module doc)."""

    @property
    def spec(self) -> PixelSpec:
        return PixelSpec(int(self["state"].shape[1]), tuple(self["image"].shape[1:]))

    @property
    def shape(self) -> tuple:
        return (len(self["state"]), self.spec)


def is_pixel(observations: Any) -> bool:
    return isinstance(observations, dict)


def apply_observation_transform(data, task: dict):
    """A pixel task's data from its state dataset: the preset's ``observation_transform``
    ("module:function(obs, next_obs, dones) -> {frames, obs_frame, state, next_state}") gives
    the frames; the training batches' augmentation (``task['augment']``) goes into
    ``data.metadata['augment']`` for the buffer."""
    module, _, fn = task["observation_transform"].partition(":")
    pix = getattr(importlib.import_module(module), fn)(
        np.asarray(data.observations), np.asarray(data.next_observations), data.dones)
    data.observations = PixelObservations(image=Frames(pix["frames"], pix["obs_frame"]),
                                          state=pix["state"])
    data.next_observations = PixelObservations(image=Frames(pix["frames"], pix["obs_frame"] + 1),
                                               state=pix["next_state"])
    data.metadata = {**data.metadata, "augment": task.get("augment", "none")}
    return data


def bytes_per_transition(data) -> float:
    """Host bytes per transition of a pixel dataset (frames once, indices, states, the rest)."""
    obs, nxt = data.observations, data.next_observations
    frames = obs["image"].store.nbytes
    other = sum(np.asarray(getattr(data, k)).nbytes for k in ("actions", "rewards", "terminals",
                                                              "timeouts", "dones"))
    idx = obs["image"].index.nbytes + nxt["image"].index.nbytes
    return (frames + idx + obs["state"].nbytes + nxt["state"].nbytes + other) / data.size
