"""Q-chunking: the h-step target, best-of-N selection, a chunked critic that must pick the
rewarded mode, the waypoint-chain task, and an end-to-end run through the runner."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import get_agent
from agents.qc import FQL, Agent, BestOfN, aggregate, select_best
from configs.qc import PRESETS, get_config
from dprl.run.config import load_config_file
from tests.conftest import python_chunk_target, random_batch, tiny


def _config(horizon=5, preset="qc", **overrides):
    config = tiny(get_config(preset))
    if horizon is not None:
        config.horizon = horizon
        config.act_steps = horizon if config.action_chunking else 1
    config.action_dim = 2
    config.critic_hidden_dims = (32, 32)
    config.num_samples = 4
    config.actor.flow_steps = 3
    for k, v in overrides.items():
        config[k] = v
    return config


def _batch(B=6, H=5, O=4, A=2, seed=0):
    return random_batch(B, H, O, A, seed)


# ---- the h-step target -------------------------------------------------------------------------
def test_update_regresses_on_the_h_step_target_from_the_target_critic():
    """The update's target = the h-step return of (r, ..., Q'(s', best-of-N a')), same keys."""
    config = _config(horizon=5, discount=0.9)
    batch = jax.tree.map(jnp.asarray, _batch(B=8, O=4))
    batch["terminals"] = batch["terminals"].at[1, 2].set(1.0)
    batch["valid"] = batch["valid"].at[1, 3:].set(0.0)
    batch["masks"] = batch["masks"].at[1].set(0.0)
    agent = Agent.create(0, batch, config)
    # Make the target critic differ from the online one, so using the wrong net shows.
    agent = agent.replace(target_critic_params=jax.tree.map(lambda p: p * 1.5 + 0.1,
                                                            agent.target_critic_params))
    _, next_key, _ = jax.random.split(agent.key, 3)
    next_chunks, _ = agent.best_of_n(agent.critic.params, batch["next_observations"], next_key)
    next_q = aggregate(agent.critic_net.apply(agent.target_critic_params,
                                              batch["next_observations"], next_chunks), "mean")
    want = python_chunk_target(np.asarray(batch["rewards"]), np.asarray(batch["valid"]),
                          np.asarray(batch["terminals"]), np.asarray(next_q), 0.9)
    _, info = agent.update(batch)
    assert np.isclose(float(info["critic/target_mean"]), want.mean(), rtol=1e-4, atol=1e-5)


# ---- best-of-N ---------------------------------------------------------------------------------
def test_select_best_picks_the_argmax():
    key = jax.random.PRNGKey(0)
    candidates = jax.random.normal(key, (7, 5, 3, 2))
    scores = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    got = np.asarray(select_best(candidates, scores))
    best = np.argmax(np.asarray(scores), axis=1)
    np.testing.assert_array_equal(got, np.asarray(candidates)[np.arange(7), best])


def test_sample_actions_returns_the_highest_q_candidate():
    config = _config(horizon=3, num_samples=6)
    batch = _batch(B=5, H=3, O=4)
    agent = Agent.create(1, batch, config)
    obs, key = jnp.asarray(batch["observations"]), jax.random.PRNGKey(3)
    chunks, aux = agent.sample_actions(obs, key)
    cands, q = agent.candidates(agent.critic.params, obs, key)
    assert chunks.shape == (5, 3, 2) and cands.shape == (5, 6, 3, 2)
    best = np.argmax(np.asarray(q), axis=1)
    np.testing.assert_allclose(np.asarray(chunks), np.asarray(cands)[np.arange(5), best],
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(aux["q"]), np.asarray(q).max(1), atol=1e-6)
    # the candidates are distinct samples, so the choice is not trivial
    assert np.asarray(cands).std(axis=1).mean() > 1e-3


def test_q_agg_min_and_mean():
    qs = jnp.array([[1.0, 5.0], [3.0, 2.0]])
    np.testing.assert_allclose(np.asarray(aggregate(qs, "min")), [1.0, 2.0])
    np.testing.assert_allclose(np.asarray(aggregate(qs, "mean")), [2.0, 3.5])


@pytest.mark.parametrize("horizon,model", [(1, "flow"), (4, "diffusion")])
def test_variants_update_and_act(horizon, model):
    """h = 1 (BFN) and a diffusion behaviour policy run through update and act."""
    config = _config(horizon=horizon)
    config.actor.model = model
    config.actor.diffusion_steps = 3
    batch = jax.tree.map(jnp.asarray, _batch(B=8, H=horizon, O=4))
    agent = Agent.create(0, batch, config)
    agent, info = agent.update(batch)  # includes the BC step that pretrain runs alone
    assert all(np.isfinite(float(v)) for v in info.values())
    chunks, _ = agent.sample_actions(batch["observations"], jax.random.PRNGKey(0))
    assert chunks.shape == (8, horizon, 2) and float(jnp.abs(chunks).max()) <= 1.0


def test_act_steps_must_equal_horizon():
    config = _config(horizon=5)
    config.act_steps = 2
    with pytest.raises(ValueError, match="act_steps"):
        Agent.create(0, _batch(), config)


# ---- the paper's variants (configs/qc.py presets) ----------------------------------------------
@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_preset_builds_updates_and_acts(preset):
    """Every method of the paper: create, one update (all its losses finite, every trained network
    changed), actions of the preset's shape in [-1, 1]."""
    config = _config(horizon=None, preset=preset)
    config.actor.flow_steps = 2
    batch = jax.tree.map(jnp.asarray, _batch(B=8, H=config.horizon, O=4))
    agent = Agent.create(0, batch, config)
    fql = config.policy_extraction == "one_step"
    assert isinstance(agent.extraction, FQL if fql else BestOfN)
    new, info = agent.update(batch)
    assert all(np.isfinite(float(v)) for v in info.values()), info
    trained = ["actor", "critic"] + (["mu"] if fql else [])
    for name in trained:
        before, after = getattr(agent, name).params, getattr(new, name).params
        diff = sum(float(jnp.abs(a - b).sum()) for a, b in
                   zip(jax.tree.leaves(before), jax.tree.leaves(after)))
        assert diff > 0, f"{preset}: {name} was not updated"
    if fql:
        assert "actor/distill_loss" in info and "actor/q_loss" in info
    actions, _ = new.sample_actions(batch["observations"], jax.random.PRNGKey(0))
    executed = config.horizon if config.action_chunking else 1
    assert actions.shape == (8, executed, 2) and config.act_steps == executed
    assert float(jnp.abs(actions).max()) <= 1.0


