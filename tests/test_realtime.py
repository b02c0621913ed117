"""Asynchronous chunk execution (dprl/tools/realtime.py) and the samplers' prefix constraint
(dprl/models/inpaint.py): zero delay is synchronous execution, the inpainted prefix is the committed
actions, the joins execute what they say, and bad settings fail before any work."""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dprl.models.actor import default_actor_config, make_actor
from dprl.envs.vector import evaluate
from dprl.models.inpaint import Inpaint, prefix_weights
from dprl.tools.realtime import (JOINS, agent_policy, check_schedule, mean_squared_jerk, run_async)
from tests.conftest import ROOT, tiny

POLE = "dprl/Pole-v0"


def _agent(name: str, horizon: int = 3, model: str = "flow", obs_dim: int = 4):
    """An untrained tiny agent (its random actor acts deterministically for a given key)."""
    from agents import get_agent
    from configs import bc, dppo, dql, guided, qc

    config = tiny({"bc": bc, "dql": dql, "qc": qc, "dppo": dppo, "guided": guided}[name]
                  .get_config())
    config.horizon, config.act_steps, config.action_dim = horizon, horizon, 2
    if name == "bc":
        config.actor.model = model
    if name == "qc":
        config.num_samples, config.critic_hidden_dims = 2, (32, 32)
        config.actor.flow_steps = 3
    if name in ("dql", "dppo", "guided"):
        config.critic_hidden_dims = (32, 32)
        config.actor.diffusion_steps = 4
    if name == "dql":
        config.num_samples = 2
    if name == "dppo":
        config.ft_denoising_steps = 2
    if name == "guided":
        config.guide_hidden_dims = (32, 32)
    example = {"observations": np.zeros((2, obs_dim), np.float32),
               "actions": np.zeros((2, horizon, 2), np.float32)}
    return get_agent(name).create(0, example, config)


# ---- the prefix constraint in the samplers --------------------------------------------------
@pytest.mark.parametrize("model,sampler", [("flow", "ddpm"), ("diffusion", "ddpm"),
                                           ("diffusion", "ddim")])
def test_inpainted_prefix_equals_the_committed_actions(model, sampler):
    cfg = default_actor_config()
    cfg.model, cfg.sampler, cfg.hidden_dims, cfg.diffusion_steps = model, sampler, (32, 32), 8
    actor = make_actor(cfg, 5, 2)
    obs = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
    params = actor.init(jax.random.PRNGKey(1), obs)
    committed = jax.random.uniform(jax.random.PRNGKey(2), (3, 5, 2), minval=-0.9, maxval=0.9)
    inpaint = Inpaint.create(committed, num_fixed=2, overlap=4)
    sample = jax.jit(lambda o, k, i: actor.sample(params, o, k, inpaint=i)[0])
    key = jax.random.PRNGKey(3)
    chunks = sample(obs, key, inpaint)
    np.testing.assert_array_equal(np.asarray(chunks[:, :2]), np.asarray(committed[:, :2]))
    # Best-of-N agents repeat each observation N times: the target is repeated the same way.
    repeated = sample(jnp.repeat(obs, 4, axis=0), key, inpaint)
    np.testing.assert_array_equal(np.asarray(repeated[:, :2]),
                                  np.repeat(np.asarray(committed[:, :2]), 4, axis=0))
    # The guidance pulls the soft-masked steps towards the previous plan (same noise draws).
    free = actor.sample(params, obs, key)[0]
    gap = lambda c: float(jnp.abs(c[:, 2:4] - committed[:, 2:4]).mean())  # noqa: E731
    assert gap(chunks) < gap(free)


def test_no_inpaint_samples_as_before():
    cfg = default_actor_config()
    cfg.model, cfg.hidden_dims = "flow", (32, 32)
    actor = make_actor(cfg, 4, 2)
    obs = jnp.ones((2, 4))
    params = actor.init(jax.random.PRNGKey(1), obs)
    a, _ = actor.sample(params, obs, jax.random.PRNGKey(5))
    b, _ = actor.sample(params, obs, jax.random.PRNGKey(5), inpaint=None)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prefix_weights_are_rtcs_soft_mask():
    w = prefix_weights(8, 2, 6)
    assert w[:2].tolist() == [1.0, 1.0] and w[6:].tolist() == [0.0, 0.0]
    assert np.all(np.diff(w[2:6]) < 0) and 0 < w[5] < w[2] < 1
    c = (6 - 3) / (6 - 2 + 1)
    assert w[3] == pytest.approx(c * np.expm1(c) / np.expm1(1.0))
    assert prefix_weights(4, 2, 2).tolist() == [1.0, 1.0, 0.0, 0.0]


# ---- the executor -------------------------------------------------------------------------
def _sync(agent, horizon, key, episodes=4, seed=5):
    """Synchronous whole-chunk execution (dprl.envs.vector.evaluate) with the same key sequence, and the
    actions it executed."""
    calls = []

    def policy(obs):
        nonlocal key
        key, k = jax.random.split(key)
        chunks = np.asarray(agent.sample_actions(jnp.asarray(obs), k)[0])
        calls.append(chunks)
        return chunks

    result = evaluate(policy, POLE, episodes, horizon, seed=seed, return_episodes=True)
    executed = np.concatenate(calls, axis=1)
    result["actions"] = [executed[i, :e["length"]] for i, e in enumerate(result["episodes"])]
    return result


