"""Acting one-step (``act_with='one_step'``): one wrapper around any off-policy agent.

``acting(agent_cls, config)`` is the class a run creates (``dprl.run.checkpoint.initial_state``,
so a fresh run, a resumed one, ``load_run`` and every seed of a vmapped run alike): the agent's
own class, or ``OneStep`` around it. The wrapper holds the agent, which trains exactly as it
would alone, and ``mu(s, z)`` (``dprl.models.one_step``: the network, its optimizer, the
distillation loss):

  pretrain, update   the agent's step, then one distillation step of mu toward the agent's
                     teacher as that step left it, so mu follows the teacher as it trains
                     (info: the agent's, ``one_step/distill_loss``, ``one_step/grad_norm``)
  distill            the distillation step alone (``dprl.tools.distill``: a finished run)
  sample_actions     N = ``config.num_samples`` draws of mu, of which the agent picks one
                     (``agent.select``, by its Q); one draw for an agent that does not select

What it needs from the agent (``dprl.run.agent``): ``teacher_sample(observations, noise)``, its
deterministic sample from the initial noise ``z``; ``select(observations, candidates, key)`` if it
picks among candidates; its PRNG key ``agent.key``, off which mu's initialization and each
distillation step split theirs (the agent's later keys are then those it had acting one-step
before the wrapper existed). Its targets keep the agent's own (multi-step) policy: only acting
changes. An agent whose own policy is already one-step (QC's FQL extraction) says so with a
class method ``acts_in_one_step(config)``; it is not wrapped.

Shapes: B batch, N candidates, H chunk length, A action dim.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from dprl.models.encoders import batch_size_of, encode_once, repeat_rows
from dprl.models.one_step import OneStepActor, acts_one_step, check_act_with, init_one_step


def acting(agent_cls: type, config) -> type:
    """The class a run with ``config`` creates: ``agent_cls``, or the one-step wrapper around it
    when ``config.act_with == 'one_step'`` and the agent's own policy is not one-step already.
    Raises ValueError (``check_act_with``) for an ``act_with`` the agent cannot use."""
    check_act_with(config, agent_cls.on_policy)
    own = getattr(agent_cls, "acts_in_one_step", None)
    if not acts_one_step(config) or (own is not None and own(config)):
        return agent_cls
    if not hasattr(agent_cls, "teacher_sample"):
        raise ValueError(f"--agent.act_with='one_step': the {config.agent_name!r} agent gives no "
                         f"teacher to distill a one-step actor from (it has no teacher_sample); "
                         f"use act_with='multi_step'")
    return one_step_class(agent_cls)


@functools.cache
def one_step_class(agent_cls: type) -> type:
    """``OneStep`` around ``agent_cls`` (one class per agent class: jitted methods compile once)."""
    name = f"OneStep[{agent_cls.__module__}.{agent_cls.__qualname__}]"
    return type(name, (OneStep,), {"inner": agent_cls, "__module__": __name__})


class OneStep(flax.struct.PyTreeNode):
    """An off-policy agent acting with ``mu(s, z)`` distilled from it as it trains."""

    agent: Any                 # the wrapped agent, training as it would alone
    mu: OneStepActor           # mu(s, z): its weights and optimizer
    config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)

    on_policy = False
    inner: ClassVar[type]      # the wrapped agent class (set by ``one_step_class``)

    @classmethod
    def create(cls, seed: int, example_batch: dict, config) -> "OneStep":
        """The agent as ``inner.create`` makes it, and a fresh mu on a key split off its key."""
        agent = cls.inner.create(seed, example_batch, config)
        key, mu_key = jax.random.split(agent.key)
        return cls.of(agent.replace(key=key), config, mu_key,
                      jax.tree.map(jnp.asarray, example_batch["observations"]))

    @classmethod
    def of(cls, agent, config, key: jax.Array, observations: jax.Array) -> "OneStep":
        """``agent`` with a fresh mu (initialized with ``key``) for the chunks it acts with,
        ``[H, A]`` of its ``sample_actions`` at ``observations [B, (K,) O]``."""
        chunks, _ = jax.eval_shape(agent.sample_actions, observations, jax.random.PRNGKey(0))
        # Traced once here, so a teacher the agent cannot give raises before any work.
        jax.eval_shape(agent.teacher_sample, observations, jnp.zeros(chunks.shape))
        mu = init_one_step(config, chunks.shape[1], chunks.shape[2], key, observations)
        return one_step_class(type(agent))(agent=agent, mu=mu,
                                           config=ml_collections.FrozenConfigDict(config))

    @property
    def key(self) -> jax.Array:
        return self.agent.key

    # ---- training: the agent's step, then mu's -----------------------------------------------
    def distill_step(self, batch: dict) -> tuple["OneStep", dict]:
        """One step of ``||mu(s, z) - teacher(s, z)||^2`` at the batch's observations, with a
        key split off the agent's."""
        key, distill_key = jax.random.split(self.agent.key)
        mu, info = self.mu.distill(batch["observations"], self.agent.teacher_sample, distill_key)
        return self.replace(agent=self.agent.replace(key=key), mu=mu), info

    @jax.jit
    def distill(self, batch: dict) -> tuple["OneStep", dict]:
        return self.distill_step(batch)

    @jax.jit
    def pretrain(self, batch: dict) -> tuple["OneStep", dict]:
        agent, info = self.agent.pretrain(batch)
        new, distill_info = self.replace(agent=agent).distill_step(batch)
        return new, {**info, **distill_info}

    @jax.jit
    def update(self, batch: dict) -> tuple["OneStep", dict]:
        agent, info = self.agent.update(batch)
        new, distill_info = self.replace(agent=agent).distill_step(batch)
        return new, {**info, **distill_info}

    # ---- acting ------------------------------------------------------------------------------
    @jax.jit
    def sample_actions(self, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """``observations [B, (K,) O]`` -> chunks ``[B, H, A]``: mu's draw, or the agent's pick
        among N = ``config.num_samples`` draws of mu."""
        select = getattr(self.agent, "select", None)
        if select is None:
            return self.mu.sample(observations, key), {}
        B, N = batch_size_of(observations), int(self.config.get("num_samples", 1))
        draw_key, pick_key = jax.random.split(key)
        features = encode_once(self.mu.net, self.mu.params, observations)   # images once
        candidates = self.mu.sample(repeat_rows(features, N), draw_key)      # [B N, H, A]
        return select(observations, candidates.reshape(B, N, *candidates.shape[1:]),
                      pick_key), {}
