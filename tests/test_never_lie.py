"""Grids and resumes that never lie: each test is one way a grid, a resume or a dataset could
have ended in a silent wrong result or a late error; all on the pole task."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, tiny
from test_integrity import _bc, _checkpoint, _n_rows, _rows, _train, _wait

GRID_SETS = ["actor.hidden_dims=(16,16)", "run.batch_size=16", "run.steps_per_dispatch=10",
             "run.log_every=10", "run.eval_every=1000", "run.save_every=1000",
             "run.eval_episodes=2", "run.tensorboard=False", "run.pretrain_steps=10",
             "actor.diffusion_steps=5"]


def _grid_main(argv):
    sys.path.insert(0, str(ROOT / "experiments"))
    import grid as grid_cli
    return grid_cli.main(argv)


def _status(out) -> dict:
    return json.loads((Path(out) / "grid_status.json").read_text())


# ---- 1. a grid re-run compares each cell's identity -------------------------------------------
def test_a_grid_rerun_with_other_settings_is_refused_per_cell_not_skipped(tmp_path, pole_datasets,
                                                                         capsys):
    out = tmp_path / "grid"
    base = ["--agents=bc", "--tasks=pole", "--seeds=0", f"--out={out}"]
    sets = [a for s in GRID_SETS for a in ("--set", s)]
    assert _grid_main(base + sets) == 0
    run_dir = out / "bc" / "pole" / "seed0"
    summary = json.loads((run_dir / "summary.json").read_text())
    capsys.readouterr()
    # Another learning rate: refused with the differing field, the old results left alone.
    assert _grid_main(base + sets + ["--set", "actor_lr=0.01"]) != 0
    printed = capsys.readouterr().out
    cell = _status(out)["cells"]["bc/pole/seed0"]
    assert cell["state"] == "refused", cell
    assert "actor_lr" in cell["error"] and "0.01" in cell["error"], cell
    assert "1 refused" in printed and "--restart-changed" in printed, printed
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    # The same settings: skipped (identity checked); longer phases: resumed, not skipped.
    assert _grid_main(base + sets) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert _grid_main(base + sets + ["--set", "run.pretrain_steps=20"]) == 0
    assert "1 resumed" in capsys.readouterr().out
    assert json.loads((run_dir / "summary.json").read_text())["pretrain_steps"] == 20
    # The explicit flag starts the changed cell over, the old contents moved aside.
    assert _grid_main(base + sets + ["--set", "actor_lr=0.01", "--restart-changed"]) == 0
    assert "1 restarted" in capsys.readouterr().out
    assert json.loads((run_dir / "config.json").read_text())["agent"]["actor_lr"] == 0.01
    moved = [p for p in run_dir.parent.iterdir() if ".replaced-" in p.name]
    assert len(moved) == 1 and (moved[0] / "summary.json").exists()


# ---- 2. a grid stops on the first signal -------------------------------------------------------
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130)])
def test_a_grid_stops_on_the_first_signal_and_marks_cells_interrupted(tmp_path, pole_datasets,
                                                                      sig, code):
    out = tmp_path / "grid"
    sets = [s for s in GRID_SETS if "pretrain_steps" not in s] + ["run.pretrain_steps=100000"]
    cmd = [sys.executable, str(ROOT / "experiments/grid.py"), "--agents=bc", "--tasks=pole",
           "--seeds=0,1", f"--out={out}", *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = out / "bc" / "pole" / "seed0"
    try:
        _wait(lambda: _n_rows(first) >= 2, proc)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    cells = _status(out)["cells"]
    assert cells["bc/pole/seed0"]["state"] == "interrupted", cells
    assert cells["bc/pole/seed1"]["state"] == "pending", cells
    assert not (out / "bc" / "pole" / "seed1" / "config.json").exists()   # never started
    assert any(p.name.isdigit() for p in (first / "checkpoints").iterdir())
    last = [line for line in (stdout + stderr).splitlines() if line.strip()][-1]
    assert "interrupted" in last and "same command" in last, last


def test_a_killed_grid_reads_as_interrupted_and_a_live_one_as_running(tmp_path, pole_datasets):
    from dprl.run.rundir import held
    from dprl.tools.report import unfinished

    out = tmp_path / "grid"
    sets = [s for s in GRID_SETS if "pretrain_steps" not in s] + ["run.pretrain_steps=100000"]
    args = ["--agents=bc", "--tasks=pole", "--seeds=0,1", f"--out={out}",
            *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.Popen([sys.executable, str(ROOT / "experiments/grid.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait(lambda: _n_rows(out / "bc" / "pole" / "seed0") >= 2, proc)
        states = {m["label"]: m["state"] for m in unfinished(out)}
        assert states == {"bc/pole/seed0": "running", "bc/pole/seed1": "pending"}, states
        assert _grid_main(args) == 2                        # one grid per directory
        os.killpg(proc.pid, signal.SIGKILL)                 # the grid and its cell, no goodbye
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _status(out)["cells"]["bc/pole/seed0"]["state"] == "running"   # what it last wrote
    deadline = time.time() + 60                             # the orphaned cell takes a moment
    while held(out / "bc" / "pole" / "seed0") and time.time() < deadline:
        time.sleep(0.2)
    missing = {m["label"]: m for m in unfinished(out)}
    assert {k: m["state"] for k, m in missing.items()} == {
        "bc/pole/seed0": "interrupted", "bc/pole/seed1": "interrupted"}, missing
    assert "run the grid's command again" in missing["bc/pole/seed0"]["why"]


# ---- 3. records written whole; unreadable records are listed with the reason -----------------
def test_records_are_written_whole(tmp_path, pole_datasets, monkeypatch):
    written = []
    original = Path.write_text

    def write_text(self, *args, **kwargs):
        written.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    _train(_bc(pretrain_steps=20), tmp_path / "run")
    assert not {"summary.json", "config.json", "processes.json"} & set(written), written


def test_an_unreadable_summary_is_a_failed_run_with_the_reason(tmp_path, pole_datasets):
    from dprl.tools.report import collect, report, unfinished

    root = tmp_path / "runs"
    for name in ("good", "empty", "half"):
        _train(_bc(pretrain_steps=10, log_every=10), root / name)
    (root / "empty" / "summary.json").write_text("")
    text = (root / "half" / "summary.json").read_text()
    (root / "half" / "summary.json").write_text(text[:len(text) // 2])
    assert [Path(r["run_dir"]).name for r in collect(root)] == ["good"]
    missing = {Path(m["run_dir"]).name: m for m in unfinished(root)}
    assert set(missing) == {"empty", "half"}, missing
    for m in missing.values():
        assert m["state"] == "failed" and "summary.json is unreadable" in m["why"], m
    md = report(root, reps=20)["markdown"]
    assert "empty" in md and "half" in md and "unreadable" in md


# ---- 4. identity lives in the checkpoints too -------------------------------------------------
def test_a_missing_config_json_is_restored_or_refused_never_replaced(tmp_path, pole_datasets,
                                                                     capfd):
    from dprl.run.rundir import RunMismatch

    run_dir = tmp_path / "run"
    _train(_bc(pretrain_steps=20), run_dir)
    config_json = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").unlink()
    for kwargs, field in [({"seed": 5}, "seed"), ({"task": "pole-right"}, "task")]:
        with pytest.raises(RunMismatch, match=field):
            _train(_bc(pretrain_steps=20), run_dir, **kwargs)
        assert not (run_dir / "config.json").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seed"] == 0 and summary["task"] == "pole"
    capfd.readouterr()
    _train(_bc(pretrain_steps=20), run_dir)                     # the same command restores it
    assert "config.json" in capfd.readouterr().err
    restored = json.loads((run_dir / "config.json").read_text())
    assert {k: restored[k] for k in ("agent", "task", "seed", "dataset_id")} == \
        {k: config_json[k] for k in ("agent", "task", "seed", "dataset_id")}


# ---- 5. every value checked before any work ---------------------------------------------------
ENUMERATED = [("bc", "actor.sampler", "foo"), ("bc", "actor.schedule", "foo"),
              ("bc", "actor.activation", "foo"), ("bc", "actor.backbone", "foo"),
              ("bc", "actor.model", "foo"), ("guided", "guidance_mode", "foo"),
              ("dql", "critic_activation", "relu6x"), ("dql", "lr_schedule", "foo"),
              ("guided", "guide_loss", "foo"), ("guided", "critic_mode", "foo"),
              ("dql", "action_selection", "foo"), ("qc", "policy_extraction", "foo"),
              ("qc", "q_agg", "foo"), ("rlpd", "q_agg", "foo"), ("dsrl", "variant", "foo"),
              ("bc", "run.offline_mix", "foo")]


@pytest.mark.parametrize("agent,key,value", ENUMERATED, ids=[f"{a}:{k}" for a, k, _ in ENUMERATED])
def test_enumerated_values_are_refused_by_validate_config(agent, key, value):
    from configs import config_file
    from dprl.run.config import load_config_file, validate_config

    config = load_config_file(config_file(agent))
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=rf"--agent\.{key}=.?{value}.?: must be one of"):
        validate_config(config, on_policy=False)


def test_a_bad_sampler_is_refused_before_loading_data(tmp_path, pole_datasets):
    from test_runner import run, train_cmd

    proc = run(train_cmd(tmp_path / "r", "--pretrain_steps=40", "--agent.actor.sampler=foo"),
               check=False)
    assert proc.returncode != 0 and "--agent.actor.sampler=" in proc.stderr, proc.stderr
    assert "task pole: dataset" not in proc.stderr
    assert not (tmp_path / "r").exists()        # no empty run dir with a run.lock left behind


def test_a_run_that_failed_before_its_first_checkpoint_does_not_refuse_the_corrected_command(
        tmp_path, pole_datasets, monkeypatch):
    from dprl.run import runner

    run_dir = tmp_path / "run"

    def crash(self, *args, **kwargs):
        raise RuntimeError("crashed before any checkpoint")

    monkeypatch.setattr(runner.Run, "fused", crash)
    with pytest.raises(RuntimeError):
        _train(_bc(pretrain_steps=20), run_dir)
    assert (run_dir / "config.json").exists() and not list(run_dir.glob("checkpoints/[0-9]*"))
    monkeypatch.undo()
    corrected = _bc(pretrain_steps=20)
    corrected.actor_lr = 1e-3
    summary = _train(corrected, run_dir)                     # not refused as another run
    assert summary["pretrain_steps"] == 20
    assert json.loads((run_dir / "config.json").read_text())["agent"]["actor_lr"] == 1e-3


# ---- 6. identity is what changes results ------------------------------------------------------
def test_evaluation_parallelism_and_logging_sinks_are_not_identity(tmp_path, pole_datasets):
    from dprl.run.rundir import NOT_IDENTITY

    run_dir = tmp_path / "run"
    _train(_bc(pretrain_steps=20), run_dir)
    extended = _bc(pretrain_steps=40, eval_envs=2, tensorboard=True)
    summary = _train(extended, run_dir)                      # resumes: the same run
    assert summary["pretrain_steps"] == 40
    assert int(_rows(run_dir)[-1]["step"]) == 40
    doc = (ROOT / "docs" / "run_contract.md").read_text()
    for key in NOT_IDENTITY:
        assert f"`{key}`" in doc, key


# ---- 7. load_run falls back to the newest readable checkpoint ---------------------------------
def test_load_run_uses_the_newest_readable_checkpoint(tmp_path, pole_datasets, capfd):
    from agents import get_agent
    from dprl.run.checkpoint import load_run

    run_dir = tmp_path / "run"
    _train(_bc(pretrain_steps=50, save_every=25), run_dir)
    (_checkpoint(run_dir, 50) / "meta" / "metadata").write_text("")
    capfd.readouterr()
    agent, normalizer, resolved = load_run(run_dir, get_agent)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "checkpoint 50" in line]
    assert len(lines) == 1 and "unreadable" in lines[0] and "25" in lines[0], err
    assert int(agent.actor.step) == 25 and resolved["seed"] == 0


# ---- 8. datasets make never pretends ----------------------------------------------------------
def test_make_over_an_existing_dataset_with_other_arguments_refuses(pole_datasets, capsys):
    from dprl.data.io import dataset_dir
    from dprl.datasets.__main__ import main

    path = dataset_dir("dprl/pole/demos-v0")
    before = (path / "data" / "metadata.json").read_bytes()
    assert main(["make", "pole", "--seed", "3", "--quiet"]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "seed" in err[0] and "--overwrite" in err[0], err
    assert (path / "data" / "metadata.json").read_bytes() == before
    # A killed make's temporary directory is cleaned up (and said) by the next make.
    leftover = path.parent / f".tmp-{path.name}-deadbeef"
    (leftover / "data").mkdir(parents=True)
    assert main(["make", "pole", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert not leftover.exists() and str(leftover) in err, err
    assert "already" in err and "wrote" not in err, err
    assert (path / "data" / "metadata.json").read_bytes() == before


# ---- 9. an online resume equals the uninterrupted run -----------------------------------------
class _Stop(Exception):
    pass


def _online_bc(**run):
    from configs.bc import get_config
    config = tiny(get_config(), pretrain_steps=20, online_steps=60, online_log_every=6,
                  online_eval_every=10**6, save_every=9, utd=1.0, **run)
    config.actor.diffusion_steps = 5
    config.horizon, config.act_steps = 4, 3
    return config


def _stop_mid_online(monkeypatch, make_run):
    """Train ``make_run()`` until its first save boundary between env steps 15 and 45 of the
    online phase, and stop it there (as a kill after that checkpoint would)."""
    from dprl.run import runner
    at_boundary = runner.Run.at_boundary

    def stop_mid_online(self, phase, step, due, *args, **kwargs):
        at_boundary(self, phase, step, due, *args, **kwargs)
        if phase == "online" and due.save and 15 <= self.env_steps < 45:
            self.close()
            raise _Stop

    monkeypatch.setattr(runner.Run, "at_boundary", stop_mid_online)
    with pytest.raises(_Stop):
        make_run().train()
    monkeypatch.setattr(runner.Run, "at_boundary", at_boundary)


def _dppo_online():
    from configs.dppo import get_config
    config = tiny(get_config(), pretrain_steps=20, online_steps=60, rollout_steps=5, num_envs=2,
                  online_log_every=20, online_eval_every=10**6, save_every=20)
    config.horizon, config.act_steps = 4, 2
    config.actor.diffusion_steps, config.ft_denoising_steps = 4, 2
    config.critic_hidden_dims = (32, 32)
    config.ppo_batch_size, config.update_epochs = 4, 1
    return config


@pytest.mark.parametrize("make_config", [_online_bc, _dppo_online], ids=["bc", "dppo"])
def test_an_online_run_resumed_after_a_stop_equals_the_uninterrupted_run(
        tmp_path, pole_datasets, monkeypatch, make_config, capfd):
    import jax

    from agents import get_agent
    from dprl.run import runner

    straight = runner.Run(make_config(), "pole", str(tmp_path / "straight"), get_agent,
                          progress=False)
    straight.train()
    straight.close()

    _stop_mid_online(monkeypatch, lambda: runner.Run(make_config(), "pole",
                                                     str(tmp_path / "resumed"), get_agent,
                                                     progress=False))
    resumed = runner.Run(make_config(), "pole", str(tmp_path / "resumed"), get_agent,
                         progress=False)
    assert 15 <= resumed.env_steps < 45
    capfd.readouterr()
    resumed.train()
    resumed.close()
    assert "the envs resume where they were" in capfd.readouterr().err
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "straight")
    for a, b in zip(jax.tree.leaves((straight.agent, straight.online)),
                    jax.tree.leaves((resumed.agent, resumed.online))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_envs_whose_state_cannot_be_saved_restart_and_say_so(tmp_path, pole_datasets,
                                                            monkeypatch, capfd):
    from agents import get_agent
    from dprl.envs import vector
    from dprl.run import runner

    monkeypatch.setattr(vector, "saveable", lambda env: False)   # as OGBench's envs
    _stop_mid_online(monkeypatch, lambda: runner.Run(_online_bc(), "pole", str(tmp_path / "run"),
                                                     get_agent, progress=False))
    capfd.readouterr()
    run = runner.Run(_online_bc(), "pole", str(tmp_path / "run"), get_agent, progress=False)
    run.train()
    run.close()
    lines = [line for line in capfd.readouterr().err.splitlines() if "online: the envs" in line]
    assert len(lines) == 1 and "restart at env step" in lines[0], lines
    assert "differs from an uninterrupted one" in lines[0]


def test_env_state_round_trips_for_the_toy_envs_and_says_when_it_cannot(pole_datasets):
    from dprl.envs.vector import VecEnv, env_state, set_env_state

    for env_id in ("dprl/Pole-v0", "dprl/WaypointChain-v0"):
        rng = np.random.default_rng(0)
        a, b = VecEnv(env_id, 2, seed=3), VecEnv(env_id, 2, seed=3)
        a.reset()
        for _ in range(5):
            a.step(rng.uniform(-1, 1, (2, a.action_space.shape[0])))
        state = json.loads(json.dumps(env_state(a)))           # what a checkpoint holds
        b.reset()
        set_env_state(b, state)
        actions = rng.uniform(-1, 1, (30, 2, a.action_space.shape[0]))
        for act in actions:
            ra, rb = a.step(act), b.step(act)
            for x, y in zip(ra[:4], rb[:4]):
                np.testing.assert_array_equal(np.asarray(x, float), np.asarray(y, float))
            for i in range(2):
                if ra[2][i] or ra[3][i]:
                    np.testing.assert_array_equal(a.reset_one(i), b.reset_one(i))


def test_mujoco_env_state_round_trips():
    pytest.importorskip("mujoco")
    from dprl.envs.vector import VecEnv, env_state, set_env_state

    rng = np.random.default_rng(0)
    a, b = VecEnv("Hopper-v4", 1, seed=1), VecEnv("Hopper-v4", 1, seed=1)
    a.reset()
    for _ in range(20):
        a.step(rng.uniform(-1, 1, (1, 3)))
    state = json.loads(json.dumps(env_state(a)))
    b.reset()
    set_env_state(b, state)
    for act in rng.uniform(-1, 1, (40, 1, 3)):
        ra, rb = a.step(act), b.step(act)
        np.testing.assert_array_equal(ra[0][0], rb[0][0])
        assert ra[1][0] == rb[1][0]


# ---- 10. minor: no leftovers, no early side effects, no silent reshaping ----------------------
def test_a_refused_command_leaves_no_run_dir_and_makes_no_dataset(tmp_path, monkeypatch):
    from dprl.data.io import dataset_exists
    from dprl.run.rundir import RunMismatch

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    bad = _bc(pretrain_steps=20)
    bad.run.batch_size = 0
    with pytest.raises(ValueError):
        _train(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    _train(_bc(pretrain_steps=20), tmp_path / "run")          # makes pole's dataset here
    with pytest.raises(RunMismatch, match="task"):
        _train(_bc(pretrain_steps=20), tmp_path / "run", task="pole-right")
    assert not dataset_exists("dprl/pole-right/demos-v0")


def test_a_bare_number_for_a_list_of_sizes_is_refused_by_the_grid(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    import grid as grid_cli

    with pytest.raises(ValueError, match=r"hidden_dims=256.*\(256, 256\)|hidden_dims=256.*one"):
        grid_cli.make_cells(["bc"], ["pole"], [0], tmp_path, ["actor.hidden_dims=256"])


def test_a_bare_number_for_a_list_of_sizes_is_refused_by_train_py(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"),
                           f"--agent={ROOT / 'configs' / 'bc.py'}", "--task=pole",
                           f"--run_dir={run_dir}", "--agent.actor.hidden_dims=256"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "one layer" in done.stderr and "(256, 256)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not run_dir.exists()
    from configs.bc import get_config
    from dprl.run.config import check_layer_sizes
    check_layer_sizes(get_config(), [("actor.hidden_dims", "(256,)"), ("actor_lr", "0.01")])


# ---- the preset is named beside the agent -----------------------------------------------------
def test_summary_and_tables_name_the_preset():
    from dprl.tools.report import score_table

    runs = [{"agent": "qc", "preset": "qc-fql", "task": "pole", "seed": s, "offline_score": 1.0,
             "online_score": None, "online_steps": 0} for s in (0, 1)]
    runs += [{"agent": "qc", "preset": "qc", "task": "pole", "seed": 0, "offline_score": 2.0,
              "online_score": None, "online_steps": 0}]
    agents = {r["agent"] for r in score_table(runs, reps=10)}
    assert agents == {"qc:qc-fql", "qc:qc"}


def test_summary_json_names_the_preset():
    from configs import config_file
    from dprl.envs.tasks import get_task
    from dprl.run.checkpoint import summary_record
    from dprl.run.config import load_config_file

    config = load_config_file(config_file("qc") + ":qc-fql")
    record = {k: None for k in ("dataset_id", "dataset_source", "task_env_id", "dataset_env_id")}
    timing = {"updates": 0, "update_s": 0.0, "env_steps": 0, "env_s": 0.0}
    summary = summary_record(config, "pole", get_task("pole"), 0, record, {}, timing, 1.0)
    assert summary["agent"] == "qc" and summary["preset"] == "qc-fql"
    assert summary["agent_label"] == "qc:qc-fql"


def test_a_grid_of_presets_names_each_and_takes_the_agents_sets(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    import grid as grid_cli

    cells = grid_cli.make_cells(["qc:qc-fql", "qc"], ["pole"], [0], tmp_path,
                                ["qc.alpha=3", "qc:qc-fql.num_samples=2", "run.batch_size=8"])
    fql, qc = cells
    assert fql.label == "qc:qc-fql/pole/seed0" and fql.config_file.endswith("configs/qc.py:qc-fql")
    assert dict(fql.overrides) == {"run.batch_size": "8", "alpha": "3", "num_samples": "2"}
    assert dict(qc.overrides) == {"run.batch_size": "8", "alpha": "3"}


def test_report_names_a_grid_cells_preset_when_the_config_records_none(tmp_path):
    from dprl.tools.report import collect, score_table

    cells = {}
    for preset in ("paper", "cpu-small"):
        run_dir = tmp_path / f"dppo:{preset}" / "pole" / "seed0"
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps(
            {"agent": "dppo", "preset": None, "task": "pole", "seed": 0, "offline_score": 1.0,
             "online_score": None, "online_steps": 0}))
        cells[f"dppo:{preset}/pole/seed0"] = {"agent": f"dppo:{preset}", "run_dir": str(run_dir),
                                              "state": "done"}
    (tmp_path / "grid_status.json").write_text(json.dumps({"cells": cells}))
    assert {r["agent"] for r in score_table(collect(tmp_path), reps=10)} == \
        {"dppo:paper", "dppo:cpu-small"}


def test_a_config_key_added_since_a_run_was_recorded_does_not_refuse_it():
    from dprl.run.rundir import differences
    old = {"agent": {"actor_lr": 3e-4, "run": {"batch_size": 64}}, "task": "pole", "seed": 0}
    new = {"agent": {"actor_lr": 3e-4, "run": {"batch_size": 64, "compute_dtype": "float32"}},
           "task": "pole", "seed": 0}
    assert differences(old, new) == []
    changed = json.loads(json.dumps(new))
    changed["agent"]["run"]["batch_size"] = 32
    assert differences(old, changed) == [
        "agent.run.batch_size: 64 (config.json) vs 32 (this command)"]
