"""DSRL: the executed chunk is the frozen policy's deterministic sample at the chosen noise, the
BC weights never change, DSRL-NA's noise critic regresses onto Q(s, pi_dp(s, w)), the targets
by hand, and the config's errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.dsrl import Agent
from agents.rlpd import tanh_gaussian_sample
from configs.dsrl import get_config
from dprl.models import diffusion, flow
from tests.conftest import random_batch, tiny

H, A, O = 3, 2, 4


def _config(preset="dsrl-na", model="diffusion", **overrides):
    config = tiny(get_config(preset))
    config.action_dim = A
    config.horizon = config.act_steps = H
    config.actor.model = model
    config.actor.hidden_dims = (16, 16, 16)
    config.actor.diffusion_steps = 6
    config.actor.sampling_steps = 3
    config.actor.flow_steps = 3
    config.noise_policy_hidden_dims = (16, 16)
    config.critic_hidden_dims = (16, 16)
    config.run.online_steps = 0
    config.run.pretrain_steps = 0
    for k, v in overrides.items():
        config[k] = v
    return config


def _batch(B=8, seed=0):
    batch = jax.tree.map(jnp.asarray, random_batch(B, H, O, A, seed))
    batch["noise"] = jax.random.uniform(jax.random.PRNGKey(seed + 7), (B, H, A), minval=-1,
                                        maxval=1)
    return batch


def _trained_bc(config, steps=5):
    """An agent whose BC policy has had a few BC steps (not the initial weights)."""
    batch = _batch()
    agent = Agent.create(0, batch, config)
    for _ in range(steps):
        agent, _ = agent.pretrain(batch)
    return agent, batch


# ---- acting: pi_dp(s, w) at pi_w's noise --------------------------------------------------------
@pytest.mark.parametrize("model", ["diffusion", "flow"])
def test_executed_chunk_is_the_frozen_policys_deterministic_sample_at_the_chosen_noise(model):
    config = _config(model=model, noise_bound=1.5)
    agent, batch = _trained_bc(config)
    obs, key = batch["observations"], jax.random.PRNGKey(3)
    chunks, aux = agent.sample_actions(obs, key)
    # The noise is bound * tanh of pi_w's Gaussian draw with the acting key.
    mean, log_std = agent.policy_net.apply(agent.noise_policy.params, obs)
    squashed, _ = tanh_gaussian_sample(mean, log_std, key)
    w = 1.5 * np.asarray(squashed).reshape(-1, H, A)
    np.testing.assert_allclose(aux["noise"], w, rtol=1e-5, atol=1e-6)
    assert np.abs(w).max() <= 1.5
    # The chunk is the sampler run deterministically from that noise, with the acting weights.
    fn = lambda o, x, t: agent.actor.model.apply(agent.actor.policy_params, o, x, t)  # noqa: E731
    if model == "flow":
        want, _ = flow.sample(fn, obs, jax.random.PRNGKey(99), (H, A), num_steps=3,
                              initial_noise=jnp.asarray(w))
    else:
        want, _ = diffusion.sample(fn, agent.actor.model.schedule, obs, jax.random.PRNGKey(99),
                                   (H, A), method="ddim", eta=0.0, num_steps=3,
                                   initial_noise=jnp.asarray(w))
    np.testing.assert_allclose(chunks, want, rtol=1e-5, atol=1e-5)
    # Another noise gives another chunk (the noise steers the policy).
    other, _ = agent.sample_actions(obs, jax.random.PRNGKey(4))
    assert not np.allclose(other, chunks, atol=1e-3)


@pytest.mark.parametrize("preset", ["dsrl-na", "dsrl-sac"])
def test_updates_never_change_the_bc_policy_and_train_the_rest(preset):
    config = _config(preset)
    agent, batch = _trained_bc(config)
    bc_before = jax.device_get((agent.actor.params, agent.actor.ema_params, agent.actor.opt_state))
    new = agent
    for i in range(4):
        new, info = new.update(_batch(seed=i))
        assert all(np.isfinite(float(v)) for v in info.values())
    for x, y in zip(jax.tree.leaves(bc_before),
                    jax.tree.leaves((new.actor.params, new.actor.ema_params,
                                     new.actor.opt_state))):
        np.testing.assert_array_equal(x, y)
    trained = [(agent.noise_policy.params, new.noise_policy.params),
               (agent.critic.params, new.critic.params),
               (agent.temperature.params, new.temperature.params)]
    if preset == "dsrl-na":
        trained.append((agent.noise_critic.params, new.noise_critic.params))
    for old, cur in trained:
        assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(old),
                                                         jax.tree.leaves(cur)))


# ---- the critics' targets -----------------------------------------------------------------------
@pytest.mark.parametrize("preset,discounting", [("dsrl-na", "chunk"), ("dsrl-na", "step"),
                                                ("dsrl-sac", "chunk")])
def test_td_target_by_hand(preset, discounting):
    """NA: R + gamma' mask (min_e Q'_e(s', pi_dp(s', w')) - alpha log pi_w(w'|s')); SAC: the
    same with Q'_e(s', w' / bound); R, gamma' per ``chunk_discount``."""
    config = _config(preset, chunk_discount=discounting, discount=0.9, init_temperature=0.3)
    agent, batch = _trained_bc(config)
    batch["masks"] = batch["masks"].at[2].set(0.0)
    batch["valid"] = batch["valid"].at[3, 2:].set(0.0)
    agent = agent.replace(target_critic_params=jax.tree.map(lambda p: 1.3 * p + 0.05,
                                                            agent.target_critic_params))
    key = jax.random.PRNGKey(11)
    next_obs = batch["next_observations"]
    mean, log_std = agent.policy_net.apply(agent.noise_policy.params, next_obs)
    squashed, logp = tanh_gaussian_sample(mean, log_std, key)
    squashed = squashed.reshape(-1, H, A)
    if preset == "dsrl-na":
        fn = lambda o, x, t: agent.actor.model.apply(agent.actor.policy_params, o, x, t)  # noqa
        inputs, _ = diffusion.sample(fn, agent.actor.model.schedule, next_obs,
                                     jax.random.PRNGKey(0), (H, A), method="ddim", eta=0.0,
                                     num_steps=3, initial_noise=agent.config.noise_bound * squashed)
    else:
        inputs = squashed
    q = np.asarray(agent.critic_net.apply(agent.target_critic_params, next_obs, inputs)).min(0)
    soft = q - 0.3 * np.asarray(logp)
    r, v, m = (np.asarray(batch[k]) for k in ("rewards", "valid", "masks"))
    if discounting == "chunk":
        want = (r * v).sum(1) + 0.9 * m * soft
    else:
        want = (r * v * 0.9 ** np.arange(H)).sum(1) + 0.9 ** v.sum(1) * m * soft
    np.testing.assert_allclose(agent.td_target(batch, key), want, rtol=1e-4, atol=1e-5)


# ---- DSRL-NA's noise critic ---------------------------------------------------------------------
def test_noise_critic_loss_is_the_regression_onto_q_at_the_decoded_prior_noise():
    config = _config("dsrl-na", noise_bound=2.0)
    agent, batch = _trained_bc(config)
    obs, key = batch["observations"], jax.random.PRNGKey(5)
    loss, _ = agent.noise_critic_loss(agent.noise_critic.params, agent.critic.params, obs, key)
    w = jax.random.normal(key, (obs.shape[0], H, A))
    fn = lambda o, x, t: agent.actor.model.apply(agent.actor.policy_params, o, x, t)  # noqa
    a, _ = diffusion.sample(fn, agent.actor.model.schedule, obs, jax.random.PRNGKey(0), (H, A),
                            method="ddim", eta=0.0, num_steps=3, initial_noise=w)
    target = np.asarray(agent.critic_net.apply(agent.critic.params, obs, a))       # [E, B]
    q = np.asarray(agent.critic_net.apply(agent.noise_critic.params, obs, w / 2.0))
    assert np.isclose(float(loss), 0.5 * ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_noise_critic_learns_q_of_the_decoded_noise():
    """Distillation alone, against a fixed action critic Q(s, a) = -|a - c|^2 summed over the
    chunk (an analytic critic in place of the network): afterwards Q^w(s, w) predicts
    Q(s, pi_dp(s, w)) on fresh noise far better than a constant, and far better than Q(s, w)
    (the noise read as if it were the action: what a critic that skipped pi_dp would learn)."""
    config = _config("dsrl-na", noise_bound=2.0, critic_lr=3e-3, num_critics=1,
                     critic_hidden_dims=(64, 64))
    agent, batch = _trained_bc(config, steps=30)
    c = jnp.array([0.5, -0.3])

    class Analytic:  # Q(s, a) = -sum |a - c|^2, one head
        @staticmethod
        def apply(params, obs, actions):
            return -((actions.reshape(actions.shape[0], H, A) - c) ** 2).sum((1, 2))[None]

    def loss_fn(params, key, obs):
        w = jax.random.normal(key, (obs.shape[0], H, A))
        target = Analytic.apply(None, obs, agent.decode(obs, w))
        q = agent.critic_net.apply(params, obs, w / 2.0)
        return 0.5 * ((q - target) ** 2).mean()

    @jax.jit
    def step(state, key):
        k1, k2 = jax.random.split(key)
        obs = jax.random.normal(k1, (64, O))
        grads = jax.grad(loss_fn)(state.params, k2, obs)
        return state.apply_gradients(grads=grads), None

    state, _ = jax.lax.scan(step, agent.noise_critic, jax.random.split(jax.random.PRNGKey(0), 1500))
    obs = jax.random.normal(jax.random.PRNGKey(1), (512, O))
    w = jax.random.normal(jax.random.PRNGKey(2), (512, H, A))
    truth = np.asarray(Analytic.apply(None, obs, agent.decode(obs, w)))[0]
    pred = np.asarray(agent.critic_net.apply(state.params, obs, w / 2.0))[0]
    naive = np.asarray(Analytic.apply(None, obs, w))[0]
    err = np.mean((pred - truth) ** 2)
    assert err < 0.2 * np.var(truth), (err, np.var(truth))
    assert err < 0.2 * np.mean((naive - truth) ** 2)


# ---- errors before any work ---------------------------------------------------------------------
def test_bad_settings_fail_before_any_work():
    batch = _batch()
    with pytest.raises(ValueError, match="variant"):
        Agent.create(0, batch, _config(variant="td3"))
    with pytest.raises(ValueError, match="noise_bound"):
        Agent.create(0, batch, _config(noise_bound=0.0))
    with pytest.raises(ValueError, match="act_steps"):
        Agent.create(0, batch, _config(act_steps=1))
    with pytest.raises(ValueError, match="offline_steps=0"):
        config = _config("dsrl-sac")
        config.run.offline_steps = 100
        Agent.create(0, batch, config)
    with pytest.raises(ValueError, match="offline_ratio=0"):
        config = _config("dsrl-sac")
        config.run.online_steps, config.run.offline_ratio = 100, 0.5
        Agent.create(0, batch, config)
    with pytest.raises(ValueError, match="preset"):
        get_config("dsrl-td3")


def test_presets_are_the_references_gym_values():
    c = get_config()
    assert (c.variant, c.noise_bound, c.noise_policy_hidden_dims, c.num_critics) == \
        ("na", 1.5, (128, 128, 128), 2)
    assert (c.horizon, c.actor.sampler, c.actor.sampling_steps, c.actor.diffusion_steps) == \
        (4, "ddim", 5, 20)
    assert get_config("dsrl-sac:walker2d").noise_bound == 2.5
    assert get_config("dsrl-na:halfcheetah").critic_hidden_dims == (1024,) * 3


# ---- starting from another agent's BC policy ----------------------------------------------------
@pytest.mark.slow
def test_init_from_takes_another_agents_bc_policy(tmp_path, pole_datasets):
    """A BC run's acting weights (its EMA) become pi_dp, with its normalizer; the rest is fresh.
    A BC policy of another network is refused with the differing keys named."""
    from agents import get_agent
    from configs.bc import get_config as bc_config
    from dprl.run.checkpoint import load_run
    from dprl.run.runner import train

    bc = tiny(bc_config(), pretrain_steps=30, online_steps=0, save_every=30)
    bc.horizon = bc.act_steps = 2
    bc.actor.diffusion_steps = 6
    train(bc, "pole-right", str(tmp_path / "bc"), get_agent, progress=False)

    def dsrl(**actor):
        config = tiny(get_config(), pretrain_steps=0, online_steps=0,
                      init_from=str(tmp_path / "bc"))
        config.horizon = config.act_steps = 2
        config.actor = bc.actor.copy_and_resolve_references()
        config.actor.update(sampler="ddim", sampling_steps=3, **actor)
        config.noise_policy_hidden_dims = config.critic_hidden_dims = (16, 16)
        return config

    train(dsrl(), "pole-right", str(tmp_path / "dsrl"), get_agent, progress=False)
    theirs, their_norm, _ = load_run(tmp_path / "bc", get_agent)
    ours, our_norm, _ = load_run(tmp_path / "dsrl", get_agent)
    for a, b in zip(jax.tree.leaves(ours.actor.policy_params),
                    jax.tree.leaves(theirs.actor.ema_params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(our_norm.mean, their_norm.mean)
    with pytest.raises(ValueError, match="hidden_dims"):
        train(dsrl(hidden_dims=(16, 16)), "pole-right", str(tmp_path / "bad"), get_agent,
              progress=False)


# ---- DSRL-SAC in a run: the replay buffer keeps the noise that acted -------------------------------
def test_dsrl_sac_runs_online_on_the_noise_that_acted(tmp_path, pole_datasets):
    """A DSRL-SAC run (BC stage, then online) stores each executed chunk's noise with its rows:
    the frozen policy decodes every stored chunk start's noise into the actions that were
    executed; sampled batches start at chunk starts and carry that noise; the run resumes with
    a longer online phase from its checkpointed buffer."""
    from agents import get_agent
    from dprl.run.checkpoint import load_run
    from dprl.run.runner import Run, train

    def config(online_steps):
        c = tiny(get_config("dsrl-sac"), pretrain_steps=25, online_steps=online_steps,
                 start_online_updates=8, utd=0.5, save_every=40)
        c.horizon = c.act_steps = 2
        c.actor.diffusion_steps, c.actor.sampling_steps = 6, 3
        c.actor.hidden_dims = (16, 16, 16)  # the residual MLP of DPPO's policy (the reference's)
        c.noise_policy_hidden_dims = c.critic_hidden_dims = (16, 16)
        return c

    run_dir = str(tmp_path / "sac")
    train(config(40), "pole-right", run_dir, get_agent, progress=False)
    summary = train(config(80), "pole-right", run_dir, get_agent, progress=False)
    assert summary["online_steps"] == 80
    run = Run(config(80), "pole-right", run_dir, get_agent, progress=False)
    agent, buf = run.agent, run.online
    n = int(buf.size)
    assert n >= 80
    step = np.asarray(buf.chunk_step[:n])
    starts = np.flatnonzero(step == 0)
    assert set(np.unique(step)) <= {0, 1} and len(starts) >= n // 2
    obs = np.asarray(buf.observations)[starts]
    noise = np.asarray(buf.acting["noise"])[starts]
    assert np.abs(noise).max() <= agent.config.noise_bound and np.abs(noise).max() > 0
    decoded = np.clip(np.asarray(agent.decode(jnp.asarray(obs), jnp.asarray(noise))), -1, 1)
    actions = np.asarray(buf.actions)
    for j, i in enumerate(starts):
        width = 2 if i + 1 < n and step[i + 1] == 1 else 1
        np.testing.assert_allclose(actions[i:i + width], decoded[j, :width], atol=1e-4)
    batch = buf.sample(jax.random.PRNGKey(0), 64, horizon=2)
    assert batch["noise"].shape == (64, *agent.noise_shape)
    first = np.asarray(batch["observations"])
    rows = [np.flatnonzero((np.asarray(buf.observations)[:n] == o).all(1)) for o in first]
    assert all(step[r].min() == 0 for r in rows)
    run.close()