def test_presets_carry_the_papers_values():
    """The README commands of the QC repository: N, h, chunking, alpha per method."""
    want = {"qc": ("best_of_n", 5, True, 32), "bfn": ("best_of_n", 1, True, 4),
            "bfn-n": ("best_of_n", 5, False, 4), "qc-fql": ("one_step", 5, True, None),
            "fql": ("one_step", 1, True, None), "fql-n": ("one_step", 5, False, None)}
    for preset, (extraction, h, chunking, n) in want.items():
        c = load_config_file(f"configs/qc.py:{preset}")
        assert (c.policy_extraction, c.horizon, c.action_chunking) == (extraction, h, chunking), \
            preset
        assert c.act_steps == (h if chunking else 1)
        if n is not None:
            assert c.num_samples == n
        assert c.alpha == 100.0 and c.discount == 0.99 and c.tau == 0.005
        assert c.actor_lr == c.critic_lr == 3e-4 and c.grad_clip == 0.0
        assert c.run.batch_size == 256 and c.num_critics == 2 and c.q_agg == "mean"
        assert c.critic_hidden_dims == (512,) * 4 and c.actor.hidden_dims == (512,) * 4
        assert c.critic_layer_norm and c.actor.flow_steps == 10 and not c.normalize_q_loss
        assert not c.run.normalize_obs and c.run.start_online_updates == 5000
    assert load_config_file("configs/qc.py").preset == "qc"
    with pytest.raises(ValueError, match="qc-fql"):
        get_config("qcfql")


def test_without_chunking_act_steps_must_be_one():
    config = _config(horizon=None, preset="bfn-n")
    config.act_steps = 5
    with pytest.raises(ValueError, match="act_steps=1"):
        Agent.create(0, _batch(), config)


