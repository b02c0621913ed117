"""Reproduce the QC paper's offline comparison on OGBench and draw it over the paper's curves.

    python experiments/reproduce_qc.py --out runs/qc_repro \\
        [--tasks scene-task2,cube-double-task1] [--methods qc,bfn,bfn-n,qc-fql,fql] \\
        [--seeds 0,1,2] [--offline_steps 100000] [--eval_every 25000] [--eval_episodes 50] \\
        [--set actor.hidden_dims='(256,256)' ...] [--no-vmap] [--workers 1] [--report-only]

One grid cell per (method, task) (``dprl/tools/grid.py``): ``experiments/train.py`` with
``--agent=configs/qc.py:<method>`` and the seeds vmapped in one program (``--num_seeds``), run
directories ``OUT/<method>/<task>/seed<k>``. Re-running the same command skips finished cells and
resumes interrupted ones from their last checkpoint (saved at every evaluation). Then it writes

  OUT/qc_reproduction.md    the table ``method | dprl at <step> | paper at <step>`` per task
                            (mean success rate and 95% bootstrap CI over seeds, 5000 resamples
                            as in the paper), the commands, and every departure from the
                            paper's configuration (config.json of the runs vs configs/qc.py);
  OUT/qc_reproduction.png   one panel per task: dprl's curves (mean, CI band) over the paper's
                            points and CIs (``docs/results/paper_data/qc_paper_curves.csv``);
  OUT/qc_reproduction.json  every number of the table and the figure.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "docs" / "results" / "paper_data" / "qc_paper_curves.csv"
TRAIN_SCRIPT = str(ROOT / "experiments" / "train.py")
PAPER_NAMES = {"qc": "QC", "bfn": "BFN", "bfn-n": "BFN-n", "qc-fql": "QC-FQL", "fql": "FQL",
               "fql-n": "FQL-n"}
DEFAULT_TASKS = ("scene-task2", "cube-double-task1")
DEFAULT_METHODS = ("qc", "bfn", "bfn-n", "qc-fql", "fql")
BOOTSTRAP_REPS = 5000   # the paper's CIs: 95% bootstrap over seeds, 5000 resamples
# Keys that set up the experiment (length, evaluation and logging cadence), not the method: a
# different value is not a departure from the paper (at step t of a constant-lr run, a run
# stopped at 100k equals the paper's 1M run).
SCHEDULE_KEYS = {"run.offline_steps", "run.online_steps", "run.pretrain_steps", "run.eval_every",
                 "run.online_eval_every", "run.save_every", "run.log_every",
                 "run.online_log_every", "run.steps_per_dispatch", "run.tensorboard",
                 "run.wandb_project", "run.init_from", "action_dim"}
PAPER_EVAL_EPISODES = 50


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------
def experiment_overrides(offline_steps: int, eval_every: int, eval_episodes: int
                         ) -> list[tuple[str, str]]:
    """The offline phase only, evaluated (and checkpointed) every ``eval_every`` steps."""
    return [("run.offline_steps", str(offline_steps)), ("run.online_steps", "0"),
            ("run.eval_every", str(eval_every)), ("run.save_every", str(eval_every)),
            ("run.log_every", str(min(5000, eval_every))),
            ("run.eval_episodes", str(eval_episodes))]


def make_cells(methods, tasks, seeds, out, sets=(), offline_steps=100_000, eval_every=25_000,
               eval_episodes=PAPER_EVAL_EPISODES, vmap=True):
    """One grid cell per (method, task) holding every seed (vmapped), or per seed."""
    from configs import config_file as agent_config_file
    from dprl.tools.grid import Cell, check_overrides

    for m in methods:
        if m not in PAPER_NAMES:
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(PAPER_NAMES)}")
    seeds = [int(s) for s in seeds]
    if vmap and seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"vmapped seeds must be consecutive (seed..seed+S-1), got {seeds}; "
                         f"use --no-vmap for others")
    overrides = experiment_overrides(offline_steps, eval_every, eval_episodes)
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. actor.hidden_dims=(64,64)")
        overrides.append(tuple(item.split("=", 1)))
    cells = []
    for m in methods:
        config_file = f"{agent_config_file('qc')}:{m}"
        for t in tasks:
            base = Path(out).absolute() / m / t
            if vmap:
                cells.append(Cell("qc", t, seeds[0], str(base), config_file, TRAIN_SCRIPT,
                                  tuple(overrides), name=f"{m}/{t}", num_seeds=len(seeds)))
            else:
                cells += [Cell("qc", t, s, str(base / f"seed{s}"), config_file, TRAIN_SCRIPT,
                               tuple(overrides), name=f"{m}/{t}/seed{s}") for s in seeds]
        if tasks:
            check_overrides(cells[-1])
    return cells


def check_datasets(tasks) -> None:
    """Fail before any run, with the command to run, when a task's dataset is missing."""
    from dprl.data.registry import DatasetError, resolve_dataset

    for t in tasks:
        try:
            resolve_dataset(t)
        except DatasetError as e:
            raise FileNotFoundError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
