"""``run.compute_dtype``: bf16 matmuls with float32 parameters, outputs and losses; off by
default (the tests that pin each agent's math run in float32)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_sharding import synthetic_buffer, tiny_agent


def _dot_dtypes(fn, *args) -> set[str]:
    return {str(e.outvars[0].aval.dtype) for e in jax.make_jaxpr(fn)(*args).eqns
            if e.primitive.name == "dot_general"}


def test_default_is_float32_and_bad_dtype_is_refused():
    from configs.common import run_config
    from configs.dql import get_config
    from dprl.run.config import validate_config

    assert run_config().compute_dtype == "float32"
    config = get_config()
    config.run.compute_dtype = "float16"
    with pytest.raises(ValueError, match="compute_dtype=float16: must be one of float32, bfloat16"):
        validate_config(config, False)


def test_bfloat16_networks_keep_float32_params_and_outputs():
    """The critic and the actor's denoiser in bf16: float32 parameters (same initial values as
    in float32), every matmul in bf16, float32 outputs within bf16 rounding of the float32 net."""
    from configs.dql import get_config
    from dprl.models.actor import actor_from_config
    from dprl.models.nets import critic_from_config
    from dprl.run.config import with_compute_dtype

    obs, act = jnp.ones((4, 5)) * 0.3, jnp.ones((4, 1, 2)) * -0.2
    outs = {}
    for dtype in ("float32", "bfloat16"):
        config = get_config()
        config.action_dim = 2
        config.actor.hidden_dims = config.critic_hidden_dims = (32, 32)
        config.run.compute_dtype = dtype
        config = with_compute_dtype(config)
        critic = critic_from_config(config)
        params = critic.init(jax.random.PRNGKey(0), obs, act)
        assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype("float32")}
        q = critic.apply(params, obs, act)
        assert _dot_dtypes(lambda p: critic.apply(p, obs, act), params) == {dtype}
        actor = actor_from_config(config)
        actor_params = actor.init(jax.random.PRNGKey(1), obs)
        eps = actor.apply(actor_params, obs, act, jnp.zeros((4,)))
        assert _dot_dtypes(lambda p: actor.apply(p, obs, act, jnp.zeros((4,))),
                           actor_params) == {dtype}
        assert q.dtype == eps.dtype == jnp.float32
        outs[dtype] = (params, q, eps)
    for a, b in zip(jax.tree.leaves(outs["float32"][0]), jax.tree.leaves(outs["bfloat16"][0])):
        np.testing.assert_array_equal(a, b)
    for i in (1, 2):
        np.testing.assert_allclose(outs["bfloat16"][i], outs["float32"][i], rtol=0.05, atol=0.02)
        assert not np.array_equal(outs["bfloat16"][i], outs["float32"][i])  # bf16 did round


def test_bfloat16_update_tracks_float32():
    """A few fused DQL updates in bf16: float32 state, finite losses near the float32 run's."""
    from dprl.run.updates import fused_updates

    buffer = synthetic_buffer()
    infos = {}
    for dtype in ("float32", "bfloat16"):
        agent = tiny_agent("dql", compute_dtype=dtype)
        assert agent.config.actor.get("compute_dtype", "float32") == dtype
        agent, info = fused_updates(agent, buffer, None, jax.random.PRNGKey(1), num_steps=3,
                                    method="update", batch_size=16, horizon=1, obs_history=1)
        assert {x.dtype for x in jax.tree.leaves(agent.critic.params)} == {np.dtype("float32")}
        infos[dtype] = jax.device_get(info)
    for k, v in infos["float32"].items():
        assert np.isfinite(infos["bfloat16"][k]), k
    assert infos["bfloat16"]["critic/loss"] == pytest.approx(infos["float32"]["critic/loss"],
                                                             rel=0.1, abs=0.05)