def test_bfn_n_target_is_a_python_n_step_return_over_single_actions():
    """BFN-n: Q(s_t, a_t) regresses on sum_{i<n} gamma^i r_{t+i} + gamma^n Q'(s_{t+n}, a'), a' the
    best of N *single* actions from the BC flow at s_{t+n} (chosen by the online critic, valued
    by the target critic), with terminals and truncations as in the chunked target."""
    gamma = 0.9
    config = _config(horizon=None, preset="bfn-n", discount=gamma, num_samples=6)
    batch = jax.tree.map(jnp.asarray, _batch(B=8, H=5, O=4, seed=3))
    batch["terminals"] = batch["terminals"].at[1, 2].set(1.0)
    batch["valid"] = batch["valid"].at[1, 3:].set(0.0).at[2, 3:].set(0.0)
    batch["masks"] = batch["masks"].at[1].set(0.0)
    agent = Agent.create(0, batch, config)
    agent = agent.replace(target_critic_params=jax.tree.map(lambda p: p * 1.5 + 0.1,
                                                            agent.target_critic_params))
    key = jax.random.PRNGKey(7)
    got = np.asarray(agent.td_target(batch, key))
    # a' by hand: the N single-action candidates, argmax of the online critic's mean Q.
    next_obs = batch["next_observations"]
    cands, _ = agent.candidates(agent.critic.params, next_obs, key)       # [B, N, 1, A]
    assert cands.shape == (8, 6, 1, 2)
    online_q = np.stack([np.asarray(agent.critic_net.apply(agent.critic.params, next_obs,
                                                      cands[:, i])).mean(0) for i in range(6)], 1)
    best = np.asarray(cands)[np.arange(8), online_q.argmax(1)]            # [B, 1, A]
    next_q = np.asarray(agent.critic_net.apply(agent.target_critic_params, next_obs,
                                          jnp.asarray(best))).mean(0)
    want = python_chunk_target(np.asarray(batch["rewards"]), np.asarray(batch["valid"]),
                          np.asarray(batch["terminals"]), next_q, gamma)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The critic sees the first action only: the rest of the sequence does not change its loss.
    target = jnp.asarray(want, jnp.float32)
    loss, _ = agent.critic_loss(agent.critic.params, batch, target)
    other = dict(batch, actions=batch["actions"].at[:, 1:].set(0.7))
    loss_other, _ = agent.critic_loss(agent.critic.params, other, target)
    assert float(loss) == float(loss_other)
    changed = dict(batch, actions=batch["actions"].at[:, 0].set(0.7))
    assert float(agent.critic_loss(agent.critic.params, changed, target)[0]) != float(loss)


def test_best_of_n_without_chunking_picks_the_argmax_q_single_action():
    config = _config(horizon=None, preset="bfn-n", num_samples=5)
    batch = _batch(B=4, H=5, O=4)
    agent = Agent.create(2, batch, config)
    obs, key = jnp.asarray(batch["observations"]), jax.random.PRNGKey(11)
    actions, aux = agent.sample_actions(obs, key)
    cands, q = agent.candidates(agent.critic.params, obs, key)
    best = np.argmax(np.asarray(q), axis=1)
    np.testing.assert_allclose(np.asarray(actions), np.asarray(cands)[np.arange(4), best],
                               atol=1e-6)
    assert actions.shape == (4, 1, 2)


# ---- the one-step policy (QC-FQL, FQL, FQL-n) ---------------------------------------------------
def _student_is_teacher_plus(agent, offset_of):
    """A stand-in for mu(s, z): the BC flow's sample from the same z plus a learnable offset."""
    from dprl.models.teacher import teacher_actions

    def student(self, params, observations, noise):
        flow = teacher_actions(agent.actor.model, agent.actor.params, observations, noise)
        return flow + offset_of(params)
    return student


