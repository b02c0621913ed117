"""The benchmarks' released formats read as they are: OGBench npz files and shard directories,
robomimic hdf5, Minari ids. Each test writes a small file in exactly that format, compares dprl's
reader with the official one where it is installed, and checks relabeling and masks against the
stand-in path; bad files get one clear line before any work."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny

ogbench = pytest.importorskip("ogbench")


@pytest.fixture(autouse=True)
def data_dirs(tmp_path, monkeypatch):
    """OGBench's and robomimic's data directories, empty, per test."""
    monkeypatch.setenv("OGBENCH_DATA_DIR", str(tmp_path / "ogbench"))
    monkeypatch.setenv("ROBOMIMIC_DATASET_ROOT", str(tmp_path / "robomimic"))
    return tmp_path


def _ogbench_file(path, lengths=(5, 7, 4), obs_dim=6, act_dim=3, nq=4, buttons=2, seed=0):
    """Episodes of ``lengths`` rows in OGBench's layout and dtypes (ogbench's data scripts)."""
    rng = np.random.default_rng(seed)
    M = sum(lengths)
    terminals = np.zeros(M, bool)
    terminals[np.cumsum(lengths) - 1] = True
    arrays = {"observations": rng.normal(size=(M, obs_dim)).astype(np.float32),
              "actions": rng.uniform(-1, 1, (M, act_dim)).astype(np.float32),
              "terminals": terminals,
              "qpos": rng.normal(size=(M, nq)).astype(np.float32),
              "qvel": rng.normal(size=(M, nq)).astype(np.float32),
              "button_states": rng.integers(0, 2, (M, buttons)).astype(np.int64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


# ---- OGBench npz ----------------------------------------------------------------------------
def test_ogbench_npz_gives_what_ogbench_load_dataset_gives(tmp_path):
    from ogbench.utils import load_dataset as official

    from dprl.data.formats import load_ogbench, parse_source

    path = tmp_path / "ogbench" / "cube-single-play-v0.npz"
    _ogbench_file(path)
    src = parse_source("ogbench:cube-single-play-v0")
    assert src.path == str(path) and not src.sharded
    data = load_ogbench(src)
    ref = official(str(path), compact_dataset=False, add_info=True)
    for key in ("observations", "next_observations", "actions"):
        np.testing.assert_array_equal(getattr(data, key), ref[key])
    for key in ("qpos", "qvel", "button_states"):
        np.testing.assert_array_equal(data.extras[key], ref[key])
        assert data.extras[key].dtype == ref[key].dtype
    # ogbench's 'terminals' mark each episode's last transition: dprl's episode ends.
    np.testing.assert_array_equal(data.dones, ref["terminals"].astype(bool))
    assert data.size == 16 - 3 and data.num_episodes == 3
    assert not data.terminals.any() and (data.timeouts == data.dones).all()
    assert data.env_id == "cube-single-v0"


def test_ogbench_env_of_a_dataset_name():
    from dprl.data.formats import ogbench_env_id, parse_source

    assert ogbench_env_id("scene-play-v0") == "scene-v0"
    assert ogbench_env_id("cube-quadruple-play-100m-v0") == "cube-quadruple-v0"
    assert ogbench_env_id("puzzle-4x4-play-v0") == "puzzle-4x4-v0"
    assert parse_source("ogbench:cube-quadruple-play-100m-v0").sharded
    assert parse_source("minari:mujoco/hopper/medium-v0").ref == "mujoco/hopper/medium-v0"
    assert parse_source("dprl/scene/play-v0").kind == "minari"
    rm = parse_source("robomimic:/data/lift/ph/low_dim_v15.hdf5")
    assert rm.kind == "robomimic" and rm.name == "lift/ph"


def test_bad_ogbench_files_get_one_line_before_work(tmp_path):
    from dprl.data.formats import SourceError, check_source, parse_source

    path = tmp_path / "x" / "scene-play-v0.npz"
    _ogbench_file(path)
    path.write_bytes(path.read_bytes()[:-200])                      # truncated download
    with pytest.raises(SourceError, match="truncated") as e:
        check_source(parse_source(f"ogbench:{path}"))
    assert "\n" not in str(e.value)
    np.savez(path, observations=np.zeros((3, 2), np.float32))       # not an OGBench file
    with pytest.raises(SourceError, match="no actions, terminals"):
        check_source(parse_source(f"ogbench:{path}"))
    with pytest.raises(SourceError, match="not on disk.*ogbench.download_datasets"):
        check_source(parse_source("ogbench:scene-play-v0"))


# ---- OGBench 100M shard directory -------------------------------------------------------------
def test_shard_directory_is_read_shard_by_shard_and_checked(tmp_path):
    from ogbench.utils import load_dataset as official

    from dprl.data.formats import (SourceError, check_source, load_ogbench, ogbench_ram_bytes,
                                   parse_source)

    root = tmp_path / "ogbench" / "cube-quadruple-play-100m-v0"
    for i, lengths in enumerate([(5, 6), (4,), (7, 3, 5)]):
        _ogbench_file(root / f"cube-quadruple-play-100m-v0-{i:03d}.npz", lengths, seed=i)
        _ogbench_file(root / f"cube-quadruple-play-100m-v0-{i:03d}-val.npz", (3,), seed=9)
    src = parse_source("ogbench:cube-quadruple-play-100m-v0")
    check_source(src)
    seen = []

    def on_shard(part):          # a task's relabeling, applied to one shard at a time
        seen.append(part.size)
        part.rewards = part.extras["qpos"][:, 0].copy()
        return part

    data = load_ogbench(src, on_shard=on_shard)
    assert seen == [9, 3, 12] and data.size == 24 and data.num_episodes == 6
    shards = [official(str(root / f"cube-quadruple-play-100m-v0-{i:03d}.npz"),
                       compact_dataset=False, add_info=True) for i in range(3)]
    for key in ("observations", "next_observations", "actions"):
        np.testing.assert_array_equal(getattr(data, key),
                                      np.concatenate([s[key] for s in shards]))
    np.testing.assert_array_equal(data.rewards, np.concatenate([s["qpos"][:, 0] for s in shards]))
    np.testing.assert_array_equal(data.dones, np.concatenate([s["terminals"] for s in shards]))
    first_two = load_ogbench(parse_source("ogbench:cube-quadruple-play-100m-v0@2"))
    assert first_two.size == 9 + 3
    np.testing.assert_array_equal(first_two.actions, data.actions[:12])
    with pytest.raises(SourceError, match="fewer than the 4"):
        check_source(parse_source("ogbench:cube-quadruple-play-100m-v0@4"))
    ram = ogbench_ram_bytes(src)
    assert ram["transitions_at_most"] == 30 and ram["peak_bytes"] > ram["flat_bytes"] > 0
    (root / "cube-quadruple-play-100m-v0-001.npz").unlink()
    with pytest.raises(SourceError, match="misses shard.*1 .*download the missing"):
        check_source(src)


# ---- robomimic hdf5 -------------------------------------------------------------------------
def _robomimic_file(path, lengths=(4, 3, 5), two_arm=False):
    import h5py

    rng = np.random.default_rng(0)
    dims = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 10,
            "robot0_joint_pos": 7}
    if two_arm:
        dims |= {"robot1_eef_pos": 3, "robot1_eef_quat": 4, "robot1_gripper_qpos": 2}
    demos = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}})
        # Written out of order: demo_10 sorts after demo_2 by its number, not its name.
        for k, T in zip((10, 2, 0), lengths):
            g = data.create_group(f"demo_{k}")
            obs = {n: rng.normal(size=(T, d)) for n, d in dims.items()}
            nxt = {n: rng.normal(size=(T, d)) for n, d in dims.items()}
            for n in dims:
                g.create_dataset(f"obs/{n}", data=obs[n])
                g.create_dataset(f"next_obs/{n}", data=nxt[n])
            dones = np.zeros(T, np.int64)
            dones[-1] = int(k != 2)          # demo 2 ends without success
            g.create_dataset("actions", data=rng.uniform(-1, 1, (T, 7)))
            g.create_dataset("rewards", data=dones.astype(np.float64))
            g.create_dataset("dones", data=dones)
            g.attrs["num_samples"] = T
            demos[k] = (obs, nxt, dones)
        f.create_group("mask")
    return demos


def test_robomimic_hdf5(tmp_path):
    from dprl.data.formats import (ROBOMIMIC_OBS_KEYS, SourceError, check_source,
                                   load_robomimic, parse_source, recorded_env_id)

    path = tmp_path / "robomimic" / "lift" / "ph" / "low_dim_v15.hdf5"
    demos = _robomimic_file(path)
    src = parse_source("robomimic:lift/ph")
    assert src.path == str(path)
    check_source(src)
    data = load_robomimic(src)
    order = [0, 2, 10]
    want = np.concatenate([np.concatenate([demos[k][0][n] for n in ROBOMIMIC_OBS_KEYS], 1)
                           for k in order]).astype(np.float32)
    np.testing.assert_array_equal(data.observations, want)
    want_next = np.concatenate([np.concatenate([demos[k][1][n] for n in ROBOMIMIC_OBS_KEYS], 1)
                                for k in order]).astype(np.float32)
    np.testing.assert_array_equal(data.next_observations, want_next)
    assert data.observations.shape == (12, 19)
    np.testing.assert_array_equal(data.terminals, np.concatenate([demos[k][2] for k in order]))
    assert data.num_episodes == 3 and data.timeouts.sum() == 1      # demo 2: no success
    assert recorded_env_id(src) == "Lift"
    bad = tmp_path / "bad.hdf5"
    import h5py
    with h5py.File(bad, "w") as f:
        f.create_group("demos")
    with pytest.raises(SourceError, match="no data/ group"):
        check_source(parse_source(f"robomimic:{bad}"))
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(SourceError, match="cannot be opened"):
        check_source(parse_source(f"robomimic:{bad}"))


def test_robomimic_task_resolves_its_file_or_names_the_download(tmp_path):
    from dprl.data.registry import DatasetError, resolve_source

    with pytest.raises(DatasetError, match="robomimic.scripts.download_datasets --tasks can "
                                           "--dataset_types mh --hdf5_types low_dim"):
        resolve_source("robomimic-can-mh")
    _robomimic_file(tmp_path / "robomimic" / "can" / "mh" / "low_dim_v15.hdf5")
    src, label = resolve_source("robomimic-can-mh")
    assert src.kind == "robomimic" and label == "official"


def test_robomimic_env_needs_its_extra():
    """robosuite is an optional extra: without it the env says which install step is missing
    (robosuite 1.5.2 from PyPI does not run on MuJoCo 4.0: see docs/benchmarks.md)."""
    import gymnasium as gym

    from dprl.envs.vector import make_env
    try:
        import robosuite  # noqa: F401
    except ImportError:
        with pytest.raises(gym.error.DependencyNotInstalled, match=r"pip install -e '.\[robomimic\]'"):
            make_env("dprl/robomimic-lift-ph-v0")
    else:
        pytest.skip("robosuite is installed")


# ---- from pixels: OGBench visual-* npz, robomimic image hdf5 -------------------------------
def _ogbench_visual_file(path, lengths=(5, 7, 4), size=64, act_dim=5, nq=6, seed=0):
    """Episodes in OGBench's visual-* layout: uint8 frames [M, 64, 64, 3] as observations, the
    other arrays as the state files store them (ogbench's data scripts: uint8 observations,
    float32 actions / qpos / qvel, bool terminals, int64 button_states)."""
    rng = np.random.default_rng(seed)
    M = sum(lengths)
    terminals = np.zeros(M, bool)
    terminals[np.cumsum(lengths) - 1] = True
    arrays = {"observations": rng.integers(0, 256, (M, size, size, 3), dtype=np.uint8),
              "actions": rng.uniform(-1, 1, (M, act_dim)).astype(np.float32),
              "terminals": terminals,
              "qpos": rng.normal(size=(M, nq)).astype(np.float32),
              "qvel": rng.normal(size=(M, nq)).astype(np.float32),
              "button_states": rng.integers(0, 2, (M, 2)).astype(np.int64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def test_ogbench_visual_npz_frames_stored_once_as_ogbench_reads_them(tmp_path):
    import jax

    from ogbench.utils import load_dataset as official

    from dprl.data.buffer import Buffer
    from dprl.data.formats import load_ogbench, parse_source, write_ogbench_npz
    from dprl.data.frames import PixelSpec, bytes_per_transition
    from dprl.data.offline import Normalizer

    path = tmp_path / "ogbench" / "visual-cube-single-play-v0.npz"
    arrays = _ogbench_visual_file(path)
    data = load_ogbench(parse_source("ogbench:visual-cube-single-play-v0"))
    # ogbench's make_env_and_datasets reads visual files with ob_dtype=uint8
    ref = official(str(path), ob_dtype=np.uint8, compact_dataset=False, add_info=True)
    obs, nxt = data.observations, data.next_observations
    assert sorted(obs) == ["image", "state"] and obs["state"].shape == (13, 0)
    np.testing.assert_array_equal(np.asarray(obs["image"]), ref["observations"])
    np.testing.assert_array_equal(np.asarray(nxt["image"]), ref["next_observations"])
    np.testing.assert_array_equal(data.actions, ref["actions"])
    np.testing.assert_array_equal(data.dones, ref["terminals"].astype(bool))
    for key in ("qpos", "qvel", "button_states"):
        np.testing.assert_array_equal(data.extras[key], ref[key])
    # every frame once: the store is the file's 16 rows, s and s' index it
    assert obs["image"].store is nxt["image"].store
    assert obs["image"].store.shape == (16, 64, 64, 3) and obs["image"].store.dtype == np.uint8
    np.testing.assert_array_equal(nxt["image"].index, obs["image"].index + 1)
    assert obs.spec == PixelSpec(0, (64, 64, 3))
    assert 64 * 64 * 3 < bytes_per_transition(data) < 1.5 * 64 * 64 * 3
    assert data.env_id == "visual-cube-single-v0" and data.metadata["augment"] == "none"
    # through the buffer: batches look the frames up, s' is the row after s
    buf = Buffer.from_offline(data, Normalizer.fit(obs))
    batch = jax.device_get(buf.gather(np.arange(data.size)))
    np.testing.assert_array_equal(batch["observations"]["image"], ref["observations"])
    np.testing.assert_array_equal(batch["next_observations"]["image"], ref["next_observations"])
    # dprl's writer keeps frames uint8 (ogbench's dtype rule), and reads back the same
    episodes = [{"observations": arrays["observations"][a:b], "actions": arrays["actions"][a:b - 1]}
                for a, b in ((0, 5), (5, 12), (12, 16))]
    again = load_ogbench(parse_source(f"ogbench:{write_ogbench_npz(tmp_path / 'w.npz', episodes)}"))
    np.testing.assert_array_equal(np.asarray(again.next_observations["image"]),
                                  ref["next_observations"])


def test_visual_shard_directory_is_refused_in_one_line(tmp_path):
    from dprl.data.formats import SourceError, load_ogbench, parse_source

    _ogbench_visual_file(tmp_path / "ogbench" / "visual-cube-single-play-100m-v0" / "a-000.npz",
                         size=8)
    with pytest.raises(SourceError, match="camera frames.*single files"):
        load_ogbench(parse_source("ogbench:visual-cube-single-play-100m-v0"))


def test_visual_task_presets_find_the_released_file(tmp_path):
    from dprl.data.registry import DatasetError, resolve_source
    from dprl.envs.tasks import TASKS, get_task

    names = [n for n in TASKS if n.startswith("visual-")]
    for env in ("cube-single", "cube-double", "cube-triple", "cube-quadruple", "scene",
                "puzzle-3x3", "puzzle-4x4"):
        assert f"visual-{env}" in names and f"visual-{env}-task5" in names
    task = get_task("visual-scene-task2")
    assert task.env_id == "dprl/visual-scene-singletask-task2-v0" and task["sparse_reward"]
    assert task["singletask_env_id"] == "scene-singletask-task2-v0"   # judged on stored states
    assert task.data_env_id == "visual-scene-v0" and task["augment"] == "shift"
    with pytest.raises(DatasetError, match="download_datasets.*visual-cube-single-play-v0"):
        resolve_source("visual-cube-single-task1")
    _ogbench_visual_file(tmp_path / "ogbench" / "visual-cube-single-play-v0.npz", size=8)
    src, label = resolve_source("visual-cube-single-task1")
    assert src.kind == "ogbench" and src.name == "visual-cube-single-play-v0"


def test_visual_task_relabels_on_the_stored_states(tmp_path):
    """The visual data get the single task's rewards from the file's qpos (frames say nothing
    to the relabeler): the same labels the state task gives to the same states."""
    import gymnasium as gym

    from dprl.data.formats import parse_source
    from dprl.data.offline import load_source
    from dprl.datasets.ogbench_recipes import stored_state_successes
    from dprl.envs.tasks import get_task

    env = gym.make("cube-single-singletask-task1-v0")
    qpos, qvel = [], []
    for seed in range(3):                 # 3 episodes of 2 rows: reset states (unsolved)
        env.reset(seed=seed)
        for _ in range(2):
            qpos.append(env.unwrapped._data.qpos.copy())
            qvel.append(env.unwrapped._data.qvel.copy())
    env.close()
    path = tmp_path / "ogbench" / "visual-cube-single-play-v0.npz"
    arrays = _ogbench_visual_file(path, lengths=(2, 2, 2), size=8, nq=len(qpos[0]))
    arrays.update(qpos=np.asarray(qpos, np.float32), qvel=np.asarray(qvel, np.float32))
    arrays.pop("button_states")
    np.savez(path, **arrays)
    task = get_task("visual-cube-single-task1")
    data = load_source(parse_source("ogbench:visual-cube-single-play-v0"), task)
    rows = np.array([0, 2, 4])            # every episode's first row starts a transition
    want = stored_state_successes({"qpos": arrays["qpos"][rows], "qvel": arrays["qvel"][rows]},
                                  np.arange(3), "cube-single-singletask-task1-v0")
    np.testing.assert_array_equal(data.terminals, want.all(axis=1))
    np.testing.assert_array_equal(data.rewards, want.sum(axis=1) - want.shape[1])
    assert data.metadata["dprl_relabel"]["singletask_env_id"] == "cube-single-singletask-task1-v0"


def _robomimic_image_file(path, lengths=(4, 3, 5), size=84, shifted=(True, True, True)):
    """robomimic's image file (``dataset_states_to_obs.py --camera_names agentview
    robot0_eye_in_hand --camera_height 84 --camera_width 84``): the low-dim keys plus uint8
    ``<camera>_image [T, 84, 84, 3]`` under obs and next_obs, next_obs one step later (a demo
    with ``shifted`` False gets independent next frames)."""
    import h5py

    demos = _robomimic_file(path, lengths)
    rng = np.random.default_rng(1)
    frames = {}
    with h5py.File(path, "a") as f:
        for (k, T), shift in zip(zip((10, 2, 0), lengths), shifted):
            g = f["data"][f"demo_{k}"]
            for cam in ("agentview_image", "robot0_eye_in_hand_image"):
                seq = rng.integers(0, 256, (T + 1, size, size, 3), dtype=np.uint8)
                nxt = seq[1:] if shift else rng.integers(0, 256, (T, size, size, 3), np.uint8)
                g.create_dataset(f"obs/{cam}", data=seq[:T])
                g.create_dataset(f"next_obs/{cam}", data=nxt)
                frames[(k, cam)] = (seq[:T], nxt)
    return demos, frames


def test_robomimic_image_hdf5_gives_one_frames_per_camera(tmp_path):
    from dprl.data.formats import ROBOMIMIC_OBS_KEYS, SourceError, parse_source
    from dprl.data.frames import PixelSpec, camera_keys
    from dprl.data.offline import load_source
    from dprl.envs.tasks import get_task

    path = tmp_path / "robomimic" / "lift" / "ph" / "image_v15.hdf5"
    demos, frames = _robomimic_image_file(path, shifted=(True, False, True))   # demo_2 not
    src = parse_source("robomimic:lift/ph/image")
    assert src.path == str(path) and src.name == "lift/ph"
    task = get_task("robomimic-lift-ph-image")
    data = load_source(src, task)
    obs, nxt = data.observations, data.next_observations
    assert camera_keys(obs) == ["image_agentview", "image_wrist"]
    order = [0, 2, 10]
    for cam, key in (("agentview_image", "image_agentview"),
                     ("robot0_eye_in_hand_image", "image_wrist")):
        np.testing.assert_array_equal(np.asarray(obs[key]),
                                      np.concatenate([frames[(k, cam)][0] for k in order]))
        np.testing.assert_array_equal(np.asarray(nxt[key]),
                                      np.concatenate([frames[(k, cam)][1] for k in order]))
        assert obs[key].store is nxt[key].store
        # T + 1 frames per demo whose next_obs is obs one step later; 2T for demo_2 (not)
        assert len(obs[key].store) == (5 + 1) + 2 * 3 + (4 + 1)
    want_state = np.concatenate([np.concatenate([demos[k][0][n] for n in task["obs_keys"]], 1)
                                 for k in order]).astype(np.float32)
    np.testing.assert_array_equal(obs["state"], want_state)
    assert list(task["obs_keys"]) == list(ROBOMIMIC_OBS_KEYS)
    assert obs.spec == PixelSpec.of(19, {"image_agentview": (84, 84, 3),
                                         "image_wrist": (84, 84, 3)})
    assert data.num_episodes == 3 and data.metadata["cameras"] == task["cameras"]
    # the low-dim file has no cameras: named in one line
    _robomimic_file(tmp_path / "robomimic" / "lift" / "ph" / "low_dim_v15.hdf5")
    with pytest.raises(SourceError, match="no agentview_image.*not the image file"):
        load_source(parse_source("robomimic:lift/ph"), task)
    with pytest.raises(SourceError, match="'low_dim' .* or 'image'"):
        parse_source("robomimic:lift/ph/depth")


def test_robomimic_image_task_names_its_download_and_env_skips_with_cause(tmp_path):
    import gymnasium as gym

    from dprl.data.registry import DatasetError, resolve_source
    from dprl.envs.vector import make_env

    with pytest.raises(DatasetError, match="--tasks square --dataset_types ph --hdf5_types image"):
        resolve_source("robomimic-square-ph-image")
    try:
        import robosuite  # noqa: F401
    except ImportError:
        with pytest.raises(gym.error.DependencyNotInstalled, match="robosuite"):
            make_env("dprl/robomimic-can-ph-image-v0")
        pytest.skip("robosuite is not installed (pip install -e '.[robomimic]'; robosuite 1.5.2 "
                    "does not run on MuJoCo 4 here): the image env's data path is tested above")
    path = tmp_path / "robomimic" / "can" / "ph" / "image_v15.hdf5"
    _robomimic_image_file(path)
    try:
        env = make_env("dprl/robomimic-can-ph-image-v0", hdf5_path=str(path))
    except Exception as e:  # noqa: BLE001  robosuite on this MuJoCo: the cause, named
        pytest.skip(f"robosuite cannot build the env here: {type(e).__name__}: {e}")
    obs, _ = env.reset(seed=0)
    assert obs["image_agentview"].shape == (84, 84, 3) and obs["image_wrist"].dtype == np.uint8
    env.close()


@pytest.mark.slow
def test_ogbench_visual_env_builds_and_renders_64x64():
    """dprl's visual-* env (OGBench's, observed as {'image', 'state': [0]}) in a fresh process
    (MUJOCO_GL takes effect there); skipped, naming the cause, where it cannot render."""
    from tests.conftest import render_in_fresh_process

    code = ("import numpy as np\n"
            "from dprl.envs.vector import make_env\n"
            "env = make_env('dprl/visual-puzzle-3x3-singletask-task1-v0')\n"
            "o, _ = env.reset(seed=0)\n"
            "o2, r, *_ = env.step(env.action_space.sample())\n"
            "print(o['image'].shape, o['image'].dtype, o['state'].shape, r, "
            "int(o['image'].std() > 0))\n")
    out = render_in_fresh_process(code, "the visual env")
    # a 64x64 camera frame, an empty state, the QC paper's sparse reward (puzzle-3x3: -1 / 0)
    assert out.split() == ["(64,", "64,", "3)", "uint8", "(0,)", "-1.0", "1"]


# ---- Minari ids -------------------------------------------------------------------------------
def test_minari_source_gives_what_minari_gives(minari_root):
    import minari

    from dprl.data.io import write_minari_dataset
    from dprl.data.offline import load_source
    from dprl.data.formats import parse_source

    rng = np.random.default_rng(0)
    eps = []
    for T in (5, 8):
        eps.append({"observations": rng.normal(size=(T + 1, 11)).astype(np.float32),
                    "actions": rng.uniform(-1, 1, (T, 3)).astype(np.float32),
                    "rewards": rng.normal(size=T), "terminations": np.eye(T, dtype=bool)[-1],
                    "truncations": np.zeros(T, bool)})
    write_minari_dataset("test/hopper/fmt-v0", eps, "Hopper-v5", overwrite=True)
    data = load_source(parse_source("minari:test/hopper/fmt-v0"))
    ref = minari.load_dataset("test/hopper/fmt-v0")
    obs = np.concatenate([e.observations[:-1] for e in ref.iterate_episodes()])
    np.testing.assert_array_equal(data.observations, obs)
    np.testing.assert_array_equal(data.rewards, np.concatenate(
        [e.rewards for e in ref.iterate_episodes()]).astype(np.float32))


# ---- relabeling: the released layout and the stand-in give the same rewards and masks ---------
# (slow: collecting the two scene episodes takes about a minute on a busy 2-core machine)
@pytest.fixture(scope="module")
def scene_both_layouts(minari_root, tmp_path_factory):
    """Two 60-step scene play episodes as dprl's stand-in and in OGBench's npz layout."""
    from dprl.datasets.__main__ import make

    make("scene", steps=120, episode_length=60, overwrite=True, progress=False, workers=1)
    out = tmp_path_factory.mktemp("og") / "scene-play-v0.npz"
    res = make("scene", fmt="ogbench", out=str(out), progress=False)
    assert res["ogbench_file"] == str(out)
    return out


def _as_shards(npz, directory):
    """The episodes of an OGBench file split into one shard per episode (a 100M-style directory)."""
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    ends = np.flatnonzero(arrays["terminals"]) + 1
    directory.mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(zip(np.concatenate([[0], ends[:-1]]), ends)):
        np.savez(directory / f"{directory.name}-{i:03d}.npz", **{k: v[a:b] for k, v in arrays.items()})
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("task", ["scene-task2", "scene-task4"])
def test_relabeling_and_masks_equal_on_both_paths(scene_both_layouts, task):
    """The same episodes read through OGBench's layout and through the stand-in give the same
    transitions, rewards (QC's sparse reward on scene), terminals (success) and episode ends;
    the rewards and masks are those of OGBench's own relabel_dataset on the file's qpos."""
    from ogbench.relabel_utils import relabel_dataset
    from ogbench.utils import load_dataset as official

    from dprl.data.offline import load_task_data
    from dprl.envs.tasks import get_task
    from dprl.envs.vector import make_env

    npz = scene_both_layouts
    via_ogbench = load_task_data(task, f"ogbench:{npz}")
    via_stand_in = load_task_data(task, "dprl/scene/play-v0")
    assert via_ogbench.source == "official" and via_stand_in.source == "dprl-generated"
    for key in ("observations", "next_observations", "actions", "rewards", "terminals", "dones"):
        np.testing.assert_array_equal(getattr(via_ogbench, key), getattr(via_stand_in, key))
    preset = get_task(task)
    ref = official(str(npz), compact_dataset=False, add_info=True)
    relabel_dataset(preset["singletask_env_id"], make_env(preset["singletask_env_id"]), ref)
    np.testing.assert_array_equal(via_ogbench.terminals, ref["masks"] == 0)
    sparse = (ref["rewards"] != 0) * -1.0                  # QC's --sparse on scene
    np.testing.assert_array_equal(via_ogbench.rewards, sparse)
    assert via_ogbench.size == 120
    # The same episodes as a shard directory, relabeled shard by shard.
    shards = _as_shards(npz, npz.parent / f"shards-{task}" / "scene-play-100m-v0")
    via_shards = load_task_data(task, f"ogbench:{shards}")
    for key in ("observations", "next_observations", "actions", "rewards", "terminals", "dones"):
        np.testing.assert_array_equal(getattr(via_shards, key), getattr(via_ogbench, key))


@pytest.mark.slow
def test_another_envs_file_is_refused(scene_both_layouts, tmp_path):
    from dprl.data.registry import DatasetEnvMismatch
    from dprl.data.offline import task_dataset

    other = tmp_path / "cube-double-play-v0.npz"
    other.write_bytes(scene_both_layouts.read_bytes())
    with pytest.raises(DatasetEnvMismatch, match="cube-double-v0.*scene-v0"):
        task_dataset("scene-task2", f"ogbench:{other}")


@pytest.mark.slow
def test_released_file_is_preferred_and_listed(scene_both_layouts, data_dirs):
    """The official file on disk wins over the stand-in; `datasets list` shows both."""
    import shutil

    from dprl.datasets.__main__ import list_tasks
    from dprl.data.registry import resolve_source

    assert resolve_source("scene-task3")[1] == "dprl-generated"
    dest = data_dirs / "ogbench" / "scene-play-v0.npz"
    dest.parent.mkdir(parents=True)
    shutil.copy(scene_both_layouts, dest)
    src, label = resolve_source("scene-task3")
    assert (src.path, label) == (str(dest), "official")
    rows = {r["task"]: r for r in list_tasks()}
    assert rows["scene-task3"]["uses"] == f"official: ogbench:{dest}"
    assert rows["scene-task3"]["sources"][0]["present"]
    assert rows["antmaze-umaze"]["uses"] == "missing: run minari download D4RL/antmaze/umaze-v1"
    assert "wget" in rows["cube-quadruple-100m-task1"]["uses"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["file", "shards"])
def test_a_run_on_the_released_layout_goes_end_to_end(scene_both_layouts, tmp_path, layout):
    """BC for 200 steps on scene-task2 from the OGBench file (or the same episodes as a shard
    directory); config.json records the source and its fingerprint (the arrays' CRCs)."""
    from agents import get_agent
    from configs.bc import get_config
    from dprl.run.runner import train

    config = tiny(get_config(), pretrain_steps=200, eval_episodes=1, eval_envs=1)
    config.actor.diffusion_steps = 3
    run_dir = tmp_path / "run"
    path = (scene_both_layouts if layout == "file" else
            _as_shards(scene_both_layouts, tmp_path / "scene-play-100m-v0"))
    train(config, "scene-task2", str(run_dir), get_agent, dataset=f"ogbench:{path}",
          progress=False)
    record = json.loads((run_dir / "config.json").read_text())
    assert record["dataset_id"] == f"ogbench:{path}"
    assert record["dataset_source"] == "official" and record["dataset_env_id"] == "scene-v0"
    arrays = record["dataset_fingerprint"]["files"][0]["arrays"]
    assert set(arrays) >= {"observations", "actions", "terminals", "qpos", "button_states"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["pretrain_steps"] == 200 and summary["dataset_source"] == "official"


# ---- parallel stand-in collection ------------------------------------------------------------
@pytest.mark.slow
def test_parallel_collection_equals_one_process(tmp_path):
    """Two processes collect the same episodes, bit for bit, as one does."""
    from dprl.datasets.ogbench_recipes import PER_EPISODE_KEYS, collect_play_episodes_resumable

    kw = dict(seed=3, episode_length=25, chunk_episodes=1)
    one = collect_play_episodes_resumable("cube-single", 4, tmp_path / "one", **kw)
    two = collect_play_episodes_resumable("cube-single", 4, tmp_path / "two", workers=2, **kw)
    for a, b in zip(one, two):
        assert set(a) == set(b)
        for k in a:
            if k != "seconds":
                assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), k
    assert "seconds" in PER_EPISODE_KEYS


# ---- D4RL AntMaze from a Minari port --------------------------------------------------------
def test_antmaze_task_from_a_minari_dataset(minari_root):
    """A Minari dataset recorded in gymnasium-robotics' AntMaze (as Minari's D4RL ports are):
    the task trains on it with r - 1 and evaluates in the env the dataset records, whose dict
    observation is flattened like the dataset's."""
    gym_robotics = pytest.importorskip("gymnasium_robotics")
    import gymnasium as gym
    import minari

    from dprl.data.offline import load_task_data
    from dprl.envs.tasks import get_task
    from dprl.envs.vector import make_env

    gym.register_envs(gym_robotics)
    env = minari.DataCollector(gym.make("AntMaze_UMaze-v5", continuing_task=False,
                                        max_episode_steps=15))
    for seed in range(2):
        env.reset(seed=seed)
        while not any(env.step(env.action_space.sample())[2:4]):
            pass
    env.create_dataset(dataset_id="D4RL/antmaze/umaze-v1", algorithm_name="random",
                       ref_min_score=0.0, ref_max_score=1.0)
    ref = minari.load_dataset("D4RL/antmaze/umaze-v1")
    data = load_task_data("antmaze-umaze")
    assert data.source == "official" and data.num_episodes == 2
    raw = np.concatenate([e.rewards for e in ref.iterate_episodes()]).astype(np.float32)
    np.testing.assert_array_equal(data.rewards, raw - 1.0)            # IQL's and QC's r - 1
    task = get_task("antmaze-umaze")
    eval_env = make_env(task.env_id, **task.env_kwargs)
    obs, _ = eval_env.reset(seed=0)
    assert obs.shape == data.observations.shape[1:]
    _, reward, _, _, info = eval_env.step(eval_env.action_space.sample())
    assert reward == -1.0 and info["success"] is False


def test_train_refuses_a_truncated_file_in_one_line(tmp_path):
    """experiments/train.py with a truncated OGBench file: one error line, no run directory."""
    import subprocess
    import sys

    from conftest import ROOT

    path = tmp_path / "scene-play-v0.npz"
    _ogbench_file(path)
    path.write_bytes(path.read_bytes()[:-100])
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train.py"), "--agent=configs/bc.py",
         "--task=scene-task2", f"--run_dir={run_dir}", f"--dataset=ogbench:{path}",
         "--noprogress"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error (SourceError): OGBench dataset") and "truncated" in lines[-1]
    assert not (run_dir / "metrics.csv").exists()


def test_verify_a_released_file(tmp_path, capsys):
    """`python -m dprl.datasets verify ogbench:<file>`: one line per check, the tasks it serves;
    a shard directory with a gap fails at the first line."""
    from dprl.datasets.__main__ import main

    path = tmp_path / "scene-play-v0.npz"
    _ogbench_file(path, obs_dim=40, act_dim=5)
    assert main(["verify", f"ogbench:{path}"]) == 0
    out = capsys.readouterr().out
    assert "ok    episode boundaries: 3 episodes, 13 transitions" in out
    assert "scene-task2" in out and out.strip().endswith(f"verified ogbench:{path}")
    shards = tmp_path / "scene-play-100m-v0"
    for i in (0, 2):
        _ogbench_file(shards / f"scene-play-100m-v0-{i:03d}.npz", obs_dim=40, act_dim=5)
    assert main(["verify", f"ogbench:{shards}"]) == 1
    assert "FAIL  OGBench shard directory" in capsys.readouterr().out
