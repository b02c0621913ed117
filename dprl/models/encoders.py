"""Image encoders: camera images (+ the robot's state) -> one feature vector per observation.

A pixel observation is a dict of named parts (``dprl.envs.pixels``):

  'image' (and any other key starting with 'image')  uint8  [B, (K,) H, W, C]  one camera each
  'state'                                             float  [B, (K,) S]        normalized

``ObservationEncoder(config)`` turns it into ``[B, D]``: each camera through its own image encoder
(its K history frames stacked on the channel axis, as FQL's ``frame_stack``), the features of all
cameras concatenated with the flattened state (diffusion_policy's ``MultiImageObsEncoder``). The
images become float in [0, 1] here, inside the jitted update: they stay uint8 on the device.

Encoders, chosen by ``config.name`` (``default_encoder_config``):

  impala         FQL's and QC's encoder for OGBench visual tasks: three stacks (16, 32, 32) of
                 conv 3x3 -> max-pool 3x3 / 2 -> two residual blocks, then ReLU, flatten, Dense 512
  impala_small   the same with one residual block per stack (FQL's ``impala_small``)
  impala_debug   two stacks (4, 4), no residual blocks (FQL's ``impala_debug``; tests)
  resnet18       diffusion_policy's visual encoder: ResNet-18 with GroupNorm in place of
                 BatchNorm (groups = channels / 16) and a spatial softmax (32 keypoints ->
                 64 numbers) in place of global average pooling, then Dense 64
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dprl.models.augment import center_crop_larger

ENCODERS = ("impala", "impala_small", "impala_debug", "resnet18")


def default_encoder_config() -> ml_collections.ConfigDict:
    """The encoder hyperparameters every agent config embeds as ``config.encoder`` (used only
    when observations carry images; flat-state tasks never build an encoder)."""
    return ml_collections.ConfigDict(dict(
        name="impala",            # 'impala' (FQL/QC on OGBench visual), 'impala_small',
                                  # 'impala_debug', or 'resnet18' (diffusion_policy)
        mlp_dims=(512,),          # IMPALA: the Dense layers after the conv stacks (FQL: 512)
        layer_norm=False,         # IMPALA: LayerNorm after the conv stacks and each Dense (FQL:
                                  # False for impala; QC's visual configs keep it off)
        resnet_width=64,          # ResNet-18's first stage width (torchvision: 64)
        num_keypoints=32,         # spatial softmax keypoints (diffusion_policy: 32)
        feature_dim=64,           # ResNet-18: the Dense after the keypoints (robomimic: 64)
        crop=0,                   # center-crop larger frames to crop x crop (acting, when the
                                  # task trains on random crops: augment 'crop:<size>'); 0: none
    ))


def is_pixel_observation(observations: Any) -> bool:
    """Whether ``observations`` is a dict of named parts (images and state), not a flat array."""
    return isinstance(observations, dict)


def image_keys(observations: dict) -> list[str]:
    """The camera keys of a pixel observation, sorted (one encoder each)."""
    return sorted(k for k in observations if k.startswith("image"))


def stack_frames(image: jax.Array) -> jax.Array:
    """uint8 ``[B, H, W, C]`` or ``[B, K, H, W, C]`` -> float ``[B, H, W, K * C]`` in [0, 1]."""
    x = image.astype(jnp.float32) / 255.0
    if x.ndim == 5:
        B, K, H, W, C = x.shape
        x = jnp.moveaxis(x, 1, 3).reshape(B, H, W, K * C)
    return x


def max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
    """``nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')`` on ``[B, H, W, C]`` as the
    maximum of nine strided slices: the same numbers, and a gradient that XLA's CPU backend
    computes about 10x faster than the one of ``reduce_window`` (select-and-scatter)."""
    B, H, W, C = x.shape
    out_h, out_w = -(-H // 2), -(-W // 2)
    pad_h, pad_w = max((out_h - 1) * 2 + 3 - H, 0), max((out_w - 1) * 2 + 3 - W, 0)
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                    (0, 0)), constant_values=-jnp.inf)
    out = None
    for dy in range(3):
        for dx in range(3):
            window = x[:, dy:dy + 2 * out_h - 1:2, dx:dx + 2 * out_w - 1:2]
            out = window if out is None else jnp.maximum(out, window)
    return out


class ResidualBlock(nn.Module):
    """IMPALA's residual block: ``x + conv(relu(conv(relu(x))))``, 3x3 convs, same width."""

    channels: int

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(x))
        h = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(h))
        return x + h