def test_distillation_loss_is_zero_when_mu_is_the_flow_from_the_same_noise(monkeypatch):
    """With mu(s, z) := flow(s, z) the agent's distillation term is exactly 0, which holds only
    if teacher and student get the same z; an offset d gives d^2, and the gradient step of the
    whole actor loss (alpha = 100) shrinks the offset, i.e. moves mu toward the flow."""
    config = _config(horizon=None, preset="qc-fql")
    batch = jax.tree.map(jnp.asarray, _batch(B=16, H=5, O=4))
    agent = Agent.create(0, batch, config)
    monkeypatch.setattr(FQL, "student", _student_is_teacher_plus(agent, lambda p: p["d"]))
    key = jax.random.PRNGKey(5)
    fql_loss = lambda p: agent.extraction.loss(p, agent, batch, key)  # noqa: E731
    _, info = fql_loss({"d": jnp.zeros((5, 2))})
    assert float(info["actor/distill_loss"]) == 0.0
    d = jnp.full((5, 2), 0.3)
    loss_fn = lambda p: fql_loss(p)[0]  # noqa: E731
    _, info = fql_loss({"d": d})
    np.testing.assert_allclose(float(info["actor/distill_loss"]), 0.09, rtol=1e-5)
    grad = jax.grad(loss_fn)({"d": d})["d"]
    stepped = d - 1e-3 * grad
    assert float(jnp.abs(stepped).mean()) < float(jnp.abs(d).mean())
    assert float(fql_loss({"d": stepped})[1]["actor/distill_loss"]) < 0.09


def test_one_step_policy_learns_the_flow_map():
    """Training the real mu network on the agent's loss brings mu(s, z) close to flow(s, z) on
    noises it never saw (alpha = 100 dominates the Q term at these scales)."""
    from dprl.models.teacher import teacher_actions
    from dprl.models.training import apply_loss

    config = _config(horizon=None, preset="fql", actor_lr=3e-3)
    batch = jax.tree.map(jnp.asarray, _batch(B=64, H=1, O=4))
    agent = Agent.create(0, batch, config)
    obs = batch["observations"]
    z = jax.random.normal(jax.random.PRNGKey(99), (64, 1, 2))
    flow = teacher_actions(agent.actor.model, agent.actor.params, obs, z)

    def gap(params):
        return float(jnp.mean((agent.extraction.student(params, obs, z) - flow) ** 2))

    @jax.jit
    def step(state, key):
        return apply_loss(state, lambda p: agent.extraction.loss(p, agent, batch, key),
                          "actor")[0]

    state, before = agent.mu, gap(agent.mu.params)
    for k in jax.random.split(jax.random.PRNGKey(1), 150):
        state = step(state, k)
    after = gap(state.params)
    assert after < 0.25 * before, (before, after)


def test_one_step_loss_q_term_moves_actions_up_q():
    """alpha = 0: the loss is -Q(s, clip(mu)); a gradient step moves mu toward Q's maximum."""
    from dprl.models.one_step import one_step_loss

    peak = jnp.array([[[0.5, -0.2]]])
    q_fn = lambda a: -jnp.sum((a - peak) ** 2, axis=(1, 2))  # noqa: E731
    student = jnp.zeros((1, 1, 2))
    loss = lambda s: one_step_loss(s, jnp.zeros_like(s), q_fn, alpha=0.0)[0]  # noqa: E731
    moved = student - 0.1 * jax.grad(loss)(student)
    assert float(jnp.sum((moved - peak) ** 2)) < float(jnp.sum((student - peak) ** 2))
    # A large alpha pulls toward the teacher instead, against Q.
    teacher = jnp.array([[[-0.5, 0.5]]])
    loss2 = lambda s: one_step_loss(s, teacher, q_fn, alpha=10.0)[0]  # noqa: E731
    moved2 = student - 0.01 * jax.grad(loss2)(student)
    assert float(jnp.sum((moved2 - teacher) ** 2)) < float(jnp.sum((student - teacher) ** 2))


def test_a_diffusion_teacher_samples_ddim_eta_0_from_the_given_noise():
    """DDPM draws fresh noise at every step, so a DDPM-configured diffusion actor is distilled
    through its deterministic sampler: DDIM with eta 0 from the same initial noise (and a DDPM
    sample from that noise differs)."""
    from dprl.models.teacher import teacher_actions

    config = _config(horizon=None, preset="qc-fql")
    config.actor.model = "diffusion"
    config.actor.sampler = "ddpm"
    batch = jax.tree.map(jnp.asarray, _batch(B=8, H=5, O=4))
    agent = Agent.create(0, batch, config)
    model, params, obs = agent.actor.model, agent.actor.params, batch["observations"]
    z = jax.random.normal(jax.random.PRNGKey(3), (8, 5, 2))
    teacher = teacher_actions(model, params, obs, z)
    ddim = model.sample(params, obs, jax.random.PRNGKey(11), initial_noise=z, method="ddim",
                        eta=0.0)[0]
    ddpm = model.sample(params, obs, jax.random.PRNGKey(11), initial_noise=z)[0]
    np.testing.assert_allclose(teacher, ddim, atol=1e-6)
    assert float(jnp.abs(teacher - ddpm).max()) > 1e-3


