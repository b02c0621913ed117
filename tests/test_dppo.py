"""DPPO: chain likelihoods, GAE, the clipped objective, a 1D bandit, and an end-to-end run."""
from __future__ import annotations

import csv
import json

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import get_agent
from agents.dppo import Agent, RewardScaler, clip_schedule, gae, ppo_policy_loss
from configs.dppo import get_config
from dprl.models import diffusion
from tests.conftest import tiny


def _config(obs_dim=3, action_dim=2, horizon=2, steps=6, ft=4, num_envs=8, **overrides):
    config = tiny(get_config(), num_envs=num_envs)
    config.horizon, config.act_steps, config.action_dim = horizon, horizon, action_dim
    config.actor.diffusion_steps = steps
    config.ft_denoising_steps = ft
    config.critic_hidden_dims = (32, 32)
    for k, v in overrides.items():
        config[k] = v
    return config


def _agent(config, obs_dim=3, seed=0):
    example = {"observations": np.zeros((2, obs_dim), np.float32)}
    return Agent.create(seed, example, config)


# ---- likelihoods ---------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_chain_log_prob_is_sum_of_per_step_distrax_log_probs(sampler):
    config = _config()
    config.actor.sampler = sampler
    config.actor.ddim_eta = 0.5
    agent = _agent(config)
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    actions, aux = agent.sample_actions(obs, jax.random.PRNGKey(2))
    chain = aux["chain"]
    K = config.ft_denoising_steps
    assert chain.shape == (5, K + 1, 2, 2)
    np.testing.assert_allclose(actions, jnp.clip(chain[:, -1], -1, 1), atol=1e-6)

    # A plain loop over the finetuned steps, one multivariate distrax Gaussian per step.
    actor = agent.bc.model
    ts, prevs = diffusion.sampling_steps(config.actor.diffusion_steps, None)
    ts, prevs = ts[-K:], prevs[-K:]
    eta = 0.5 if sampler == "ddim" else 1.0
    total = np.zeros(5)
    for k in range(K):
        x, x_next = chain[:, k], chain[:, k + 1]
        eps = actor.apply(agent.actor.params, obs, x, jnp.full((5,), ts[k], jnp.float32))
        mean, std = diffusion.step_mean_std(actor.schedule, eps, x, ts[k], prevs[k], sampler, eta,
                                            1.0)
        std = jnp.maximum(std, config.min_logprob_std)
        # The chain was sampled from these very Gaussians: the clipped noise stays in range.
        z = (x_next - mean) / jnp.maximum(std, config.min_sampling_std)
        assert float(jnp.abs(z).max()) <= config.noise_clip + 1e-3, k
        dist = distrax.MultivariateNormalDiag(mean.reshape(5, -1),
                                              jnp.broadcast_to(std, (5, 4)))
        total = total + np.asarray(dist.log_prob(x_next.reshape(5, -1)))
    np.testing.assert_allclose(agent.chain_log_prob(agent.actor.params, obs, chain), total,
                               rtol=1e-4, atol=1e-3)


def test_earlier_steps_use_the_frozen_actor():
    """Changing the finetuned copy must leave the chain's frozen part (its first x) unchanged."""
    agent = _agent(_config())
    obs = jnp.ones((4, 3))
    key = jax.random.PRNGKey(3)
    _, aux = agent.sample_actions(obs, key)
    moved = jax.tree.map(lambda p: p + 0.5, agent.actor.params)
    _, aux2 = agent.replace(actor=agent.actor.replace(params=moved)).sample_actions(obs, key)
    np.testing.assert_allclose(aux["chain"][:, 0], aux2["chain"][:, 0], atol=1e-6)
    assert not np.allclose(aux["chain"][:, -1], aux2["chain"][:, -1])


