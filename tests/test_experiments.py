"""Experiments tooling: grid (local + Ray, skip/resume, failures), report statistics, chunk
ablation helpers, seeds in one vmapped program."""
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

sys.path.insert(0, str(ROOT / "experiments"))

# Tiny budgets for every agent of the acceptance grid (shared keys, then per-agent ones).
TINY_SETS = [
    "actor.hidden_dims=(16,16)", "critic_hidden_dims=(16,16)", "run.batch_size=16",
    "run.steps_per_dispatch=10", "run.log_every=10", "run.eval_every=1000",
    "run.save_every=1000", "run.eval_episodes=2", "run.tensorboard=False",
    "run.pretrain_steps=10", "run.offline_steps=10", "run.online_steps=0",
    "dql.num_samples=4", "guided.guide_hidden_dims=(16,16)", "qc.num_samples=4",
    "qc.horizon=2", "qc.act_steps=2", "dppo.run.offline_steps=0", "dppo.run.online_steps=32",
    "dppo.run.num_envs=2", "dppo.run.rollout_steps=4", "dppo.actor.diffusion_steps=4",
    "dppo.ft_denoising_steps=2", "dppo.ppo_batch_size=4",
]
BC_SETS = ["actor.hidden_dims=(16,16)", "run.batch_size=16", "run.steps_per_dispatch=10",
           "run.log_every=10", "run.eval_every=1000", "run.save_every=1000",
           "run.eval_episodes=2", "run.tensorboard=False", "run.pretrain_steps=10",
           "actor.diffusion_steps=5"]


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    """One persistent compilation cache for every grid of this module (cells compile the same
    programs; the cache only saves time)."""
    return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("xla_cache")),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


# ---------------------------------------------------------------------------------------------
# Grid: cells and --set
# ---------------------------------------------------------------------------------------------
def test_parse_sets_shared_and_per_agent():
    from dprl.tools.grid import parse_sets

    out = parse_sets(["run.offline_steps=100", "dql.eta=2", "eta=3", "qc.num_samples=4",
                      "bc.actor_lr=1"], ["dql", "guided"], ["bc", "dql", "guided", "qc"])
    assert out["dql"] == [("run.offline_steps", "100"), ("eta", "2")]   # agent value wins
    assert out["guided"] == [("run.offline_steps", "100"), ("eta", "3")]
    with pytest.raises(ValueError, match="key=value"):
        parse_sets(["oops"], ["dql"])


def test_cells_commands_and_dry_run(tmp_path, capsys):
    import grid as grid_cli

    cells = grid_cli.make_cells(["dql", "guided", "dppo", "qc"], ["pole", "pole-right"], [0, 1],
                                tmp_path, TINY_SETS)
    assert len(cells) == 16
    c = next(c for c in cells if c.agent == "dql" and c.seed == 1 and c.task == "pole")
    assert c.run_dir == str(tmp_path / "dql" / "pole" / "seed1")
    cmd = " ".join(c.command())
    assert "--agent.run.offline_steps=10" in cmd and "--agent.num_samples=4" in cmd
    assert "--agent.guide_hidden_dims" not in cmd and "--seed=1" in cmd and "configs/dql.py" in cmd
    assert "experiments/train.py" in cmd
    assert grid_cli.main(["--agents=dql,qc", "--tasks=pole", "--seeds=0,1", "--out", str(tmp_path),
                          "--dry-run", *sum([["--set", s] for s in TINY_SETS], [])]) == 0
    assert "4 cells, 0 finished" in capsys.readouterr().out
    # A shared key that one agent lacks is refused up front, naming the per-agent form.
    with pytest.raises(ValueError, match="qc.key=value"):
        grid_cli.make_cells(["dql", "qc"], ["pole"], [0], tmp_path, ["max_q_samples=4"])


# ---------------------------------------------------------------------------------------------
# Grid: running (default suite: BC cells; the 4-agent acceptance grids are marked slow)
# ---------------------------------------------------------------------------------------------
def _bc_cells(out, seeds=(0, 1)):
    import grid as grid_cli
    return grid_cli.make_cells(["bc"], ["pole"], list(seeds), out, BC_SETS)


