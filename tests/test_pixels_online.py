"""Online off-policy finetuning from pixels: the chunk's images stored once as uint8 frames on
the device (dprl/data/buffer.py), read back through insert / sample, histories at online episode
starts, several cameras, and runs through the runner that checkpoint, resume and evaluate."""
from __future__ import annotations

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dprl.data.buffer import Buffer, example_batch, sample_mixed, transition_block
from dprl.data.frames import Frames, PixelObservations, PixelSpec
from dprl.data.offline import Normalizer, OfflineData
from dprl.envs.vector import ChunkExecutor, VecEnv
from dprl.run.collect import run_chunk

SPEC = PixelSpec(3, (4, 5, 3))
# One compiled gather instead of many eager ops (the tests read batches, not timings).
_gather = jax.jit(Buffer.gather, static_argnames=("horizon", "obs_history"))


def _frame(step: int, episode: int, shape=(4, 5, 3)) -> np.ndarray:
    """A frame that names its episode and step (every pixel of it)."""
    return np.full(shape, (episode * 37 + step) % 251, np.uint8)


def _episodes(lengths: list[int], spec: PixelSpec = SPEC) -> dict:
    """Transitions of consecutive episodes (one env, time order): observation ``t`` of an episode
    shows ``_frame(t, episode)`` in every camera (camera ``c`` adds ``c``), its state is
    ``[episode, t, 0]`` (its first ``state_dim``)."""
    cams = list(spec.camera_shapes.items())

    def obs(t, e):
        return {**{k: _frame(t, e, s) + np.uint8(c) for c, (k, s) in enumerate(cams)},
                "state": np.array([e, t, 0][:spec.state_dim], np.float32)}

    rows = []
    for e, T in enumerate(lengths):
        for t in range(T):
            rows.append({"observations": obs(t, e), "next_observations": obs(t + 1, e),
                         "actions": np.array([t / 100, e / 100], np.float32),
                         "rewards": np.float32(t), "terminals": np.float32(t == T - 1),
                         "dones": np.float32(t == T - 1)})
    return jax.tree.map(lambda *x: np.stack(x), *rows)


def _insert_in_chunks(buf: Buffer, trans: dict, rows: int, spec: PixelSpec = SPEC) -> Buffer:
    """Insert ``trans`` in blocks of ``rows`` rows (the last one partly filled), jitted."""
    insert = jax.jit(Buffer.insert)
    n = len(trans["actions"])
    for s in range(0, n, rows):
        part = jax.tree.map(lambda x: x[s:s + rows], trans)
        block, count = transition_block(part, rows, spec, 2)
        buf = insert(buf, block, np.int32(count))
    return buf


def test_uint8_frames_round_trip_through_insert_and_sample_each_frame_once():
    lengths = [7, 1, 5, 9]
    trans = _episodes(lengths)
    n = len(trans["actions"])
    buf = _insert_in_chunks(Buffer.empty(40, SPEC, 2), trans, rows=3)
    assert int(buf.size) == n
    # the images stay uint8 on the device; the rows hold int32 frame indices
    assert buf.frames["image"].dtype == jnp.uint8 and isinstance(buf.frames["image"], jax.Array)
    assert buf.observations["image"].dtype == jnp.int32
    # every episode step's frame once: T + 1 frames per episode of T steps
    assert int(buf.frame_count["image"]) == n + len(lengths)
    batch = _gather(buf, jnp.arange(n))
    assert batch["observations"]["image"].dtype == jnp.uint8
    np.testing.assert_array_equal(batch["observations"]["image"], trans["observations"]["image"])
    np.testing.assert_array_equal(batch["next_observations"]["image"],
                                  trans["next_observations"]["image"])
    np.testing.assert_array_equal(batch["observations"]["state"], trans["observations"]["state"])
    np.testing.assert_array_equal(batch["actions"][:, 0], trans["actions"])
    # sampled (jitted) batches read the same frames as their indices say
    s = jax.jit(lambda b, k: b.sample(k, 64))(buf, jax.random.PRNGKey(0))
    ep, t = np.asarray(s["observations"]["state"][:, :2]).T
    want = np.stack([_frame(int(a), int(b)) for a, b in zip(t, ep)])
    np.testing.assert_array_equal(s["observations"]["image"], want)
    want_next = np.stack([_frame(int(a) + 1, int(b)) for a, b in zip(t, ep)])
    np.testing.assert_array_equal(s["next_observations"]["image"], want_next)
    # device bytes of what is written: about one frame per transition, not two
    frame = 4 * 5 * 3
    assert buf.nbytes_used_per_transition() < frame * (n + len(lengths)) / n + 64


