"""The generative actor: observation -> action chunk ``[H, A]``, by diffusion or flow matching.

One object that every agent uses for its behaviour-cloned policy, whatever the generative model:
``actor.loss(params, obs, actions, key, valid)`` and ``actor.sample(params, obs, key, ...)``.
It is static (hashable config, no arrays), so agents keep it as a non-pytree field.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dprl.models import diffusion, flow
from dprl.models.diffusion import masked_mean
from dprl.models.encoders import encode_once, frozen_encoder_config
from dprl.models.nets import MSEPolicy, make_denoiser

GENERATIVE_MODELS = ("diffusion", "flow")


def default_actor_config() -> ml_collections.ConfigDict:
    """The actor hyperparameters that every agent config embeds as ``config.actor``."""
    return ml_collections.ConfigDict(dict(
        model="diffusion",        # 'diffusion' (Diffusion-QL, DPPO) or 'flow' (QC, FQL); the BC
                                  # agent also takes 'mse' (a deterministic MSE regressor)
        backbone="mlp",           # 'mlp' (Diffusion-QL: 3x256 Mish) or 'unet' (Chi et al. 2023)
        hidden_dims=(256, 256, 256),  # MLP denoiser widths (Diffusion-QL: 3x256)
        activation="mish",        # Diffusion-QL uses Mish
        residual=False,           # DPPO: residual_style (pre-activation blocks of two layers)
        time_dim=16,              # Diffusion-QL's time embedding size (0: t itself, QC/FQL)
        time_activation="",       # the time MLP's activation ('' = activation; DPPO: mish)
        time_freqs="half",        # sinusoid frequencies 10000^(-i / half) ('half') or
                                  # / (half - 1) ('half-1': Diffusion-QL's and DPPO's code)
        kernel_init="lecun_normal",  # the MLP's Dense kernels: 'lecun_normal' (flax's default)
                                  # or 'fan_avg_uniform' (QC/FQL: variance scaling, fan_avg)
        unet_channels=(64, 128, 256),  # Diffusion Policy's U-Net widths
        unet_kernel_size=5,       # Diffusion Policy: 5
        schedule="vp",            # Diffusion-QL's VP schedule; 'linear' / 'cosine' for DDPM/DPPO
        diffusion_steps=5,        # Diffusion-QL: N = 5
        sampler="ddpm",           # 'ddpm', 'ddim' or 'dpm_solver' (DPM-Solver-2, deterministic:
                                  # QGPO's sampler)
        sampling_steps=0,         # 0 = all diffusion_steps (DDPM); fewer for DDIM; DPM-Solver:
                                  # its model evaluations (QGPO: 15)
        ddim_eta=0.0,             # DDIM noise: 0 deterministic, 1 = DDPM's variance
        flow_steps=10,            # Euler steps of the flow sampler (QC: 10)
        clip_x0=1.0,              # clip predicted clean actions to the action bounds
    ))


@dataclasses.dataclass(frozen=True)
class GenerativeActor:
    """A denoiser network plus how to train and sample it. Hashable: safe as a static field."""

    config: Any  # frozen ConfigDict (hashable)
    horizon: int
    action_dim: int

    @property
    def network(self) -> nn.Module:
        # The samplers' time ranges: flow t in [0, TIME_SCALE), diffusion steps k in [0, N).
        time_scale = (flow.TIME_SCALE if self.config.model == "flow"
                      else self.config.diffusion_steps)
        return make_denoiser(self.config, time_scale)

    @property
    def schedule(self) -> diffusion.Schedule:
        return diffusion.make_schedule(self.config.schedule, self.config.diffusion_steps)

    @property
    def num_sampling_steps(self) -> int:
        if self.config.model == "flow":
            return int(self.config.flow_steps)
        return int(self.config.sampling_steps or self.config.diffusion_steps)

    def init(self, key: jax.Array, observations: jax.Array):
        """Network parameters for example ``observations [B, (K,) O]``."""
        B = jax.tree.leaves(observations)[0].shape[0]  # flat or pixel (dict)
        x = jnp.zeros((B, self.horizon, self.action_dim))
        return self.network.init(key, observations, x, jnp.zeros((B,)))

    def apply(self, params, observations, x, t):
        return self.network.apply(params, observations, x, t)

    def encode(self, params, observations):
        """The denoiser's own encoder on a pixel observation -> ``[B, D]`` features that
        ``apply`` and ``sample`` take in its place (``encode_once``); flat ones pass unchanged."""
        return encode_once(self.network, params, observations)

    def loss(self, params, observations, actions, key, valid=None) -> jax.Array:
        """The BC loss of the generative model on ``actions [B, H, A]`` (masked by ``valid``)."""
        fn = lambda o, x, t: self.apply(params, o, x, t)  # noqa: E731
        if self.config.model == "flow":
            return flow.flow_loss(fn, observations, actions, key, valid)
        return diffusion.eps_loss(fn, self.schedule, observations, actions, key, valid)

    def sample(self, params, observations, key, **overrides) -> tuple[jax.Array, Any]:
        """Action chunks ``[B, H, A]`` in [-1, 1] and the chain (or None).

        ``overrides`` go to the sampler: return_chain, min_std, guidance_fn, guidance_scale,
        num_steps, method, eta, initial_noise, ...
        """
        # The chain's denoiser calls share one encoding of the images (the sampler still hands
        # the raw observation to guidance_fn, whose network has its own encoder).
        features = self.encode(params, observations)
        fn = lambda _, x, t: self.apply(params, features, x, t)  # noqa: E731
        shape = (self.horizon, self.action_dim)
        if self.config.model == "flow":
            kwargs = dict(num_steps=self.num_sampling_steps)
            kwargs.update(overrides)
            return flow.sample(fn, observations, key, shape, **kwargs)
        if self.config.model != "diffusion":
            raise ValueError(f"actor.model must be 'diffusion' or 'flow', not {self.config.model!r}")
        kwargs = dict(method=self.config.sampler, num_steps=self.num_sampling_steps,
                      eta=self.config.ddim_eta if self.config.sampler == "ddim" else 1.0,
                      clip_x0=self.config.clip_x0)
        kwargs.update(overrides)
        return diffusion.sample(fn, self.schedule, observations, key, shape, **kwargs)


@dataclasses.dataclass(frozen=True)
class MSEActor:
    """The generative actor's interface over a deterministic MSE policy (BC's unimodal
    baseline): its loss is the masked squared error, its sample the network's output."""

    horizon: int
    action_dim: int
    hidden_dims: tuple[int, ...]
    activation: str
    encoder: Any = None   # a frozen config.encoder (pixel observations)

    @property
    def network(self) -> MSEPolicy:
        return MSEPolicy(self.horizon, self.action_dim, self.hidden_dims, self.activation,
                         self.encoder)

    def init(self, key: jax.Array, observations: jax.Array):
        return self.network.init(key, observations)

    def encode(self, params, observations):
        return encode_once(self.network, params, observations)

    def loss(self, params, observations, actions, key, valid=None) -> jax.Array:
        del key  # deterministic
        return masked_mean((self.network.apply(params, observations) - actions) ** 2, valid)

    def sample(self, params, observations, key, **overrides) -> tuple[jax.Array, None]:
        del key, overrides
        return self.network.apply(params, observations), None