# ---- GAE, reward scaling, clip schedule ------------------------------------------------------
def test_scanned_gae_equals_python_loop():
    rng = np.random.default_rng(0)
    T, E, gamma, lam = 17, 3, 0.99, 0.95
    rewards, values, next_values = (rng.normal(size=(T, E)).astype(np.float32) for _ in range(3))
    terminals = (rng.random((T, E)) < 0.1).astype(np.float32)
    dones = np.maximum(terminals, (rng.random((T, E)) < 0.1)).astype(np.float32)  # + truncations
    adv, ret = gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(next_values),
                   jnp.asarray(terminals), jnp.asarray(dones), gamma, lam)
    expected = np.zeros((T, E))
    for e in range(E):
        last = 0.0
        for t in reversed(range(T)):
            delta = rewards[t, e] + gamma * (1 - terminals[t, e]) * next_values[t, e] - values[t, e]
            last = delta + gamma * lam * (1 - dones[t, e]) * last
            expected[t, e] = last
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, expected + values, rtol=1e-5, atol=1e-5)


def test_reward_scaler_tracks_discounted_return_std():
    rng = np.random.default_rng(1)
    rewards = rng.normal(2.0, 1.0, (40, 4)).astype(np.float32)
    dones = np.zeros((40, 4), np.float32)
    dones[19] = 1.0
    scaler = RewardScaler.create(4)
    scaler, scaled = scaler(jnp.asarray(rewards), jnp.asarray(dones), 0.9)
    rets = np.zeros((40, 4))
    run = np.zeros(4)
    for t in range(40):
        run = 0.9 * run + rewards[t]
        rets[t] = run
        run = run * (1 - dones[t])
    np.testing.assert_allclose(scaler.var, rets.var(), rtol=1e-3)
    np.testing.assert_allclose(scaled, rewards / np.sqrt(rets.var() + 1e-8), rtol=1e-3)
    np.testing.assert_allclose(scaler.returns, run, rtol=1e-5)


def test_clip_schedule_runs_from_base_to_max():
    c = np.asarray(clip_schedule(10, 1e-3, 0.1, 3.0))
    assert c[0] == pytest.approx(1e-3) and c[-1] == pytest.approx(0.1)
    assert np.all(np.diff(c) > 0)


# ---- the clipped objective -----------------------------------------------------------------
def test_clipped_objective_gradient_vanishes_outside_clip_range():
    clip = jnp.array([0.1, 0.2])
    old = jnp.zeros((4, 2))
    # ratios: above 1+clip with A > 0, below 1-clip with A < 0 (clipped: no gradient), and
    # inside the range / on the pessimistic side (gradient flows).
    new = jnp.log(jnp.array([[1.5, 1.5], [0.5, 0.5], [1.05, 1.1], [0.5, 1.5]]))
    adv = jnp.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [1.0, -1.0]])
    grad = jax.grad(lambda lp: ppo_policy_loss(lp, old, adv, clip)[0])(new)
    np.testing.assert_allclose(grad[:2], 0.0, atol=1e-8)
    assert np.all(np.abs(grad[2:]) > 1e-3)
    # Unclipped, a positive advantage pushes the log-prob up (the loss gradient is negative).
    assert grad[2, 0] < 0 and grad[2, 1] > 0


