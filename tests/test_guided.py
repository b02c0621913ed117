"""Value-guided sampling (agents/guided.py): guidance is exact at scale 0, uses grad_x J at the noisy
action, moves a bimodal actor's mass to the valued mode, and runs end to end through the runner."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import get_agent
from agents.guided import Agent
from configs.guided import get_config
from tests.conftest import tiny

ROOT = Path(__file__).resolve().parents[1]


def _config(**overrides):
    config = tiny(get_config())
    config.critic_hidden_dims = (32, 32)
    config.guide_hidden_dims = (32, 32)
    config.support_actions = 8
    config.contrastive_states = 16
    config.action_dim = 1
    for k, v in overrides.items():
        config[k] = v
    return config


def _bandit_batch(key, B=128):
    """1D bimodal bandit: the data's actions are -0.7 or +0.7 (half each); only + is rewarded."""
    s_key, n_key = jax.random.split(key)
    sign = jnp.where(jax.random.bernoulli(s_key, 0.5, (B,)), 1.0, -1.0)
    actions = (0.7 * sign + 0.05 * jax.random.normal(n_key, (B,)))[:, None, None]
    return {"observations": jnp.zeros((B, 1)), "actions": actions, "valid": jnp.ones((B, 1)),
            "rewards": (sign > 0).astype(jnp.float32)[:, None], "terminals": jnp.ones((B, 1)),
            "masks": jnp.zeros((B,)), "next_observations": jnp.zeros((B, 1))}


def _train(agent, method, steps, seed):
    def body(agent, key):
        return getattr(agent, method)(_bandit_batch(key))
    agent, infos = jax.jit(lambda a, k: jax.lax.scan(body, a, k))(
        agent, jax.random.split(jax.random.PRNGKey(seed), steps))
    return agent, infos


def _create(config, seed=0):
    return Agent.create(seed, jax.device_get(_bandit_batch(jax.random.PRNGKey(0), 2)), config)


def _bandit_agent(guide_loss):
    """Trained on the bandit: BC pretraining, then critic + guide updates."""
    config = _config(guide_loss=guide_loss, ema_start=0, ema_decay=0.9, beta=2.5)
    config.actor.hidden_dims = (64, 64)
    agent, _ = _train(_create(config), "pretrain", 1000, 1)
    agent, infos = _train(agent, "update", 400, 2)
    assert np.isfinite(np.asarray(infos["guide/loss"])).all()
    return agent


def test_scale_zero_equals_unguided_sampler():
    config = _config()
    config.action_dim = 2
    agent = Agent.create(0, {"observations": np.zeros((2, 3), np.float32),
                             "actions": np.zeros((2, 1, 2), np.float32)}, config)
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    key = jax.random.PRNGKey(7)
    plain, _ = agent.actor.sample(obs, key)
    guided = agent.sample_guided(obs, key, 0.0)
    np.testing.assert_array_equal(np.asarray(guided), np.asarray(plain))
    # ... and the config path (sample_actions) with scale 0 is the same sampler.
    zero = agent.replace(config=type(agent.config)({**agent.config.to_dict(), "guidance_scale": 0.0}))
    np.testing.assert_array_equal(np.asarray(zero.sample_actions(obs, key)[0]), np.asarray(plain))
    # A non-zero scale does change the samples (the guide is live).
    moved = agent.sample_guided(obs, key, 50.0)
    assert float(jnp.abs(moved - plain).max()) > 1e-3


