"""Inpainting a chunk's prefix while it is sampled: the optional ``inpaint`` argument of the
samplers (``dprl.models.diffusion.sample``, ``dprl.models.flow.sample``), which real-time chunking uses.

Real-time chunking (RTC; Black, Galliker, Levine 2025) asks the generative actor for a chunk whose
first ``d`` actions are already fixed (they will execute while the chunk is being computed) and
whose next actions should stay close to the previous chunk's plan. Without retraining, every
denoising step is guided towards a target chunk ``Y [B, H, A]`` with pseudo-inverse guidance
(PiGDM, Song et al. 2023): from the current sample ``x`` the network's estimate of the clean chunk
``x_hat(x)`` is formed, and ``g = (W * (Y - x_hat))^T d x_hat / d x`` (one vector-Jacobian product
through the network) is added to the model's prediction, scaled by the PiGDM weight clipped at
``max_guidance`` (RTC's beta = 5). ``W [H]`` is RTC's soft mask: 1 on the fixed prefix, decaying
exponentially over the rest of the overlap with the previous chunk, 0 after it
(``prefix_weights``). Guidance only steers; after the last step the first ``num_fixed`` actions
are set to the target exactly, so the prefix equals the committed actions bit for bit.

Shapes: ``B`` batch, ``H`` chunk length, ``A`` action dim. With no ``inpaint`` the samplers run
exactly as before (the same operations, bit for bit).
"""
from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

MAX_GUIDANCE = 5.0  # RTC's beta: the clip on the guidance weight (the paper's value)


def prefix_weights(horizon: int, num_fixed: int, overlap: int) -> np.ndarray:
    """RTC's soft mask ``W [H]`` over a new chunk.

    ``W_i = 1`` for the ``num_fixed`` (= d) committed actions; for ``d <= i < overlap`` (the rest
    of the steps the previous chunk still has a plan for) ``W_i = c_i (e^{c_i} - 1) / (e - 1)`` with
    ``c_i = (overlap - i) / (overlap - d + 1)``, decaying from near 1 to near 0; ``W_i = 0`` from
    ``overlap`` on. ``overlap <= num_fixed`` gives the hard mask (ones on the prefix only).
    """
    H, d, end = int(horizon), int(num_fixed), int(overlap)
    if not 0 <= d <= H or not 0 <= end <= H:
        raise ValueError(f"prefix_weights: need 0 <= num_fixed ({d}) <= horizon ({H}) and "
                         f"0 <= overlap ({end}) <= horizon")
    i = np.arange(H, dtype=np.float64)
    c = np.clip((end - i) / max(end - d + 1, 1), 0.0, 1.0)
    w = c * np.expm1(c) / np.expm1(1.0)
    w = np.where(i < d, 1.0, np.where(i < end, w, 0.0))
    return w.astype(np.float32)


class Inpaint(flax.struct.PyTreeNode):
    """A prefix constraint for one sampling call (a pytree of arrays: a jitted sampler compiles
    once whatever the delay).

    target:       ``[B, H, A]`` the actions to inpaint towards (beyond the overlap: anything).
    weights:      ``[H]`` the soft mask (``prefix_weights``).
    num_fixed:    ``[]`` int, the first ``num_fixed`` actions are set to ``target`` at the end.
    max_guidance: ``[]`` the clip on the guidance weight (RTC's beta).
    """

    target: jax.Array
    weights: jax.Array
    num_fixed: jax.Array
    max_guidance: jax.Array

    @classmethod
    def create(cls, target, num_fixed: int, overlap: int,
               max_guidance: float = MAX_GUIDANCE) -> "Inpaint":
        """The constraint of RTC for ``target [B, H, A]``: ``num_fixed`` committed actions and a
        soft mask up to ``overlap`` (``prefix_weights``)."""
        target = jnp.asarray(target, jnp.float32)
        return cls(target=target,
                   weights=jnp.asarray(prefix_weights(target.shape[1], num_fixed, overlap)),
                   num_fixed=jnp.asarray(num_fixed, jnp.int32),
                   max_guidance=jnp.asarray(max_guidance, jnp.float32))

    def _target_for(self, x: jax.Array) -> jax.Array:
        """The target repeated to ``x``'s batch: agents that draw N candidates per observation
        repeat each observation N times (``jnp.repeat(obs, N, axis=0)``), so the target is
        repeated the same way."""
        B, Bt = x.shape[0], self.target.shape[0]
        if B == Bt:
            return self.target
        if B % Bt:
            raise ValueError(f"inpaint: the sampled batch ({B}) is not a multiple of the target's "
                             f"batch ({Bt}); give one target per observation")
        return jnp.repeat(self.target, B // Bt, axis=0)

    def _correction(self, estimate_fn: Callable, x: jax.Array):
        """``(prediction, g)``: ``estimate_fn(x) -> (x_hat, prediction)`` and the PiGDM vector
        ``g = (W * (Y - x_hat))^T d x_hat / d x``."""
        x_hat, vjp, prediction = jax.vjp(estimate_fn, x, has_aux=True)
        error = self.weights[None, :, None] * (self._target_for(x) - x_hat)
        return prediction, vjp(error)[0]

    def guided_velocity(self, velocity_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                        t: jax.Array) -> jax.Array:
        """A flow's velocity at ``x`` (time ``t`` in [0, 1), noise at 0) guided to the target.

        ``x_hat = x + (1 - t) v`` (the Euler jump to t = 1); weight
        ``min(beta, (1 - t) / (t r_t^2))`` with ``r_t^2 = (1 - t)^2 / (t^2 + (1 - t)^2)`` (RTC).
        """
        def estimate(x_):
            v = velocity_fn(x_)
            return x_ + (1.0 - t) * v, v

        v, g = self._correction(estimate, x)
        safe_t = jnp.where(t > 0, t, 1.0)
        weight = (safe_t**2 + (1.0 - safe_t) ** 2) / (safe_t * (1.0 - safe_t))
        weight = jnp.where(t > 0, jnp.minimum(weight, self.max_guidance), self.max_guidance)
        return v + weight * g

    def guided_eps(self, eps_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                   alpha_bar: jax.Array) -> jax.Array:
        """A diffusion model's noise prediction at ``x`` guided to the target.

        ``x_hat = (x - sqrt(1 - abar) eps) / sqrt(abar)``; PiGDM's score correction ``g / r_t^2``
        with ``r_t^2 = 1 - abar`` is ``-g / sqrt(1 - abar)`` in eps units, its weight
        ``1 / sqrt(1 - abar)`` clipped at beta as RTC clips the flow's.
        """
        def estimate(x_):
            eps = eps_fn(x_)
            return (x_ - jnp.sqrt(1.0 - alpha_bar) * eps) / jnp.sqrt(alpha_bar), eps

        eps, g = self._correction(estimate, x)
        weight = jnp.minimum(1.0 / jnp.sqrt(1.0 - alpha_bar), self.max_guidance)
        return eps - weight * g

    def apply(self, actions: jax.Array) -> jax.Array:
        """``actions [B, H, A]`` with the first ``num_fixed`` steps set to the target exactly."""
        fixed = jnp.arange(actions.shape[1]) < self.num_fixed
        return jnp.where(fixed[None, :, None], self._target_for(actions), actions)

