"""Several devices in one run (``dprl.run.sharding``), on this CPU split into simulated devices.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts, so every check on two
devices runs in a subprocess started with it; the one-device numbers come from the same functions
with the sharding off (in the subprocess) or from this process (one device). The tests marked
``gpu`` run on whatever devices JAX has (``experiments/gpu_check.py`` runs them on a GPU).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny

ROOT = Path(__file__).resolve().parents[1]
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}


def run_on_two_devices(code: str, timeout: int = 600) -> str:
    """Run ``code`` in a fresh Python with two simulated CPU devices; its stdout."""
    env = {**os.environ, **TWO_DEVICES}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def synthetic_buffer(size: int = 400, obs_dim: int = 3, action_dim: int = 2, seed: int = 0):
    """A Buffer of random transitions in episodes of 50 steps."""
    from dprl.data.buffer import Buffer

    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    dones = jnp.asarray((np.arange(size) % 50) == 49, jnp.float32)
    return Buffer(f(size, obs_dim), jnp.tanh(f(size, action_dim)), f(size), jnp.zeros(size),
                  dones, f(size, obs_dim), jnp.asarray(size, jnp.int32))


def tiny_agent(name: str, seed: int = 0, **run):
    """A registered agent with (8, 8) networks on ``synthetic_buffer``'s shapes."""
    from agents import get_agent
    from configs import config_file
    from dprl.run.config import load_config_file, with_compute_dtype

    config = load_config_file(config_file(name))
    config.action_dim = 2
    config.actor.diffusion_steps = 3
    config.actor.flow_steps = 2
    for key in list(config):
        if key.endswith("hidden_dims"):
            config[key] = (8, 8)
    config.actor.hidden_dims = (8, 8)
    for key, value in (("num_samples", 2), ("max_q_samples", 2), ("ft_denoising_steps", 2),
                       ("support_actions", 2), ("contrastive_states", 4)):
        if key in config:
            config[key] = value
    config.run.num_envs = 2 if config.run.num_envs > 1 else 1
    for k, v in run.items():
        config.run[k] = v
    config = with_compute_dtype(config)
    batch = synthetic_buffer().sample(jax.random.PRNGKey(0), 8, config.horizon,
                                      config.obs_history)
    return get_agent(name).create(seed, jax.device_get(batch), config)


# The two-device checks, without the runner: seeds spread over the devices (3 seeds padded to 4)
# and one agent's batch split over them, each against the same function on one device.
SHARDED_UPDATES = r"""
import json, sys
sys.path.insert(0, "tests")
import jax, jax.numpy as jnp, numpy as np
from test_sharding import synthetic_buffer, tiny_agent
from dprl.run.sharding import SeedPlacement
from dprl.run.updates import fused_updates, stack, vmapped_updates

assert jax.local_device_count() == 2, jax.devices()
out = {}
buffer = synthetic_buffer()
kw = dict(num_steps=3, method="update", batch_size=16, horizon=1, obs_history=1)

# Seeds: one vmapped program over 3 stacked DQL agents, on device 0 vs spread over both devices.
agents = stack([tiny_agent("dql", seed=s) for s in range(3)])
keys = jax.random.split(jax.random.PRNGKey(1), 3)
one_dev, one_info = vmapped_updates(agents, buffer, keys, **kw)
place = SeedPlacement.of(3)
out["seed_devices"], out["padded"] = place.num_devices, place.padded
two_dev, two_info = vmapped_updates(place.put(agents), place.replicate(buffer), place.put(keys),
                                    **kw)
leaf = jax.tree.leaves(two_dev)[0]
out["seed_leaf_devices"] = len(leaf.sharding.device_set)
out["seed_leaf_shape"] = list(leaf.shape)
raw = lambda x: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(
    x.dtype, jax.dtypes.prng_key) else x)
pairs = [(raw(a), raw(b)[:3]) for a, b in zip(jax.tree.leaves(one_dev), jax.tree.leaves(two_dev))]
out["seed_max_diff"] = max(float(np.max(np.abs(a - b))) for a, b in pairs
                           if np.issubdtype(a.dtype, np.floating))
out["seed_ints_equal"] = all(np.array_equal(a, b) for a, b in pairs
                             if not np.issubdtype(a.dtype, np.floating))
out["seed_info"] = {k: [np.asarray(one_info[k]).tolist(), np.asarray(two_info[k])[:3].tolist()]
                    for k in one_info}

# Data parallel: one DQL agent, each batch split over both devices.
key = jax.random.PRNGKey(2)
plain = tiny_agent("dql")
split = tiny_agent("dql", data_parallel=True)
a1, i1 = fused_updates(plain, buffer, None, key, **kw)
a2, i2 = fused_updates(split, buffer, None, key, **kw)
hlo = fused_updates.lower(split, buffer, None, key, **kw).compile().as_text()
out["dp_all_reduce"] = "all-reduce" in hlo
out["dp_plain_all_reduce"] = "all-reduce" in fused_updates.lower(
    plain, buffer, None, key, **kw).compile().as_text()
out["dp_max_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                         zip(jax.tree.leaves(a1.critic.params), jax.tree.leaves(a2.critic.params)))
out["dp_moved"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                      zip(jax.tree.leaves(plain.critic.params), jax.tree.leaves(a1.critic.params)))
out["dp_info"] = {k: [float(i1[k]), float(i2[k])] for k in i1}
print("RESULT " + json.dumps(out))
"""