def test_a_restarted_env_gets_its_own_first_frame():
    """An episode cut without a ``done`` (envs restarted on resume) is followed by a frame that
    differs from its last next frame: the insert compares frames, so nothing is aliased."""
    a, b = _episodes([4]), _episodes([3, 2])
    a["dones"][-1] = a["terminals"][-1] = 0.0                  # cut, no done
    b = jax.tree.map(lambda x: x, b)
    b["observations"]["image"] = b["observations"]["image"] + np.uint8(100)
    b["next_observations"]["image"] = b["next_observations"]["image"] + np.uint8(100)
    buf = _insert_in_chunks(Buffer.empty(20, SPEC, 2), a, rows=4)
    buf = _insert_in_chunks(buf, b, rows=4)
    batch = _gather(buf, jnp.arange(9))
    both = jax.tree.map(lambda x, y: np.concatenate([x, y]), a, b)
    np.testing.assert_array_equal(batch["observations"]["image"], both["observations"]["image"])
    np.testing.assert_array_equal(batch["next_observations"]["image"],
                                  both["next_observations"]["image"])
    assert int(buf.frame_count["image"]) == 9 + 3


@pytest.mark.parametrize("spec", [SPEC, 3])
def test_a_grown_buffer_keeps_its_transitions_and_takes_more(spec):
    """An extended online phase resumes into a larger buffer (``Buffer.grown``): the stored
    transitions and frames read back the same, and new ones append after them."""
    trans = _episodes([3, 4])
    if spec == 3:                                              # flat observations: the states
        trans = {**trans, "observations": trans["observations"]["state"],
                 "next_observations": trans["next_observations"]["state"]}
    small = _insert_in_chunks(Buffer.empty(8, spec, 2), jax.tree.map(lambda x: x[:4], trans),
                              rows=4, spec=spec)
    big = small.grown(Buffer.empty(20, spec, 2).room)
    assert big.capacity == 20 and int(big.size) == 4
    assert big.room == Buffer.empty(20, spec, 2).room and small.like(big.room).room == big.room
    big = _insert_in_chunks(big, jax.tree.map(lambda x: x[4:], trans), rows=4, spec=spec)
    got = _gather(big, jnp.arange(7))
    jax.tree.map(np.testing.assert_array_equal, got["observations"], trans["observations"])
    jax.tree.map(np.testing.assert_array_equal, got["next_observations"],
                 trans["next_observations"])


def test_online_history_at_episode_starts_repeats_the_first_frame():
    trans = _episodes([2, 6])
    buf = _insert_in_chunks(Buffer.empty(20, SPEC, 2), trans, rows=5)
    start = 2                                                    # the second episode's first step
    batch = _gather(buf, jnp.array([start, start + 1, start + 4]), horizon=2, obs_history=3)
    img = np.asarray(batch["observations"]["image"])             # [3, K, H, W, C]
    assert img.dtype == np.uint8 and img.shape == (3, 3, 4, 5, 3)
    first, second = _frame(0, 1), _frame(1, 1)
    for k in range(3):
        np.testing.assert_array_equal(img[0, k], first)
    np.testing.assert_array_equal(img[1, 0], first)
    np.testing.assert_array_equal(img[1, 1], first)
    np.testing.assert_array_equal(img[1, 2], second)
    np.testing.assert_array_equal(img[2], np.stack([_frame(t, 1) for t in (2, 3, 4)]))
    # next observations: the history one step on from the chunk's last step (t=1 -> t=2)
    nxt = np.asarray(batch["next_observations"]["image"])
    np.testing.assert_array_equal(nxt[0], np.stack([_frame(t, 1) for t in (0, 1, 2)]))
    # a chunk that starts at the first episode's last step stops at its end
    end = _gather(buf, jnp.array([1]), horizon=2, obs_history=3)
    np.testing.assert_array_equal(end["valid"], [[1.0, 0.0]])
    np.testing.assert_array_equal(end["next_observations"]["image"][0, -1], _frame(2, 0))