def read_paper(path: Path = PAPER_CSV) -> dict:
    """``{(task, method): {'steps', 'mean', 'ci_low', 'ci_high'}}`` (success rates in [0, 1])."""
    out: dict = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            e = out.setdefault((row["task"], row["method"]),
                               {"steps": [], "mean": [], "ci_low": [], "ci_high": []})
            e["steps"].append(int(row["step"]))
            for k in ("mean", "ci_low", "ci_high"):
                e[k].append(float(row[k]))
    return out


def seed_curves(run_dirs) -> dict[int, list[float]]:
    """``{offline step: [success rate of each seed]}`` from the runs' metrics.csv (score / 100)."""
    by_step: dict[int, list[float]] = {}
    for d in run_dirs:
        path = Path(d) / "metrics.csv"
        if not path.exists():
            continue
        seen = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                v = row.get("eval/normalized_score")
                if row.get("phase") == "offline" and v not in (None, ""):
                    seen[int(float(row["step"]))] = float(v) / 100.0
        for step, v in seen.items():
            by_step.setdefault(step, []).append(v)
    return dict(sorted(by_step.items()))


def mean_ci(values) -> tuple[float, float, float]:
    import numpy as np

    from dprl.tools.report import stratified_bootstrap_ci
    return stratified_bootstrap_ci([values], statistic=np.mean, reps=BOOTSTRAP_REPS)


def departures(cells) -> dict[str, dict]:
    """Per method, every config value of its runs that differs from the paper's preset."""
    from dprl.run.config import config_keys, load_config_file

    out: dict[str, dict] = {}
    for c in cells:
        method = c.config_file.rsplit(":", 1)[1]
        paper = load_config_file(c.config_file)
        for d in (Path(c.run_dir).glob("seed*/config.json") if c.num_seeds > 1
                  else [Path(c.run_dir) / "config.json"]):
            if not d.exists():
                continue
            used = json.loads(d.read_text())["agent"]
            diff = out.setdefault(method, {})
            for key in config_keys(paper):
                if key in SCHEDULE_KEYS:
                    continue
                want, got = _get(paper.to_dict(), key), _get(used, key)
                if key == "run.eval_episodes":
                    want = want or PAPER_EVAL_EPISODES
                if _norm(want) != _norm(got):
                    diff[key] = {"paper": _norm(want), "used": _norm(got)}
    return out


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def summarize(cells, tasks, methods, at_step: int) -> dict:
    """Every number of the table and the figure."""
    paper = read_paper()
    result = {"at_step": at_step, "tasks": {}, "departures": departures(cells)}
    for t in tasks:
        rows = {}
        for m in methods:
            run_dirs = [d for c in cells if c.name == f"{m}/{t}" or c.name.startswith(f"{m}/{t}/")
                        for d in c.seed_dirs()]
            curve = seed_curves(run_dirs)
            dprl_points = {s: dict(zip(("mean", "ci_low", "ci_high"), mean_ci(v)), n=len(v),
                                   seeds=v) for s, v in curve.items()}
            p = paper.get((t, PAPER_NAMES[m]))
            paper_at = None
            if p and at_step in p["steps"]:
                i = p["steps"].index(at_step)
                paper_at = {k: p[k][i] for k in ("mean", "ci_low", "ci_high")}
            rows[m] = {"dprl": dprl_points, "dprl_at": dprl_points.get(at_step),
                       "paper": p, "paper_at": paper_at}
        result["tasks"][t] = rows
    return result


def _fmt(point) -> str:
    if point is None:
        return "—"
    s = f"{point['mean']:.2f} [{point['ci_low']:.2f}, {point['ci_high']:.2f}]"
    return s + (f" (n={point['n']})" if "n" in point else "")