# ---- learning: the chunked critic must pick the rewarded mode ------------------------------------
def _right_rate(agent, normalizer, episodes=50):
    from dprl.envs.vector import evaluate
    key = jax.random.PRNGKey(123)

    def policy(obs):
        nonlocal key
        key, k = jax.random.split(key)
        return np.asarray(agent.sample_actions(jnp.asarray(obs), k)[0])

    result = evaluate(policy, "dprl/PoleRight-v0", episodes, agent.config.act_steps, seed=500,
                      normalize=normalizer)
    return result["return_mean"]  # reward 1 only for passing on the right


@pytest.mark.slow
def test_qc_prefers_the_rewarded_mode_on_pole_right(pole_datasets):
    """BC over chunks passes right ~half the time; QC's best-of-N under the chunk critic must
    clearly prefer the right side (a broken target or selection stays near BC's rate)."""
    import ml_collections

    from dprl.data.buffer import Buffer
    from dprl.data.offline import Normalizer, load_dataset
    from dprl.run.updates import fused_updates

    data = load_dataset(pole_datasets["pole-right"])
    normalizer = Normalizer.fit(data.observations)
    offline = Buffer.from_offline(data, normalizer)
    config = _config(horizon=5, num_samples=8, tau=0.02)
    config.actor.hidden_dims = (64, 64)
    config.critic_hidden_dims = (64, 64)
    config.actor.activation = config.critic_activation = "relu"
    config.actor.flow_steps = 5
    example = jax.device_get(offline.sample(jax.random.PRNGKey(0), 2, 5))
    agent = Agent.create(0, example, config)
    kw = dict(batch_size=64, horizon=5, obs_history=1)
    agent, _ = fused_updates(agent, offline, None, jax.random.PRNGKey(1), num_steps=1500,
                             method="pretrain", **kw)
    agent, info = fused_updates(agent, offline, None, jax.random.PRNGKey(2), num_steps=800,
                                method="update", **kw)
    bc_cfg = ml_collections.ConfigDict(agent.config.to_dict())
    bc_cfg.num_samples = 1  # best-of-1 = the BC policy itself
    bc_rate = _right_rate(agent.replace(config=ml_collections.FrozenConfigDict(bc_cfg)),
                          normalizer)
    qc_rate = _right_rate(agent, normalizer)
    print(f"pole-right: BC right rate {bc_rate:.2f}, QC right rate {qc_rate:.2f}")
    assert bc_rate < 0.6, bc_rate  # BC keeps both modes (and collides sometimes)
    assert qc_rate >= 0.7 and qc_rate > bc_rate + 0.3, (bc_rate, qc_rate)


# ---- the waypoint chain --------------------------------------------------------------------------
def test_chain_env_rewards_only_the_ordered_chain():
    from dprl.envs.chain import WAYPOINTS
    from dprl.envs.vector import make_env

    env = make_env("dprl/WaypointChain-v0")

    def go(order):
        obs, _ = env.reset(seed=0)
        rewards, infos = [], []
        for w in order:
            for _ in range(200):
                d = WAYPOINTS[w] - obs[:2]
                obs, r, term, trunc, info = env.step(d / max(np.linalg.norm(d), 1e-6))
                rewards.append(r)
                infos.append(info)
                if info["visited"] == w or term or trunc:
                    break
            if term or trunc:
                break
        return np.array(rewards), infos, term

    rewards, infos, term = go([0, 1, 2])
    assert term and rewards[-1] == 1.0 and rewards[:-1].sum() == 0.0 and infos[-1]["success"]
    assert 60 <= len(rewards) <= 90  # long horizon: ~70 steps for the shortest success
    rewards, infos, term = go([1, 0, 2])  # B first: out of order, C then resets progress
    assert rewards.sum() == 0.0 and not infos[-1]["success"] and infos[-1]["progress"] == 0


