"""The off-policy online loop: one jitted replay step per env chunk (store the chunk,
the updates it is owed, act the next chunk), compiled once, with exactly ``utd`` gradient updates
per env step over a run whatever the chunk lengths."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import get_agent
from configs.bc import get_config
from dprl.run import runner
from dprl.data.buffer import Buffer, example_batch, transition_block
from dprl.run.schedule import Schedule
from dprl.run.updates import fused_updates, replay_step
from tests.conftest import tiny


def _transitions(n: int, obs_dim: int, action_dim: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    dones = np.zeros(n, np.float32)
    dones[-1] = 1.0
    return {"observations": rng.standard_normal((n, obs_dim)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
            "rewards": rng.standard_normal(n).astype(np.float32),
            "terminals": np.zeros(n, np.float32), "dones": dones,
            "next_observations": rng.standard_normal((n, obs_dim)).astype(np.float32)}


def test_replay_step_is_store_then_updates_then_act():
    """One replay step equals the three dispatches it replaces (Buffer.add, fused_updates on
    mixed batches, sample_actions) with the same key stream; skipped slots change nothing."""
    config = tiny(get_config())
    config.horizon, config.act_steps, config.action_dim = 4, 3, 2
    agent = get_agent("bc").create(0, example_batch(5, 2, 4), config)
    offline = Buffer.empty(64, 5, 2).add(_transitions(40, 5, 2, seed=1))
    online = Buffer.empty(16, 5, 2).add(_transitions(4, 5, 2, seed=2))
    chunk = _transitions(2, 5, 2, seed=3)
    obs, key = jnp.ones((1, 5)), jax.random.PRNGKey(7)
    static = dict(batch_size=8, horizon=4, obs_history=1, offline_ratio=0.5)

    want_online = online.add(chunk)
    split_key, update_key = jax.random.split(key)
    want_agent, want_info = fused_updates(agent, offline, want_online, update_key, num_steps=3,
                                          method="update", **static)
    want_key, act_key = jax.random.split(split_key)
    want_chunks, _ = want_agent.sample_actions(obs, act_key)

    block, count = transition_block(chunk, 3, 5, 2)
    got_agent, got_online, got_key, got_chunks, got_info = replay_step(
        agent, offline, Buffer.empty(16, 5, 2).add(_transitions(4, 5, 2, seed=2)), key, block,
        np.int32(count), np.int32(3), obs, update_slots=5, **static)
    assert int(got_online.size) == 6 and int(got_agent.actor.step) == 3
    np.testing.assert_array_equal(np.asarray(got_online.actions[:6]),
                                  np.asarray(want_online.actions[:6]))
    np.testing.assert_array_equal(np.asarray(got_key), np.asarray(want_key))
    for x, y in zip(jax.tree.leaves(got_agent), jax.tree.leaves(want_agent)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got_chunks), np.asarray(want_chunks), atol=1e-5)
    for k in want_info:
        np.testing.assert_allclose(float(got_info[k]), float(want_info[k]), rtol=1e-5)

    # No updates owed: the agent and the key stream stay, only acting happens.
    idle_agent, _, idle_key, _, _ = replay_step(
        agent, offline, Buffer.empty(16, 5, 2), key, block, np.int32(0), np.int32(0), obs,
        update_slots=5, **static)
    assert int(idle_agent.actor.step) == 0
    np.testing.assert_array_equal(np.asarray(idle_key), np.asarray(jax.random.split(key)[0]))


def test_updates_owed_carry_the_fraction_and_slots_cover_every_chunk():
    s = Schedule(total=100, log_every=0, eval_every=0, save_every=0, dispatch=100,
                 update_every=1, utd=0.1, start_updates=0)
    paid, owed = 0, []
    for env_steps in range(1, 31):     # one env step per chunk: 0.1 is owed each time
        owed.append(s.updates_owed(env_steps) - paid)
        paid += owed[-1]
    assert paid == 3 and owed[9] == owed[19] == owed[29] == 1   # 10 x 0.1 is exactly 1
    assert s.update_slots(chunk_steps=1) == 1
    s = Schedule(total=100, log_every=0, eval_every=0, save_every=0, dispatch=100,
                 update_every=3, utd=2.5, start_updates=10)
    assert s.updates_owed(10) == 0 and s.updates_owed(13) == 7
    assert s.update_slots(chunk_steps=4) == math.ceil(2.5 * 4 * 5)


@pytest.mark.parametrize("utd", [0.5, 2])
def test_online_updates_match_utd_exactly_and_the_step_compiles_once(utd, tmp_path,
                                                                     pole_datasets, monkeypatch):
    """Chunks of 3 actions on pole end early at episode ends and at the phase's end (50 is no
    multiple of 3): the run still does floor(utd * 50) online updates, counted on the device by
    the actor's optimizer step, with one compiled replay step."""
    online_steps, pretrain_steps = 50, 20
    config = tiny(get_config(), pretrain_steps=pretrain_steps, online_steps=online_steps,
                  online_log_every=10, online_eval_every=10**6, utd=utd)
    config.horizon, config.act_steps = 4, 3
    lengths = []

    def recording_run_chunk(*args):
        transitions = run_chunk(*args)
        lengths.append(len(transitions["actions"]))
        return transitions

    run_chunk = runner.run_chunk
    monkeypatch.setattr(runner, "run_chunk", recording_run_chunk)
    compiled_before = replay_step._cache_size()
    run = runner.Run(config, "pole", str(tmp_path / "run"), get_agent, progress=False)
    run.train()

    assert sum(lengths) == online_steps and len(set(lengths)) >= 2 and max(lengths) == 3
    assert float(run.online.dones[:online_steps].sum()) >= 2   # episodes ended inside the phase
    expected = math.floor(utd * online_steps)
    assert run.counters["online_updates"] == expected
    assert int(run.agent.actor.step) == pretrain_steps + expected
    assert replay_step._cache_size() - compiled_before == 1


class Interrupted(Exception):
    pass


def test_a_run_resumed_between_update_dispatches_still_pays_every_update(tmp_path, pole_datasets,
                                                                        monkeypatch):
    """With update_every = 3 a checkpoint can fall between two update dispatches, owing updates
    for the chunks since the last one: the resumed run pays them (the replay step's slots cover
    them), so the run still does floor(utd * online_steps) updates."""
    config = tiny(get_config(), pretrain_steps=20, online_steps=50, online_log_every=10,
                  online_eval_every=10**6, save_every=4, update_every=3, utd=2.0)
    config.horizon, config.act_steps = 4, 3
    schedule = Schedule.of(config.run, "online")
    at_boundary = runner.Run.at_boundary

    def stop_after_a_save_with_updates_owed(self, phase, step, due, *args, **kwargs):
        at_boundary(self, phase, step, due, *args, **kwargs)
        if phase == "online" and due.save and (
                schedule.updates_owed(self.env_steps) > self.counters["online_updates"]):
            self.logger.close()
            self.ckpt.close()
            raise Interrupted

    monkeypatch.setattr(runner.Run, "at_boundary", stop_after_a_save_with_updates_owed)
    with pytest.raises(Interrupted):
        runner.Run(config, "pole", str(tmp_path / "run"), get_agent, progress=False).train()
    monkeypatch.setattr(runner.Run, "at_boundary", at_boundary)

    run = runner.Run(config, "pole", str(tmp_path / "run"), get_agent, progress=False)
    assert 0 < run.env_steps < 50
    assert schedule.updates_owed(run.env_steps) > run.counters["online_updates"]
    run.train()
    assert run.counters["online_updates"] == 100
    assert int(run.agent.actor.step) == 20 + 100