def markdown(result: dict, command: str) -> str:
    k = result["at_step"] // 1000
    lines = [f"# QC paper reproduction: offline success rate at {k}k gradient steps", "",
             f"Command: `{command}`", ""]
    for t, rows in result["tasks"].items():
        lines += [f"## {t}", "", f"| method | dprl at {k}k (mean [95% CI], seeds) | "
                  f"paper at {k}k [95% CI] |", "| --- | --- | --- |"]
        for m, r in rows.items():
            lines.append(f"| {PAPER_NAMES[m]} | {_fmt(r['dprl_at'])} | {_fmt(r['paper_at'])} |")
        lines.append("")
    lines += ["Success rate = fraction of evaluation episodes with info['success'] at the end; "
              "CIs are percentile bootstrap intervals over seeds (5000 resamples), as the paper's. "
              "Paper: docs/results/paper_data/qc_paper_curves.csv (the QC repository's released "
              "plot data).", "", "Departures from the paper's configuration:"]
    deps = result["departures"]
    if not any(deps.values()):
        lines.append("- none (the paper's networks, N, h, alpha, batch, optimizer, "
                     f"{PAPER_EVAL_EPISODES} evaluation episodes)")
    for m, diff in deps.items():
        for key, v in sorted(diff.items()):
            lines.append(f"- {PAPER_NAMES[m]}: `{key}` = {v['used']} (paper: {v['paper']})")
    lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(result["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    colors = dict(zip(PAPER_NAMES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, t in zip(axes[0], tasks):
        xmax = result["at_step"]
        for m, r in result["tasks"][t].items():
            if r["dprl"]:
                xmax = max(xmax, max(r["dprl"]))
        for m, r in result["tasks"][t].items():
            c = colors[m]
            if r["dprl"]:
                steps = np.array(list(r["dprl"]))
                pts = list(r["dprl"].values())
                mean = np.array([p["mean"] for p in pts])
                ax.plot(steps / 1e3, mean, "-o", ms=3, color=c,
                        label=f"dprl {PAPER_NAMES[m]} (n={pts[-1]['n']})")
                ax.fill_between(steps / 1e3, [p["ci_low"] for p in pts],
                                [p["ci_high"] for p in pts], color=c, alpha=0.15)
            p = r["paper"]
            if p:
                keep = [i for i, s in enumerate(p["steps"]) if s <= xmax + 100_000]
                s = np.array(p["steps"])[keep] / 1e3
                mean = np.array(p["mean"])[keep]
                err = [mean - np.array(p["ci_low"])[keep], np.array(p["ci_high"])[keep] - mean]
                ax.errorbar(s, mean, yerr=err, fmt="s--", ms=4, capsize=3, color=c, alpha=0.7,
                            label=f"paper {PAPER_NAMES[m]}")
        ax.set_title(t)
        ax.set_xlabel("offline gradient steps (k)")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("dprl: solid, 95% CI band over seeds\nQC paper: dashed, 95% CI", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(cells, tasks, methods, out: Path, at_step: int, command: str) -> dict:
    result = summarize(cells, tasks, methods, at_step)
    (out / "qc_reproduction.md").write_text(markdown(result, command))
    (out / "qc_reproduction.json").write_text(json.dumps(result, indent=1, default=str))
    plot(result, out / "qc_reproduction.png")
    return result


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (runs, table, figure)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"configs/qc.py presets: {', '.join(PAPER_NAMES)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--offline_steps", "--offline-steps", type=int, default=100_000)
    p.add_argument("--eval_every", "--eval-every", type=int, default=25_000)
    p.add_argument("--eval_episodes", "--eval-episodes", type=int, default=PAPER_EVAL_EPISODES)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every method, e.g. actor.hidden_dims='(256,256)' "
                        "(recorded as a departure from the paper)")
    p.add_argument("--no-vmap", "--no_vmap", dest="vmap", action="store_false",
                   help="one process per seed instead of the seeds vmapped in one program")
    p.add_argument("--workers", type=int, default=1, help="cells run at once")
    p.add_argument("--report-only", "--report_only", action="store_true",
                   help="redraw the table and figure from the runs present")
    args = p.parse_args(argv)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    tasks, methods = split(args.tasks), split(args.methods)
    out = Path(args.out)
    try:
        cells = make_cells(methods, tasks, split(args.seeds), out, args.set, args.offline_steps,
                           args.eval_every, args.eval_episodes, args.vmap)
        if not args.report_only:
            check_datasets(tasks)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    failed = 0
    if not args.report_only:
        from dprl.tools.grid import run_grid
        status = run_grid(cells, str(out), workers=args.workers)
        failed = status["counts"]["failed"]
        for label, c in status["cells"].items():
            if c["state"] == "failed":
                print(f"FAILED {label}: {c.get('error')} (see {c['run_dir']}/error.txt)",
                      file=sys.stderr)
    command = "python experiments/reproduce_qc.py " + " ".join(argv)
    report(cells, tasks, methods, out, args.offline_steps, command)
    print((out / "qc_reproduction.md").read_text())
    print(f"figure: {out / 'qc_reproduction.png'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
