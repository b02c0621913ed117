"""Behaviour kept: a fixed-seed short run of every agent gives the metrics it gave when recorded.

Each run goes through the run contract (``experiments/train.py`` in a subprocess): BC pretraining,
offline RL and online steps with tiny networks, evaluations included. Its ``metrics.csv`` and
``summary.json``, wall-clock fields aside, must equal the reference in
``tests/reference/short_runs.json`` (to 1e-6 relative: CPU XLA is deterministic, so a refactoring
that keeps the computation keeps the numbers). Recorded with ``python tests/test_reference_runs.py --record``; record again only for an
intended change of behaviour, and say so in the commit (git log of
``tests/reference/short_runs.json`` lists each re-recording and why: four off-policy online
metrics when the replay step moved into one compiled program, QC's run when its networks took
QC's code's LayerNorm order, kernels and flow time, DQL's when its update unrolled its chains;
each moved values by at most 3e-6 relative or was an intended change).
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference" / "short_runs.json"
WALL_CLOCK = {"wall_s", "eval/wall_s", "updates_per_s", "env_steps_per_s"}

TINY = ["--agent.actor.hidden_dims=(32, 32)", "--agent.run.batch_size=32",
        "--agent.run.steps_per_dispatch=25", "--agent.run.log_every=25",
        "--agent.run.eval_every=100", "--agent.run.save_every=100",
        "--agent.run.eval_episodes=4", "--agent.run.tensorboard=False", "--seed=0",
        "--noprogress"]
CRITIC = ["--agent.critic_hidden_dims=(32, 32)"]
REPLAY = ["--agent.run.online_log_every=10", "--agent.run.online_eval_every=20",
          "--online_steps=40"]
# agent -> (task, extra flags): pretrain -> offline -> online, each short.
RUNS = {
    "bc": ("pole", ["--agent.actor.diffusion_steps=5", "--pretrain_steps=200"] + REPLAY),
    "dql": ("pole", CRITIC + ["--agent.num_samples=4", "--pretrain_steps=50",
                              "--offline_steps=150"] + REPLAY),
    "guided": ("pole", CRITIC + ["--agent.guide_hidden_dims=(32, 32)", "--pretrain_steps=50",
                                 "--offline_steps=150"] + REPLAY),
    "dppo": ("pole", ["--agent.actor.diffusion_steps=4", "--agent.ft_denoising_steps=2",
                      "--agent.ppo_batch_size=8", "--agent.run.num_envs=2",
                      "--agent.run.rollout_steps=4", "--agent.run.online_log_every=8",
                      "--agent.run.online_eval_every=64", "--pretrain_steps=100",
                      "--online_steps=96"]),
    # qc's defaults follow the QC paper (raw observations, 5000 env steps before online
    # updates); the recording used the earlier ones, pinned here.
    "qc": ("chain", CRITIC + ["--agent.num_samples=4", "--agent.actor.flow_steps=3",
                              "--offline_steps=200", "--agent.run.normalize_obs=True",
                              "--agent.run.start_online_updates=0"] + REPLAY),
}


# The config preset each run pins (configs/<agent>.py:<preset>): the recorded configuration by
# name, whatever the file's default becomes (DPPO: 'plain-mlp-cpu', not 'paper' or 'cpu-small').
PRESETS = {"dppo": "plain-mlp-cpu"}


# Intended changes since the recording, applied to the reference before comparing:
# (agent, metric) -> factor. Empty since the re-recording of 2026-11-25: the faster Mish
# (dprl.models.nets.mish, jax.nn.mish's function to float rounding) moved online rows of the Mish agents
# by 1e-6..5e-5 relative (with jax.nn.mish the old recording still matched), so the reference was
# recorded again; it already has DQL's critic/loss as the ensemble mean (it was the sum: x0.5).
CHANGED: dict = {}


def added_summary_fields(task: str) -> dict:
    """summary.json fields added since the recording (both env ids, the preset), with the values a
    run on the task's own dataset has."""
    from dprl.envs.tasks import get_task
    env_id = get_task(task)["env_id"]
    return {"task_env_id": env_id, "dataset_env_id": env_id}


def reference(agent: str) -> dict:
    want = json.loads(REFERENCE.read_text())[agent]
    for row in want["metrics"]:
        for (a, key), factor in CHANGED.items():
            if a == agent and key in row:
                row[key] = str(float(row[key]) * factor)
    want["summary"].update(added_summary_fields(RUNS[agent][0]))
    want["summary"].update(preset_fields(agent))
    return want


def preset_fields(agent: str) -> dict:
    """summary.json's preset fields, added since the recording: the config's ``preset`` (None for
    a config that names none) and the label tables use (``agent:preset``, else the agent)."""
    from dprl.run.config import load_config_file
    spec = str(ROOT / "configs" / f"{agent}.py") + (f":{PRESETS[agent]}" if agent in PRESETS
                                                   else "")
    preset = load_config_file(spec).get("preset")
    return {"preset": preset, "agent_label": f"{agent}:{preset}" if preset else agent}


def run_short(agent: str, run_dir: Path) -> dict:
    """Run ``agent``'s short run into ``run_dir``; its metrics rows and summary, wall clock
    dropped (a row keeps only its non-empty cells)."""
    task, extra = RUNS[agent]
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"),
           f"--agent={ROOT / 'configs' / f'{agent}.py'}"
           + (f":{PRESETS[agent]}" if agent in PRESETS else ""), f"--task={task}",
           f"--run_dir={run_dir}", *TINY, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env=dict(os.environ))
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if v not in ("", None) and k not in WALL_CLOCK}
                for row in csv.DictReader(f)]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"metrics": rows, "summary": {k: v for k, v in summary.items() if k not in WALL_CLOCK}}


def _same(a, b) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)


def differences(got: dict, want: dict) -> list[str]:
    out = []
    if len(got["metrics"]) != len(want["metrics"]):
        out.append(f"{len(got['metrics'])} metrics rows, reference has {len(want['metrics'])}")
    for i, (g, w) in enumerate(zip(got["metrics"], want["metrics"])):
        if set(g) != set(w):
            out.append(f"row {i}: columns {sorted(set(g) ^ set(w))} differ")
        out += [f"row {i} ({w.get('phase')} {w.get('step')}): {k} = {g[k]}, reference {w[k]}"
                for k in sorted(set(g) & set(w)) if not _same(g[k], w[k])]
    s, r = got["summary"], want["summary"]
    out += [f"summary {k}: {s.get(k)}, reference {r.get(k)}" for k in sorted(set(s) | set(r))
            if not _same(s.get(k), r.get(k))]
    return out


@pytest.mark.parametrize("agent", sorted(RUNS))
def test_short_run_matches_the_recorded_reference(agent, tmp_path, pole_datasets):
    want = reference(agent)
    got = run_short(agent, tmp_path / agent)
    problems = differences(got, want)
    assert not problems, f"{agent}: {len(problems)} differences:\n" + "\n".join(problems[:40])


def record() -> None:
    """Write the reference (run from the repository root, with a scratch dataset root)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(tmp) / "minari")
        from dprl.datasets.pole import make_pole_dataset
        make_pole_dataset("pole")
        out = {agent: run_short(agent, Path(tmp) / agent) for agent in sorted(RUNS)}
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_reference_runs.py --record")
    record()
