"""Networks shared by every agent: MLPs, time embeddings, denoisers over action chunks, critics.

Shapes: B batch, H chunk length, A action dim, O observation dim, K observation history.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dprl.models.encoders import encode_observations, frozen_encoder_config


@jax.custom_jvp
def mish(x: jax.Array) -> jax.Array:
    """Mish, ``x tanh(softplus(x))``, as ``jax.nn.mish`` to float rounding but cheaper.

    With ``e = exp(x)`` and ``n = e (e + 2)``, ``tanh(softplus(x)) = n / (n + 2)``: one exp and one
    division instead of exp, log1p and tanh, and a hand-written derivative that reuses them
    (about 3x faster than ``jax.nn.mish`` forward and backward on this CPU). Above x = 20 the
    factor is 1 in float32, so x is clamped there before the exp (no overflow).
    """
    e = jnp.exp(jnp.minimum(x, 20.0))
    n = e * (e + 2.0)
    return jnp.where(x > 20.0, x, x * (n / (n + 2.0)))


@mish.defjvp
def _mish_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    e = jnp.exp(jnp.minimum(x, 20.0))
    n = e * (e + 2.0)
    r = 1.0 / (n + 2.0)
    tsp = n * r                                  # tanh(softplus(x))
    # d/dx x tanh(softplus x) = tsp + x (1 - tsp^2) sigmoid(x); 1 - tsp^2 = 4 (n + 1) r^2 exactly.
    slope = tsp + x * (4.0 * (n + 1.0) * r * r) * (e / (1.0 + e))
    big = x > 20.0
    return jnp.where(big, x, x * tsp), jnp.where(big, 1.0, slope) * dx


ACTIVATIONS: dict[str, Callable] = {
    "mish": mish,  # Diffusion-QL's choice; jax.nn.mish's math, about a third of its cost here
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
}


def get_activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# Modules name their kernel initializer (a string keeps a module hashable and comparable).
KERNEL_INITS: dict[str, Callable] = {
    "lecun_normal": nn.initializers.lecun_normal(),   # flax's default
    "fan_avg_uniform": nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),  # QC, FQL
}


# The networks' compute dtype (``run.compute_dtype``): 'bfloat16' runs the Dense matmuls in bf16
# with float32 parameters; outputs are cast back to float32, so losses stay float32.
COMPUTE_DTYPES = ("float32", "bfloat16")


def get_kernel_init(name: str) -> Callable:
    if name not in KERNEL_INITS:
        raise ValueError(f"Unknown kernel_init {name!r}; choose one of {sorted(KERNEL_INITS)}")
    return KERNEL_INITS[name]


class MLP(nn.Module):
    """Dense layers with an activation between them, optional LayerNorm after each hidden
    activation (Dense -> activation -> LayerNorm, the order of QC's, FQL's and OGBench's MLPs)."""

    hidden_dims: Sequence[int]
    activation: str = "relu"
    layer_norm: bool = False
    activate_final: bool = False
    kernel_init: str = "lecun_normal"
    dtype: str = "float32"   # the matmuls' dtype (COMPUTE_DTYPES); parameters stay float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        init = get_kernel_init(self.kernel_init)
        for i, dim in enumerate(self.hidden_dims):
            x = nn.Dense(dim, kernel_init=init, dtype=self.dtype)(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = act(x)
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
        return x


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10000.0,
                         freq_offset: int = 0) -> jax.Array:
    """Transformer-style embedding of (possibly fractional) times ``t [B]`` -> ``[B, dim]``:
    frequencies ``max_period^(-i / (dim / 2 - freq_offset))``; ``freq_offset = 1`` is the
    ``/(half_dim - 1)`` of Diffusion-QL's and DPPO's code."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half) / (half - freq_offset))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding followed by a small MLP (Diffusion-QL: dim -> 2 dim -> dim)."""

    dim: int = 16
    activation: str = "mish"
    dtype: str = "float32"
    freq_offset: int = 0      # 1: DPPO's / Diffusion-QL's frequencies (sinusoidal_embedding)

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        x = sinusoidal_embedding(t, self.dim, freq_offset=self.freq_offset)
        x = nn.Dense(self.dim * 2, dtype=self.dtype)(x)
        x = get_activation(self.activation)(x)
        return nn.Dense(self.dim, dtype=self.dtype)(x)


def flatten_observations(observations: jax.Array, obs_dim_rank: int = 1) -> jax.Array:
    """``[B, O]`` or ``[B, K, O]`` (history) -> ``[B, O]`` or ``[B, K * O]``."""
    if observations.ndim > 1 + obs_dim_rank:
        return observations.reshape(observations.shape[0], -1)
    return observations


class ResidualMLP(nn.Module):
    """``Dense(d)``, then pre-activation residual blocks ``x + Dense(act(Dense(act(x))))`` (IBC's
    blocks, DPPO's ``residual_style``), then ``Dense(out_dim)``; no activation at the output.

    ``hidden_dims = (d,) * (1 + 2 * blocks)``: DPPO's 3x512 is one block.
    """

    hidden_dims: Sequence[int]
    out_dim: int
    activation: str = "relu"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dims = tuple(self.hidden_dims)
        if len(dims) % 2 != 1 or len(set(dims)) != 1:
            raise ValueError(f"a residual MLP needs an odd number of equal hidden dims (one input "
                             f"layer, then blocks of two), got {dims}")
        act = get_activation(self.activation)
        dense = functools.partial(nn.Dense, dtype=self.dtype)
        x = dense(dims[0])(x)
        for _ in range(len(dims) // 2):
            h = dense(dims[0])(act(x))
            x = x + dense(dims[0])(act(h))
        return dense(self.out_dim)(x)


class MLPDenoiser(nn.Module):
    """eps (or velocity) prediction ``f(obs [B, (K,) O], x [B, H, A], t [B]) -> [B, H, A]``.

    The chunk is flattened; the time embedding and the observation are concatenated to it
    (the Diffusion-QL actor, 3x256 Mish by default; ``residual``: DPPO's residual MLP).
    ``time_dim = 0`` concatenates the time itself instead of an embedding: ``t / time_scale``,
    the flow time in [0, 1] (QC's and FQL's flow actor) or the diffusion step over the steps.
    """

    hidden_dims: Sequence[int] = (256, 256, 256)
    activation: str = "mish"
    time_dim: int = 16
    layer_norm: bool = False
    residual: bool = False
    kernel_init: str = "lecun_normal"   # of the plain MLP's layers (not the residual MLP's)
    time_scale: float = 1.0             # time_dim = 0: the sampler's t at the end of its range
    dtype: str = "float32"              # the matmuls' dtype; the output is float32
    encoder: Any = None   # a frozen config.encoder: pixel observations get their own encoder
    time_activation: str = ""         # the time MLP's activation ('' = the net's; DPPO: mish)
    time_freq_offset: int = 0           # 1: DPPO's sinusoid frequencies, /(half - 1)

    @nn.compact
    def __call__(self, observations, noisy_actions, t):
        B, H, A = noisy_actions.shape
        t_emb = (TimeEmbedding(self.time_dim, self.time_activation or self.activation, self.dtype,
                               freq_offset=self.time_freq_offset)(t) if self.time_dim
                 else (jnp.asarray(t, jnp.float32) / self.time_scale).reshape(B, 1))
        x = jnp.concatenate([noisy_actions.reshape(B, H * A), t_emb,
                             encode_observations(observations, self.encoder)], axis=-1)
        if self.residual:
            x = ResidualMLP(self.hidden_dims, H * A, self.activation, self.dtype)(x)
        else:
            x = MLP(self.hidden_dims, self.activation, self.layer_norm, activate_final=True,
                    kernel_init=self.kernel_init, dtype=self.dtype)(x)
            x = nn.Dense(H * A, kernel_init=get_kernel_init(self.kernel_init),
                         dtype=self.dtype)(x)
        return x.reshape(B, H, A).astype(jnp.float32)


class FiLMResidualBlock(nn.Module):
    """Two 1D convolutions over the chunk's time axis with FiLM (scale, shift) from the condition."""

    channels: int
    kernel_size: int = 5
    groups: int = 8

    @nn.compact
    def __call__(self, x, cond):
        # x: [B, H, C_in]; cond: [B, D]
        h = nn.Conv(self.channels, (self.kernel_size,), padding="SAME")(x)
        h = mish(nn.GroupNorm(num_groups=min(self.groups, self.channels))(h))
        scale, shift = jnp.split(nn.Dense(2 * self.channels)(mish(cond)), 2, axis=-1)
        h = h * (1.0 + scale[:, None, :]) + shift[:, None, :]
        h = nn.Conv(self.channels, (self.kernel_size,), padding="SAME")(h)
        h = mish(nn.GroupNorm(num_groups=min(self.groups, self.channels))(h))
        skip = x if x.shape[-1] == self.channels else nn.Conv(self.channels, (1,))(x)
        return h + skip


class UNet1DDenoiser(nn.Module):
    """1D temporal U-Net over the chunk with FiLM conditioning (Chi et al. 2023, Diffusion Policy).

    ``f(obs [B, (K,) O], x [B, H, A], t [B]) -> [B, H, A]``. Down- and up-sampling by 2 along H
    at each level, so H should be divisible by ``2 ** (len(channels) - 1)``; shorter chunks are
    padded internally.
    """

    channels: Sequence[int] = (64, 128, 256)
    kernel_size: int = 5
    time_dim: int = 64
    groups: int = 8
    encoder: Any = None   # a frozen config.encoder: pixel observations get their own encoder

    @nn.compact
    def __call__(self, observations, noisy_actions, t):
        B, H, A = noisy_actions.shape
        levels = len(self.channels)
        multiple = 2 ** (levels - 1)
        H_pad = -(-H // multiple) * multiple
        x = jnp.pad(noisy_actions, ((0, 0), (0, H_pad - H), (0, 0)))
        cond = jnp.concatenate([TimeEmbedding(self.time_dim)(t),
                                encode_observations(observations, self.encoder)], axis=-1)
        skips = []
        for i, ch in enumerate(self.channels):
            x = FiLMResidualBlock(ch, self.kernel_size, self.groups)(x, cond)
            x = FiLMResidualBlock(ch, self.kernel_size, self.groups)(x, cond)
            skips.append(x)
            if i + 1 < levels:
                x = nn.Conv(ch, (3,), strides=(2,), padding="SAME")(x)
        x = FiLMResidualBlock(self.channels[-1], self.kernel_size, self.groups)(x, cond)
        for i, ch in reversed(list(enumerate(self.channels[:-1]))):
            x = jax.image.resize(x, (B, x.shape[1] * 2, x.shape[2]), "nearest")
            x = jnp.concatenate([x, skips[i]], axis=-1)
            x = FiLMResidualBlock(ch, self.kernel_size, self.groups)(x, cond)
            x = FiLMResidualBlock(ch, self.kernel_size, self.groups)(x, cond)
        x = nn.Conv(A, (1,))(x)
        return x[:, :H]


class MSEPolicy(nn.Module):
    """A deterministic policy ``obs -> chunk [B, H, A]`` in (-1, 1), regressed by MSE: the
    unimodal baseline of BC (the mean of a fixed-variance Gaussian)."""

    horizon: int
    action_dim: int
    hidden_dims: Sequence[int] = (256, 256, 256)
    activation: str = "mish"
    encoder: Any = None   # a frozen config.encoder: pixel observations get their own encoder

    @nn.compact
    def __call__(self, observations):
        x = MLP(self.hidden_dims, self.activation, activate_final=True)(
            encode_observations(observations, self.encoder))
        x = nn.Dense(self.horizon * self.action_dim)(x)
        return jnp.tanh(x).reshape(-1, self.horizon, self.action_dim)


class ValueMLP(nn.Module):
    """``V(obs) -> [B]`` or, with ``actions [B, H, A]``, ``Q(obs, chunk) -> [B]``."""

    hidden_dims: Sequence[int] = (256, 256, 256)
    activation: str = "mish"
    layer_norm: bool = False
    kernel_init: str = "lecun_normal"
    dtype: str = "float32"   # the matmuls' dtype; the output is float32
    encoder: Any = None   # a frozen config.encoder: pixel observations get their own encoder
    residual: bool = False   # a ResidualMLP (DPPO's critic: residual_style, one block)

    @nn.compact
    def __call__(self, observations, actions=None):
        parts = [encode_observations(observations, self.encoder)]
        if actions is not None:
            parts.append(actions.reshape(actions.shape[0], -1))
        if self.residual:
            x = ResidualMLP(self.hidden_dims, 1, self.activation, self.dtype)(
                jnp.concatenate(parts, axis=-1))
            return x[..., 0].astype(jnp.float32)
        x = MLP((*self.hidden_dims, 1), self.activation, self.layer_norm,
                kernel_init=self.kernel_init, dtype=self.dtype)(jnp.concatenate(parts, axis=-1))
        return x[..., 0].astype(jnp.float32)


class CriticEnsemble(nn.Module):
    """``E`` independent Q networks in one vmapped module: ``(obs, chunk) -> [E, B]``. Pixel
    observations go through one encoder that the ``E`` heads share (FQL's and QC's critic)."""

    num_critics: int = 2
    hidden_dims: Sequence[int] = (256, 256, 256)
    activation: str = "mish"
    layer_norm: bool = False
    kernel_init: str = "lecun_normal"
    dtype: str = "float32"
    encoder: Any = None   # a frozen config.encoder: pixel observations get their own encoder

    @nn.compact
    def __call__(self, observations, actions):
        features = encode_observations(observations, self.encoder)
        ensemble = nn.vmap(ValueMLP, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=self.num_critics)
        return ensemble(self.hidden_dims, self.activation, self.layer_norm,
                        self.kernel_init, self.dtype)(features, actions)


class NoisyActionValue(nn.Module):
    """``J(obs, noisy chunk a^k, k) -> [B]``: a value on noisy actions, for guided sampling."""

    hidden_dims: Sequence[int] = (256, 256, 256)
    activation: str = "mish"
    time_dim: int = 16
    layer_norm: bool = False
    encoder: Any = None   # a frozen config.encoder: pixel observations get their own encoder

    @nn.compact
    def __call__(self, observations, noisy_actions, t):
        B = noisy_actions.shape[0]
        x = jnp.concatenate([encode_observations(observations, self.encoder),
                             noisy_actions.reshape(B, -1),
                             TimeEmbedding(self.time_dim, self.activation)(t)], axis=-1)
        return MLP((*self.hidden_dims, 1), self.activation, self.layer_norm)(x)[..., 0]


def make_denoiser(config, time_scale: float = 1.0) -> nn.Module:
    """Build the actor's denoiser from ``config.backbone`` ('mlp' or 'unet'); ``time_scale``: the
    sampler's time at the end of its range (what ``time_dim = 0`` divides ``t`` by)."""
    if config.backbone == "mlp":
        return MLPDenoiser(tuple(config.hidden_dims), config.activation, config.time_dim,
                           residual=bool(config.get("residual", False)),
                           kernel_init=config.get("kernel_init", "lecun_normal"),
                           time_activation=config.get("time_activation", ""),
                           time_freq_offset=int(config.get("time_freqs", "half") == "half-1"),
                           time_scale=float(time_scale),
                           dtype=config.get("compute_dtype", "float32"),
                           encoder=frozen_encoder_config(config.get("encoder")))
    if config.backbone == "unet":
        return UNet1DDenoiser(tuple(config.unet_channels), config.unet_kernel_size,
                              config.time_dim,
                              encoder=frozen_encoder_config(config.get("encoder")))
    raise ValueError(f"Unknown backbone {config.backbone!r}; use 'mlp' or 'unet'")


def critic_from_config(config) -> CriticEnsemble:
    """The Q ensemble of an agent config (num_critics, critic_hidden_dims/activation/layer_norm/
    kernel_init)."""
    return CriticEnsemble(int(config.num_critics), tuple(config.critic_hidden_dims),
                          config.critic_activation, config.critic_layer_norm,
                          config.get("critic_kernel_init", "lecun_normal"), compute_dtype(config),
                          frozen_encoder_config(config.get("encoder")))


def value_from_config(config) -> ValueMLP:
    """V(s) with the critics' architecture (critic_hidden_dims, activation, layer_norm,
    kernel_init)."""
    return ValueMLP(tuple(config.critic_hidden_dims), config.critic_activation,
                    config.critic_layer_norm, config.get("critic_kernel_init", "lecun_normal"),
                    compute_dtype(config), frozen_encoder_config(config.get("encoder")))


def compute_dtype(config) -> str:
    """``config.run.compute_dtype`` of an agent config (float32 when it has none)."""
    run = config.get("run")
    return run.get("compute_dtype", "float32") if run is not None else "float32"
