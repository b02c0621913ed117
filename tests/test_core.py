"""Buffers, data loading and validation, envs and chunk execution, BC agents, the h-step
return, the loop schedule, renamed config keys."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dprl.data.buffer import Buffer, sample_mixed, transitions_from_chunks
from dprl.data.offline import Normalizer, OfflineData, check_compatible, load_dataset
from dprl.data.io import write_minari_dataset
from dprl.envs.vector import ChunkExecutor, VecEnv, evaluate, make_env
from tests.conftest import python_chunk_target


def index_data(episode_lengths, terminal_last=None):
    """Flat transitions whose observation is their own index, so batches can be decoded."""
    n = sum(episode_lengths)
    dones = np.zeros(n, bool)
    terminals = np.zeros(n, bool)
    ends = np.cumsum(episode_lengths) - 1
    dones[ends] = True
    if terminal_last is not None:
        terminals[ends[np.asarray(terminal_last)]] = True
    idx = np.arange(n, dtype=np.float32)
    return OfflineData(observations=idx[:, None], actions=np.stack([idx, -idx], 1),
                       rewards=idx.copy(), terminals=terminals, timeouts=dones & ~terminals,
                       dones=dones, next_observations=idx[:, None] + 0.5), ends


@pytest.mark.parametrize("horizon", [1, 3, 7])
def test_chunks_never_cross_an_episode_end(horizon):
    data, ends = index_data([5, 1, 9, 4, 2], terminal_last=[0, 2])
    buf = Buffer.from_offline(data, Normalizer.identity(1))
    batch = jax.device_get(buf.gather(jnp.arange(data.size), horizon))
    episode_of = np.searchsorted(ends, np.arange(data.size))
    for i in range(data.size):
        valid = batch["valid"][i].astype(bool)
        assert valid[0]
        n_valid = valid.sum()
        # valid steps are exactly the rest of i's episode, up to H
        assert n_valid == min(horizon, ends[episode_of[i]] - i + 1)
        acts = batch["actions"][i, :, 0]
        np.testing.assert_array_equal(acts[:n_valid], np.arange(i, i + n_valid))
        # padding repeats the last valid action and carries no reward or terminal
        np.testing.assert_array_equal(acts[n_valid:], i + n_valid - 1)
        assert np.all(batch["rewards"][i, n_valid:] == 0)
        assert np.all(batch["terminals"][i, n_valid:] == 0)
        last = i + n_valid - 1
        assert batch["next_observations"][i, 0] == last + 0.5
        assert batch["masks"][i] == (0.0 if data.terminals[last] else 1.0)


def test_observation_history_is_padded_with_the_episode_start():
    data, ends = index_data([3, 4])
    buf = Buffer.from_offline(data, Normalizer.identity(1))
    batch = jax.device_get(buf.gather(jnp.arange(7), horizon=2, obs_history=3))
    obs = batch["observations"][..., 0]
    np.testing.assert_array_equal(obs[0], [0, 0, 0])
    np.testing.assert_array_equal(obs[2], [0, 1, 2])
    np.testing.assert_array_equal(obs[3], [3, 3, 3])   # a new episode: no frames from the last
    np.testing.assert_array_equal(obs[5], [3, 4, 5])
    nxt = batch["next_observations"][..., 0]
    np.testing.assert_array_equal(nxt[3], [3, 4, 4.5])  # chunk 3..4, then the obs after step 4


def test_online_buffer_add_and_mixed_sampling():
    data, _ = index_data([10])
    offline = Buffer.from_offline(data, Normalizer.identity(1))
    online = Buffer.empty(20, 1, 2)
    trans = {"observations": np.full((4, 1), 100.0, np.float32),
             "actions": np.full((4, 2), 100.0, np.float32), "rewards": np.ones(4, np.float32),
             "terminals": np.zeros(4, np.float32), "dones": np.array([0, 0, 0, 1], np.float32),
             "next_observations": np.full((4, 1), 100.5, np.float32)}
    online = online.add(trans)
    assert int(online.size) == 4
    batch = jax.device_get(sample_mixed(offline, online, jax.random.PRNGKey(0), 64, 0.25, 2))
    from_online = batch["observations"][:, 0] == 100.0
    assert from_online[:16].sum() == 0 and from_online[16:].all()


def test_transitions_from_executed_chunks_keep_env_order():
    executed = {
        "observations": np.arange(6, dtype=np.float32).reshape(3, 2, 1),
        "actions": np.zeros((3, 2, 2), np.float32), "rewards": np.ones((3, 2)),
        "terminals": np.array([[0, 0], [1, 0], [0, 0]], bool),
        "truncations": np.zeros((3, 2), bool),
        "next_observations": np.arange(6, dtype=np.float32).reshape(3, 2, 1) + 0.5,
        "valid": np.array([[1, 1], [1, 1], [0, 1]], bool),
    }
    t = transitions_from_chunks(executed, Normalizer.identity(1))
    np.testing.assert_array_equal(t["observations"][:, 0], [0, 2, 1, 3, 5])
    np.testing.assert_array_equal(t["dones"], [0, 1, 0, 0, 0])


def test_pole_dataset_loads_with_metadata(pole_datasets):
    data = load_dataset(pole_datasets["pole"])
    assert data.observations.shape[1] == 4 and data.actions.shape[1] == 2
    assert data.num_episodes == 200
    assert data.ref_min_score == 0.0 and data.ref_max_score == 1.0
    assert data.metadata["dprl"]["sides"] == {"left": 100, "right": 100}
    assert np.all(data.episode_returns() == 1.0)
    # dones split episodes exactly where terminals (success) are
    assert np.array_equal(data.dones, data.terminals | data.timeouts)
    check_compatible(data, make_env("dprl/Pole-v0"))


def test_missing_dataset_names_the_make_command():
    with pytest.raises(FileNotFoundError, match="python -m dprl.datasets make"):
        load_dataset("dprl/hopper/medium-v0")


def test_space_mismatch_is_a_clear_error(pole_datasets):
    data = load_dataset(pole_datasets["pole"])
    with pytest.raises(ValueError, match="does not match env"):
        check_compatible(data, make_env("Hopper-v5"), "hopper-medium")


def test_nan_observations_are_rejected():
    ep = {"observations": np.zeros((4, 4), np.float32), "actions": np.zeros((3, 2), np.float32),
          "rewards": np.zeros(3), "terminations": np.array([0, 0, 1], bool),
          "truncations": np.zeros(3, bool)}
    ep["observations"][2, 1] = np.nan
    write_minari_dataset("dprl/nan-test/demos-v0", [ep], "dprl/Pole-v0")
    with pytest.raises(ValueError, match="observations has 1 NaN"):
        load_dataset("dprl/nan-test/demos-v0")


def test_chunk_executor_runs_act_steps_and_resets_mid_chunk():
    vec = VecEnv("dprl/Pole-v0", 2, seed=0)
    ex = ChunkExecutor(vec, act_steps=3, obs_history=2)
    ex.reset()
    assert ex.policy_observations().shape == (2, 2, 4)
    up = np.tile(np.array([0.0, 1.0], np.float32), (2, 5, 1))
    steps = 0
    while not ex.finished:
        out = ex.step_chunks(up)
        assert out["actions"].shape == (3, 2, 2)
        steps += 1
        assert steps < 20
    # straight up hits the pole; the env is reset and its history restarts
    assert ex.finished[0]["collision"]
    i = ex.finished[0]["env"]
    hist = ex.policy_observations()[i]
    np.testing.assert_array_equal(hist[0], hist[1])


def test_evaluate_reports_success_and_normalized_score():
    def right_then_up(obs):
        x, y = obs[:, 0], obs[:, 1]
        a = np.where((y < 0.3)[:, None], [[1.0, 0.35]], [[-0.6, 1.0]])
        a = np.where((x > 0.33)[:, None] & (y < 0.3)[:, None], [[0.0, 1.0]], a)
        return a[:, None, :].astype(np.float32)

    result = evaluate(right_then_up, "dprl/PoleRight-v0", 6, act_steps=1, ref_min_score=0.0,
                      ref_max_score=1.0, return_episodes=True)
    assert result["success_rate"] == 1.0
    assert result["normalized_score"] == pytest.approx(100.0)
    assert all(e["side"] == "right" for e in result["episodes"])


@pytest.mark.parametrize("max_envs", [2, 4])
def test_evaluation_in_waves_runs_the_same_episodes(max_envs):
    """5 episodes on at most 2 (or 4) envs: each episode is seeded as when all run at once, and
    the policy always sees the same batch size (a jitted policy compiles once)."""
    batch_sizes = set()

    def policy(obs):
        batch_sizes.add(obs.shape[0])
        return np.tanh(obs[:, None, :2] * [[3.0, -2.0]]).astype(np.float32)

    kwargs = dict(act_steps=2, seed=7, return_episodes=True)
    whole = evaluate(policy, "dprl/Pole-v0", 5, **kwargs)
    assert batch_sizes == {5}
    batch_sizes.clear()
    waves = evaluate(policy, "dprl/Pole-v0", 5, max_envs=max_envs, **kwargs)
    assert batch_sizes == {max_envs}
    assert [e["return"] for e in waves["episodes"]] == [e["return"] for e in whole["episodes"]]
    for a, b in zip(waves["trajectories"], whole["trajectories"]):
        np.testing.assert_array_equal(a, b)
    assert len({t[0].tobytes() for t in whole["trajectories"]}) == 5   # 5 distinct seeds


@pytest.mark.parametrize("policy,backbone", [("diffusion", "mlp"), ("flow", "mlp"),
                                             ("mse", "mlp"), ("diffusion", "unet")])
def test_bc_agents_step_and_sample_chunks(policy, backbone, pole_datasets):
    from agents import get_agent
    from configs.bc import get_config
    from tests.conftest import tiny

    data = load_dataset(pole_datasets["pole"])
    buf = Buffer.from_offline(data, Normalizer.fit(data.observations))
    config = tiny(get_config())
    config.actor.model, config.horizon, config.action_dim = policy, 4, 2
    config.actor.backbone, config.actor.unet_channels = backbone, (16, 32)
    batch = buf.sample(jax.random.PRNGKey(0), 32, 4)
    agent = get_agent("bc").create(0, batch, config)
    losses = []
    for i in range(60):
        agent, info = agent.pretrain(buf.sample(jax.random.PRNGKey(i), 32, 4))
        losses.append(float(info["bc/loss"]))
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    chunks, _ = agent.sample_actions(batch["observations"], jax.random.PRNGKey(1))
    assert chunks.shape == (32, 4, 2)
    assert float(jnp.abs(chunks).max()) <= 1.0


def test_unknown_task_lists_known_tasks():
    from dprl.envs.tasks import get_task
    with pytest.raises(KeyError, match="Did you mean hopper-medium"):
        get_task("hoper-medium")


def test_metrics_logger_extends_header(tmp_path):
    from dprl.base.logging import MetricsLogger
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log("pretrain", 1, 0, 0.1, {"bc/loss": 1.0}, 1)
    log.log("pretrain", 2, 0, 0.2, {"bc/loss": 0.5, "eval/normalized_score": 50.0}, 2)
    text = (tmp_path / "metrics.csv").read_text().splitlines()
    assert text[0].split(",")[:4] == ["phase", "step", "env_steps", "wall_s"]
    assert "eval/normalized_score" in text[0] and len(text) == 3
    log.truncate_after(1)
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2
    json.dumps(log.rows)


def test_chunk_return_matches_python_loop():
    """The h-step backup every agent uses: ``ret + boot * Q'`` on buffer-shaped chunks."""
    from dprl.data.buffer import chunk_return

    gamma = 0.9
    # (0) a full chunk; (1) terminal at step 2 (steps 3, 4 invalid, masks 0); (2) time-limit
    # truncation after 3 steps (valid stops, masks 1); (3) terminal at the last step; (4) a
    # one-step chunk cut by termination.
    rewards = np.array([[1, 2, 3, 4, 5], [1, 0, 10, 0, 0], [0.5, 0.5, 0.5, 0, 0],
                        [0, 0, 0, 0, 1], [7, 0, 0, 0, 0]], np.float32)
    valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0],
                      [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], np.float32)
    terminals = np.array([[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0],
                          [0, 0, 0, 0, 1], [1, 0, 0, 0, 0]], np.float32)
    masks = np.array([1, 0, 1, 0, 0], np.float32)
    next_q = np.array([2.0, 100.0, 3.0, 100.0, 100.0], np.float32)
    ret, boot = chunk_return({"rewards": jnp.asarray(rewards), "valid": jnp.asarray(valid),
                              "masks": jnp.asarray(masks)}, gamma)
    got = np.asarray(ret + boot * next_q)
    np.testing.assert_allclose(got, python_chunk_target(rewards, valid, terminals, next_q, gamma),
                               rtol=1e-5)
    # The full-chunk case explicitly: sum gamma^i r_i + gamma^5 Q'; the truncated one: gamma^3.
    assert np.isclose(got[0], sum(gamma ** i * (i + 1) for i in range(5)) + gamma ** 5 * 2)
    assert np.isclose(got[2], 0.5 * (1 + gamma + gamma ** 2) + gamma ** 3 * 3.0)


