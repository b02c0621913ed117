"""How every agent trains: optimizers, the one-line gradient step, Polyak averaging, the EMA
policy, and the BC stage (the behaviour-cloned policy every agent starts from)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState


def make_optimizer(lr: float, *, grad_clip: float = 0.0, weight_decay: float = 0.0,
                   lr_schedule: str = "constant", total_steps: int = 0,
                   warmup_steps: int = 0) -> optax.GradientTransformation:
    """Adam(W) with optional global-norm clipping and a constant / cosine learning rate."""
    if lr_schedule == "constant":
        rate: Any = lr
    elif lr_schedule == "cosine":
        rate = optax.warmup_cosine_decay_schedule(0.0 if warmup_steps else lr, lr, warmup_steps,
                                                  max(total_steps, warmup_steps + 1))
    else:
        raise ValueError(f"Unknown lr_schedule {lr_schedule!r}; use 'constant' or 'cosine'")
    opt = optax.adamw(rate, weight_decay=weight_decay) if weight_decay else optax.adam(rate)
    if grad_clip and grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    return opt


def create_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState.create(apply_fn=None, params=params, tx=tx)


def apply_loss(state: TrainState, loss_fn: Callable[[Any], tuple[jax.Array, dict]],
               prefix: str) -> tuple[TrainState, dict]:
    """One gradient step on ``loss_fn(params) -> (loss, info)``; adds ``<prefix>/grad_norm``
    (the norm before clipping) to info."""
    grads, info = jax.grad(loss_fn, has_aux=True)(state.params)
    info = {**info, f"{prefix}/grad_norm": optax.global_norm(grads)}
    return state.apply_gradients(grads=grads), info


def polyak(target, online, rate):
    """Polyak averaging: ``(1 - rate) * target + rate * online``, leaf by leaf (target networks
    move with ``rate = tau``)."""
    return optax.incremental_update(online, target, rate)


@dataclasses.dataclass(frozen=True)
class EMA:
    """The exponential moving average of a policy's weights (Diffusion-QL's EMA actor).

    Before ``start`` gradient steps the average is a copy of the weights; from then on it moves
    by ``1 - decay`` towards them every ``every`` steps.
    """

    decay: float
    start: int
    every: int = 1

    @classmethod
    def from_config(cls, config) -> "EMA | None":
        """The ``ema_decay``, ``ema_start``, ``ema_every`` of an agent config; None without them."""
        if "ema_decay" not in config:
            return None
        return cls(float(config.ema_decay), int(config.ema_start), int(config.ema_every))

    def __call__(self, ema_params, params, step: jax.Array):
        """The average after gradient step ``step`` (counted from 0) produced ``params``."""
        warm = step < self.start
        moved = polyak(ema_params, params, 1.0 - jnp.where(warm, 0.0, self.decay))
        due = warm | (step % self.every == 0)
        return jax.tree.map(lambda new, old: jnp.where(due, new, old), moved, ema_params)


class BCStage(TrainState):
    """The behaviour-cloned policy every agent starts from: a TrainState whose every gradient
    step also steps the EMA of its weights (when the agent keeps one), with the policy model that
    knows its loss and sampler.

    ``pretrain(batch, key)`` is the shared first stage (one BC step); agents whose RL step also
    trains this policy (DQL's actor loss, guided's advantage-filtered BC, QC's joint BC) call
    ``apply_loss`` on it with their own loss. Acting samples the EMA weights when there are any.
    """

    ema_params: Any                                            # None without an EMA (QC)
    model: Any = flax.struct.field(pytree_node=False)          # dprl.models.actor: GenerativeActor, MSEActor
    ema: EMA | None = flax.struct.field(pytree_node=False)

    @classmethod
    def init(cls, model, key: jax.Array, observations: jax.Array,
             tx: optax.GradientTransformation, ema: EMA | None) -> "BCStage":
        """Fresh weights for example ``observations [B, (K,) O]`` (shapes only)."""
        params = model.init(key, observations)
        return cls.create(apply_fn=None, params=params, tx=tx, model=model, ema=ema,
                          ema_params=params if ema is not None else None)

    def apply_gradients(self, *, grads, **kwargs) -> "BCStage":
        new = super().apply_gradients(grads=grads, **kwargs)
        if self.ema is None:
            return new
        return new.replace(ema_params=self.ema(self.ema_params, new.params, self.step))

    @property
    def policy_params(self):
        """The weights that act: the EMA when kept, else the online weights."""
        return self.params if self.ema_params is None else self.ema_params

    def bc_loss(self, params, batch: dict, key: jax.Array, weights=None) -> tuple[jax.Array, dict]:
        """The model's BC loss on the batch's chunks (``weights [B]`` scale each chunk)."""
        valid = batch["valid"] if weights is None else batch["valid"] * weights[:, None]
        loss = self.model.loss(params, batch["observations"], batch["actions"], key, valid)
        return loss, {"bc/loss": loss}

    def pretrain(self, batch: dict, key: jax.Array) -> tuple["BCStage", dict]:
        """One BC step; info ``bc/loss``, ``bc/grad_norm``."""
        return apply_loss(self, lambda p: self.bc_loss(p, batch, key), "bc")

    def encode(self, observations):
        """The acting weights' encoding of a pixel observation ``[B, D]`` (flat ones unchanged):
        what ``sample`` takes in its place, e.g. encoded once and then repeated for N draws."""
        return self.model.encode(self.policy_params, observations)

    def sample(self, observations: jax.Array, key: jax.Array, **overrides):
        """``model.sample`` with the acting weights: ``(chunks [B, H, A], chain or None)``."""
        return self.model.sample(self.policy_params, observations, key,
                                 **{**self.sampler_options(), **overrides})

    def sampler_options(self) -> dict:
        """Options every sample of this stage passes to the sampler (none; see
        ``InpaintingBCStage``). Agents that call the sampler themselves pass them too."""
        return {}


class InpaintingBCStage(BCStage):
    """A BC stage whose samples are inpainted to a prefix (``dprl.models.inpaint.Inpaint``): what
    real-time chunking (``dprl.tools.realtime.with_inpaint``) puts in a copy of an agent for one acting
    call. Agents themselves hold plain ``BCStage``s, so their checkpoints never contain it."""

    inpaint: Any = None

    @classmethod
    def of(cls, stage: BCStage, inpaint) -> "InpaintingBCStage":
        fields = {f.name: getattr(stage, f.name) for f in dataclasses.fields(BCStage)}
        return cls(**fields, inpaint=inpaint)

    def sampler_options(self) -> dict:
        return {"inpaint": self.inpaint}


def pretrain_step(agent, batch: dict, stage: str = "actor"):
    """An agent's ``pretrain``: one BC step of its BC stage ``agent.<stage>``, with a key split
    off the agent's own. Returns ``(agent, info)``."""
    key, loss_key = jax.random.split(agent.key)
    new, info = getattr(agent, stage).pretrain(batch, loss_key)
    return agent.replace(key=key, **{stage: new}), info