def test_chain_play_data_is_mostly_unsuccessful():
    from dprl.datasets.chain import rollout_play

    episodes = rollout_play(40, seed=1)
    success = np.mean([e["success"] for e in episodes])
    assert 0.05 < success < 0.5
    assert all(e["rewards"].sum() == float(e["success"]) for e in episodes)


# ---- end to end ----------------------------------------------------------------------------------
def test_end_to_end_offline_to_online(tmp_path, pole_datasets):
    from dprl.run.runner import train

    config = _config(horizon=5)
    config = tiny(config, pretrain_steps=25, offline_steps=25, online_steps=60,
                  online_eval_every=60, online_log_every=30, save_every=10_000,
                  start_online_updates=10)
    summary = train(config, "pole-right", str(tmp_path), get_agent, seed=0, progress=False)
    assert summary["agent"] == "qc" and summary["online_steps"] == 60
    assert summary["offline_score"] is not None and summary["online_score"] is not None
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["online_score"] == summary["online_score"]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("phase", "step", "env_steps", "critic/loss", "critic/q_mean", "bc/loss",
                "eval/normalized_score"):
        assert col in header, col


def test_layer_norm_follows_the_activation_as_in_qcs_critic():
    """QC's critic MLP is Dense -> GELU -> LayerNorm: each hidden output is normalized after
    the activation (zero mean, unit variance per row at init; GELU after LN would not be)."""
    from dprl.models.nets import MLP
    mlp = MLP((64,), "gelu", layer_norm=True, activate_final=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 5))
    h = mlp.apply(mlp.init(jax.random.PRNGKey(1), x), x)
    np.testing.assert_allclose(np.asarray(h.mean(axis=-1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h.std(axis=-1)), 1.0, atol=1e-3)


def test_qc_networks_are_initialized_and_fed_time_as_in_qcs_code():
    """QC's preset: every Dense kernel from variance scaling (fan_avg, uniform), and the flow
    actor fed the time t in [0, 1] itself (one input), not an embedding."""
    config = _config(horizon=3)
    config.actor.hidden_dims = (64, 64)
    agent = Agent.create(0, _batch(B=4, H=3, O=4), config)
    first = agent.actor.params["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert first.shape == (3 * 2 + 1 + 4, 64)           # chunk, t, observation
    assert "TimeEmbedding_0" not in agent.actor.params["params"]
    for kernel in (first, agent.critic.params["params"]["VmapValueMLP_0"]["MLP_0"]["Dense_1"]
                   ["kernel"][0]):
        fan_in, fan_out = kernel.shape
        bound = np.sqrt(3.0 / ((fan_in + fan_out) / 2))
        assert np.abs(np.asarray(kernel)).max() <= bound     # uniform: no normal tails
        assert np.asarray(kernel).var() == pytest.approx(bound ** 2 / 3, rel=0.25)


def test_raw_time_is_the_samplers_time_over_its_range():
    from dprl.models.nets import MLPDenoiser
    obs, x = jnp.ones((2, 4)), jnp.ones((2, 3, 2))
    scaled = MLPDenoiser((16,), "gelu", time_dim=0, time_scale=1000.0)
    params = scaled.init(jax.random.PRNGKey(0), obs, x, jnp.zeros(2))
    unit = MLPDenoiser((16,), "gelu", time_dim=0, time_scale=1.0)
    np.testing.assert_allclose(scaled.apply(params, obs, x, jnp.full(2, 500.0)),
                               unit.apply(params, obs, x, jnp.full(2, 0.5)), rtol=1e-6)
    assert not np.allclose(unit.apply(params, obs, x, jnp.full(2, 0.5)),
                           unit.apply(params, obs, x, jnp.full(2, 0.0)))


def test_an_unknown_kernel_init_is_refused_before_any_work():
    from dprl.run.config import validate_config
    config = _config()
    config.critic_kernel_init = "xavier"
    with pytest.raises(ValueError, match="critic_kernel_init=xavier: must be one of"):
        validate_config(config, on_policy=False)