@pytest.mark.parametrize("name", ["bc", "dql"])
def test_zero_delay_every_join_equals_synchronous_execution(name):
    agent, H, key = _agent(name), 3, jax.random.PRNGKey(11)
    sync = _sync(agent, H, key)
    for join in JOINS:
        res = run_async(agent_policy(agent), POLE, 4, H, 0, join, key, seed=5,
                        return_episodes=True)
        assert res["return_mean"] == sync["return_mean"], join
        for a, b in zip(res["actions"], sync["actions"]):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(res["trajectories"], sync["trajectories"]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["bc", "dql", "qc", "dppo", "guided"])
def test_rtc_executes_the_committed_prefix_of_every_new_chunk(name):
    """Each chunk rtc asks for starts with the actions executed while it was computed."""
    agent, H, d = _agent(name, horizon=4), 4, 2
    policy, requests = agent_policy(agent), []

    def act(obs, key, inpaint):
        chunks = policy(obs, key, inpaint)
        requests.append((inpaint, chunks))
        return chunks

    res = run_async(act, POLE, 3, H, d, "rtc", jax.random.PRNGKey(0), seed=2,
                    return_episodes=True)
    s = H - d
    constrained = [(i, c) for i, c in requests[2:]]     # [0]: the probe, [1]: the first chunk
    assert constrained and all(i is not None for i, _ in constrained)
    for k, (inpaint, chunks) in enumerate(constrained, start=1):
        t = k * s                                         # the request's env step
        np.testing.assert_array_equal(chunks[:, :d], np.asarray(inpaint.target[:, :d]))
        for e, actions in enumerate(res["actions"]):      # what env e executed at t .. t+d-1
            if len(actions) >= t + d:
                np.testing.assert_allclose(actions[t:t + d], chunks[e, :d])


def test_joins_execute_what_they_say():
    """A fake policy whose chunk k predicts ``k + j / 10`` for its step j: naive runs the newest
    arrived chunk, ensemble averages every arrived prediction with ACT's weights."""
    H, A, m = 4, 2, 0.5
    counter = {"k": 0}

    def act(obs, key, inpaint):
        k = counter["k"]
        counter["k"] += 1
        step = (k + np.arange(H) / 10.0) / 100.0
        return np.broadcast_to(step[None, :, None], (obs.shape[0], H, A)).astype(np.float32)

    def executed(join, d, s):
        counter["k"] = 0
        res = run_async(act, POLE, 1, H, d, join, jax.random.PRNGKey(0), exec_horizon=s,
                        ensemble_decay=m, return_episodes=True)
        return res["actions"][0][:, 0] * 100.0

    # naive, d = 1, s = 1: at t >= 1 the newest arrived chunk was requested at t - 1 (step 1).
    naive = executed("naive", 1, 1)
    np.testing.assert_allclose(naive[1:10], np.arange(0, 9) + 0.1, atol=1e-6)
    # ensemble, d = 0, s = 1: chunks requested at t - 3 .. t, oldest weighted most.
    ens = executed("ensemble", 0, 1)
    for t in range(3, 10):
        ks = np.arange(t - 3, t + 1)
        w = np.exp(-m * np.arange(4))
        assert ens[t] == pytest.approx((w * (ks + (t - ks) / 10.0)).sum() / w.sum(), abs=1e-5)


def test_bad_join_or_delay_is_refused_before_any_work():
    def act(*_):
        raise AssertionError("the policy must not be called")

    missing = "dprl/NoSuchEnv-v0"   # building it would raise another error: nothing was built
    with pytest.raises(ValueError, match="Unknown join 'smooth'"):
        run_async(act, missing, 2, 4, 1, "smooth", jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"delay d = 4 must be in \[0, H - 1\]"):
        run_async(act, missing, 2, 4, 4, "naive", jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="rtc needs d <= s"):
        run_async(act, missing, 2, 4, 3, "rtc", jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="exec_horizon s = 3"):
        check_schedule("ensemble", 4, 2, exec_horizon=3)


def test_rtc_refuses_a_policy_that_ignores_the_constraint():
    agent = _agent("bc", model="mse")
    with pytest.raises(ValueError, match="ignores the prefix constraint"):
        run_async(agent_policy(agent), POLE, 2, 3, 1, "rtc", jax.random.PRNGKey(0))


def test_mean_squared_jerk_is_the_third_difference():
    t = np.arange(10.0)[:, None]
    assert mean_squared_jerk(t ** 3) == pytest.approx(36.0)
    assert mean_squared_jerk(np.ones((6, 2))) == 0.0
    assert np.isnan(mean_squared_jerk(np.ones((3, 2))))


@pytest.mark.slow   # ~1-2 min on the 2-core machine (training + compiling the rtc sampler)
def test_realtime_experiment_smoke(tmp_path, pole_datasets):
    """experiments/realtime.py end to end on pole with a few BC steps: every (d, join) cell of the
    run_out schedule is measured or skipped with rtc's reason, and the files are written."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import realtime

    result = realtime.run(str(tmp_path), ["pole"], ["naive", "ensemble", "rtc"], ["run_out"],
                          episodes="3", scale=0.002, progress=False, command="test")
    rows = result["rows"]
    assert [(r["delay"], r["join"]) for r in rows] == [
        (d, j) for d in range(4) for j in ("naive", "ensemble", "rtc")]
    skipped = {(r["delay"], r["join"]) for r in rows if r["skipped"]}
    assert skipped == {(3, "rtc")}
    assert all(np.isfinite(r["score"]) for r in rows if not r["skipped"])
    for path in (result["csv"], result["md"], result["figure"]):
        assert os.path.getsize(path) > 0
    with pytest.raises(ValueError, match="Unknown join"):
        realtime.run(str(tmp_path), ["pole"], ["smooth"], ["run_out"])