def make_actor(actor_config, horizon: int, action_dim: int) -> GenerativeActor:
    cfg = ml_collections.FrozenConfigDict(actor_config)
    if cfg.model not in GENERATIVE_MODELS:
        raise ValueError(f"actor.model must be 'diffusion' or 'flow', not {cfg.model!r} ('mse' is "
                         f"the BC agent's regression baseline only)")
    return GenerativeActor(cfg, int(horizon), int(action_dim))


def action_dim_of(config) -> int:
    """``config.action_dim``, which the runner fills in from the dataset before ``create``."""
    if "action_dim" not in config or not config.action_dim:
        raise ValueError("config.action_dim is unset: the runner fills it from the dataset "
                         "(set it yourself when creating an agent outside the runner)")
    return int(config.action_dim)


def actor_from_config(config) -> GenerativeActor:
    """The generative actor of an agent config (``config.actor``, ``horizon``, ``action_dim``)."""
    return make_actor(config.actor, config.horizon, action_dim_of(config))


def policy_from_config(config) -> GenerativeActor | MSEActor:
    """``actor_from_config``, or the MSE regressor when ``actor.model == 'mse'``."""
    if config.actor.model == "mse":
        return MSEActor(int(config.horizon), action_dim_of(config),
                        tuple(config.actor.hidden_dims), config.actor.activation,
                        frozen_encoder_config(config.actor.get("encoder")))
    return actor_from_config(config)
