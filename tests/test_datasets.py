"""dprl.datasets: policy format, SAC, locomotion and OGBench recipes, registry, CLI.

Datasets go to the session's temporary MINARI_DATASETS_PATH (tests/conftest.py). The locomotion
recipes run on dprl's shipped SAC policies (``dprl/experts``), so nothing outside the repository
is needed; OGBench tests skip only when the optional ``ogbench`` extra is not installed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dprl.envs.tasks import LOCOMOTION_ENVS, LOCOMOTION_RECIPES
from dprl.data.io import dataset_dir, write_minari_dataset
from dprl.experts.policies import load_policy, save_policy
from dprl.data.registry import DatasetError, check_dataset_dir, resolve_dataset
from dprl.datasets.verify import verify_dataset

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- policy format
def _tiny_policy(path, squash="clip", obs_dim=4, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    kw = dict(hidden=[(rng.normal(size=(obs_dim, 8)), rng.normal(size=8)),
                      (rng.normal(size=(8, 8)), rng.normal(size=8))],
              W_out=rng.normal(size=(8, act_dim)), b_out=rng.normal(size=act_dim),
              obs_mean=rng.normal(size=obs_dim), obs_std=rng.uniform(0.5, 2, obs_dim))
    if squash == "clip":
        kw["log_std"] = np.full(act_dim, -1.0)
    else:
        kw.update(W_log_std=rng.normal(size=(8, act_dim)), b_log_std=np.zeros(act_dim),
                  activation="relu")
    return save_policy(path, squash=squash, meta={"note": "test"}, **kw), kw


def test_policy_roundtrip_and_forward(tmp_path):
    path, kw = _tiny_policy(tmp_path / "p.npz")
    pol = load_policy(path)
    obs = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    h = (obs - kw["obs_mean"]) / (kw["obs_std"] + 1e-6)
    for W, b in kw["hidden"]:
        h = np.tanh(h @ W + b)
    expected = np.clip(h @ kw["W_out"] + kw["b_out"], -1, 1)
    np.testing.assert_allclose(pol.act(obs, deterministic=True), expected, atol=1e-5)
    assert pol.act(obs[0], deterministic=True).shape == (2,)          # unbatched
    sampled = pol.act(obs, np.random.default_rng(0))
    assert sampled.shape == (5, 2) and np.all(np.abs(sampled) <= 1)
    assert pol.meta == {"note": "test"}

    path_t, _ = _tiny_policy(tmp_path / "t.npz", squash="tanh")
    pol_t = load_policy(path_t)
    mean, std = pol_t.distribution(obs)
    np.testing.assert_allclose(pol_t.act(obs, deterministic=True), np.tanh(mean), atol=1e-6)
    assert std.shape == (5, 2)


def test_policy_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dprl.sac"):
        load_policy(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_policy(tmp_path / "junk.npz")


@pytest.mark.parametrize("robot", list(LOCOMOTION_ENVS))
def test_shipped_experts_load_act_and_carry_provenance(robot):
    """Every robot ships an expert and a medium snapshot that act in its env, with provenance."""
    import gymnasium as gym

    from dprl import experts
    entry = experts.manifest()[robot]
    env = gym.make(LOCOMOTION_ENVS[robot])
    obs, _ = env.reset(seed=0)
    returns = {}
    for level in ("expert", "medium"):
        pol = load_policy(experts.shipped_policy(robot, level))
        assert pol.obs_dim == env.observation_space.shape[0]
        action = pol.act(obs, deterministic=True)
        assert action.shape == env.action_space.shape and np.all(np.abs(action) <= 1)
        assert {"command", "env_steps", "eval_return_mean", "level"} <= set(pol.meta)
        returns[level] = entry["levels"][level]["eval_return_mean"]
    assert entry["command"].startswith("python -m dprl.sac") and entry["seed"] is not None
    # medium: the first snapshot at 1/3 of D4RL's expert return, below the run's best.
    assert entry["medium_target"] <= returns["medium"] * 1.25 and returns["medium"] < returns["expert"]
    for part in experts.shipped_replay(robot):
        assert part["path"] is None or part["path"].is_file()


def test_policy_obs_adapter_for_v4_ant_experts(tmp_path):
    """Users' Ant-v4 experts (111-dim observations) act on Ant-v5 (105) through zero insertion."""
    import gymnasium as gym

    from dprl.datasets.locomotion import policy_obs_adapter
    env = gym.make("Ant-v5")
    obs, _ = env.reset(seed=0)
    path, _ = _tiny_policy(tmp_path / "ant_v4.npz", obs_dim=111, act_dim=8)
    pol = load_policy(path)
    adapt = policy_obs_adapter(pol.obs_dim, env.observation_space.shape[0], "ant")
    assert adapt(obs[None]).shape == (1, 111)
    assert pol.act(adapt(obs[None]), deterministic=True).shape == (1, 8)
    with pytest.raises(ValueError, match="expects"):
        policy_obs_adapter(111, 27, "ant")