# ---- learning: a 1D bandit ---------------------------------------------------------------------
def test_bandit_moves_actor_toward_rewarded_mode():
    """BC on two modes (a = -0.5 and a = +0.5); only a > 0 is rewarded. PPO must shift mass."""
    E = 128
    config = _config(action_dim=1, horizon=1, steps=5, ft=5, num_envs=E, clip_max=0.2,
                     clip_base=0.1, ft_actor_lr=3e-3, critic_lr=3e-3, ppo_batch_size=64,
                     update_epochs=4, min_sampling_std=0.1, reward_scale_running=False)
    config.actor_lr = 3e-3
    config.ema_start = 10**9  # EMA off: the actor is the last BC iterate
    agent = _agent(config, obs_dim=1)

    def bc_batch(key):
        sign = jnp.where(jax.random.bernoulli(key, 0.5, (64,)), 1.0, -1.0)
        return {"observations": jnp.zeros((64, 1)), "actions": 0.5 * sign[:, None, None],
                "valid": jnp.ones((64, 1), bool)}

    batches = jax.vmap(bc_batch)(jax.random.split(jax.random.PRNGKey(0), 1500))
    agent, _ = jax.lax.scan(lambda a, b: a.pretrain(b), agent, batches)
    obs = jnp.zeros((E, 1))

    def right_share(agent, key):
        a, _ = agent.sample_actions(jnp.zeros((512, 1)), key)
        return float((a[:, 0, 0] > 0).mean())

    before = right_share(agent, jax.random.PRNGKey(9))
    assert 0.25 < before < 0.75, before  # BC kept both modes
    base = agent.bc.ema_params
    key = jax.random.PRNGKey(1)
    for _ in range(25):
        key, k = jax.random.split(key)
        chunks, aux = agent.sample_actions(obs, k)
        rollout = {"observations": obs[None], "actions": chunks[None],
                   "aux": jax.tree.map(lambda x: x[None], aux),
                   "rewards": (chunks[None, :, 0, 0] > 0).astype(jnp.float32),
                   "terminals": jnp.ones((1, E)), "dones": jnp.ones((1, E)),
                   "next_observations": obs[None], "last_observations": obs}
        agent, info = agent.update(rollout)
    after = right_share(agent, jax.random.PRNGKey(9))
    assert after > before + 0.25 and after > 0.8, (before, after)
    assert all(np.isfinite(float(v)) for v in info.values())
    # The frozen actor did not move.
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), base, agent.bc.ema_params)


# ---- end to end ----------------------------------------------------------------------------
def test_end_to_end_pole_right(tmp_path, pole_datasets):
    from dprl.run.runner import train
    config = _config(horizon=4, steps=4, ft=2, num_envs=2)
    config.act_steps = 2
    config.action_dim = 0
    config.ppo_batch_size = 4
    config.update_epochs = 1
    config = tiny(config, pretrain_steps=25, online_steps=40, rollout_steps=5, num_envs=2,
                  online_eval_every=10_000, eval_episodes=2)
    summary = train(config, "pole-right", str(tmp_path), get_agent, progress=False)
    assert summary["agent"] == "dppo" and summary["online_score"] is not None
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    online = [r for r in rows if r["phase"] == "online"]
    assert online and all(np.isfinite(float(r["ppo/pg_loss"])) for r in online)
    assert json.loads((tmp_path / "summary.json").read_text())["online_steps"] == 40


# ---- the paper's configuration ---------------------------------------------------------------
def _paper_agent(**overrides):
    config = _config(**overrides)
    paper = get_config("paper")
    for key in ("residual", "time_activation", "time_freqs", "activation"):
        config.actor[key] = paper.actor[key]
    config.actor.hidden_dims = (32, 32, 32)   # a residual MLP: input layer + one block
    config.critic_hidden_dims = (32, 32, 32)
    config.critic_residual, config.critic_activation = True, "mish"
    config.deterministic_eval, config.eval_min_std = True, paper.eval_min_std
    return config, _agent(config)