def test_executed_pixel_chunks_are_stored_as_they_were_observed():
    """The executor's dict observations (uint8 images) -> run_chunk -> transition_block -> insert:
    the buffer gives back the frames the env showed, and the episodes' starts repeat in the
    history."""
    vec = VecEnv("dprl/PixelWaypointChain-v0", 1, seed=0, env_kwargs={"max_steps": 12})
    ex = ChunkExecutor(vec, act_steps=8)
    ex.reset()
    spec = PixelSpec(3, (32, 32, 3))
    buf = Buffer.empty(64, spec, 2)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(6):
        t = run_chunk(ex, rng.uniform(-1, 1, (1, 8, 2)).astype(np.float32), 1000)
        assert t["observations"]["image"].dtype == np.uint8
        assert t["observations"]["state"].dtype == np.float32
        seen.append(t)
        block, count = transition_block(t, 8, spec, 2)
        buf = jax.jit(Buffer.insert)(buf, block, np.int32(count))
    seen = jax.tree.map(lambda *x: np.concatenate(x), *seen)
    n = len(seen["actions"])
    batch = _gather(buf, jnp.arange(n))
    np.testing.assert_array_equal(batch["observations"]["image"], seen["observations"]["image"])
    np.testing.assert_array_equal(batch["next_observations"]["image"],
                                  seen["next_observations"]["image"])
    ends = int(seen["dones"].sum())
    assert ends >= 3                                           # episodes of 12 steps
    assert int(buf.frame_count["image"]) <= n + ends + 1
    starts = np.flatnonzero(seen["dones"][:-1]) + 1
    hist = _gather(buf, jnp.asarray(starts), obs_history=2)["observations"]["image"]
    np.testing.assert_array_equal(hist[:, 0], seen["observations"]["image"][starts])


def _two_camera_data(n_eps=3, T=4):
    spec = PixelSpec.of(2, {"image": (4, 5, 3), "image_wrist": (6, 6, 1)})
    stores = {k: np.stack([np.full(s, 10 * e + t + c, np.uint8) for e in range(n_eps)
                           for t in range(T + 1)])
              for c, (k, s) in enumerate(spec.camera_shapes.items())}
    idx = np.array([e * (T + 1) + t for e in range(n_eps) for t in range(T)])
    state = np.arange(n_eps * T * 2, dtype=np.float32).reshape(-1, 2)
    obs = PixelObservations(state=state, **{k: Frames(v, idx) for k, v in stores.items()})
    nxt = PixelObservations(state=state + 1, **{k: Frames(v, idx + 1) for k, v in stores.items()})
    dones = np.zeros(n_eps * T, bool)
    dones[T - 1::T] = True
    data = OfflineData(observations=obs, actions=np.zeros((n_eps * T, 2), np.float32),
                       rewards=np.zeros(n_eps * T, np.float32), terminals=dones,
                       timeouts=np.zeros(n_eps * T, bool), dones=dones, next_observations=nxt,
                       metadata={"augment": "shift"})
    return spec, stores, data