def test_grid_local_failure_skip_and_resume(tmp_path, pole_datasets, xla_cache):
    from dprl.tools.grid import Cell, run_grid

    out = tmp_path / "grid"
    cells = _bc_cells(out)
    bad = Cell("bc", "no-such-task", 0, str(out / "bc" / "no-such-task" / "seed0"),
               cells[0].config_file, cells[0].train_script)
    cells += [bad]
    status = run_grid(cells, str(out), workers=2, env=xla_cache, echo=lambda s: None)
    assert status["counts"]["done"] == 2 and status["counts"]["failed"] == 1
    error = (Path(bad.run_dir) / "error.txt").read_text()
    assert "Unknown task" in error and "command:" in error
    assert json.loads((out / "grid_status.json").read_text())["cells"][bad.label]["state"] == \
        "failed"
    for c in cells[:2]:
        s = json.loads((Path(c.run_dir) / "summary.json").read_text())
        assert s["agent"] == "bc" and s["seed"] == c.seed and s["pretrain_steps"] == 10
    # A lost cell is re-run; finished ones are skipped (their summaries untouched).
    (Path(cells[1].run_dir) / "summary.json").unlink()
    mtime = os.path.getmtime(Path(cells[0].run_dir) / "summary.json")
    lines = []
    status = run_grid(cells[:2], str(out), workers=2, env=xla_cache, echo=lines.append)
    assert status["counts"] == {"pending": 0, "running": 0, "done": 1, "failed": 0, "skipped": 1}
    assert os.path.getmtime(Path(cells[0].run_dir) / "summary.json") == mtime
    assert (Path(cells[1].run_dir) / "summary.json").exists()
    assert any("ETA" in line and "2/2 done" in line for line in lines)


def _ray():
    return pytest.importorskip("ray", reason="Ray is not installed: pip install 'ray[default]'")


def test_grid_ray_local_instance(tmp_path, pole_datasets, xla_cache):
    ray = _ray()
    from dprl.tools.grid import _fork_exec_only, run_grid

    out = tmp_path / "ray_grid"
    with _fork_exec_only():   # as run_grid starts Ray: its daemons fork + exec, JAX-safe
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        status = run_grid(_bc_cells(out), str(out), backend="ray", workers=2, env=xla_cache,
                          echo=lambda s: None)
    finally:
        ray.shutdown()
    assert status["counts"]["done"] == 2 and status["backend"] == "ray"
    assert all((out / "bc" / "pole" / f"seed{s}" / "summary.json").exists() for s in (0, 1))


def _wait_for(predicate, timeout):
    start = time.time()
    while time.time() - start < timeout:
        if predicate():
            return True
        time.sleep(1)
    return False


@pytest.mark.slow
def test_acceptance_grid_local_kill_and_resume(tmp_path, pole_datasets, xla_cache):
    """4 agents x 2 tasks x 2 seeds: killed once >= 3 cells finished, re-run finishes the rest."""
    out = tmp_path / "grid"
    argv = [sys.executable, str(ROOT / "experiments" / "grid.py"),
            "--agents=dql,guided,dppo,qc", "--tasks=pole,pole-right", "--seeds=0,1",
            "--out", str(out), "--workers=2", *sum([["--set", s] for s in TINY_SETS], [])]
    env = {**os.environ, **xla_cache}
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: len(list(out.rglob("summary.json"))) >= 3, 900)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the grid and its running cells
        proc.wait()
    finished = {p: os.path.getmtime(p) for p in out.rglob("summary.json")}
    assert 3 <= len(finished) < 16
    r = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    status = json.loads((out / "grid_status.json").read_text())
    assert status["counts"]["skipped"] == len(finished)
    assert status["counts"]["done"] == 16 - len(finished) and status["counts"]["failed"] == 0
    assert all(os.path.getmtime(p) == m for p, m in finished.items())


