"""RLPD, RLPD-AC and QC-RLPD: the target's ensemble aggregation against a hand computation, the
tanh-Gaussian likelihood, the update's pieces against plain formulas, the presets, and the
uniform one-buffer offline/online mix."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.rlpd import (Agent, aggregate_target, tanh_gaussian_log_prob, tanh_gaussian_sample)
from configs.rlpd import PRESETS, get_config
from dprl.data.buffer import Buffer, sample_mixed
from tests.conftest import python_chunk_target, random_batch, tiny


def _config(preset="rlpd", **overrides):
    config = tiny(get_config(preset))
    config.action_dim = 2
    config.critic_hidden_dims = (16, 16)
    config.num_critics = 4
    for k, v in overrides.items():
        config[k] = v
    return config


def _batch(config, B=8, O=3, seed=0):
    return jax.tree.map(jnp.asarray, random_batch(B, config.horizon, O, 2, seed))


# ---- the target's aggregation ------------------------------------------------------------------
def test_aggregate_target_by_hand():
    qs = jnp.array([[1.0, 5.0, -2.0], [3.0, 0.0, 4.0], [2.0, 2.0, 2.0], [-1.0, 7.0, 0.5]])
    np.testing.assert_allclose(aggregate_target(qs, "mean", None), [1.25, 3.5, 1.125])
    np.testing.assert_allclose(aggregate_target(qs, "min", None), [-1.0, 0.0, -2.0])
    key = jax.random.PRNGKey(3)
    pair = np.asarray(jax.random.choice(key, 4, (2,), replace=False))
    assert pair[0] != pair[1]
    np.testing.assert_allclose(aggregate_target(qs, "pair_min", key),
                               np.minimum(np.asarray(qs)[pair[0]], np.asarray(qs)[pair[1]]))
    # Over keys, every pair of distinct critics is drawn (not always the same two).
    seen = {tuple(sorted(np.asarray(jax.random.choice(jax.random.PRNGKey(k), 4, (2,),
                                                      replace=False)).tolist()))
            for k in range(60)}
    assert len(seen) == 6


@pytest.mark.parametrize("q_agg", ["mean", "pair_min"])
def test_update_regresses_on_the_target_by_hand(q_agg):
    """The logged target = the chunk's return + gamma^n mask agg_e Q'_e(s', a'), a' the actor's
    draw with the update's key, Q' the target critics (made to differ from the online ones)."""
    config = _config("rlpd-ac", q_agg=q_agg, discount=0.9)
    batch = _batch(config)
    batch["terminals"] = batch["terminals"].at[1, 2].set(1.0)
    batch["valid"] = batch["valid"].at[1, 3:].set(0.0)
    batch["masks"] = batch["masks"].at[1].set(0.0)
    batch["valid"] = batch["valid"].at[2, 4:].set(0.0)       # cut by a time limit: gamma^4
    agent = Agent.create(0, batch, config)
    agent = agent.replace(target_critic_params=jax.tree.map(lambda p: p * 1.5 + 0.1,
                                                            agent.target_critic_params))
    _, actor_key, target_key = jax.random.split(jax.random.split(agent.key)[1], 3)
    agg_key, next_key = jax.random.split(target_key)
    mean, log_std = agent.actor_net.apply(agent.actor.params, batch["next_observations"])
    u = mean + jnp.exp(log_std) * jax.random.normal(next_key, mean.shape)
    qs = np.asarray(agent.critic_net.apply(agent.target_critic_params, batch["next_observations"],
                                           jnp.tanh(u)))                          # [E, B]
    if q_agg == "mean":
        next_q = qs.mean(axis=0)
    else:
        i, j = np.asarray(jax.random.choice(agg_key, qs.shape[0], (2,), replace=False))
        next_q = np.minimum(qs[i], qs[j])
    want = python_chunk_target(np.asarray(batch["rewards"]), np.asarray(batch["valid"]),
                               np.asarray(batch["terminals"]), next_q, 0.9)
    _, info = agent.update(batch)
    assert np.isclose(float(info["critic/target_mean"]), want.mean(), rtol=1e-5, atol=1e-5)


# ---- the policy's likelihood and the actor's loss ---------------------------------------------
def test_tanh_gaussian_log_prob_is_the_change_of_variables():
    mean = jnp.array([[0.3, -1.0]])
    log_std = jnp.array([[-0.5, 0.2]])
    a, logp = tanh_gaussian_sample(mean, log_std, jax.random.PRNGKey(0))
    u = np.arctanh(np.asarray(a, np.float64))[0]
    m, s = np.asarray(mean[0], np.float64), np.exp(np.asarray(log_std[0], np.float64))
    want = (-0.5 * ((u - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
            - np.log(1 - np.tanh(u) ** 2)).sum()
    assert np.isclose(float(logp[0]), want, rtol=1e-4)
    assert np.isclose(float(tanh_gaussian_log_prob(mean, log_std, a)[0]), want, rtol=1e-4)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_actor_and_temperature_losses_by_hand(preset):
    """actor loss = mean(alpha log pi - mean_e Q) - bc_alpha mean log pi(data chunk); the
    temperature's loss alpha (H - target) with target = -0.5 h A."""
    config = _config(preset, init_temperature=0.7)
    batch = _batch(config)
    agent = Agent.create(0, batch, config)
    assert agent.config.target_entropy == -0.5 * config.horizon * 2
    key = jax.random.PRNGKey(5)
    loss, info = agent.actor_loss(agent.actor.params, batch, key)
    mean, log_std = agent.actor_net.apply(agent.actor.params, batch["observations"])
    a, logp = tanh_gaussian_sample(mean, log_std, key)
    q = agent.critic_net.apply(agent.critic.params, batch["observations"], a).mean(0)
    data = jnp.clip(batch["actions"].reshape(8, -1), -1 + 1e-5, 1 - 1e-5)
    bc = -tanh_gaussian_log_prob(mean, log_std, data).mean()
    want = float((0.7 * logp - q).mean() + PRESETS[preset][1] * bc)
    assert np.isclose(float(loss), want, rtol=1e-5)
    t_loss, _ = agent.temperature_loss(agent.temperature.params, jnp.float32(1.3))
    assert np.isclose(float(t_loss), 0.7 * (1.3 + 0.5 * config.horizon * 2), rtol=1e-5)


