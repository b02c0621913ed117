"""OGBench single-task presets: one play dataset per env relabeled for each of its five tasks,
the QC paper's sparse reward and OGBench's success masks."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ogbench")


# ---- a hand-made trajectory: puzzle-3x3's button states set by hand -----------------------------
def _puzzle_observations(env, goal, button_states):
    """Real puzzle-3x3 observations, button one-hots replaced by ``button_states [T, 9]``."""
    from dprl.datasets import ogbench_recipes as og

    ob, _ = env.reset(seed=0)
    obs = np.repeat(ob[None].astype(np.float32), len(button_states), axis=0)
    width = goal["num_button_states"] + 2
    for b in range(len(goal["button_targets"])):
        i = og.PROPRIO_DIM + b * width
        obs[:, i:i + goal["num_button_states"]] = np.eye(goal["num_button_states"])[
            button_states[:, b]]
    return obs


def test_sparse_reward_and_masks_on_a_hand_made_trajectory(task_id=1):
    """puzzle-3x3 task 1 (not the default task 4). Two buttons wrong, one wrong, solved,
    solved, one wrong again: OGBench's dense reward is the task env's own (-2, -1, 0, 0, -1),
    QC's sparse one -1, -1, 0, 0, -1 (the sparse env gives the same), terminals = success and
    the buffer's masks 1 - success."""
    import jax
    import jax.numpy as jnp

    from dprl.data.buffer import Buffer
    from dprl.data.offline import Normalizer, OfflineData
    from dprl.datasets import ogbench_recipes as og
    from dprl.envs.vector import make_env
    from dprl.envs.tasks import get_task

    preset = get_task(f"puzzle-3x3-task{task_id}")
    goal = og.task_goal(preset["singletask_env_id"])
    target = goal["button_targets"]
    states = np.stack([target] * 5)
    states[0, [0, 1]] = 1 - target[[0, 1]]
    states[1, 0] = 1 - target[0]
    states[4, 8] = 1 - target[8]
    dense_env = make_env(preset["singletask_env_id"])
    obs = _puzzle_observations(dense_env, goal, states)
    T = len(obs)
    data = OfflineData(observations=obs, actions=np.zeros((T, 5), np.float32),
                       rewards=np.zeros(T, np.float32), terminals=np.zeros(T, bool),
                       timeouts=np.eye(T, dtype=bool)[-1], dones=np.eye(T, dtype=bool)[-1],
                       next_observations=obs, dataset_id="hand-made")
    sparse = og.relabel_singletask(data, preset)
    np.testing.assert_array_equal(sparse.rewards, [-1, -1, 0, 0, -1])
    np.testing.assert_array_equal(sparse.terminals, [False, False, True, True, False])
    dense = og.relabel_singletask(data, dict(preset, sparse_reward=False))
    np.testing.assert_array_equal(dense.rewards, [-2, -1, 0, 0, -1])
    assert preset["sparse_reward"] and preset["success_masks"]
    # The task envs' own rewards for these states (success_timing 'pre': judged before the step).
    for env, want in ((dense_env, dense.rewards), (make_env(preset["env_id"]), sparse.rewards)):
        env.reset(seed=0)
        for t in range(T):
            env.unwrapped._cur_button_states = states[t].copy()
            _, r, *_ = env.step(np.zeros(5))
            assert r == want[t], (env.spec.id, t, r, want[t])
    # Masks as the agents see them: 1 - success of the (last) step.
    buffer = Buffer.from_offline(sparse, Normalizer.identity(obs.shape[1]))
    batch = buffer.gather(jnp.arange(T), horizon=1)
    np.testing.assert_array_equal(np.asarray(batch["masks"]), [1, 1, 0, 0, 1])
    chunk = jax.device_get(buffer.gather(jnp.array([0]), horizon=3))
    np.testing.assert_array_equal(chunk["terminals"][0], [0, 0, 1])
    np.testing.assert_array_equal(chunk["rewards"][0], [-1, -1, 0])