@pytest.mark.parametrize("mode", ["mean", "score"])
def test_guidance_uses_grad_of_j_at_the_noisy_action(mode):
    """The first step's shift equals scale * (std^2 | noise-scale) * grad_x J(s, x_T, t_T)."""
    config = _config(guidance_mode=mode)
    config.action_dim = 2
    config.actor.clip_x0 = 1e6  # x0 clipping would cut the score shift at the noisiest step
    agent = Agent.create(0, {"observations": np.zeros((2, 3), np.float32),
                             "actions": np.zeros((2, 1, 2), np.float32)}, config)
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    key, scale = jax.random.PRNGKey(3), 2.0
    _, plain = agent.sample_guided(obs, key, 0.0, return_chain=True)
    _, guided = agent.sample_guided(obs, key, scale, return_chain=True)
    x_T, t_T = guided.xs[0], guided.steps[0]
    np.testing.assert_array_equal(np.asarray(x_T), np.asarray(plain.xs[0]))
    J = agent.guidance_fn(agent.guide.params, obs)
    grad = jax.grad(lambda x: J(x, jnp.full((8,), t_T, jnp.float32)).sum())(x_T)
    assert float(jnp.abs(grad).max()) > 1e-4
    sched = agent.actor.model.schedule
    if mode == "mean":
        expected = scale * guided.stds[0] ** 2 * grad
    else:  # eps -= s sqrt(1 - abar) g; the DDPM mean's eps coefficient turns it into a mean shift
        abar = sched.alphas_cumprod[t_T]
        abar_prev = sched.alphas_cumprod[guided.steps[1]]
        beta = 1.0 - abar / abar_prev
        x0_shift = scale * (1.0 - abar) / jnp.sqrt(abar) * grad
        expected = jnp.sqrt(abar_prev) * beta / (1.0 - abar) * x0_shift
    np.testing.assert_allclose(np.asarray(guided.means[0] - plain.means[0]), np.asarray(expected),
                               rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("guide_loss,mode,scale", [
    ("regression", "mean", 2.0),
    pytest.param("contrastive", "score", 1.0, marks=pytest.mark.slow)])
def test_guidance_moves_mass_to_the_valued_mode(guide_loss, mode, scale):
    agent = _bandit_agent(guide_loss)
    agent = agent.replace(config=type(agent.config)({**agent.config.to_dict(),
                                                     "guidance_mode": mode}))
    obs = jnp.zeros((1000, 1))
    key = jax.random.PRNGKey(11)
    plain = np.asarray(agent.sample_guided(obs, key, 0.0))[:, 0, 0]
    guided = np.asarray(agent.sample_guided(obs, key, scale))[:, 0, 0]
    # The critic learned the rewarded mode, and the BC actor kept both modes.
    q = agent.q_min(agent.critic.params, jnp.zeros((2, 1)), jnp.array([[[0.7]], [[-0.7]]]))
    assert float(q[0]) > float(q[1]) + 0.5, q
    assert 0.25 < (plain > 0).mean() < 0.75, (plain > 0).mean()
    assert (guided > 0).mean() > 0.85, (guided > 0).mean()
    # Best-of-N by Q alone also picks the rewarded mode.
    best = np.asarray(agent.sample_guided(obs, key, 0.0, num_samples=8))[:, 0, 0]
    assert (best > 0).mean() > 0.95


def test_td_contrastive_finetune_update_runs():
    """The TD critic (guided next chunks), the contrastive guide and actor finetuning: one update."""
    config = _config(critic_mode="td", guide_loss="contrastive", finetune_actor=True,
                     guidance_scale=0.5)
    agent = _create(config)
    new, info = agent.update(_bandit_batch(jax.random.PRNGKey(0), 32))
    for k in ("critic/loss", "guide/loss", "guide/weight_max", "bc/loss", "bc/better_frac"):
        assert np.isfinite(float(info[k])), k
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), agent.actor.params, new.actor.params)
    assert any(jax.tree.leaves(changed))  # finetune_actor does move the actor


