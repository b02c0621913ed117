"""Diffusion Q-Learning: the target critics' min of max over draws, targets/EMA bookkeeping, the actor loss's
direction on a fixed critic, Q-based action selection, an end-to-end run, and (slow) pole-right.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents import get_agent
from agents.dql import Agent
from configs.dql import TASK_OVERRIDES, get_config
from tests.conftest import tiny

OBS, ACT = 3, 2


def _config(horizon=1, **fields):
    config = tiny(get_config())
    config.critic_hidden_dims = (32, 32)
    config.horizon = config.act_steps = horizon
    config.action_dim = ACT
    for k, v in fields.items():
        config[k] = v
    return config


def _batch(B=4, H=1, seed=0):
    rng = np.random.default_rng(seed)
    valid = np.ones((B, H), np.float32)
    return {
        "observations": rng.normal(size=(B, OBS)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(B, H, ACT)).astype(np.float32),
        "valid": valid,
        "rewards": rng.normal(size=(B, H)).astype(np.float32),
        "terminals": np.zeros((B, H), np.float32),
        "next_observations": rng.normal(size=(B, OBS)).astype(np.float32),
        "masks": np.ones((B,), np.float32),
    }


# ---- the target ---------------------------------------------------------------------------------
@pytest.mark.parametrize("max_q_backup", [False, True])
def test_target_q_is_min_over_critics_of_max_over_draws(max_q_backup):
    config = _config(horizon=2, max_q_backup=max_q_backup, max_q_samples=4, num_critics=3)
    batch = _batch(B=5, H=2)
    agent = Agent.create(0, batch, config)
    # Make the target critics differ from the online ones and from each other.
    agent = agent.replace(target_critic_params=jax.tree.map(
        lambda x: x + 0.1, agent.target_critic_params))
    key = jax.random.PRNGKey(3)
    got = np.asarray(agent.target_q(jnp.asarray(batch["next_observations"]), key))
    n = 4 if max_q_backup else 1
    rep = np.repeat(batch["next_observations"], n, axis=0)
    actions, _ = agent.actor.sample(jnp.asarray(rep), key)
    q = np.asarray(agent.critic_net.apply(agent.target_critic_params, rep, actions))  # [E, B*n]
    expected = [min(max(q[e, b * n + k] for k in range(n)) for e in range(3)) for b in range(5)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---- target critics and EMA actor --------------------------------------------------------------
def test_polyak_targets_and_ema_schedule():
    config = _config(tau=0.1, ema_start=2, ema_every=2, ema_decay=0.9)
    batch = jax.tree.map(jnp.asarray, _batch(B=8))
    agent = Agent.create(0, batch, config)
    close = lambda a, b: jax.tree.map(  # noqa: E731
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
    for step in range(4):
        old_target, old_ema = agent.target_critic_params, agent.actor.ema_params
        agent, info = agent.update(batch)
        assert int(agent.actor.step) == step + 1
        close(agent.target_critic_params, jax.tree.map(lambda t, c: 0.9 * t + 0.1 * c,
                                                       old_target, agent.critic.params))
        if step < 2:      # before ema_start: a copy of the actor
            close(agent.actor.ema_params, agent.actor.params)
        elif step == 2:   # due: Polyak with decay 0.9
            close(agent.actor.ema_params, jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, old_ema,
                                                       agent.actor.params))
        else:             # step 3: not due, unchanged
            close(agent.actor.ema_params, old_ema)
    assert all(np.isfinite(float(v)) for v in info.values())
    for k in ("critic/loss", "critic/q_mean", "critic/target_mean", "actor/bc_loss",
              "actor/q_loss", "actor/grad_norm", "critic/grad_norm"):
        assert k in info
    # pretrain leaves the critics alone
    critic = agent.critic.params
    agent, info = agent.pretrain(batch)
    close(agent.critic.params, critic)
    assert set(info) == {"bc/loss", "bc/grad_norm"}


# ---- the actor loss goes up the critic ---------------------------------------------------------
def test_actor_loss_raises_q_on_a_fixed_critic():
    """A sign error in the Q term (or no gradient through the chain) lowers or keeps Q."""
    config = _config(eta=100.0)  # the Q term dominates the BC term
    batch = jax.tree.map(jnp.asarray, _batch(B=64, seed=1))
    agent = Agent.create(0, batch, config)
    critic_params = agent.critic.params
    state = agent.actor.replace(tx=optax.adam(3e-3),
                                opt_state=optax.adam(3e-3).init(agent.actor.params))
    eval_key = jax.random.PRNGKey(7)

    def q_of_policy(params):
        a, _ = agent.actor.model.sample(params, batch["observations"], eval_key)
        return float(agent.critic_net.apply(critic_params, batch["observations"], a).mean())

    @jax.jit
    def step(state, key):
        grads, _ = jax.grad(agent.actor_loss, has_aux=True)(state.params, critic_params, batch,
                                                             key)
        return state.apply_gradients(grads=grads)

    before = q_of_policy(state.params)
    for k in jax.random.split(jax.random.PRNGKey(0), 40):
        state = step(state, k)
    after = q_of_policy(state.params)
    q_range = np.ptp(np.asarray(agent.critic_net.apply(
        critic_params, batch["observations"], batch["actions"])))
    assert after > before + 0.02 * q_range, (before, after, q_range)


# ---- acting ------------------------------------------------------------------------------------
def test_sample_actions_argmax_picks_the_best_candidate():
    config = _config(horizon=3, action_selection="argmax", num_samples=8)
    batch = _batch(B=2, H=3)
    agent = Agent.create(0, batch, config)
    agent = agent.replace(critic_step=jnp.ones((), jnp.int32))  # as if the critics were trained
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(5, OBS)), jnp.float32)
    key = jax.random.PRNGKey(11)
    chunks, aux = agent.sample_actions(obs, key)
    assert chunks.shape == (5, 3, ACT) and aux == {}
    assert float(jnp.abs(chunks).max()) <= 1.0
    sample_key, _ = jax.random.split(key)
    rep = jnp.repeat(obs, 8, axis=0)
    cands, _ = agent.actor.sample(rep, sample_key)
    q = agent.critic_net.apply(agent.target_critic_params, rep, cands).min(0).reshape(5, 8)
    best = np.asarray(cands).reshape(5, 8, 3, ACT)[np.arange(5), np.asarray(q.argmax(1))]
    np.testing.assert_allclose(np.asarray(chunks), best, atol=1e-6)
    # N = 1 is plain sampling from the EMA actor
    plain = Agent.create(0, batch, _config(horizon=3, num_samples=1))
    assert plain.sample_actions(obs, key)[0].shape == (5, 3, ACT)


def test_config_task_overrides():
    config = get_config("walker2d-medium")
    assert (config.task, config.eta, config.grad_clip) == ("walker2d-medium", 1.0, 1.0)
    assert get_config("antmaze-large-play").max_q_backup is True
    assert TASK_OVERRIDES["hopper-medium"]["grad_clip"] == get_config().grad_clip == 9.0
    with pytest.raises(KeyError):
        get_config("hopper-nonsense")


# ---- end to end --------------------------------------------------------------------------------
def test_end_to_end_chunked_run(tmp_path, pole_datasets):
    from dprl.run.runner import train
    config = _config(horizon=2)
    config.num_samples = 4
    config = tiny(config, pretrain_steps=25, offline_steps=25, online_steps=30, eval_episodes=2,
                  online_log_every=10, online_eval_every=30)
    summary = train(config, "pole-right", str(tmp_path), get_agent, progress=False)
    assert summary["agent"] == "dql" and summary["online_steps"] == 30
    assert summary["offline_score"] is not None and summary["online_score"] is not None
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["offline_score"] == summary["offline_score"]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("critic/loss", "actor/q_loss", "bc/loss", "eval/normalized_score"):
        assert col in header


# ---- learning: pick the rewarded mode ----------------------------------------------------------
@pytest.mark.slow
def test_pole_right_recovers_the_rewarded_mode(pole_datasets):
    """Demos pass left and right half each; only right is rewarded: DQL must go right."""
    from dprl.data.buffer import Buffer
    from dprl.data.offline import Normalizer, load_dataset
    from dprl.envs.vector import evaluate
    from dprl.envs.tasks import get_task
    from dprl.run.updates import fused_updates

    task = get_task("pole-right")
    data = load_dataset(task["dataset_id"])
    normalizer = Normalizer.fit(data.observations)
    buffer = Buffer.from_offline(data, normalizer)
    config = _config(num_samples=1)
    config.actor.hidden_dims = config.critic_hidden_dims = (64, 64)
    agent = Agent.create(0, jax.device_get(buffer.sample(jax.random.PRNGKey(0), 2)), config)

    def right_rate(agent, n=50):
        key = jax.random.PRNGKey(5)

        def policy(obs):
            nonlocal key
            key, k = jax.random.split(key)
            return np.asarray(agent.sample_actions(jnp.asarray(obs), k)[0])

        episodes = evaluate(policy, task["env_id"], n, 1, seed=1000, normalize=normalizer,
                            return_episodes=True)["episodes"]
        return np.mean([e["success"] and e["side"] == "right" for e in episodes])

    run = lambda agent, method, n, key: fused_updates(  # noqa: E731
        agent, buffer, None, key, num_steps=n, method=method, batch_size=64, horizon=1,
        obs_history=1)[0]
    keys = jax.random.split(jax.random.PRNGKey(1), 20)
    for i in range(4):
        agent = run(agent, "pretrain", 1000, keys[i])
    bc_rate = right_rate(agent)
    for i in range(12):
        agent = run(agent, "update", 250, keys[4 + i])
    dql_rate = right_rate(agent)
    assert bc_rate < 0.6, bc_rate
    assert dql_rate >= 0.8, (bc_rate, dql_rate)