# ----------------------------------------------------------------------------- SAC
@pytest.fixture(scope="module")
def tiny_sac_run(tmp_path_factory):
    from dprl.experts.sac import SACConfig, train
    out = tmp_path_factory.mktemp("sac")
    # expert_return tiny so the first evaluation already counts as "medium" (files get written).
    summary = train("Hopper-v5", 600, out, start_steps=200, fuse=50, eval_every=300,
                    eval_episodes=2, snapshot_every=300, expert_return=1.0,
                    config=SACConfig(hidden=(16, 16), batch_size=32), progress=False)
    return out, summary


def test_sac_train_writes_snapshots_and_replay(tiny_sac_run):
    from dprl.experts.sac import replay_to_episodes
    out, summary = tiny_sac_run
    # Updates run at steps 200, 250, ..., 600: 9 fused calls of 50.
    assert summary["medium_step"] == 300 and summary["updates"] == 450
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,") and len(curve) == 3
    assert (out / "curve.png").stat().st_size > 0
    pol = load_policy(out / "medium.npz")
    assert pol.squash == "tanh" and pol.meta["step"] == 300 and pol.obs_dim == 11
    assert (out / "snapshots" / "step_600.npz").is_file()
    eps = replay_to_episodes(out / "replay.npz")
    assert eps and all(e["terminations"][-1] or e["truncations"][-1] for e in eps)
    for e in eps:
        assert len(e["observations"]) == len(e["actions"]) + 1
    assert len(replay_to_episodes(out / "medium_replay.npz")) <= len(eps)


def test_sac_medium_replay_recipe(tiny_sac_run):
    from dprl.datasets.locomotion import make_locomotion_dataset
    out, _ = tiny_sac_run
    res = make_locomotion_dataset("hopper-medium-replay", 10_000, sac_run=out,
                                  dataset_id="dprl/hopper/sac-medium-replay-test-v0")
    report = verify_dataset(res["dataset_id"], replay_episodes=2)
    assert report["replayed"] == 2
    meta = _meta(res["dataset_id"])
    assert "SAC replay buffer" in meta["dprl"]["policy"]["source"]


# ----------------------------------------------------------------------------- locomotion
def _meta(dataset_id):
    return json.loads((dataset_dir(dataset_id) / "data" / "metadata.json").read_text())


def test_expert_recipes_default_to_shipped_policies(monkeypatch, tmp_path):
    """No flags: the shipped policy, recorded in the metadata; ``--policy`` overrides it, and a
    missing one is refused before any rollout."""
    from dprl import experts
    from dprl.datasets.locomotion import make_locomotion_dataset
    monkeypatch.delenv("DPRL_EXPERTS_DIR", raising=False)
    res = make_locomotion_dataset("hopper-expert", 2000, overwrite=True)
    verify_dataset(res["dataset_id"], replay_episodes=1)
    assert "hopper-expert.npz" in json.dumps(_meta(res["dataset_id"])["dprl"])
    own, _ = _tiny_policy(tmp_path / "own.npz", obs_dim=11, act_dim=3)
    res = make_locomotion_dataset("hopper-expert", 1000, policy_path=own, overwrite=True,
                                  dataset_id="dprl/hopper/own-expert-test-v0")
    assert "own.npz" in json.dumps(_meta(res["dataset_id"])["dprl"])
    with pytest.raises(FileNotFoundError):
        make_locomotion_dataset("hopper-expert", 1000, policy_path=tmp_path / "missing.npz",
                                overwrite=True, dataset_id="dprl/hopper/missing-test-v0")
    assert experts.shipped_policy("hopper", "expert").is_file()