def test_end_to_end_runner(pole_datasets, tmp_path):
    """The default agent (IQL critic, regression guide) through the runner, all three phases."""
    from dprl.run.runner import train
    config = _config(guidance_scale=0.5)
    config.action_dim = 0
    tiny(config, pretrain_steps=50, offline_steps=50, online_steps=100, start_online_updates=50,
         online_log_every=50, online_eval_every=100)
    summary = train(config, "pole-right", str(tmp_path), get_agent, progress=False)
    assert summary["agent"] == "guided" and summary["online_steps"] == 100
    assert summary["offline_score"] is not None and summary["online_score"] is not None
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["online_score"] == summary["online_score"]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("critic/loss", "value/loss", "guide/loss", "bc/loss", "eval/normalized_score"):
        assert col in header, col

    # The guidance sweep loads the finished run (the offline-phase end: step 100) and scores
    # every (scale, N) point on the same evaluation seeds.
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments/guidance_sweep.py"), "--task=pole-right",
         f"--run_dir={tmp_path}", "--train=False", "--step=100", f"--out={out}",
         "--scales=0,30", "--num_samples=1,2", "--episodes=3", "--noprogress"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "guidance_sweep.json").read_text())["rows"]
    assert [(r["guidance_scale"], r["num_samples"]) for r in rows] == [
        (0.0, 1), (30.0, 1), (0.0, 2), (30.0, 2)]
    assert all(r["episodes"] == 3 and np.isfinite(r["normalized_score"]) for r in rows)
    assert all(np.isfinite(r["q_of_samples"]) for r in rows)   # the critic on the samples
    assert (out / "guidance_sweep.png").stat().st_size > 0


@pytest.mark.slow
def test_pole_right_guidance_prefers_the_rewarded_side(pole_datasets, tmp_path):
    """BC keeps both sides of the pole; guidance by the learned critic passes on the right."""
    from dprl.run.checkpoint import load_run
    from dprl.envs.vector import evaluate
    from dprl.run.runner import train
    from dprl.envs.tasks import get_task
    config = _config(guidance_scale=1.0)
    config.action_dim = 0
    config.actor.hidden_dims = (128, 128)
    config.critic_hidden_dims = config.guide_hidden_dims = (64, 64)
    tiny(config, pretrain_steps=3000, offline_steps=2000, batch_size=128, steps_per_dispatch=250,
         log_every=1000, eval_episodes=10)
    train(config, "pole-right", str(tmp_path), get_agent, progress=False)
    agent, normalizer, _ = load_run(str(tmp_path), get_agent)
    task = get_task("pole-right")

    def right_rate(scale):
        key = jax.random.PRNGKey(5)

        def policy(obs):
            nonlocal key
            key, k = jax.random.split(key)
            return np.asarray(agent.sample_guided(jnp.asarray(obs), k, scale))
        res = evaluate(policy, task["env_id"], 100, 1, seed=77, normalize=normalizer,
                       score="success", return_episodes=True)
        return np.mean([e["success"] and e.get("side") == "right" for e in res["episodes"]])

    plain, guided = right_rate(0.0), right_rate(3.0)
    assert plain < 0.8, plain                       # BC: both modes
    # Measured once (2026-11, this budget): right-side success 0.14 unguided -> 0.35 guided.
    assert guided > plain + 0.15, (plain, guided)


def test_untrained_guide_samples_unguided_bc():
    """During BC pretraining J is random: acting must equal the unguided sampler (same key)."""
    config = _config(guidance_scale=100.0, num_samples=4)
    agent = _create(config)
    obs = jnp.zeros((3, 1))
    key = jax.random.PRNGKey(3)
    acted, _ = agent.sample_actions(obs, key)
    plain = agent.sample_guided(obs, key, 0.0, 1)
    np.testing.assert_allclose(acted, plain)
    trained = agent.replace(critic_step=jnp.ones((), jnp.int32))
    assert not np.allclose(trained.sample_actions(obs, key)[0], plain)


# ---- QGPO (configs/guided.py:qgpo) ---------------------------------------------------------------
def _qgpo_config(**overrides):
    config = tiny(get_config("qgpo"))
    config.critic_hidden_dims = (32, 32)
    config.guide_hidden_dims = (32, 32)
    config.support_actions = 4
    config.action_dim = 1
    config.reward_scale = 2.0   # a scale != 1 checks where it enters
    for k, v in overrides.items():
        config[k] = v
    return config