def test_several_cameras_each_get_their_own_frame_store():
    spec, stores, data = _two_camera_data()
    assert data.observations.spec == spec
    assert spec.camera_shapes == {"image": (4, 5, 3), "image_wrist": (6, 6, 1)}
    assert PixelSpec.of(2, {"image": (4, 5, 3)}) == PixelSpec(2, (4, 5, 3))  # one camera: as before
    norm = Normalizer.fit(data.observations)
    assert norm.dim == spec and Normalizer.from_dict(norm.to_dict()).dim == spec
    assert Normalizer.identity(spec).dim == spec
    off = Buffer.from_offline(data, norm)
    assert set(off.frames) == {"image", "image_wrist"}
    assert off.frames["image_wrist"].dtype == jnp.uint8 and off.obs_spec == spec
    b = _gather(off, jnp.arange(12))
    for k in stores:
        np.testing.assert_array_equal(b["observations"][k], np.asarray(data.observations[k]))
        np.testing.assert_array_equal(b["next_observations"][k],
                                      np.asarray(data.next_observations[k]))
    ex = example_batch(spec, 2, 3, obs_history=2)
    assert ex["observations"]["image_wrist"].shape == (2, 2, 6, 6, 1)
    assert ex["observations"]["image"].dtype == np.uint8
    # online: both cameras stored and mixed with the offline batches (augmented as offline)
    trans = _episodes([3, 4], spec)
    on = _insert_in_chunks(Buffer.empty(16, spec, 2), trans, rows=4, spec=spec)
    got = _gather(on, jnp.arange(7))
    for k in stores:
        np.testing.assert_array_equal(got["observations"][k], trans["observations"][k])
    mixed = jax.jit(lambda k: sample_mixed(off, on, k, 8, 0.5, 2, 2))(jax.random.PRNGKey(0))
    assert mixed["observations"]["image_wrist"].shape == (8, 2, 6, 6, 1)
    assert mixed["observations"]["image_wrist"].dtype == jnp.uint8


def test_bad_pixel_keys_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="image"):
        PixelSpec.of(2, {"wrist": (4, 4, 3)})
    obs = PixelObservations(state=np.zeros((2, 2), np.float32),
                            depth=Frames(np.zeros((3, 2, 2, 1), np.uint8), np.arange(2)))
    with pytest.raises(ValueError, match="image"):
        Normalizer.fit(obs)


# ---- through the runner: checkpoint, resume, evaluate --------------------------------------------
def _pixel_config(agent: str, **run):
    import importlib
    from tests.conftest import tiny
    config = tiny(importlib.import_module(f"configs.{agent}").get_config(), **run)
    config.encoder.name = "impala_debug"
    config.encoder.mlp_dims = (16,)
    config.critic_hidden_dims = (32, 32)
    if "num_samples" in config:
        config.num_samples = 2
    if agent == "dql":
        config.actor.diffusion_steps = 3
    else:
        config.actor.flow_steps = 3
    config.run.eval_episodes = 2
    return config


def _rows(run_dir) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("agent,task", [("qc", "pixel-chain"), ("dql", "pixel-pole")])
def test_online_pixel_run_checkpoints_resumes_and_evaluates(tmp_path, agent, task):
    """An offline -> online run from pixels, killed after 40 env steps (a first run with that
    budget) and resumed with 80: its online buffer (uint8 frames) comes back from the
    checkpoint and the run evaluates online."""
    from agents import get_agent
    from dprl.run.runner import Run, train
    run_dir = tmp_path / agent
    common = dict(pretrain_steps=10, offline_steps=10, steps_per_dispatch=10, log_every=10,
                  online_log_every=20, online_eval_every=40, save_every=20)
    train(_pixel_config(agent, online_steps=40, **common), task, str(run_dir), get_agent,
          progress=False)
    summary = train(_pixel_config(agent, online_steps=80, **common), task, str(run_dir),
                    get_agent, progress=False)
    assert summary["online_steps"] == 80 and np.isfinite(summary["online_score"])
    rows = _rows(run_dir)
    online = [r for r in rows if r["phase"] == "online"]
    assert [int(r["env_steps"]) for r in online if r.get("eval/success_rate")] == [40, 80]
    assert all(np.isfinite(float(r["critic/loss"])) for r in online if r.get("critic/loss"))
    run = Run(_pixel_config(agent, online_steps=80, **common), task, str(run_dir), get_agent,
              progress=False)                                 # the last checkpoint's state
    buf = run.online
    run.close()
    assert buf.frames["image"].dtype == jnp.uint8 and int(buf.size) >= 80
    n = int(buf.size)
    # the frames in use: one per transition plus one per episode start
    assert n < int(buf.frame_count["image"]) <= 2 * n
    batch = _gather(buf, jnp.arange(n))
    assert batch["observations"]["image"].dtype == jnp.uint8
    assert int(jnp.abs(batch["observations"]["image"].astype(jnp.int32)).sum()) > 0