def test_a_terminal_inside_a_chunk_stops_its_bootstrap():
    """success_masks data (OGBench) goes on after a success, so a terminal can sit inside an
    episode: a chunk that holds one does not bootstrap (masks 0, as QC's masks: their minimum
    over the chunk) but sums every valid reward; chunks that end before it still bootstrap."""
    from dprl.data.buffer import chunk_return

    data, _ = index_data([6])
    data.terminals[:] = False
    data.terminals[2] = True                       # a success at step 2; the episode goes on
    buf = Buffer.from_offline(data, Normalizer.identity(1))
    batch = buf.gather(jnp.arange(6), horizon=3)
    np.testing.assert_array_equal(np.asarray(batch["masks"]), [0, 0, 0, 1, 1, 1])
    ret, boot = chunk_return(batch, 0.5)
    np.testing.assert_allclose(np.asarray(ret)[:2], [0 + 0.5 + 0.5 ** 2 * 2,
                                                     1 + 0.5 * 2 + 0.5 ** 2 * 3])
    np.testing.assert_allclose(np.asarray(boot), [0, 0, 0, 0.125, 0.25, 0.5])


def test_schedule_lands_dispatches_on_boundaries_and_reports_crossings():
    from dprl.run.schedule import Schedule

    s = Schedule(total=100, log_every=25, eval_every=40, save_every=0, dispatch=30)
    done, stops = 0, []
    while done < s.total:
        n = s.next_dispatch(done)
        due = s.due(done, done + n)
        done += n
        stops.append((done, due.log, due.eval, due.save))
    # Never past a boundary: 25 (log), 40 (eval), 50 (log), 75 (log), 80 (eval), 100 (end).
    assert stops == [(25, True, False, False), (40, False, True, False),
                     (50, True, False, False), (75, True, False, False),
                     (80, False, True, False), (100, True, True, True)]
    # A loop that moves in chunks (env steps) crosses boundaries instead of landing on them.
    online = Schedule(total=50, log_every=10, eval_every=20, save_every=20, dispatch=8,
                      update_every=2, utd=0.5, start_updates=10)
    assert online.due(8, 12).log and not online.due(12, 19).log
    assert online.due(18, 23).eval and online.due(18, 23).save and not online.due(18, 23).end
    assert online.due(47, 53).end and online.due(47, 53).row
    # Updates run every update_every chunks (and at the end), owed utd per env step after the
    # first start_updates env steps.
    assert not online.store_due(1, online.due(4, 8)) and online.store_due(2, online.due(4, 8))
    assert online.store_due(1, online.due(45, 50))
    assert online.updates_owed(8) == 0 and online.updates_owed(13) == 1
    assert online.updates_owed(50) == 20


def test_renamed_config_keys_name_the_new_key():
    from configs.dql import get_config
    from dprl.run.config import check_override_keys, check_renamed_keys

    config = get_config()
    with pytest.raises(ValueError, match="--agent.grad_norm was renamed: use --agent.grad_clip"):
        check_override_keys(config, ["grad_norm"])
    with pytest.raises(ValueError, match="num_samples"):
        check_override_keys(config, ["num_action_samples"])
    old = ml_collections.ConfigDict(config.to_dict())
    old.gamma = 0.99  # an older config file
    with pytest.raises(ValueError, match="gamma was renamed: use discount"):
        check_renamed_keys(old)
    check_renamed_keys(config)