class ImpalaEncoder(nn.Module):
    """``[B, H, W, C] float -> [B, mlp_dims[-1]]``: IMPALA's conv stacks (Espeholt et al. 2018)
    as FQL configures them (``stack_sizes``, ``num_blocks`` residual blocks per stack)."""

    stack_sizes: Sequence[int] = (16, 32, 32)
    num_blocks: int = 2
    mlp_dims: Sequence[int] = (512,)
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        for channels in self.stack_sizes:
            x = nn.Conv(channels, (3, 3), padding="SAME")(x)
            x = max_pool_3x3_stride2(x)
            for _ in range(self.num_blocks):
                x = ResidualBlock(channels)(x)
        x = nn.relu(x)
        if self.layer_norm:
            x = nn.LayerNorm()(x)
        x = x.reshape(x.shape[0], -1)
        for dim in self.mlp_dims:
            x = nn.relu(nn.Dense(dim)(x))
            if self.layer_norm:
                x = nn.LayerNorm()(x)
        return x


class SpatialSoftmax(nn.Module):
    """``[B, H, W, C] -> [B, 2 * num_keypoints]``: a 1x1 conv to ``num_keypoints`` maps, a
    softmax over each map's pixels, and its expected (x, y) in [-1, 1] (Levine et al. 2016;
    robomimic's ``SpatialSoftmax``, temperature 1)."""

    num_keypoints: int = 32

    @nn.compact
    def __call__(self, x):
        B, H, W, _ = x.shape
        x = nn.Conv(self.num_keypoints, (1, 1))(x)
        attention = jax.nn.softmax(x.reshape(B, H * W, self.num_keypoints), axis=1)
        ys, xs = jnp.meshgrid(jnp.linspace(-1.0, 1.0, H), jnp.linspace(-1.0, 1.0, W),
                              indexing="ij")
        grid = jnp.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1)            # [H * W, 2]
        keypoints = jnp.einsum("bpk,pd->bkd", attention, grid)                 # [B, kp, 2]
        return keypoints.reshape(B, 2 * self.num_keypoints)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=max(channels // 16, 1))   # diffusion_policy: channels / 16


class BasicBlock(nn.Module):
    """ResNet's basic block with GroupNorm: two 3x3 convs, a 1x1 projection when the shape
    changes."""

    channels: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.channels, (3, 3), (self.stride, self.stride), padding=1,
                    use_bias=False)(x)
        h = nn.relu(_group_norm(self.channels)(h))
        h = nn.Conv(self.channels, (3, 3), padding=1, use_bias=False)(h)
        h = _group_norm(self.channels)(h)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1), (self.stride, self.stride), use_bias=False)(x)
            x = _group_norm(self.channels)(x)
        return nn.relu(h + x)


class ResNet18Encoder(nn.Module):
    """``[B, H, W, C] float -> [B, feature_dim]``: ResNet-18 (conv 7x7 / 2, max-pool 3x3 / 2,
    four stages of two basic blocks, widths ``width x (1, 2, 4, 8)``) with GroupNorm, then a
    spatial softmax and a Dense, as diffusion_policy's robomimic image encoder."""

    width: int = 64
    num_keypoints: int = 32
    feature_dim: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (7, 7), (2, 2), padding=3, use_bias=False)(x)
        x = nn.relu(_group_norm(self.width)(x))
        x = max_pool_3x3_stride2(x)
        for stage, mult in enumerate((1, 2, 4, 8)):
            stride = 1 if stage == 0 else 2
            x = BasicBlock(self.width * mult, stride)(x)
            x = BasicBlock(self.width * mult, 1)(x)
        return nn.Dense(self.feature_dim)(SpatialSoftmax(self.num_keypoints)(x))