def test_qgpo_preset_is_qgpos_method():
    c = get_config("qgpo")
    assert (c.critic_mode, c.guide_loss, c.guidance_mode) == ("softmax", "contrastive", "score")
    assert (c.actor.sampler, c.actor.sampling_steps, c.actor.schedule) == ("dpm_solver", 15,
                                                                           "vp_sde")
    assert c.actor.clip_x0 is None and c.beta == 3.0 and c.q_alpha == 1.0
    assert c.support_actions == 16 and c.contrastive_states == 0 and not c.normalize_q
    assert c.critic_freeze_steps * 2 == c.run.offline_steps
    assert tuple(c.guide_hidden_dims) == (256,) * 4 and c.guide_activation == "silu"
    assert tuple(c.guidance_scales) == (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0)
    a = get_config("qgpo-antmaze")
    assert (a.support_actions, a.reward_scale, a.reward_bias) == (32, 1.0, -1.0)
    assert tuple(a.guidance_scales) == (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    assert get_config().guide_loss == "regression"   # the default is mse-guidance
    with pytest.raises(ValueError, match="reward_scale"):
        _create(_qgpo_config(reward_scale=0.0))      # locomotion: fill in from the dataset


def test_softmax_backup_is_the_hand_computed_in_support_value():
    """The critic's target: r * reward_scale + discount * sum_m softmax(q_alpha Q'_m) Q'_m over
    M unguided BC samples at s' under the target critic, computed here by hand (the update's use
    of it: the slow test below)."""
    from agents.guided import softmax_backup
    q = np.array([[1.0, 2.0, 0.5], [-1.0, -1.0, 3.0]], np.float32)
    for alpha in (1.0, 0.3):
        w = np.exp(alpha * q) / np.exp(alpha * q).sum(1, keepdims=True)
        np.testing.assert_allclose(np.asarray(softmax_backup(jnp.asarray(q), alpha)),
                                   (w * q).sum(1), rtol=1e-6)


@pytest.mark.slow
def test_qgpo_update_backs_up_the_softmax_over_bc_samples():
    """One update's critic target, against its hand computation over the support set."""
    agent = _create(_qgpo_config(q_alpha=0.7))
    batch = _bandit_batch(jax.random.PRNGKey(4), 8)
    batch["masks"] = jnp.ones((8,))
    batch["next_observations"] = jax.random.normal(jax.random.PRNGKey(5), (8, 1))
    _, next_key, *_ = jax.random.split(agent.key, 6)
    M = 4
    nobs = jnp.repeat(batch["next_observations"], M, axis=0)
    support = agent.actor.sample(nobs, next_key)[0]
    qn = np.asarray(agent.q_min(agent.target_critic_params, nobs, support)).reshape(8, M)
    want = []
    for b in range(8):
        w = [math.exp(0.7 * x) for x in qn[b]]
        v = sum(wi * x for wi, x in zip(w, qn[b])) / sum(w)
        want.append(2.0 * float(batch["rewards"][b, 0]) + 0.99 * v)
    _, info = agent.update(batch)
    np.testing.assert_allclose(float(info["critic/target_mean"]), np.mean(want), rtol=1e-5)


def test_q_stops_changing_after_its_freeze_step():
    agent = _create(_qgpo_config(critic_freeze_steps=2))
    batch = _bandit_batch(jax.random.PRNGKey(6), 16)
    states = [agent]
    for _ in range(4):
        agent, info = agent.update(batch)
        states.append(agent)
    same = lambda a, b: all(bool(jnp.all(x == y)) for x, y in zip(  # noqa: E731
        jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not same(states[0].critic.params, states[2].critic.params)   # trained for 2 steps
    assert not same(states[1].critic.params, states[2].critic.params)
    for later in states[3:]:
        assert same(states[2].critic.params, later.critic.params)
        assert same(states[2].target_critic_params, later.target_critic_params)
    assert not same(states[2].guide.params, states[4].guide.params)    # J goes on learning
    assert float(info["critic/frozen"]) == 1.0


def test_qgpo_scale_zero_equals_the_bc_sampler_and_scale_moves_it():
    """With DPM-Solver and score guidance: scale 0 gives the BC actor's samples for the same
    noise (key), bit for bit; a trained-looking J at scale > 0 moves them."""
    agent = _create(_qgpo_config())
    obs = jax.random.normal(jax.random.PRNGKey(1), (32, 1))
    key = jax.random.PRNGKey(7)
    plain, _ = agent.actor.sample(obs, key)
    np.testing.assert_array_equal(np.asarray(agent.sample_guided(obs, key, 0.0)),
                                  np.asarray(plain))
    assert float(jnp.abs(agent.sample_guided(obs, key, 5.0) - plain).max()) > 1e-3


def test_cep_loss_is_minimized_by_beta_q():
    """On a toy support set the CEP loss is smallest, with zero gradient, at J = beta Q + c(s);
    J = Q (beta dropped) or a perturbed J scores worse."""
    from agents.guided import cep_loss
    q = jax.random.normal(jax.random.PRNGKey(0), (5, 16))
    beta = 3.0
    best = beta * q + jnp.arange(5.0)[:, None]            # any per-state constant
    grad = jax.grad(cep_loss)(best, q, beta)
    np.testing.assert_allclose(np.asarray(grad), 0.0, atol=1e-6)
    at_best = float(cep_loss(best, q, beta))
    p = jax.nn.softmax(beta * q, axis=1)
    np.testing.assert_allclose(at_best, float(-(p * jnp.log(p)).sum(1).mean()), rtol=1e-5)
    assert float(cep_loss(q, q, beta)) > at_best + 1e-3
    for seed in range(3):
        noise = 0.3 * jax.random.normal(jax.random.PRNGKey(seed + 1), q.shape)
        assert float(cep_loss(best + noise, q, beta)) > at_best


def test_agents_contrastive_loss_is_cep_of_its_energy_net():
    """The agent's guide loss is cep_loss of J on its support set, all M actions of a state noised
    to one shared step k (as QGPO), with the config's beta: recomputed here by hand."""
    from agents.guided import cep_loss
    from dprl.models.diffusion import q_sample
    agent = _create(_qgpo_config(beta=2.5))
    b, M = 3, 4
    obs = jax.random.normal(jax.random.PRNGKey(1), (b, 1))
    support = jax.random.uniform(jax.random.PRNGKey(2), (b, M, 1, 1), minval=-1, maxval=1)
    q = jax.random.normal(jax.random.PRNGKey(3), (b, M))
    key = jax.random.PRNGKey(4)
    got, _ = agent.guide_contrastive_loss(agent.guide.params, obs, support, q, key)
    k_key, n_key = jax.random.split(key)
    k = jax.random.randint(k_key, (b,), 0, 1000)
    noisy = q_sample(agent.actor.model.schedule, support.reshape(b * M, 1, 1), jnp.repeat(k, M),
                     jax.random.normal(n_key, (b * M, 1, 1)))
    J = agent.guidance_fn(agent.guide.params, jnp.repeat(obs, M, axis=0))(
        noisy, jnp.repeat(k, M).astype(jnp.float32)).reshape(b, M)
    np.testing.assert_allclose(float(got), float(cep_loss(J, q, 2.5)), rtol=1e-6)
    assert abs(float(got) - float(cep_loss(J, q, 1.0))) > 1e-4   # beta matters


# ---- QGPO's support set, drawn once after BC ---------------------------------------------------
def _flat_buffer(n=37, O=2, seed=0):
    from dprl.data.buffer import Buffer
    rng = np.random.default_rng(seed)
    dones = np.zeros(n, np.float32)
    dones[[9, 20, n - 1]] = 1.0
    return Buffer(observations=jnp.asarray(rng.normal(size=(n, O)), jnp.float32),
                  actions=jnp.asarray(rng.uniform(-1, 1, (n, 1)), jnp.float32),
                  rewards=jnp.zeros(n), terminals=jnp.asarray(dones), dones=jnp.asarray(dones),
                  next_observations=jnp.asarray(rng.normal(size=(n, O)), jnp.float32),
                  size=jnp.asarray(n, jnp.int32))


def test_buffer_support_is_drawn_at_every_state_and_carried_by_batches():
    """``with_support``: row i holds the draws at observation i and at next observation i (chunks
    of states, the last one padded), the same for the same key; batches carry the draws at their
    chunk's first observation and last next observation."""
    buf = _flat_buffer()
    M = 3

    def draw(obs, key):   # [b, M, H=1, A=1]: the state's first coordinate, plus the draw's noise
        noise = jax.random.normal(key, (obs.shape[0], M, 1, 1))
        return obs[:, None, None, :1] + 1e-3 * noise

    filled = buf.with_support(draw, jax.random.PRNGKey(0), chunk=8, progress=False)
    sup, nxt = filled.support["support_actions"], filled.support["next_support_actions"]
    assert sup.shape == nxt.shape == (37, M, 1, 1)
    np.testing.assert_allclose(sup[:, :, 0, 0], np.repeat(buf.observations[:, :1], M, 1), atol=5e-3)
    np.testing.assert_allclose(nxt[:, :, 0, 0], np.repeat(buf.next_observations[:, :1], M, 1),
                               atol=5e-3)
    assert float(jnp.abs(sup[:, 0] - sup[:, 1]).max()) > 0          # M different draws
    again = buf.with_support(draw, jax.random.PRNGKey(0), chunk=8, progress=False)
    np.testing.assert_array_equal(again.support["support_actions"], sup)
    batch = filled.sample(jax.random.PRNGKey(3), 64, horizon=4)
    np.testing.assert_allclose(batch["support_actions"][:, :, 0, 0],
                               np.repeat(batch["observations"][:, :1], M, 1), atol=5e-3)
    np.testing.assert_allclose(batch["next_support_actions"][:, :, 0, 0],
                               np.repeat(batch["next_observations"][:, :1], M, 1), atol=5e-3)


def test_qgpo_update_reads_the_precomputed_support():
    """With the support in the batch, the critic's target is the softmax backup over exactly
    those actions (by hand), and the energy net's loss is CEP over the batch's support."""
    agent = _create(_qgpo_config(q_alpha=0.7))
    B, M = 8, 4
    batch = _bandit_batch(jax.random.PRNGKey(4), B)
    batch["masks"] = jnp.ones((B,))
    batch["next_observations"] = jax.random.normal(jax.random.PRNGKey(5), (B, 1))
    batch["next_support_actions"] = jax.random.uniform(jax.random.PRNGKey(6), (B, M, 1, 1),
                                                       minval=-1, maxval=1)
    batch["support_actions"] = jax.random.uniform(jax.random.PRNGKey(7), (B, M, 1, 1),
                                                  minval=-1, maxval=1)
    nobs = jnp.repeat(batch["next_observations"], M, axis=0)
    qn = np.asarray(agent.q_min(agent.target_critic_params, nobs,
                                batch["next_support_actions"].reshape(B * M, 1, 1))).reshape(B, M)
    w = np.exp(0.7 * qn) / np.exp(0.7 * qn).sum(1, keepdims=True)
    want = 2.0 * np.asarray(batch["rewards"][:, 0]) + 0.99 * (w * qn).sum(1)
    new, info = agent.update(batch)
    np.testing.assert_allclose(float(info["critic/target_mean"]), want.mean(), rtol=1e-5)
    # J's loss: CEP of the energy net on the batch's support, valued by the updated target critic.
    _, _, guide_key, *_ = jax.random.split(agent.key, 6)
    obs = jnp.repeat(batch["observations"], M, axis=0)
    q_sup = agent.q_min(new.target_critic_params, obs,
                        batch["support_actions"].reshape(B * M, 1, 1)).reshape(B, M)
    loss, _ = agent.guide_contrastive_loss(agent.guide.params, batch["observations"],
                                           batch["support_actions"], q_sup, guide_key)
    np.testing.assert_allclose(float(info["guide/loss"]), float(loss), rtol=1e-5)


def test_qgpo_run_draws_its_support_once_and_resumes_exactly(pole_datasets, tmp_path,
                                                             monkeypatch):
    """Through the runner: the offline phase trains on the support drawn after BC; a run stopped
    in its offline phase and resumed (the support drawn again from the run's seed) ends with the
    same weights as one run straight through."""
    from dprl.run.runner import train
    config = _qgpo_config(reward_scale=1.0, support_actions=2)
    config.action_dim = 0
    config.actor.sampling_steps = 2

    def run(run_dir, offline_steps):
        tiny(config, pretrain_steps=25, offline_steps=offline_steps, online_steps=0,
             eval_every=10_000, save_every=25)
        config.critic_freeze_steps = 25
        return train(config, "pole-right", str(run_dir), get_agent, progress=False)

    from dprl.data.buffer import Buffer
    drawn = []
    with_support = Buffer.with_support
    monkeypatch.setattr(Buffer, "with_support", lambda self, *a, **k: drawn.append(
        int(self.size)) or with_support(self, *a, **k))
    run(tmp_path / "straight", 50)
    run(tmp_path / "stopped", 25)                # stops after 25 offline steps, checkpointed
    run(tmp_path / "stopped", 50)                # the same run, extended: resumes at step 50
    assert len(drawn) == 3 and drawn[0] > 1000   # once per process, over the whole dataset
    got, want = _metric_rows(tmp_path / "stopped"), _metric_rows(tmp_path / "straight")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    offline = [r for r in want if r["phase"] == "offline"]
    assert offline and all(r["guide/loss"] for r in offline)
    for g, w in zip(got, want):
        for k in w:
            if w[k] and k != "phase":
                assert float(g[k]) == pytest.approx(float(w[k]), rel=1e-5, abs=1e-6), k


def _metric_rows(run_dir) -> list[dict]:
    import csv
    from tests.test_integrity import WALL_CLOCK
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in csv.DictReader(f)]


def test_a_stop_while_drawing_the_support_ends_the_run_and_the_command_resumes(
        pole_datasets, tmp_path, monkeypatch):
    """SIGINT / SIGTERM during the support draw: the run stops at once at its last checkpoint
    (the end of BC) with ``Interrupted``; the same command draws the support again and ends as a
    run that was never stopped."""
    import signal

    from dprl.data.buffer import Buffer
    from dprl.run import rundir
    from dprl.run.runner import train
    config = _qgpo_config(reward_scale=1.0, support_actions=2)
    config.action_dim = 0
    config.actor.sampling_steps = 2
    tiny(config, pretrain_steps=25, offline_steps=25, online_steps=0, eval_every=10_000,
         save_every=25)
    with_support = Buffer.with_support

    def stopped_once(self, *args, **kwargs):
        if not stops:
            stops.append(1)
            rundir._STOP.append(signal.SIGTERM)      # as the handler does on a first signal
        return with_support(self, *args, **kwargs)

    stops = []
    monkeypatch.setattr(Buffer, "with_support", stopped_once)
    with pytest.raises(rundir.Interrupted) as stop:
        train(config, "pole-right", str(tmp_path / "stopped"), get_agent, progress=False)
    assert stop.value.step == 25
    rundir._STOP.clear()
    train(config, "pole-right", str(tmp_path / "stopped"), get_agent, progress=False)
    train(config, "pole-right", str(tmp_path / "straight"), get_agent, progress=False)
    got, want = _metric_rows(tmp_path / "stopped"), _metric_rows(tmp_path / "straight")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        for k in w:
            if w[k] and k != "phase":
                assert float(g[k]) == pytest.approx(float(w[k]), rel=1e-5, abs=1e-6), k
