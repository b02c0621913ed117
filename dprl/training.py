"""Optimizers and the one-line gradient step that every agent uses."""
from __future__ import annotations

from typing import Any, Callable

import jax
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


def apply_loss(state: TrainState, loss_fn: Callable[[Any], tuple[jax.Array, dict]]
               ) -> tuple[TrainState, dict]:
    """One gradient step on ``loss_fn(params) -> (loss, info)``; adds ``grad_norm`` to info."""
    grads, info = jax.grad(loss_fn, has_aux=True)(state.params)
    info = dict(info, grad_norm=optax.global_norm(grads))
    return state.apply_gradients(grads=grads), info


def ema(target, online, decay: float):
    """Polyak averaging ``decay * target + (1 - decay) * online``."""
    return optax.incremental_update(online, target, 1.0 - decay)