def _result(stdout: str) -> dict:
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_updates_sharded_over_two_devices_match_one_device():
    """Three seeds spread over two devices (padded to four) and one agent's batch split over
    them: the parameters and metrics equal the one-device program's to float rounding, the seed
    stack lives on both devices, and the data-parallel program holds the gradients' all-reduce
    (the one-device program none)."""
    r = _result(run_on_two_devices(SHARDED_UPDATES))
    assert (r["seed_devices"], r["padded"]) == (2, 4)
    assert r["seed_leaf_devices"] == 2 and r["seed_leaf_shape"][0] == 4
    assert r["seed_max_diff"] < 1e-5, r
    assert r["seed_ints_equal"]                  # PRNG keys and step counters
    for k, (one, two) in r["seed_info"].items():
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6, err_msg=k)
    assert r["dp_all_reduce"] and not r["dp_plain_all_reduce"]
    assert r["dp_moved"] > 1e-4                  # the steps changed the critic ...
    assert r["dp_max_diff"] < 1e-5, r            # ... the same way on one device and on two
    for k, (one, two) in r["dp_info"].items():
        assert two == pytest.approx(one, rel=1e-5, abs=1e-6), k


def test_one_device_placement_is_the_plain_program():
    """On one device: no padding, the stack unchanged, data parallel a no-op that any batch size
    passes; asking for more devices than there are is one clear error."""
    from ml_collections import ConfigDict

    from dprl.run.sharding import SeedPlacement, check_data_parallel, constrain_batch, local_mesh

    place = SeedPlacement.of(3)
    assert (place.num_devices, place.padded) == (1, 3)
    stacked = place.put({"w": jnp.arange(6.0).reshape(3, 2)})
    np.testing.assert_array_equal(stacked["w"], np.arange(6.0).reshape(3, 2))
    with pytest.raises(ValueError, match="asked for 2 devices; this process has 1"):
        local_mesh(2)
    run = ConfigDict(dict(data_parallel=True, batch_size=3))
    assert check_data_parallel(run) is None
    batch = {"x": jnp.ones((3, 2))}
    assert constrain_batch(batch, ConfigDict(dict(run=run))) is batch


def test_data_parallel_batch_must_split_evenly():
    """On two devices, run.data_parallel with an odd batch is refused by the config check before
    any work, naming the key; with --num_seeds it is refused too."""
    code = r"""
import sys
sys.path.insert(0, "tests")
from configs.bc import get_config
from dprl.run.config import validate_config
config = get_config()
config.run.data_parallel = True
config.run.batch_size = 33
try:
    validate_config(config, False)
except ValueError as e:
    print("REFUSED", e)
config.run.batch_size = 32
validate_config(config, False)
print("OK32")
"""
    out = run_on_two_devices(code)
    assert "REFUSED" in out and "--agent.run.batch_size=33: must be a multiple of the 2" in out
    assert "OK32" in out

    from configs.bc import get_config
    from dprl.run.multiseed import train_seeds
    config = get_config()
    config.run.data_parallel = True
    with pytest.raises(ValueError, match="data_parallel"):
        train_seeds(config, "pole", ["a", "b"], [0, 1], lambda name: None)


