"""Image augmentation of training batches, inside the jitted update.

``random_shift`` ('shift') is DrQ's and FQL's: pad each image by ``pad`` pixels (edge values
repeated), then crop a window of the original size at a random offset, so the image moves by at
most ``pad`` pixels in each direction; evaluation sees the frames as they are.

``random_crop`` ('crop:<size>') is diffusion_policy's: a ``size x size`` window at a random
place, so training batches are smaller than the camera's frames; evaluation and acting take the
``center_crop`` of the same size (diffusion_policy's CropRandomizer in eval mode). The encoder
does that: with ``encoder.crop = size`` (``crop_size``; the runner sets it from the task's
``augment``) it center-crops every frame larger than ``size``, and the frames of a training batch,
already ``size x size``, pass unchanged.

Images are uint8 ``[B, (K,) H, W, C]``; the K history frames of one sample move together. Every
function is pure and jittable; offsets come from an explicit key.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

AUGMENTATIONS = ("none", "shift", "crop:<size>")


def crop_size(method: str) -> int:
    """The crop size of a ``'crop:<size>'`` augmentation; 0 for the others ('none', 'shift')."""
    if method in ("none", "shift"):
        return 0
    kind, _, size = method.partition(":")
    if kind != "crop" or not size.isdigit() or int(size) < 1:
        raise ValueError(f"Unknown augmentation {method!r}; choose one of {AUGMENTATIONS} "
                         f"(e.g. 'crop:76': random 76x76 crops, center crops when acting)")
    return int(size)


def _per_sample_crop(images: jax.Array, offsets: jax.Array, size_hw: tuple[int, int]) -> jax.Array:
    """``images [B, (K,) H', W', C]``, ``offsets [B, 2]`` (row, col) -> ``[B, (K,) h, w, C]``."""
    h, w = size_hw

    def crop_one(img, off):                       # img [(K,) H', W', C]
        lead = img.ndim - 3
        start = (0,) * lead + (off[0], off[1], 0)
        return jax.lax.dynamic_slice(img, start, img.shape[:lead] + (h, w, img.shape[-1]))

    return jax.vmap(crop_one)(images, offsets)


def random_shift(images: jax.Array, key: jax.Array, pad: int = 4) -> jax.Array:
    """Shift each sample of ``images [B, (K,) H, W, C]`` by a random whole number of pixels in
    ``[-pad, pad]`` along each axis, filling with the edge (DrQ's pad-and-crop). Same shape."""
    if pad <= 0:
        return images
    B = images.shape[0]
    H, W = images.shape[-3], images.shape[-2]
    widths = [(0, 0)] * (images.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)]
    padded = jnp.pad(images, widths, mode="edge")
    offsets = jax.random.randint(key, (B, 2), 0, 2 * pad + 1)
    return _per_sample_crop(padded, offsets, (H, W))


def random_crop(images: jax.Array, key: jax.Array, size: int) -> jax.Array:
    """A ``size x size`` window of each sample of ``images [B, (K,) H, W, C]`` at a random place
    (diffusion_policy's training crop) -> ``[B, (K,) size, size, C]``."""
    B, H, W = images.shape[0], images.shape[-3], images.shape[-2]
    if size > min(H, W):
        raise ValueError(f"crop size {size} is larger than the {H}x{W} image")
    rows = jax.random.randint(key, (B,), 0, H - size + 1)
    cols = jax.random.randint(jax.random.fold_in(key, 1), (B,), 0, W - size + 1)
    return _per_sample_crop(images, jnp.stack([rows, cols], axis=1), (size, size))


def center_crop(images: jax.Array, size: int) -> jax.Array:
    """The central ``size x size`` window of ``images [..., H, W, C]`` (random_crop's
    evaluation counterpart)."""
    H, W = images.shape[-3], images.shape[-2]
    top, left = (H - size) // 2, (W - size) // 2
    return images[..., top:top + size, left:left + size, :]


def center_crop_larger(images: jax.Array, size: int) -> jax.Array:
    """``center_crop`` of ``images [..., H, W, C]`` to ``size`` when they are larger (acting and
    evaluation frames); frames already ``size`` wide (cropped training batches) and ``size`` 0
    (no crop) pass unchanged."""
    H, W = images.shape[-3], images.shape[-2]
    if not size or (H == size and W == size):
        return images
    if size > min(H, W):
        raise ValueError(f"encoder.crop {size} is larger than the {H}x{W} frames")
    return center_crop(images, size)


def augment_observations(observations: Any, key: jax.Array, method: str, pad: int = 4) -> Any:
    """Every camera of a pixel observation augmented by ``method`` ('none' | 'shift' |
    'crop:<size>'), each camera with its own key; flat observations and the state are returned as
    they are."""
    size = crop_size(method)
    if method == "none" or not isinstance(observations, dict):
        return observations
    out = dict(observations)
    for i, k in enumerate(sorted(k for k in observations if k.startswith("image"))):
        k_i = jax.random.fold_in(key, i)
        out[k] = (random_crop(observations[k], k_i, size) if size
                  else random_shift(observations[k], k_i, pad))
    return out
