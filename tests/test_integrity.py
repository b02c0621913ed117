"""Run integrity: a run directory holds one run, from one command, with every metric
row once, and bad input is refused before any work. One test per item of the issue, on pole."""
from __future__ import annotations

import csv
import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, tiny
from test_runner import run, train_cmd

WALL_CLOCK = {"wall_s", "eval/wall_s"}


def _bc(**run_keys):
    from configs.bc import get_config
    config = tiny(get_config(), **run_keys)
    config.actor.diffusion_steps = 5
    return config


def _train(config, run_dir, **kwargs):
    from agents import get_agent
    from dprl.run.runner import train
    return train(config, kwargs.pop("task", "pole"), str(run_dir), get_agent, progress=False,
                 **kwargs)


def _rows(run_dir) -> list[dict]:
    """metrics.csv without its wall-clock columns."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in csv.DictReader(f)]


def _wait(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before the test could act on it"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _n_rows(run_dir) -> int:
    path = Path(run_dir) / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


# ---- 1. one process per run directory -------------------------------------------------------
def test_a_second_process_on_a_run_directory_is_refused_at_once(tmp_path, pole_datasets):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(train_cmd(run_dir, "--pretrain_steps=100000",
                                        "--agent.run.log_every=20"),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _n_rows(run_dir) >= 1, holder)
        start = time.time()
        second = run(train_cmd(run_dir, "--pretrain_steps=100000"), check=False)
        took = time.time() - start
        assert holder.poll() is None                       # the first run goes on
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode != 0
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert str(run_dir) in lines[-1] and f"process {holder.pid}" in lines[-1], second.stderr
    assert "task pole: dataset" not in second.stderr       # refused before loading data
    assert took < 60, took
    # The kernel released the killed holder's lock: the same command now resumes.
    again = run(train_cmd(run_dir, "--pretrain_steps=40", "--agent.run.log_every=20"),
                check=False)
    assert again.returncode == 0 and "in use by process" not in again.stderr, again.stderr


# ---- 2. a resume is the same run --------------------------------------------------------------
def test_a_rerun_with_another_identity_is_refused_and_restart_starts_over(tmp_path,
                                                                          pole_datasets):
    from dprl.run.rundir import RunMismatch

    run_dir = tmp_path / "run"
    _train(_bc(pretrain_steps=20), run_dir)
    config_json = (run_dir / "config.json").read_bytes()
    stat = (run_dir / "config.json").stat().st_mtime_ns
    record = json.loads(config_json)
    assert record["seed"] == 0 and record["num_seeds"] == 1 and record["task"] == "pole"
    fingerprint = record["dataset_fingerprint"]
    assert fingerprint["total_steps"] > 0 and fingerprint["env_id"] == "dprl/Pole-v0"
    for kwargs, field in [({"seed": 5}, "seed"), ({"task": "pole-right"}, "task"),
                          ({"num_seeds": 3}, "num_seeds")]:
        with pytest.raises(RunMismatch) as e:
            _train(_bc(pretrain_steps=20), run_dir, **kwargs)
        message = str(e.value)
        assert field in message and "--run_dir" in message and "--restart" in message
    changed = _bc(pretrain_steps=20)
    changed.actor_lr = 1e-3
    with pytest.raises(RunMismatch, match=r"agent\.actor_lr: 0\.0003 .* 0\.001"):
        _train(changed, run_dir)
    # Neither the refused re-runs nor a re-run of the finished run rewrote config.json.
    _train(_bc(pretrain_steps=20), run_dir)
    assert (run_dir / "config.json").read_bytes() == config_json
    assert (run_dir / "config.json").stat().st_mtime_ns == stat
    # Extending a phase is the same run.
    summary = _train(_bc(pretrain_steps=40), run_dir)
    assert summary["pretrain_steps"] == 40
    # --restart moves the old run aside and starts over here.
    summary = _train(_bc(pretrain_steps=20), run_dir, seed=5, restart=True)
    assert summary["seed"] == 5 and json.loads((run_dir / "config.json").read_text())["seed"] == 5
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and json.loads((moved[0] / "summary.json").read_text())["seed"] == 0
    assert [int(r["step"]) for r in _rows(run_dir)] == [20]


def test_train_py_refuses_another_seed_before_loading_data(tmp_path, pole_datasets):
    run_dir = tmp_path / "run"
    run(train_cmd(run_dir, "--pretrain_steps=20"))
    before = (run_dir / "config.json").read_text()
    proc = run(train_cmd(run_dir, "--pretrain_steps=20", "--seed=5"), check=False)
    assert proc.returncode != 0
    assert "seed: 0 (config.json) vs 5 (this command)" in proc.stderr, proc.stderr
    assert (run_dir / "config.json").read_text() == before
    assert json.loads((run_dir / "summary.json").read_text())["seed"] == 0


# ---- 3. every metric row once ------------------------------------------------------------------
def _read_tb_scalars(tb_dir: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in a TensorBoard directory, in file order."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            out += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
    return out


def test_killed_and_resumed_metrics_equal_an_uninterrupted_runs(tmp_path, pole_datasets):
    args = ["--pretrain_steps=400", "--agent.run.log_every=20", "--agent.run.eval_every=200",
            "--agent.run.save_every=200", "--agent.run.tensorboard=True"]
    straight = tmp_path / "straight"
    run(train_cmd(straight, *args))

    killed = tmp_path / "killed"
    starts = []
    # First kill: rows written, no checkpoint yet. Second kill: after the checkpoint at 200, with
    # rows past it. Then the same command finishes the run.
    for ready in (lambda: _n_rows(killed) >= 3,
                  lambda: (killed / "checkpoints" / "200").exists() and _n_rows(killed) >= 12):
        starts.append(time.time())
        proc = subprocess.Popen(train_cmd(killed, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _wait(ready, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "summary.json").exists()
    run(train_cmd(killed, *args))

    got, want = _rows(killed), _rows(straight)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        for k in w:
            if w[k] and k != "phase":
                assert float(g[k]) == pytest.approx(float(w[k]), rel=1e-5, abs=1e-6), k
    # TensorBoard holds the same rows once.
    tb = _read_tb_scalars(killed / "tb")
    loss = [(s, v) for s, tag, v in tb if tag == "bc/loss"]
    assert [s for s, _ in loss] == [int(r["step"]) for r in got]
    # The run's wall time counts its three processes.
    processes = json.loads((killed / "processes.json").read_text())
    assert len(processes) == 3 and all(p["wall_s"] > 0 for p in processes)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["wall_s"] == pytest.approx(sum(p["wall_s"] for p in processes), abs=0.5)


def test_a_fresh_start_after_a_crash_before_any_checkpoint_starts_a_fresh_metrics_csv(
        tmp_path, pole_datasets):
    import shutil

    run_dir = tmp_path / "run"
    config = _bc(pretrain_steps=50, log_every=25)
    # What a run killed before its first checkpoint leaves: config.json and metrics rows.
    _train(config, run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "summary.json").unlink()
    _train(config, run_dir)
    assert [int(r["step"]) for r in _rows(run_dir)] == [25, 50]


# ---- 4. a corrupt checkpoint costs one checkpoint ---------------------------------------------
def _checkpoint(run_dir, step) -> Path:
    return Path(run_dir) / "checkpoints" / str(step)


def test_an_unreadable_latest_checkpoint_is_moved_aside_and_the_run_resumes(
        tmp_path, pole_datasets, capfd):
    run_dir = tmp_path / "run"
    _train(_bc(pretrain_steps=50, save_every=25), run_dir)
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == [25, 50]
    (_checkpoint(run_dir, 50) / "meta" / "metadata").write_text("")      # empty metadata
    capfd.readouterr()
    summary = _train(_bc(pretrain_steps=75, save_every=25), run_dir)      # extend: resume
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "checkpoint 50" in line]
    assert len(lines) == 1 and "unreadable" in lines[0] and "moved to" in lines[0], err
    assert "resuming from checkpoint at step 25" in err
    aside = list((run_dir / "corrupt_checkpoints").iterdir())
    assert [p.name for p in aside] == ["50"]                              # kept, not deleted
    assert summary["pretrain_steps"] == 75
    assert [int(r["step"]) for r in _rows(run_dir)] == [25, 50, 75]


def test_no_readable_checkpoint_is_a_one_line_error_naming_the_files(tmp_path, pole_datasets):
    from dprl.run.checkpoint import CheckpointError

    run_dir = tmp_path / "run"
    _train(_bc(pretrain_steps=50, save_every=25), run_dir)
    for step in (25, 50):
        state = _checkpoint(run_dir, step) / "state"
        for f in state.rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.write_bytes(f.read_bytes()[:10])                        # truncated arrays
    with pytest.raises(CheckpointError) as e:
        _train(_bc(pretrain_steps=75, save_every=25), run_dir)
    message = str(e.value)
    assert "\n" not in message
    assert str(_checkpoint(run_dir, 50)) in message and str(_checkpoint(run_dir, 25)) in message
    assert "--restart" in message


def test_a_failed_save_leaves_no_temporary_directory(tmp_path, monkeypatch):
    import jax.numpy as jnp

    from dprl.run.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, {"x": jnp.zeros(3)}, {"a": 1})

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "checkpoints"))

    import orbax.checkpoint as ocp
    original = ocp.CheckpointManager.save

    def failing_save(self, step, *args, **kwargs):
        (Path(self.directory) / f"{step}.orbax-checkpoint-tmp-1").mkdir()   # half-written
        no_space()

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    with pytest.raises(OSError) as e:
        ckpt.save(2, {"x": jnp.ones(3)}, {"a": 2})
    assert e.value.errno == errno.ENOSPC
    monkeypatch.setattr(ocp.CheckpointManager, "save", original)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]
    assert ckpt.latest_step() == 1


# ---- 5. bad values are refused at start --------------------------------------------------------
BAD_VALUES = [
    ("run.pretrain_steps", -1), ("run.online_steps", -5), ("run.batch_size", 0),
    ("run.eval_episodes", -1), ("run.log_every", 0), ("run.eval_every", 0),
    ("run.save_every", -2), ("run.online_eval_every", 0), ("run.online_log_every", 0),
    ("run.steps_per_dispatch", 0), ("run.utd", 0), ("run.utd", -1),
    ("run.offline_ratio", 1.5), ("run.offline_ratio", -0.1), ("actor.hidden_dims", (32, 0)),
    ("critic_hidden_dims", (0,)), ("discount", 0.0), ("discount", 1.01), ("tau", 0.0),
    ("tau", 2.0), ("actor_lr", 0.0), ("actor_lr", float("nan")), ("critic_lr", -1e-3),
    ("actor_lr", float("inf")), ("num_samples", 0), ("horizon", 0),
]


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_validate_config_names_key_value_and_range(key, value):
    from configs.dql import get_config
    from dprl.run.config import validate_config

    config = get_config()
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError) as e:
        validate_config(config, on_policy=False)
    message = str(e.value)
    assert f"--agent.{key}=" in message and "must be" in message, message


def test_validate_config_accepts_every_shipped_config():
    from configs import config_file
    from dprl.run.config import load_config_file, validate_config

    for name, on_policy in (("bc", False), ("dql", False), ("guided", False), ("dppo", True),
                            ("qc", False)):
        validate_config(load_config_file(config_file(name)), on_policy=on_policy)


@pytest.mark.parametrize("agent,extra,message", [
    ("bc", ["--agent.run.steps_per_dispatch=0"], "--agent.run.steps_per_dispatch=0: must be"),
    ("bc", ["--agent.run.offline_ratio=1.5"], "--agent.run.offline_ratio=1.5: must be"),
    ("dppo", ["--offline_steps=10"], "on-policy"),
    ("bc", ["--agent.act_with=fast"], "--agent.act_with='fast': must be one of"),
    ("dppo", ["--agent.act_with=one_step"], "likelihoods of the denoising chain"),
    ("bc", ["--agent.act_with=one_step", "--agent.actor.model=mse"], "already acts in one step"),
])
def test_train_py_refuses_bad_values_before_loading_data(tmp_path, pole_datasets, agent, extra,
                                                         message):
    cmd = train_cmd(tmp_path / "bad", "--pretrain_steps=10", agent=f"configs/{agent}.py")
    proc = run(cmd + extra, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert message in lines[-1] and "TrainingDiverged" not in proc.stderr, proc.stderr
    assert "task pole: dataset" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_agent_file_is_one_line(tmp_path):
    proc = run([sys.executable, str(ROOT / "experiments/train.py"), "--agent=configs/nope.py",
                "--task=pole", f"--run_dir={tmp_path / 'r'}"], check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "configs/nope.py" in lines[0] and "Traceback" not in proc.stderr


# ---- 6. the data belong to the task -----------------------------------------------------------
def test_a_dataset_of_another_env_is_refused_unless_overridden(tmp_path, pole_datasets):
    cmd = [c for c in train_cmd(tmp_path / "r", "--pretrain_steps=20") if c != "--task=pole"]
    proc = run(cmd + ["--task=pole-right", "--dataset=dprl/pole/demos-v0"], check=False)
    assert proc.returncode != 0
    assert "dprl/Pole-v0" in proc.stderr and "dprl/PoleRight-v0" in proc.stderr
    assert "--allow_env_mismatch" in proc.stderr and not (tmp_path / "r" / "metrics.csv").exists()
    run(cmd + ["--task=pole-right", "--dataset=dprl/pole/demos-v0", "--allow_env_mismatch"])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["task_env_id"] == "dprl/PoleRight-v0"
    assert summary["dataset_env_id"] == "dprl/Pole-v0"


def test_scores_use_the_tasks_reference_scores(tmp_path, pole_datasets):
    from dprl.data.offline import load_task_data
    from dprl.data.io import write_minari_dataset
    from dprl.datasets.pole import rollout_demos

    write_minari_dataset("dprl/pole/odd-ref-v0", rollout_demos("dprl/Pole-v0", 4), "dprl/Pole-v0",
                         ref_min_score=-50.0, ref_max_score=7.0, overwrite=True)
    data = load_task_data("pole", "dprl/pole/odd-ref-v0")
    assert (data.ref_min_score, data.ref_max_score) == (0.0, 1.0)


# ---- 7. Ctrl-C and SIGTERM stop cleanly -------------------------------------------------------
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_and_exits_cleanly(tmp_path, pole_datasets, sig, code):
    run_dir = tmp_path / "run"
    args = ["--pretrain_steps=100000", "--agent.run.log_every=20"]
    proc = subprocess.Popen(train_cmd(run_dir, *args), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait(lambda: _n_rows(run_dir) >= 2, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert "interrupted at step" in last and "run the same command to resume" in last, err
    step = int(last.split("interrupted at step ")[1].split(";")[0])
    assert _checkpoint(run_dir, step).exists()
    assert int(_rows(run_dir)[-1]["step"]) <= step


# ---- 8. disk full / unwritable run directory ---------------------------------------------------
def test_a_full_disk_is_one_line_and_the_same_command_resumes(tmp_path, pole_datasets,
                                                              monkeypatch):
    from dprl.run.checkpoint import Checkpointer
    from dprl.run.rundir import RunDirError

    run_dir = tmp_path / "run"
    config = _bc(pretrain_steps=100, save_every=25)
    original = Checkpointer.save
    calls = []

    def save(self, step, *args, **kwargs):
        calls.append(step)
        if step == 75:                # the disk fills up at the third checkpoint
            import orbax.checkpoint as ocp
            real = ocp.CheckpointManager.save

            def full(mgr, *a, **k):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                              str(self.directory / "75.orbax-checkpoint-tmp-7"))
            monkeypatch.setattr(ocp.CheckpointManager, "save", full)
            try:
                return original(self, step, *args, **kwargs)
            finally:
                monkeypatch.setattr(ocp.CheckpointManager, "save", real)
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save)
    with pytest.raises(RunDirError) as e:
        _train(config, run_dir)
    message = str(e.value)
    assert "\n" not in message and "No space left on device" in message
    assert str(run_dir / "checkpoints") in message and "same command" in message
    monkeypatch.setattr(Checkpointer, "save", original)
    _train(config, run_dir)                                               # space freed
    steps = [int(r["step"]) for r in _rows(run_dir)]
    assert steps == [25, 50, 75, 100]


def test_an_unwritable_run_dir_is_one_line(tmp_path, pole_datasets):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run(train_cmd(blocker / "run", "--pretrain_steps=10"), check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert str(blocker) in lines[0] and "Traceback" not in proc.stderr


# ---- 9. python -m dprl.datasets verify ID ------------------------------------------------------
def _verify(dataset_id):
    return subprocess.run([sys.executable, "-m", "dprl.datasets", "verify", dataset_id],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ),
                          timeout=300)


def test_verify_reports_every_check_of_a_good_dataset(pole_datasets):
    proc = _verify("dprl/pole/demos-v0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for check in ("stored whole", "spaces", "finite", "episode boundaries", "env id",
                  "reference scores", "replayed"):
        assert check in proc.stdout, (check, proc.stdout)


def test_verify_stops_at_the_first_problem_with_the_runners_message(pole_datasets):
    from dprl.data.offline import load_dataset
    from dprl.data.io import write_minari_dataset
    from dprl.datasets.pole import rollout_demos

    episodes = rollout_demos("dprl/Pole-v0", 4)
    episodes[2]["observations"][3, 1] = np.nan
    write_minari_dataset("dprl/pole/nan-v0", episodes, "dprl/Pole-v0", overwrite=True)
    proc = _verify("dprl/pole/nan-v0")
    assert proc.returncode != 0
    assert "observations has 1 NaN/inf values" in proc.stdout + proc.stderr
    with pytest.raises(ValueError, match="observations has 1 NaN/inf values"):
        load_dataset("dprl/pole/nan-v0")                                  # the same check

    episodes = rollout_demos("dprl/Pole-v0", 4)
    episodes[1]["truncations"][2] = True                                  # ends mid-episode
    write_minari_dataset("dprl/pole/cut-v0", episodes, "dprl/Pole-v0", overwrite=True)
    proc = _verify("dprl/pole/cut-v0")
    assert proc.returncode != 0 and "episode 1" in proc.stdout + proc.stderr
    with pytest.raises(ValueError, match="episode 1"):
        load_dataset("dprl/pole/cut-v0")


# ---- 10. grids tell the truth about failures ---------------------------------------------------
def test_a_failed_cells_error_holds_the_real_exception_and_report_lists_it(tmp_path,
                                                                           pole_datasets):
    sys.path.insert(0, str(ROOT / "experiments"))
    import grid as grid_cli

    from dprl.tools.grid import run_grid
    from dprl.tools.report import report

    out = tmp_path / "grid"
    sets = ["actor.hidden_dims=(16,16)", "run.batch_size=16", "run.steps_per_dispatch=10",
            "run.log_every=10", "run.eval_every=1000", "run.save_every=1000",
            "run.eval_episodes=2", "run.tensorboard=False", "run.pretrain_steps=10",
            "actor.diffusion_steps=5"]
    good = grid_cli.make_cells(["bc"], ["pole"], [0], out, sets)
    bad = grid_cli.make_cells(["bc"], ["pole-right"], [0], out, sets + ["actor.time_dim=1"])
    missing = grid_cli.make_cells(["bc"], ["pole"], [1], out, sets)
    status = run_grid(good + bad, str(out), workers=1, echo=lambda s: None)
    cell = status["cells"][bad[0].label]
    assert cell["state"] == "failed"
    assert cell["error"].startswith("ZeroDivisionError"), cell["error"]
    error = (Path(bad[0].run_dir) / "error.txt").read_text()
    assert "ZeroDivisionError: division by zero" in error
    assert "dprl/models/nets.py" in error and "agents/bc.py" in error
    assert "For simplicity, JAX has removed" not in error.split("--- last lines")[0]
    # A cell the grid never ran (killed grid, or added later) and the failed one are listed.
    status_path = out / "grid_status.json"
    s = json.loads(status_path.read_text())
    s["cells"][missing[0].label] = {"agent": "bc", "task": "pole", "seed": 1,
                                    "run_dir": missing[0].run_dir, "state": "pending"}
    status_path.write_text(json.dumps(s))
    md = report(out, reps=50)["markdown"]
    assert "Failed or missing cells" in md
    assert bad[0].label in md and "ZeroDivisionError" in md
    assert missing[0].label in md and "no summary.json" in md