# The runner end to end on two devices: 3 seeds (padded to 4) with --num_seeds, and one seed
# with run.data_parallel; then this one-device process reads and resumes those runs.
RUNS_ON_TWO = r"""
import sys
sys.path.insert(0, "tests")
from test_sharding import runner_config
from agents import get_agent
from dprl.datasets.pole import make_pole_dataset
from dprl.run.multiseed import seed_dirs, train_seeds
from dprl.run.runner import train
make_pole_dataset("pole")
train_seeds(runner_config(), "pole", seed_dirs(OUT + "/seeds", [0, 1, 2]), [0, 1, 2], get_agent,
            progress=False)
train(runner_config(data_parallel=True), "pole", OUT + "/dp", get_agent, seed=0, progress=False)
"""


def runner_config(pretrain_steps: int = 20, **run):
    from configs.bc import get_config
    config = tiny(get_config(), pretrain_steps=pretrain_steps, steps_per_dispatch=10,
                  log_every=10, eval_every=20, save_every=20, **run)
    config.actor.hidden_dims = (16, 16)
    config.actor.diffusion_steps = 5
    return config


def metrics_table(run_dir) -> list[dict]:
    """metrics.csv's rows without the wall-clock columns."""
    lines = (Path(run_dir) / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [{k: v for k, v in zip(header, line.split(",")) if k not in ("wall_s", "eval/wall_s")}
            for line in lines[1:]]


def assert_same_rows(a, b):
    ta, tb = metrics_table(a), metrics_table(b)
    assert [r["step"] for r in ta] == [r["step"] for r in tb]
    for ra, rb in zip(ta, tb):
        for k in ra:
            if ra[k] and k != "phase":
                assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-5, abs=1e-6), k


@pytest.mark.slow
def test_runs_on_two_devices_match_one_device_and_resume_on_one(tmp_path, pole_datasets):
    """``train_seeds`` (3 seeds over 2 devices) and a data-parallel run, each written on two
    devices: their metrics equal the same runs on one device (this process) to float rounding;
    their checkpoints load here (one device) with the same parameters, and the runs resume here
    (extended to 30 steps) to the same rows as the one-device runs extended alike."""
    from agents import get_agent
    from dprl.run.checkpoint import load_run
    from dprl.run.multiseed import seed_dirs, train_seeds
    from dprl.run.runner import train

    two, one = tmp_path / "two", tmp_path / "one"
    run_on_two_devices(RUNS_ON_TWO.replace("OUT", repr(str(two))), timeout=900)
    seeds = [0, 1, 2]
    train_seeds(runner_config(), "pole", seed_dirs(one / "seeds", seeds), seeds, get_agent,
                progress=False)
    train(runner_config(data_parallel=True), "pole", str(one / "dp"), get_agent, progress=False)
    pairs = [(a, b) for a, b in zip(seed_dirs(two / "seeds", seeds),
                                    seed_dirs(one / "seeds", seeds))] + [(two / "dp", one / "dp")]
    for a, b in pairs:
        assert_same_rows(a, b)
        x, _, _ = load_run(a, get_agent)
        y, _, _ = load_run(b, get_agent)
        for u, v in zip(jax.tree.leaves(x.actor.params), jax.tree.leaves(y.actor.params)):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-5)
    # Resumed on one device: the runs written on two go on as the one-device runs do.
    for base in (two, one):
        train_seeds(runner_config(30), "pole", seed_dirs(base / "seeds", seeds), seeds,
                    get_agent, progress=False)
    for a, b in pairs[:-1]:
        assert_same_rows(a, b)
        assert [r["step"] for r in metrics_table(a)][-1] == "30"


# ---------------------------------------------------------------------------------------------
# On the device (experiments/gpu_check.py runs these on a GPU; here they run on the CPU)
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bc", "dql", "guided", "dppo", "qc"])
def test_agent_updates_and_acts_on_the_device(name):
    """Every agent's fused updates, its RL step and its acting run on JAX's default device, with
    finite metrics and actions in bounds. (DPPO's update takes rollouts: its BC stage here.)"""
    from dprl.run.updates import fused_updates

    agent = tiny_agent(name)
    buffer = synthetic_buffer()
    method = "pretrain" if name in ("bc", "dppo") else "update"
    agent, info = fused_updates(agent, buffer, None, jax.random.PRNGKey(1), num_steps=3,
                                method=method, batch_size=16, horizon=agent.config.horizon,
                                obs_history=agent.config.obs_history)
    chunks, _ = jax.jit(agent.sample_actions)(buffer.observations[:4], jax.random.PRNGKey(2))
    device = jax.devices()[0]
    assert chunks.devices() == {device}
    assert all(leaf.devices() == {device} for leaf in jax.tree.leaves(agent)
               if isinstance(leaf, jax.Array))
    assert info and all(np.isfinite(v) for v in jax.device_get(info).values())
    assert float(jnp.abs(chunks).max()) <= 1.0