# hopper in the default suite; the other robots' recipes are the same code (slow: ~25 s each).
@pytest.mark.parametrize("robot", [pytest.param(r, marks=() if r == "hopper" else pytest.mark.slow)
                                   for r in LOCOMOTION_ENVS])
def test_locomotion_recipes(robot):
    from dprl.datasets.locomotion import make_locomotion_dataset
    for recipe in LOCOMOTION_RECIPES:
        task = f"{robot}-{recipe}"
        res = make_locomotion_dataset(task, 2000, seed=1, overwrite=True)
        assert res["total_steps"] >= 2000
        report = verify_dataset(res["dataset_id"], replay_episodes=1)
        assert report["replayed"] == 1
        meta = _meta(res["dataset_id"])
        assert meta["dprl"]["recipe"] == recipe and meta["dprl"]["dprl_version"]
        assert meta["ref_min_score"] < meta["ref_max_score"]
        assert res["dataset_id"].startswith("dprl/")
    med = _meta(f"dprl/{robot}/medium-v0")["dprl"]["normalized_score"]
    exp = _meta(f"dprl/{robot}/expert-v0")["dprl"]["normalized_score"]
    rnd = _meta(f"dprl/{robot}/random-v0")["dprl"]["normalized_score"]
    assert rnd < med <= exp + 5


# ----------------------------------------------------------------------------- OGBench
@pytest.mark.parametrize("task", ["cube-single", "cube-double", "scene", "puzzle-3x3"])
def test_manipulation_recipes(task):
    pytest.importorskip("ogbench", reason="pip install -e '.[ogbench]'")
    from dprl.envs.tasks import get_task
    from dprl.datasets.ogbench_recipes import make_manipulation_dataset
    res = make_manipulation_dataset(task, 1000, episode_length=500, seed=1, overwrite=True)
    assert res["num_episodes"] == 2 and res["total_steps"] == 1000
    preset = get_task(task)
    assert res["dataset_id"] == preset["dataset_id"] and preset["score"] == "success"
    report = verify_dataset(res["dataset_id"], replay_episodes=1)   # single-task rewards
    assert report["replayed"] == 1
    verify_dataset(res["play_dataset_id"], replay_episodes=0)
    meta = _meta(res["dataset_id"])
    assert meta["dprl"]["oracle_noise"] == 0.1
    assert json.loads(meta["env_spec"])["id"] == preset["env_id"]