def test_sparse_env_wraps_only_the_reward():
    from dprl.envs.vector import make_env

    env = make_env("dprl/scene-singletask-task2-sparse-v0")
    base = make_env("scene-singletask-task2-v0")
    o1, _ = env.reset(seed=3)
    o2, _ = base.reset(seed=3)
    np.testing.assert_array_equal(o1, o2)
    a = np.full(5, 0.1)
    s1, s2 = env.step(a), base.step(a)
    np.testing.assert_array_equal(s1[0], s2[0])
    assert s2[1] < 0 and s1[1] == -1.0 and s1[2:4] == s2[2:4]


def test_every_single_task_preset_is_registered():
    from dprl.envs.tasks import get_task

    for env in ("cube-single", "cube-double", "scene", "puzzle-3x3"):
        for k in range(1, 6):
            p = get_task(f"{env}-task{k}")
            assert p["singletask_env_id"] == f"{env}-singletask-task{k}-v0"
            assert p["dataset_id"] == f"dprl/{env}/play-v0" and p["eval_episodes"] == 50
            assert p["eval_envs"] == 10     # ~160 MB an env: 50 at once would hold 8 GB
            assert p["sparse_reward"] == (env in ("scene", "puzzle-3x3"))
            assert p["make_command"] == f"python -m dprl.datasets make {env}-task{k}"
            assert p["dataset_task"] == env


# ---- relabeling real play data: exactly the task envs' labels -----------------------------------
@pytest.fixture(scope="module")
def tiny_scene_play(minari_root):
    """Two 60-step scene play episodes (both datasets: play-v0 and the default task's labels)."""
    from dprl.datasets.ogbench_recipes import make_manipulation_dataset

    make_manipulation_dataset("scene", steps=120, episode_length=60, overwrite=True)
    from dprl.data.offline import load_dataset
    return load_dataset("dprl/scene/play-v0"), load_dataset("dprl/scene/play-singletask-v0")


def test_relabeling_matches_the_task_envs_on_replayed_states(tiny_scene_play, monkeypatch):
    """Read from the observations, the labels equal (a) the default task's labels the collection
    computed with the task env, and (b) for tasks 1..5 the task env's verdict on every replayed
    state; the replay fallback (forced here for every step) agrees too."""
    from dprl.datasets import ogbench_recipes as og
    from dprl.envs.tasks import get_task

    play, default = tiny_scene_play
    assert play.size == 120
    succ, ambiguous = og.successes_from_observations(play.observations,
                                                     og.task_goal("scene-singletask-v0"))
    dense, _ = og.singletask_rewards(succ, sparse=False)
    np.testing.assert_array_equal(dense, default.rewards)
    env_ids = [f"scene-singletask-task{k}-v0" for k in range(1, 6)]
    replayed = og.replay_successes(play, np.arange(play.size), env_ids)
    for env_id, judged in zip(env_ids, replayed):
        succ, _ = og.successes_from_observations(play.observations, og.task_goal(env_id))
        np.testing.assert_array_equal(succ, judged, err_msg=env_id)
    task2 = og.successes_from_observations(play.observations,
                                           og.task_goal("scene-singletask-task2-v0"))[0]
    monkeypatch.setattr(og, "SUCCESS_MARGIN_M", 10.0)   # every step "ambiguous": all replayed
    np.testing.assert_array_equal(og.singletask_labels(play, "scene-singletask-task2-v0"), task2)
    monkeypatch.undo()
    relabeled = og.relabel_singletask(play, get_task("scene-task2"))
    assert set(np.unique(relabeled.rewards)) <= {-1.0, 0.0}
    np.testing.assert_array_equal(relabeled.terminals, relabeled.rewards == 0)
    assert relabeled.metadata["dprl_relabel"]["singletask_env_id"] == "scene-singletask-task2-v0"


def test_relabel_refuses_another_envs_data(tiny_scene_play):
    from dprl.datasets import ogbench_recipes as og

    play, _ = tiny_scene_play
    with pytest.raises(ValueError, match="layout"):
        og.successes_from_observations(play.observations,
                                       og.task_goal("cube-double-singletask-task1-v0"))