def test_update_changes_every_network_and_moves_the_target_by_tau():
    config = _config("qc-rlpd", tau=0.25)
    batch = _batch(config)
    agent = Agent.create(0, batch, config)
    new, info = agent.update(batch)
    for old, cur in ((agent.actor.params, new.actor.params),
                     (agent.critic.params, new.critic.params),
                     (agent.temperature.params, new.temperature.params)):
        assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(old),
                                                         jax.tree.leaves(cur)))
    want = jax.tree.map(lambda t, c: 0.75 * t + 0.25 * c, agent.target_critic_params,
                        new.critic.params)
    for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(new.target_critic_params)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert all(np.isfinite(float(v)) for v in info.values())


def test_presets_are_the_papers():
    assert get_config("rlpd").horizon == 1 and get_config("rlpd").bc_alpha == 0.0
    assert get_config("rlpd-ac").horizon == 5 and get_config("rlpd-ac").act_steps == 5
    assert get_config("qc-rlpd").bc_alpha == 0.01
    c = get_config()
    assert (c.num_critics, c.critic_layer_norm, c.q_agg, c.run.offline_ratio) == (10, True,
                                                                                  "mean", 0.5)


def test_bad_settings_fail_before_any_work():
    batch = random_batch(2, 1, 3, 2)
    with pytest.raises(ValueError, match="q_agg"):
        Agent.create(0, batch, _config(q_agg="median"))
    with pytest.raises(ValueError, match="act_steps"):
        Agent.create(0, random_batch(2, 5, 3, 2), _config("rlpd-ac", act_steps=1))
    with pytest.raises(ValueError, match="preset"):
        get_config("rlpd-xl")


def test_sample_actions_shapes_and_bounds():
    config = _config("rlpd-ac")
    batch = _batch(config)
    agent = Agent.create(0, batch, config)
    chunks, aux = agent.sample_actions(batch["observations"], jax.random.PRNGKey(0))
    assert chunks.shape == (8, 5, 2) and float(jnp.abs(chunks).max()) <= 1.0 and aux == {}


# ---- the uniform one-buffer mix ----------------------------------------------------------------
def _marked_buffer(capacity: int, size: int, mark: float) -> Buffer:
    """A buffer of ``size`` one-step episodes whose rewards are all ``mark``."""
    buf = Buffer.empty(capacity, 2, 1)
    return buf.replace(rewards=jnp.full((capacity,), mark), dones=jnp.ones((capacity,)),
                       size=jnp.asarray(size, jnp.int32))


@pytest.mark.parametrize("n_on", [0, 500, 1000, 3000, 9000])
def test_uniform_mix_offline_share_falls_as_one_over_one_plus_online_over_offline(n_on):
    n_off = 1000
    offline, online = _marked_buffer(1000, n_off, 1.0), _marked_buffer(10000, n_on, 0.0)
    batch = jax.jit(lambda k: sample_mixed(offline, online, k, 20000, 0.5, 1, 1, "uniform"))(
        jax.random.PRNGKey(n_on))
    share = float(batch["rewards"].mean())
    want = 1.0 / (1.0 + n_on / n_off)
    assert abs(share - want) < 0.015, (share, want)
    fixed = sample_mixed(offline, online, jax.random.PRNGKey(0), 2000, 0.5, 1, 1, "ratio")
    assert float(fixed["rewards"].mean()) == 0.5   # the fixed split ignores the buffers' sizes


def test_uniform_mix_never_reads_past_either_buffer():
    """Rows past ``size`` hold a marker that must never be sampled."""
    offline = _marked_buffer(50, 10, 1.0)
    offline = offline.replace(rewards=offline.rewards.at[10:].set(99.0))
    online = _marked_buffer(50, 5, 0.0)
    online = online.replace(rewards=online.rewards.at[5:].set(-99.0))
    batch = sample_mixed(offline, online, jax.random.PRNGKey(1), 4000, 0.5, 1, 1, "uniform")
    assert set(np.unique(np.asarray(batch["rewards"])).tolist()) == {0.0, 1.0}


def test_unknown_mix_is_an_error():
    buf = _marked_buffer(4, 4, 1.0)
    with pytest.raises(ValueError, match="offline_mix"):
        sample_mixed(buf, buf, jax.random.PRNGKey(0), 4, 0.5, 1, 1, "decay")