def _assert_same_episodes(a, b):
    """Bit-for-bit equality of two lists of collected play episodes (wall times aside)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k in x:
            if k == "seconds":
                continue
            vx, vy = np.asarray(x[k]), np.asarray(y[k])
            assert vx.dtype == vy.dtype and np.array_equal(vx, vy), (x["index"], k)


class _Interrupt(Exception):
    pass


def _interrupt_after(episodes_done):
    def on_chunk(done, total):
        if done >= episodes_done:
            raise _Interrupt
    return on_chunk


def test_play_collection_resumes_bit_for_bit(tmp_path):
    """Interrupted after its first chunk and run again, a collection gives exactly the episodes
    of an uninterrupted one; every episode depends only on (seed, index)."""
    pytest.importorskip("ogbench", reason="pip install -e '.[ogbench]'")
    from dprl.datasets.ogbench_recipes import (collect_play_episodes,
                                               collect_play_episodes_resumable)
    np.random.seed(123)
    caller_rng = np.random.get_state()
    whole = collect_play_episodes("scene", 4, seed=5, episode_length=50)
    assert np.array_equal(np.random.get_state()[1], caller_rng[1])  # caller's RNG untouched
    assert [e["index"] for e in whole] == [0, 1, 2, 3]
    assert whole[0]["observations"].shape == (51, 40) and whole[0]["actions"].shape == (50, 5)
    assert whole[0]["qpos"].shape[0] == 51 and whole[0]["button_states"].shape == (51, 2)
    assert len({e["seed"] for e in whole}) == 4
    part = tmp_path / "partial"
    with pytest.raises(_Interrupt):
        collect_play_episodes_resumable("scene", 4, part, seed=5, episode_length=50,
                                        chunk_episodes=2, on_chunk=_interrupt_after(2))
    assert sorted(p.name for p in part.glob("*.npz")) == ["episodes-000000-000002.npz"]
    resumed = collect_play_episodes_resumable("scene", 4, part, seed=5, episode_length=50,
                                              chunk_episodes=2)
    _assert_same_episodes(resumed, whole)
    # A later slice collected on its own (fresh env, fresh process state) is the same data.
    _assert_same_episodes(collect_play_episodes("scene", 2, seed=5, episode_length=50,
                                                first_episode=2), whole[2:])
    # Another seed is other data; the saved chunks refuse other settings.
    other = collect_play_episodes("scene", 1, seed=6, episode_length=50)
    assert not np.array_equal(other[0]["actions"], whole[0]["actions"])
    with pytest.raises(ValueError, match="other settings"):
        collect_play_episodes_resumable("scene", 4, part, seed=6, episode_length=50)


def test_make_manipulation_dataset_resumes_and_records_statistics():
    pytest.importorskip("ogbench", reason="pip install -e '.[ogbench]'")
    from dprl.datasets.ogbench_recipes import (default_partial_dir, make_manipulation_dataset,
                                               unfinished_collections)
    task, kw = "cube-double", dict(num_episodes=3, episode_length=60, seed=2, chunk_episodes=2)
    partial = default_partial_dir(task, seed=2, episode_length=60)
    for ds in ("dprl/cube-double/play-v0", "dprl/cube-double/play-singletask-v0"):
        shutil.rmtree(dataset_dir(ds), ignore_errors=True)
    with pytest.raises(_Interrupt):
        make_manipulation_dataset(task, on_chunk=_interrupt_after(2), **kw)
    assert len(list(partial.glob("episodes-*.npz"))) == 1
    assert not dataset_dir("dprl/cube-double/play-v0").exists()
    assert unfinished_collections(task) == [(partial, 2)]     # shown by `datasets list`
    res = make_manipulation_dataset(task, **kw)
    assert not partial.exists() and not unfinished_collections(task)   # removed once stored
    assert res["num_episodes"] == 3 and res["total_steps"] == 180
    verify_dataset(res["dataset_id"], replay_episodes=3)
    verify_dataset(res["play_dataset_id"], replay_episodes=0)
    stats = _meta(res["dataset_id"])["dprl"]["statistics"]
    ours = stats["ours"]
    assert ours["observation_dim"] == 37 and ours["action_dim"] == 5
    assert ours["transitions"] == 180 and ours["transitions_in_ogbench_layout"] == 177
    assert set(ours["per_task"]) == {f"task{i}" for i in range(1, 6)}
    # OGBench's relabeling of the stored float32 qpos agrees with the collection-time labels of
    # the default task (task2 for cube-double).
    assert ours["collected_rewards_label_agreement"] == 1.0
    assert "task2" in ours["tasks_matching_collected_rewards"]
    cmp = stats["comparison"]
    assert cmp["observation_dim"] == {"ours": 37, "ogbench": 37, "match": True}
    assert cmp["evaluation_episode_length"]["match"] and cmp["default_task"]["match"]
    assert cmp["num_episodes"]["match"] is False and cmp["transitions"]["ogbench"] == 1_000_000
    assert "Q-chunking" in stats["ogbench_documented"]["transitions"]["source"]
    import minari
    ep = next(minari.load_dataset(res["play_dataset_id"]).iterate_episodes())
    assert ep.infos["qpos"].shape == (61, 28) and ep.infos["qpos"].dtype == np.float32
    # Made, and its partial directory gone: making it again needs --overwrite, before any work.
    with pytest.raises(FileExistsError, match="overwrite"):
        make_manipulation_dataset(task, **kw)
    assert not partial.exists()


def test_cli_collection_survives_kill_9(tmp_path):
    """`make` killed with SIGKILL mid-collection keeps its saved chunks; the same command then
    finishes from them, and the dataset holds exactly the episodes saved before the kill."""
    pytest.importorskip("ogbench", reason="pip install -e '.[ogbench]'")
    import signal
    import time

    import minari
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "dprl.datasets", "make", "puzzle-3x3", "--episodes", "6",
           "--episode-length", "60", "--chunk-episodes", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    partial = tmp_path / "dprl" / "puzzle-3x3" / ".partial-play-seed0-len60"
    deadline = time.time() + 300
    while not list(partial.glob("episodes-*.npz")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = {p.name: np.load(p)["actions"] for p in sorted(partial.glob("episodes-*.npz"))}
    assert saved and len(saved) < 6
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "resuming puzzle-3x3" in proc.stderr and not partial.exists()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path))
        episodes = list(minari.load_dataset("dprl/puzzle-3x3/play-v0").iterate_episodes())
    assert len(episodes) == 6
    for k, actions in enumerate(saved.values()):
        assert np.array_equal(episodes[k].actions, actions)


# ----------------------------------------------------------------------------- registry
def _write_fake(dataset_id, env_id="Hopper-v5", steps=30, seed=0):
    import gymnasium as gym
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    obs = [env.reset(seed=seed)[0]]
    acts, rews, terms, truncs = [], [], [], []
    for t in range(steps):
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        o, r, te, tr, _ = env.step(a)
        obs.append(o), acts.append(a), rews.append(r), terms.append(te)
        truncs.append(tr or t == steps - 1 and not te)
        if te:
            break
    ep = {"observations": np.array(obs), "actions": np.array(acts), "rewards": np.array(rews),
          "terminations": np.array(terms), "truncations": np.array(truncs), "seed": seed}
    return write_minari_dataset(dataset_id, [ep], env_id, overwrite=True)


def test_resolve_prefers_official_then_generated_then_errors():
    task = "walker2d-medium"
    for ds in ("mujoco/walker2d/medium-v0", "dprl/walker2d/medium-v0"):
        shutil.rmtree(dataset_dir(ds), ignore_errors=True)
    with pytest.raises(FileNotFoundError, match="python -m dprl.datasets make walker2d-medium"):
        resolve_dataset(task)
    _write_fake("dprl/walker2d/medium-v0", "Walker2d-v5")
    assert resolve_dataset(task) == ("dprl/walker2d/medium-v0", "dprl-generated")
    _write_fake("mujoco/walker2d/medium-v0", "Walker2d-v5")         # stands in for the official
    assert resolve_dataset(task) == ("mujoco/walker2d/medium-v0", "official")
    assert resolve_dataset(task, forced_id="dprl/walker2d/medium-v0") == (
        "dprl/walker2d/medium-v0", "dprl-generated")
    with pytest.raises(FileNotFoundError, match="not stored"):
        resolve_dataset(task, forced_id="nowhere/at-all-v0")
    shutil.rmtree(dataset_dir("mujoco/walker2d/medium-v0"))


def test_corrupted_datasets_give_clear_errors():
    ds = "dprl/hopper/expert-v0"
    path = _write_fake(ds)
    check_dataset_dir(ds)
    data_file = path / "data" / "main_data.hdf5"
    data_file.write_bytes(data_file.read_bytes()[:100])                # truncated
    with pytest.raises(DatasetError, match="make hopper-expert"):
        check_dataset_dir(ds)
    data_file.unlink()
    with pytest.raises(DatasetError, match="no data file"):
        check_dataset_dir(ds)
    path = _write_fake(ds)
    (path / "data" / "metadata.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        check_dataset_dir(ds)
    path = _write_fake(ds)
    (path / "data" / "metadata.json").unlink()
    with pytest.raises(DatasetError, match="half-written or corrupted"):
        check_dataset_dir(ds)
    # A generator killed mid-write leaves only its temporary directory.
    shutil.rmtree(path)
    tmp = path.parent / f".tmp-{path.name}-deadbeef"
    tmp.mkdir(parents=True)
    with pytest.raises(DatasetError, match="half-written.*make hopper-expert"):
        check_dataset_dir(ds)
    with pytest.raises(DatasetError, match="half-written"):
        resolve_dataset("hopper-expert")
    shutil.rmtree(tmp)


def test_dataset_of_uninstalled_env():
    ds = "dprl/hopper/medium-expert-v0"
    path = _write_fake(ds)
    meta_path = path / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    spec = json.loads(meta["env_spec"])
    spec["id"] = "NotInstalledRobot-v9"
    meta["env_spec"] = json.dumps(spec)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="NotInstalledRobot-v9.*not installed.*pip install"):
        check_dataset_dir(ds)
    shutil.rmtree(path)


def test_unknown_ids():
    with pytest.raises(DatasetError, match="minari download"):
        check_dataset_dir("mujoco/nothing/here-v0")
    with pytest.raises(KeyError, match="Known tasks"):
        resolve_dataset("hopper-mediumm")


# ----------------------------------------------------------------------------- CLI
def test_cli_make_and_list(capsys):
    from dprl.datasets.__main__ import main
    assert main(["make", "halfcheetah-random", "--steps", "1000", "--quiet", "--overwrite"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset_id"] == "dprl/halfcheetah/random-v0" and out["total_steps"] >= 1000
    # The same command over the stored dataset leaves it unchanged; other arguments are refused.
    assert main(["make", "halfcheetah-random", "--steps", "1000", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["unchanged"] is True
    assert main(["make", "halfcheetah-random", "--steps", "1000", "--seed", "1", "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["list", "--json"]) == 0
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["halfcheetah-random"]["generated"]["present"]
    assert rows["halfcheetah-random"]["uses"] == "dprl-generated: dprl/halfcheetah/random-v0"
    assert {"cube-double", "scene", "puzzle-3x3", "pole", "hopper-medium"} <= set(rows)


def test_cli_makes_every_toy_task_through_its_generator(capsys, tmp_path, monkeypatch):
    from dprl.envs.tasks import TASKS
    from dprl.datasets.__main__ import main
    from dprl.data.io import dataset_dir
    # A private dataset root: the 4-episode datasets must not replace the session's shared ones.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    toys = sorted(t for t, p in TASKS.items() if p["generator"])
    assert {"pole", "pole-right", "chain"} <= set(toys)
    for task in toys:
        assert main(["make", task, "--episodes", "4", "--quiet", "--overwrite"]) == 0
        assert json.loads(capsys.readouterr().out)["dataset_id"] == TASKS[task]["dataset_id"]
        assert dataset_dir(TASKS[task]["dataset_id"]).is_relative_to(tmp_path)
    # Every preset is made by the CLI, so every error can name the same kind of command.
    assert all(p["make_command"] == f"python -m dprl.datasets make {t}" for t, p in TASKS.items()
               if p["has_recipe"])


def test_cli_subprocess_list():
    env = {**os.environ}
    proc = subprocess.run([sys.executable, "-m", "dprl.datasets", "list"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "hopper-medium" in proc.stdout and "datasets root" in proc.stdout


# ----------------------------------------------------------------------------- long checks
@pytest.mark.slow
def test_hopper_medium_acceptance():
    """`make hopper-medium --steps 100000` from the shipped medium snapshot: medium-level data."""
    from dprl.data.offline import load_dataset
    from dprl.datasets.__main__ import make
    make("hopper-medium", steps=100_000, overwrite=True, progress=False)
    data = load_dataset("dprl/hopper/medium-v0")
    score = 100 * (data.episode_returns().mean() - data.ref_min_score) / (
        data.ref_max_score - data.ref_min_score)
    assert 30 < score < 60, score
