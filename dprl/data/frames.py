"""Pixel observations on the host: camera frames stored once, a transition's frames as indices.

A pixel task's ``OfflineData.observations`` is a ``PixelObservations`` dict:

  image  ``Frames``: uint8 ``[N, H, W, C]`` seen through an index into one store of frames
         ``[N + episodes, H, W, C]`` (every episode step once); ``next_observations['image']``
         indexes the same store one frame later, so no frame is held twice
  state  float ``[N, S]``

Several cameras: every key that starts with ``image`` (``image``, ``image_wrist``, ...) is a
camera, each a ``Frames`` with its own store (shared by the observations and next observations
of that camera); ``PixelSpec.cameras`` then names each camera's frame shape.

``PixelObservations.shape`` is ``(N, PixelSpec)``: where a flat dataset's ``observations.shape[1]``
is its observation size, a pixel dataset's is its spec (state size and image shape), which
``Normalizer.identity``, ``example_batch`` and ``Buffer.empty`` take in its place.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np


CAMERA_PREFIX = "image"


@dataclasses.dataclass(frozen=True)
class PixelSpec:
    """What a pixel observation holds: ``state [state_dim]`` and ``image [*image_shape]``; with
    several cameras (or one not named ``image``), ``cameras`` gives every camera's frame shape,
    ``((key, shape), ...)`` sorted by key, and ``image_shape`` is the first camera's."""

    state_dim: int
    image_shape: tuple[int, ...]
    cameras: tuple | None = None

    @classmethod
    def of(cls, state_dim: int, shapes: dict) -> "PixelSpec":
        """The spec of ``{camera key: frame shape}``: the single-camera form for ``{'image'}``."""
        bad = [k for k in shapes if not k.startswith(CAMERA_PREFIX)]
        if not shapes or bad:
            raise ValueError(f"camera keys must start with {CAMERA_PREFIX!r}, not "
                             f"{sorted(shapes)}: rename them (e.g. image_wrist)")
        cams = tuple(sorted((k, tuple(int(d) for d in v)) for k, v in shapes.items()))
        if len(cams) == 1 and cams[0][0] == CAMERA_PREFIX:
            return cls(int(state_dim), cams[0][1])
        return cls(int(state_dim), cams[0][1], cams)

    @property
    def camera_shapes(self) -> dict:
        """``{camera key: frame shape}``."""
        if self.cameras is None:
            return {CAMERA_PREFIX: tuple(self.image_shape)}
        return {k: tuple(v) for k, v in self.cameras}


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
    """``{'image': Frames, 'state': [N, S]}`` (or several ``image*`` cameras) with
    ``shape = (N, PixelSpec)`` (module doc)."""

    @property
    def spec(self) -> PixelSpec:
        return pixel_spec(self)

    @property
    def shape(self) -> tuple:
        return (len(self["state"]), self.spec)


def is_pixel(observations: Any) -> bool:
    return isinstance(observations, dict)


def camera_keys(observations: dict) -> list[str]:
    """The camera keys of pixel observations (those starting with ``image``), sorted; refuses a
    dict with other keys than ``state`` and cameras."""
    cams = sorted(k for k in observations if k.startswith(CAMERA_PREFIX))
    other = sorted(k for k in observations if k != "state" and not k.startswith(CAMERA_PREFIX))
    if other or not cams or "state" not in observations:
        raise ValueError(f"pixel observations hold 'state' and cameras named '{CAMERA_PREFIX}*', "
                         f"not {sorted(observations)}: rename the cameras (e.g. image_wrist)")
    return cams


def pixel_spec(observations: dict) -> PixelSpec:
    """The ``PixelSpec`` of pixel observations ``{'state': [N, S], 'image*': [N, H, W, C]}``."""
    return PixelSpec.of(int(observations["state"].shape[-1]),
                        {k: tuple(observations[k].shape[1:]) for k in camera_keys(observations)})


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
    cams = camera_keys(obs)
    frames = sum(obs[k].store.nbytes for k in cams)
    other = sum(np.asarray(getattr(data, k)).nbytes for k in ("actions", "rewards", "terminals",
                                                              "timeouts", "dones"))
    idx = sum(obs[k].index.nbytes + nxt[k].index.nbytes for k in cams)
    return (frames + idx + obs["state"].nbytes + nxt["state"].nbytes + other) / data.size