# ---- experiments/reproduce_qc.py end to end on the tiny scene data ------------------------------
def test_reproduce_qc_end_to_end(tiny_scene_play, tmp_path):
    """QC with two vmapped seeds on scene-task2 for a few steps: runs, table with the departures,
    figure; the same command again skips the finished cell. (The table's other rows: below.)"""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "repro"
    cmd = [sys.executable, str(ROOT / "experiments" / "reproduce_qc.py"), "--out", str(out),
           "--tasks", "scene-task2", "--methods", "qc", "--seeds", "0,1",
           "--offline_steps", "4", "--eval_every", "2", "--eval_episodes", "1",
           "--set", "actor.hidden_dims=(16,16)", "--set", "critic_hidden_dims=(16,16)",
           "--set", "num_samples=2", "--set", "actor.flow_steps=2", "--set", "run.batch_size=8",
           "--set", "run.steps_per_dispatch=2"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for seed in (0, 1):
        run = out / "qc" / "scene-task2" / f"seed{seed}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["offline_steps"] == 4 and summary["task"] == "scene-task2"
        config = json.loads((run / "config.json").read_text())
        assert config["reward_relabel"]["singletask_env_id"] == "scene-singletask-task2-v0"
    md = (out / "qc_reproduction.md").read_text()
    assert "| QC | " in md and "(n=2)" in md
    assert "`actor.hidden_dims` = [16, 16] (paper: [512, 512, 512, 512])" in md
    assert "`run.eval_episodes` = 1 (paper: 50)" in md
    assert (out / "qc_reproduction.png").stat().st_size > 10_000
    result = json.loads((out / "qc_reproduction.json").read_text())
    points = result["tasks"]["scene-task2"]["qc"]["dprl"]
    assert sorted(int(s) for s in points) == [2, 4] and points["4"]["n"] == 2
    # Re-running the same command finishes nothing twice.
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    status = json.loads((out / "grid_status.json").read_text())
    assert status["counts"]["skipped"] == 1 and status["counts"]["done"] == 0


def test_reproduce_qc_reads_the_papers_points(tmp_path):
    """The table's paper column at 100k is the released number (scene-task2: QC 0.97 [0.96,
    0.99], BFN-n 0.11 [0.06, 0.16]); a run directory without runs shows '—' for dprl."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("reproduce_qc",
                                                  ROOT / "experiments" / "reproduce_qc.py")
    rq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rq)
    cells = rq.make_cells(["qc", "bfn-n"], ["scene-task2", "cube-double-task1"], [0, 1, 2],
                          tmp_path)
    assert [c.num_seeds for c in cells] == [3] * 4
    assert cells[0].command()[2].endswith("configs/qc.py:qc") and "--num_seeds=3" in \
        cells[0].command()
    result = rq.summarize(cells, ["scene-task2", "cube-double-task1"], ["qc", "bfn-n"], 100_000)
    qc = result["tasks"]["scene-task2"]["qc"]["paper_at"]
    assert round(qc["mean"], 2) == 0.97 and (qc["ci_low"], qc["ci_high"]) == (0.96, 0.99)
    bfn_n = result["tasks"]["scene-task2"]["bfn-n"]["paper_at"]
    assert round(bfn_n["mean"], 2) == 0.11 and (bfn_n["ci_low"], bfn_n["ci_high"]) == (0.06, 0.16)
    assert round(result["tasks"]["cube-double-task1"]["qc"]["paper_at"]["mean"], 2) == 0.46
    md = rq.markdown(result, "cmd")
    assert "| QC | — | 0.97 [0.96, 0.99] |" in md
    import pytest as _pytest
    with _pytest.raises(ValueError, match="consecutive"):
        rq.make_cells(["qc"], ["scene-task2"], [0, 2], tmp_path)


def test_eval_envs_comes_from_the_task_and_is_not_part_of_a_runs_identity():
    from configs.qc import get_config
    from dprl.run.config import run_config
    from dprl.run.rundir import differences
    from dprl.envs.tasks import get_task

    config = get_config()
    assert run_config(config, get_task("scene-task2"), False).run.eval_envs == 10
    assert run_config(config, get_task("pole"), False).run.eval_envs == 50   # one per episode
    config.run.eval_envs = 5
    assert run_config(config, get_task("scene-task2"), False).run.eval_envs == 5
    a = {"agent": {"run": {"eval_envs": 10, "batch_size": 256}}}
    assert differences(a, {"agent": {"run": {"eval_envs": 25, "batch_size": 256}}}) == []
    assert differences(a, {"agent": {"run": {"batch_size": 256}}}) == []   # recorded before it
    assert differences(a, {"agent": {"run": {"eval_envs": 10, "batch_size": 64}}})