def test_paper_preset_values_are_the_reference_yamls():
    """The hopper finetune yaml's values (irom-princeton/dppo, ft_ppo_diffusion_mlp.yaml)."""
    c = get_config("paper")
    assert (c.run.num_envs, c.run.rollout_steps, c.ppo_batch_size * c.ft_denoising_steps) == (
        40, 500, 50_000)
    assert c.run.online_steps == 1000 * 40 * 500 * 4 and c.update_epochs == 5
    assert (c.actor.diffusion_steps, c.ft_denoising_steps, c.horizon, c.act_steps) == (20, 10, 4, 4)
    assert c.actor.residual and tuple(c.actor.hidden_dims) == (512, 512, 512)
    assert c.critic_residual and tuple(c.critic_hidden_dims) == (256, 256, 256)
    assert (c.actor.time_activation, c.actor.time_freqs) == ("mish", "half-1")
    assert c.deterministic_eval and c.min_sampling_std == 0.1
    small = get_config("cpu-small")
    differs = {k for k in ("num_envs", "rollout_steps", "online_steps", "online_eval_every",
                           "save_every") if small.run[k] != c.run[k]}
    assert differs == {"num_envs", "rollout_steps", "online_steps", "online_eval_every",
                       "save_every"}
    assert small.ppo_batch_size == 125 and small.actor.residual and small.critic_residual
    with pytest.raises(KeyError, match="preset"):
        get_config("papr")


def test_paper_networks_time_embedding_and_residual_critic():
    """The actor's time embedding is DPPO's SinusoidalPosEmb (log 10000 / (half - 1)) then
    Linear-Mish-Linear, written out here in numpy on the agent's weights; V(s) is a residual MLP:
    Dense, one pre-activation block of two Dense, Dense."""
    config, agent = _paper_agent()
    p = agent.bc.params["params"]
    te = p["TimeEmbedding_0"]
    t = np.array([0.0, 3.0, 5.0], np.float32)
    half = 8
    freqs = np.exp(-np.arange(half) * np.log(10000.0) / (half - 1))
    emb = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], -1)
    h = emb @ np.asarray(te["Dense_0"]["kernel"]) + np.asarray(te["Dense_0"]["bias"])
    h = h * np.tanh(np.log1p(np.exp(h)))                                      # Mish
    want = h @ np.asarray(te["Dense_1"]["kernel"]) + np.asarray(te["Dense_1"]["bias"])
    from dprl.models.nets import TimeEmbedding
    got = TimeEmbedding(16, "mish", freq_offset=1).apply({"params": te}, jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    assert "ResidualMLP_0" in p
    c = agent.critic.params["params"]["ResidualMLP_0"]
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    dense = lambda x, i: x @ np.asarray(c[f"Dense_{i}"]["kernel"]) + np.asarray(  # noqa: E731
        c[f"Dense_{i}"]["bias"])
    mish = lambda x: x * np.tanh(np.log1p(np.exp(x)))  # noqa: E731
    x = dense(obs, 0)
    x = x + dense(mish(dense(mish(x), 1)), 2)
    np.testing.assert_allclose(np.asarray(agent.value_net.apply(agent.critic.params, obs)),
                               dense(x, 3)[:, 0], rtol=1e-5, atol=1e-5)


def test_evaluation_drops_the_exploration_floor():
    """deterministic_eval: evaluation samples the chain with the std floored at 1e-3 (the paper's
    deterministic DDPM), collection at min_sampling_std 0.1; without it, evaluation acts as
    collection does."""
    config, agent = _paper_agent()
    obs = jnp.asarray(np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32))
    key = jax.random.PRNGKey(1)
    collected = agent.sample_actions(obs, key)[0]
    evaluated = agent.eval_actions(obs, key)[0]
    np.testing.assert_allclose(np.asarray(evaluated),
                               np.asarray(agent._sample(obs, key, agent.actor.params, 1e-3)[0]),
                               atol=1e-6)
    assert float(jnp.abs(evaluated - collected).mean()) > 1e-3
    floor = agent.replace(config=type(agent.config)({**agent.config.to_dict(),
                                                      "deterministic_eval": False}))
    np.testing.assert_array_equal(np.asarray(floor.eval_actions(obs, key)[0]),
                                  np.asarray(floor.sample_actions(obs, key)[0]))


def test_dpm_solver_is_refused():
    config = _config()
    config.actor.sampler = "dpm_solver"
    with pytest.raises(ValueError, match="Gaussian"):
        _agent(config)