@pytest.mark.slow
def test_acceptance_grid_ray(tmp_path, pole_datasets, xla_cache):
    ray = _ray()
    import grid as grid_cli
    from dprl.tools.grid import run_grid

    out = tmp_path / "grid"
    cells = grid_cli.make_cells(["dql", "guided", "dppo", "qc"], ["pole", "pole-right"], [0, 1],
                                out, TINY_SETS)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        status = run_grid(cells, str(out), backend="ray", workers=2, env=xla_cache,
                          echo=lambda s: None)
    finally:
        ray.shutdown()
    assert status["counts"]["done"] == 16, status["cells"]


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def test_iqm_and_stratified_bootstrap_match_plain_numpy():
    from dprl.tools.report import iqm, stratified_bootstrap_ci

    x = np.array([3.0, -1.0, 10.0, 7.0, 2.0, 100.0, 5.0, 4.0])
    middle = np.sort(x)[2:6]                      # n = 8: cut 2 from each end
    assert iqm(x) == pytest.approx(middle.mean())
    assert iqm([1.0, 2.0, 3.0]) == pytest.approx(2.0)   # n = 3: floor(0.75) = 0 cut
    try:
        from scipy.stats import trim_mean
        assert iqm(x) == pytest.approx(trim_mean(x, 0.25))
    except ImportError:
        pass
    tasks = [np.array([10.0, 20.0, 30.0]), np.array([1.0, 2.0, 3.0, 4.0, 50.0])]
    point, low, high = stratified_bootstrap_ci(tasks, reps=500, confidence=0.9, seed=3)
    # Plain numpy: resample each task's runs separately, pool, IQM; percentiles of the replicates.
    rng = np.random.default_rng(3)
    reps = []
    for _ in range(500):
        pooled = np.concatenate([t[rng.integers(0, len(t), len(t))] for t in tasks])
        s = np.sort(pooled)
        c = int(0.25 * len(s))
        reps.append(s[c:len(s) - c].mean())
    assert point == pytest.approx(np.sort(np.concatenate(tasks))[2:6].mean())
    assert (low, high) == pytest.approx(tuple(np.percentile(reps, [5, 95])))
    assert low <= point <= high