def make_image_encoder(config) -> nn.Module:
    """One camera's encoder from an encoder config (``default_encoder_config``)."""
    name = config.name
    if name == "impala":
        return ImpalaEncoder((16, 32, 32), 2, tuple(config.mlp_dims), config.layer_norm)
    if name == "impala_small":
        return ImpalaEncoder((16, 32, 32), 1, tuple(config.mlp_dims), config.layer_norm)
    if name == "impala_debug":
        return ImpalaEncoder((4, 4), 0, tuple(config.mlp_dims), config.layer_norm)
    if name == "resnet18":
        return ResNet18Encoder(int(config.resnet_width), int(config.num_keypoints),
                               int(config.feature_dim))
    raise ValueError(f"Unknown encoder {name!r}; choose one of {ENCODERS}")


class ObservationEncoder(nn.Module):
    """``{'image*': uint8 [B, (K,) H, W, C], 'state': [B, (K,) S]} -> [B, D]``: one image encoder
    per camera (``make_image_encoder``), their features concatenated with the flattened state."""

    config: Any   # a frozen encoder config (hashable)

    @nn.compact
    def __call__(self, observations: dict) -> jax.Array:
        cameras = image_keys(observations)
        if not cameras:
            raise ValueError(f"a pixel observation needs an 'image' key; got {sorted(observations)}")
        crop = int(self.config.get("crop", 0))
        parts = [make_image_encoder(self.config)(stack_frames(
            center_crop_larger(observations[k], crop))) for k in cameras]
        if "state" in observations:
            state = jnp.asarray(observations["state"], jnp.float32)
            parts.append(state.reshape(state.shape[0], -1))
        return jnp.concatenate(parts, axis=-1)


def frozen_encoder_config(config) -> Any:
    """The hashable encoder config a network keeps as a field (None stays None)."""
    if config is None:
        return None
    return ml_collections.FrozenConfigDict(config)


OBSERVATION_ENCODER = "observation_encoder"   # the encoder's name in every network's params


def encode_observations(observations: Any, encoder_config: Any) -> jax.Array:
    """Inside a module's ``@nn.compact`` call: a flat ``[B, O]`` / ``[B, K, O]`` array as
    ``[B, K * O]`` (no parameters), or a pixel observation through an ``ObservationEncoder`` that
    belongs to the calling module (so every network that calls it has its own encoder)."""
    if is_pixel_observation(observations):
        if encoder_config is None:
            raise ValueError("this network got a pixel observation but no encoder config "
                             "(config.encoder)")
        return ObservationEncoder(encoder_config, name=OBSERVATION_ENCODER)(observations)
    if observations.ndim > 2:
        return observations.reshape(observations.shape[0], -1)
    return observations


def encode_once(network: nn.Module, params, observations: Any) -> Any:
    """``network``'s own encoder, run outside it: a pixel observation -> features ``[B, D]``,
    which ``network.apply(params, features, ...)`` takes in place of the observation (a flat
    input passes its encoder by). A sampler's K denoiser calls, or N candidates per observation,
    then encode each image once: the same numbers and gradients for K (or N) times less
    convolution. Flat observations come back unchanged."""
    if not is_pixel_observation(observations):
        return observations
    encoder_params = {"params": params["params"][OBSERVATION_ENCODER]}
    return ObservationEncoder(network.encoder).apply(encoder_params, observations)


def batch_size_of(observations: Any) -> int:
    """The leading (batch) size of a flat or pixel observation."""
    return int(jax.tree.leaves(observations)[0].shape[0])


def repeat_rows(observations: Any, n: int) -> Any:
    """Each row of a flat or pixel observation ``n`` times in a row: ``[B, ...] -> [B * n, ...]``
    (``jnp.repeat(obs, n, axis=0)`` part by part)."""
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), observations)