@pytest.mark.gpu
def test_seeds_spread_over_all_local_devices():
    """``SeedPlacement`` over every local device: one vmapped program updates 2 x devices + 1
    seeds (padded), and each seed's parameters equal those of the same program on one device."""
    from dprl.run.sharding import SeedPlacement
    from dprl.run.updates import stack, vmapped_updates

    n = jax.local_device_count()
    seeds = 2 * n + 1
    agents = stack([tiny_agent("dql", seed=s) for s in range(seeds)])
    keys = jax.random.split(jax.random.PRNGKey(1), seeds)
    buffer = synthetic_buffer()
    kw = dict(num_steps=2, method="update", batch_size=16, horizon=1, obs_history=1)
    place = SeedPlacement.of(seeds)
    assert place.num_devices == n and place.padded % n == 0
    spread, _ = vmapped_updates(place.put(agents), place.replicate(buffer), place.put(keys), **kw)
    single = SeedPlacement.of(seeds, num_devices=1)
    alone, _ = vmapped_updates(single.put(agents), single.replicate(buffer), single.put(keys),
                               **kw)
    assert len(jax.tree.leaves(spread)[0].sharding.device_set) == n
    for a, b in zip(jax.tree.leaves(alone.critic.params), jax.tree.leaves(spread.critic.params)):
        np.testing.assert_allclose(np.asarray(b)[:seeds], np.asarray(a), rtol=1e-4, atol=1e-5)


# DPPO's PPO minibatches (its data-parallel case: 50,000 pairs at the paper's config) split over
# two devices, against the same update on one.
SHARDED_PPO = r"""
import json, sys
sys.path.insert(0, "tests")
import jax, jax.numpy as jnp, numpy as np
from test_sharding import tiny_agent

assert jax.local_device_count() == 2, jax.devices()
out = {}
E, T = 2, 4
agents = {dp: tiny_agent("dppo", data_parallel=dp) for dp in (False, True)}
rollouts = []
key = jax.random.PRNGKey(3)
obs = jax.random.normal(jax.random.PRNGKey(4), (T, E, 3))
steps = []
for t in range(T):
    key, k = jax.random.split(key)
    steps.append(agents[False].sample_actions(obs[t], k))
chunks = jnp.stack([c for c, _ in steps])
aux = jax.tree.map(lambda *x: jnp.stack(x), *[a for _, a in steps])
rollout = {"observations": obs, "actions": chunks, "aux": aux,
           "rewards": chunks[:, :, 0, 0], "terminals": jnp.zeros((T, E)),
           "dones": jnp.zeros((T, E)), "next_observations": obs, "last_observations": obs[-1]}
(a1, i1), (a2, i2) = (agents[dp].update(rollout) for dp in (False, True))
hlo = type(agents[True]).update.lower(agents[True], rollout).compile().as_text()
out["all_reduce"] = "all-reduce" in hlo
out["moved"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(jax.tree.leaves(agents[False].actor.params), jax.tree.leaves(a1.actor.params)))
out["max_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                      zip(jax.tree.leaves(a1.actor.params), jax.tree.leaves(a2.actor.params)))
out["info"] = {k: [float(i1[k]), float(i2[k])] for k in i1}
print("RESULT " + json.dumps(out))
"""


def test_ppo_minibatches_split_over_two_devices_match_one_device():
    """DPPO with run.data_parallel: each PPO minibatch is laid out over both devices (the
    program holds the gradients' all-reduce) and the update equals the one-device update."""
    r = _result(run_on_two_devices(SHARDED_PPO))
    assert r["all_reduce"]
    assert r["moved"] > 1e-5
    assert r["max_diff"] < 1e-5, r
    for k, (one, two) in r["info"].items():
        assert two == pytest.approx(one, rel=1e-4, abs=1e-6), k


def test_ppo_minibatch_must_split_evenly(monkeypatch):
    from ml_collections import ConfigDict

    from dprl.run import sharding
    run = ConfigDict(dict(data_parallel=True, batch_size=4))
    monkeypatch.setattr(sharding, "batch_devices", lambda run_config: 2)
    assert "ppo_batch_size=5" in sharding.check_data_parallel(run, 5)
    assert sharding.check_data_parallel(run, 6) is None