def _fake_run(root, agent, task, seed, offline, online, curve):
    d = Path(root) / agent / task / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "agent": agent, "task": task, "seed": seed, "pretrain_steps": 10, "offline_steps": 20,
        "online_steps": 30, "offline_score": offline, "online_score": online,
        "dataset_id": f"dprl/{task}", "dataset_source": "dprl-generated", "wall_s": 1.0}))
    rows = ["phase,step,env_steps,wall_s,global_step,eval/normalized_score"]
    rows += [f"offline,{s},0,1.0,{s},{v}" for s, v in curve]
    (d / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_report_tables_and_curves(tmp_path):
    import report as report_cli
    from dprl.tools.report import stratified_bootstrap_ci

    scores = {("a", "t1"): [10, 20, 30], ("a", "t2"): [50, 60], ("b", "t1"): [5, 5, 8]}
    for (agent, task), xs in scores.items():
        for s, v in enumerate(xs):
            _fake_run(tmp_path, agent, task, s, v, v + 1, [(10, v / 2), (20, v)])
    assert report_cli.main([str(tmp_path), "--reps", "300"]) == 0
    csv_rows = (tmp_path / "results.csv").read_text().splitlines()
    row = next(r for r in csv_rows if r.startswith("a,t1,offline"))
    fields = row.split(",")
    assert fields[3] == "3" and float(fields[4]) == pytest.approx(20.0)
    assert float(fields[5]) == pytest.approx(np.std([10, 20, 30], ddof=1))
    _, lo, hi = stratified_bootstrap_ci([np.array([10.0, 20, 30])], reps=300)
    assert float(fields[7]) == pytest.approx(lo) and float(fields[8]) == pytest.approx(hi)
    agg = next(r for r in csv_rows if r.startswith("a,IQM (all tasks),online"))
    assert agg.split(",")[3] == "5"
    md = (tmp_path / "results.md").read_text()
    assert "| a |" in md and "(n=3)" in md and "IQM (all tasks)" in md and "Online" in md
    assert (tmp_path / "curves_t1.png").stat().st_size > 1000
    assert report_cli.main([str(tmp_path / "nothing")]) == 2


def test_report_several_grids_iqm_curves_over_env_steps(tmp_path):
    import report as report_cli
    from dprl.tools.report import curve_band, stratified_bootstrap_ci

    _fake_run(tmp_path / "g1", "a", "t1", 0, 1, 2, [(10, 1.0)])
    _fake_run(tmp_path / "g2", "b", "t1", 0, 3, 4, [(10, 3.0)])
    roots = [str(tmp_path / "g1"), str(tmp_path / "g2")]
    assert report_cli.main(roots) == 2                      # several roots need --out
    out = tmp_path / "both"
    assert report_cli.main(roots + ["--out", str(out), "--x", "env_steps", "--curve", "iqm",
                                    "--reps", "50"]) == 0
    md = (out / "results.md").read_text()
    assert "| a |" in md and "| b |" in md
    assert (out / "curves_t1.png").stat().st_size > 1000
    # The IQM band is the per-point bootstrap; mean-std is mean +- std.
    ys = np.array([[1.0, 10.0], [2.0, 30.0], [9.0, 20.0], [4.0, 40.0]])
    line, low, high = curve_band(ys, "iqm", reps=200, seed=1)
    for i in range(2):
        assert (line[i], low[i], high[i]) == pytest.approx(
            stratified_bootstrap_ci([ys[:, i]], reps=200, seed=1))
    assert line[0] == pytest.approx(3.0) and line[1] == pytest.approx(25.0)
    mean, lo, hi = curve_band(ys, "mean-std")
    assert mean == pytest.approx(ys.mean(0)) and hi - mean == pytest.approx(ys.std(0))
    with pytest.raises(ValueError, match="choose one of"):
        curve_band(ys, "median")


# ---------------------------------------------------------------------------------------------
# Chunk ablation helpers
# ---------------------------------------------------------------------------------------------
def test_ablation_cells_and_jerk(tmp_path):
    import ablate_chunk

    cells = ablate_chunk.make_cells("dql", "pole", [1, 2, 4], ["H", "1", "2"], [0], tmp_path,
                                    ["run.offline_steps=5", "horizon=9"])
    pairs = [(dict(c.overrides)["horizon"], dict(c.overrides)["act_steps"]) for c in cells]
    assert pairs == [("1", "1"), ("2", "2"), ("2", "1"), ("4", "4"), ("4", "1"), ("4", "2")]
    assert cells[0].run_dir == str(tmp_path / "H1_a1" / "seed0")
    t = np.arange(10.0)
    cubic = np.stack([t ** 3, 2 * t], -1)          # third difference 6, then 0
    assert ablate_chunk.mean_squared_jerk(cubic) == pytest.approx(36.0)
    assert ablate_chunk.mean_squared_jerk(np.ones((20, 2))) == 0.0
    assert np.isnan(ablate_chunk.mean_squared_jerk(np.ones((3, 2))))


# ---------------------------------------------------------------------------------------------
# Seeds in one program
# ---------------------------------------------------------------------------------------------
def test_multiseed_matches_separate_runs(tmp_path, pole_datasets):
    import jax

    from agents import get_agent
    from configs.bc import get_config
    from dprl.run.checkpoint import load_run
    from dprl.run.multiseed import seed_dirs, train_seeds
    from dprl.run.runner import train

    config = tiny(get_config(), pretrain_steps=20, steps_per_dispatch=10, log_every=10,
                  eval_every=20, save_every=20)
    config.actor.hidden_dims = (16, 16)
    config.actor.diffusion_steps = 5
    dirs = seed_dirs(tmp_path / "vmapped", [0, 1])
    together = train_seeds(config, "pole", dirs, [0, 1], get_agent, progress=False)
    alone = train(config, "pole", str(tmp_path / "alone"), get_agent, seed=1, progress=False)
    assert [s["seed"] for s in together] == [0, 1]
    assert together[1]["offline_score"] == alone["offline_score"]
    a, _, _ = load_run(dirs[1], get_agent)
    b, _, _ = load_run(tmp_path / "alone", get_agent)
    for x, y in zip(jax.tree.leaves(a.actor.params), jax.tree.leaves(b.actor.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(a.key), np.asarray(b.key))
    # Seeds differ from each other, and metrics.csv has the same rows as a separate run.
    c, _, _ = load_run(dirs[0], get_agent)
    assert not np.allclose(jax.tree.leaves(c.actor.params)[0], jax.tree.leaves(a.actor.params)[0])

    def table(d):
        lines = (Path(d) / "metrics.csv").read_text().splitlines()
        header = lines[0].split(",")
        return [{k: v for k, v in zip(header, line.split(",")) if k not in ("wall_s",
                                                                             "eval/wall_s")}
                for line in lines[1:]]
    ta, tb = table(dirs[1]), table(tmp_path / "alone")
    assert [r["step"] for r in ta] == [r["step"] for r in tb]
    for ra, rb in zip(ta, tb):
        for k in ra:
            if ra[k] and k not in ("phase",):
                assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-4, abs=1e-5), k
