"""Tables and learning curves from a directory of runs (a grid, or any tree of run directories).

``collect(root)`` finds every ``summary.json`` below ``root``; ``score_table`` gives, per agent x
task and per phase (offline: the normalized score at the end of the offline phase; online: after
online finetuning), the mean +- std over seeds, the interquartile mean (IQM) with a percentile
bootstrap confidence interval, and the number of seeds. The aggregate row per agent is rliable's
(Agarwal et al. 2021): IQM over all runs of all tasks, CI from a *stratified* bootstrap (runs are
resampled with replacement within each task). ``plot_curves`` draws ``eval/normalized_score``
from each run's metrics.csv against the global step or the env steps, with the mean and a +-1 std
band or the IQM and its bootstrap CI over seeds.
``unfinished`` lists what the tables leave out: a grid's failed, refused, interrupted and missing
cells (from ``grid_status.json``) and run directories without a readable summary.json (missing,
or not written whole: listed as failed with the reason). A run is named ``agent:preset`` when its
config is one of several presets (``qc:qc-fql``), else by its agent.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from dprl.base.files import read_record
from dprl.run.rundir import held

PHASES = ("offline", "online")


# ---------------------------------------------------------------------------------------------
# Statistics (rliable's definitions, in plain numpy)
# ---------------------------------------------------------------------------------------------
def iqm(scores) -> float:
    """Interquartile mean: the mean of the middle 50% of the flattened scores.

    Same as ``scipy.stats.trim_mean(x, 0.25)`` (what rliable uses): ``floor(0.25 n)`` scores are
    cut from each end of the sorted array.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if x.size == 0:
        return float("nan")
    cut = int(0.25 * x.size)
    return float(x[cut:x.size - cut].mean())


def stratified_bootstrap_ci(scores_per_task: Sequence[Sequence[float]], statistic=iqm,
                            reps: int = 2000, confidence: float = 0.95, seed: int = 0
                            ) -> tuple[float, float, float]:
    """``(point, low, high)``: ``statistic`` of all scores and its percentile bootstrap interval.

    Each replicate resamples, independently for every task, that task's runs with replacement
    (rliable's StratifiedBootstrap; with a single task it is the plain bootstrap over seeds),
    concatenates them and applies ``statistic``. Draws: ``rng.integers(0, n_t, n_t)`` per task in
    task order, replicate after replicate, from ``np.random.default_rng(seed)``.
    """
    tasks = [np.asarray(s, dtype=np.float64).ravel() for s in scores_per_task]
    tasks = [s for s in tasks if s.size]
    if not tasks:
        return float("nan"), float("nan"), float("nan")
    point = statistic(np.concatenate(tasks))
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for r in range(reps):
        stats[r] = statistic(np.concatenate([s[rng.integers(0, s.size, s.size)] for s in tasks]))
    alpha = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [alpha, 100 - alpha])
    return float(point), float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Collecting runs
# ---------------------------------------------------------------------------------------------
def _replaced(path: Path, root: Path) -> bool:
    """A run moved aside by ``--restart`` (``<run_dir>.replaced-<time>``): not a result."""
    return any(".replaced-" in part for part in path.relative_to(root).parts)


def label(run: dict) -> str:
    """How tables name a run's agent: ``agent:preset`` for a config with presets (``qc:qc-fql``:
    its summary's ``preset``, or the grid cell's agent when the config does not record it), else
    the agent."""
    preset, cell = run.get("preset"), run.get("grid_agent") or ""
    if preset:
        return f"{run['agent']}:{preset}"
    return cell if cell.startswith(f"{run['agent']}:") else run["agent"]


def collect(root: str | Path) -> list[dict]:
    """Every run below ``root`` with a readable summary.json: its summary plus ``run_dir`` (an
    unreadable one is listed by ``unfinished``)."""
    status, _ = read_record(Path(root) / "grid_status.json")
    agents = {Path(c.get("run_dir", "")).resolve(): c.get("agent")
              for c in ((status or {}).get("cells") or {}).values()}
    runs = []
    for path in sorted(Path(root).rglob("summary.json")):
        if _replaced(path, Path(root)):
            continue
        summary, _ = read_record(path)
        if summary is None:
            continue
        summary["run_dir"] = str(path.parent)
        cell = agents.get(path.parent.resolve()) or agents.get(path.parent.parent.resolve())
        if cell:
            summary["grid_agent"] = cell   # a grid cell's agent, <agent>:<preset> for a preset
        runs.append(summary)
    return runs


def unfinished(root: str | Path) -> list[dict]:
    """Runs the tables leave out, ``{'label', 'state', 'why', 'run_dir'}`` each: every cell of
    ``root/grid_status.json`` without a summary.json (failed: its error; pending / running /
    never started: missing; running or pending in a grid that was killed, with no process
    holding the grid's or the run's lock: interrupted), then run directories below ``root`` with
    a config.json but no summary.json (a run stopped before it finished)."""
    root = Path(root)
    out, seen = [], set()
    status_path = root / "grid_status.json"
    status, status_why = read_record(status_path)
    if status is None and status_path.exists():
        out.append({"label": "(grid)", "state": "failed", "why": status_why,
                    "run_dir": str(root)})
    cells = (status or {}).get("cells") or {}
    # A grid holds its directory's lock and each running cell its run's: a status that still says
    # running or pending with neither held was left by a grid killed before it could record it.
    grid_alive = held(root) or any(held(c["run_dir"]) for c in cells.values()
                                   if c.get("state") == "running" and c.get("run_dir"))
    for name, cell in cells.items():
        run_dir = Path(cell.get("run_dir", ""))
        seen.add(run_dir.resolve())
        summary, why = read_record(run_dir / "summary.json")
        if summary is not None:
            continue
        state = cell.get("state", "?")
        if (run_dir / "summary.json").exists():
            state = "failed"                          # written, but not whole
        elif state in ("failed", "refused"):
            why = cell.get("error") or state
        elif state in ("running", "pending") and not (grid_alive or held(run_dir)):
            state = "interrupted"
            why = ("no summary.json: its grid was stopped without recording this cell (killed: "
                   "no grid and no run holds the lock); run the grid's command again to resume")
        elif state == "interrupted":
            why = "interrupted (checkpointed); run the grid's command again to resume"
        else:
            why = "no summary.json (never finished)"
        out.append({"label": name, "state": state, "why": why, "run_dir": str(run_dir)})
    candidates = {p.parent for pattern in ("config.json", "summary.json")
                  for p in root.rglob(pattern)}
    for run_dir in sorted(candidates):
        if run_dir.resolve() in seen or _replaced(run_dir / "x", root):
            continue
        summary, why = read_record(run_dir / "summary.json")
        if summary is not None:
            continue
        state = "failed" if (run_dir / "summary.json").exists() else "unfinished"
        error = run_dir / "error.txt"
        if state == "unfinished":
            why = (error.read_text(errors="replace").splitlines()[0] if error.exists() else
                   "no summary.json (stopped before it finished)")
        out.append({"label": str(run_dir.relative_to(root)), "state": state, "why": why,
                    "run_dir": str(run_dir)})
    return out


def _score(run: dict, phase: str) -> float | None:
    v = run.get(f"{phase}_score")
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if phase == "online" and not run.get("online_steps"):
        return None
    return float(v)


def score_table(runs: Sequence[dict], reps: int = 2000, confidence: float = 0.95,
                seed: int = 0) -> list[dict]:
    """One row per (agent, task, phase) with n, mean, std, iqm, iqm_low, iqm_high, seeds; plus one
    row per (agent, phase) with task = 'IQM (all tasks)' from the stratified bootstrap."""
    agents = sorted({label(r) for r in runs})
    tasks = sorted({r["task"] for r in runs})
    rows = []
    for agent in agents:
        for phase in PHASES:
            per_task = []
            for task in tasks:
                cell = [r for r in runs if label(r) == agent and r["task"] == task]
                scores = [(r["seed"], s) for r in cell if (s := _score(r, phase)) is not None]
                if not scores:
                    continue
                x = np.array([s for _, s in scores])
                per_task.append(x)
                point, low, high = stratified_bootstrap_ci([x], reps=reps, confidence=confidence,
                                                           seed=seed)
                rows.append({"agent": agent, "task": task, "phase": phase, "n": int(x.size),
                             "mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1
                             else 0.0, "iqm": point, "iqm_low": low, "iqm_high": high,
                             "seeds": sorted(int(s) for s, _ in scores)})
            if len(per_task) > 1:
                point, low, high = stratified_bootstrap_ci(per_task, reps=reps,
                                                           confidence=confidence, seed=seed)
                allx = np.concatenate(per_task)
                rows.append({"agent": agent, "task": "IQM (all tasks)", "phase": phase,
                             "n": int(allx.size), "mean": float(allx.mean()),
                             "std": float(allx.std(ddof=1)) if allx.size > 1 else 0.0,
                             "iqm": point, "iqm_low": low, "iqm_high": high, "seeds": []})
    return rows


def write_csv(rows: Sequence[dict], path: str | Path) -> None:
    cols = ["agent", "task", "phase", "n", "mean", "std", "iqm", "iqm_low", "iqm_high", "seeds"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "seeds": " ".join(map(str, r["seeds"]))})


def markdown_table(rows: Sequence[dict], confidence: float = 0.95) -> str:
    """Paper-style: a row per agent, a column per task (+ the aggregate), offline -> online."""
    agents = sorted({r["agent"] for r in rows})
    tasks = sorted({r["task"] for r in rows if r["task"] != "IQM (all tasks)"})
    if any(r["task"] == "IQM (all tasks)" for r in rows):
        tasks.append("IQM (all tasks)")
    index = {(r["agent"], r["task"], r["phase"]): r for r in rows}

    def fmt(r):
        if r is None:
            return "-"
        return (f"{r['mean']:.1f} ± {r['std']:.1f}<br>IQM {r['iqm']:.1f} "
                f"[{r['iqm_low']:.1f}, {r['iqm_high']:.1f}] (n={r['n']})")

    lines = []
    for phase in PHASES:
        if not any(k[2] == phase for k in index):
            continue
        title = ("Offline (end of the offline phase)" if phase == "offline"
                 else "Online (after online finetuning)")
        lines += [f"**{title}**: normalized score, mean ± std over seeds; IQM "
                  f"[{confidence:.0%} bootstrap CI]; n = seeds", "",
                  "| agent | " + " | ".join(tasks) + " |",
                  "|---|" + "---|" * len(tasks)]
        for a in agents:
            lines.append(f"| {a} | " + " | ".join(fmt(index.get((a, t, phase))) for t in tasks)
                         + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------
def read_curve(run_dir: str | Path, x: str = "global_step") -> tuple[np.ndarray, np.ndarray]:
    """``(steps, scores)`` of the evaluation rows of a run's metrics.csv."""
    xs, ys = [], []
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            v = row.get("eval/normalized_score")
            if v in (None, ""):
                continue
            xs.append(float(row.get(x) or row.get("step") or 0))
            ys.append(float(v))
    order = np.argsort(xs, kind="stable")
    return np.asarray(xs)[order], np.asarray(ys)[order]


CURVES = ("mean-std", "iqm")   # the line and band of a learning curve
X_AXES = {"global_step": "global step (gradient steps + env steps)", "env_steps": "env steps"}


def check_curve(curve: str) -> None:
    """A clear error, before any work, for a curve kind that is not one of ``CURVES``."""
    if curve not in CURVES:
        raise ValueError(f"unknown curve {curve!r}; choose one of {', '.join(CURVES)}")


def curve_band(ys: np.ndarray, curve: str = "mean-std", reps: int = 2000,
               confidence: float = 0.95, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(line, low, high)`` over the seeds of ``ys`` [seeds, points]: ``mean-std`` gives the mean
    and +-1 std; ``iqm`` the IQM and its percentile bootstrap CI over seeds at every point."""
    check_curve(curve)
    if curve == "mean-std":
        mean, std = ys.mean(0), ys.std(0)
        return mean, mean - std, mean + std
    line, low, high = np.array([stratified_bootstrap_ci([ys[:, i]], reps=reps,
                                                        confidence=confidence, seed=seed)
                                for i in range(ys.shape[1])]).T
    return line, low, high


def plot_curves(runs: Sequence[dict], out_dir: str | Path, x: str = "global_step",
                curve: str = "mean-std", reps: int = 2000, confidence: float = 0.95,
                seed: int = 0) -> list[str]:
    """One PNG per task (``curves_<task>.png``): a line per agent over ``x`` (a metrics.csv
    column: ``global_step`` or ``env_steps``), seeds interpolated onto the union of their
    evaluation steps; ``curve='mean-std'`` draws the mean with a +-1 std band, ``'iqm'`` the IQM
    with its bootstrap CI (``curve_band``)."""
    check_curve(curve)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in sorted({r["task"] for r in runs}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for agent in sorted({label(r) for r in runs if r["task"] == task}):
            curves = []
            for r in runs:
                if r["task"] == task and label(r) == agent:
                    try:
                        c = read_curve(r["run_dir"], x)
                    except OSError:
                        continue
                    if len(c[0]):
                        curves.append(c)
            if not curves:
                continue
            grid = np.unique(np.concatenate([c[0] for c in curves]))
            ys = np.stack([np.interp(grid, cx, cy) for cx, cy in curves])
            line, low, high = curve_band(ys, curve, reps, confidence, seed)
            (drawn,) = ax.plot(grid, line, marker="o", ms=3, label=f"{agent} (n={len(curves)})")
            ax.fill_between(grid, low, high, color=drawn.get_color(), alpha=0.2)
        ax.set_xlabel(X_AXES.get(x, x))
        ax.set_ylabel("normalized score")
        band = ("mean ± std over seeds" if curve == "mean-std" else
                f"IQM over seeds, {confidence:.0%} bootstrap CI")
        ax.set_title(f"{task}: {band}", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"curves_{task}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(str(path))
    return paths


def report(root: str | Path | Sequence[str | Path], out_dir: str | Path | None = None,
           reps: int = 2000, confidence: float = 0.95, seed: int = 0, x: str = "global_step",
           curve: str = "mean-std") -> dict:
    """Write ``results.md``, ``results.csv`` and ``curves_<task>.png`` into ``out_dir``
    (default: ``root``); return ``{'rows', 'markdown', 'files', 'unfinished'}``. results.md lists
    the failed and missing runs (``unfinished``) after the tables. Several roots (grids run with
    different settings) are reported together; ``out_dir`` is then required. ``x`` and ``curve``
    choose the curves' axis and band (``plot_curves``)."""
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    if not roots:
        raise ValueError("report needs at least one directory of runs")
    if out_dir is None and len(roots) > 1:
        raise ValueError(f"{len(roots)} directories of runs given: name the output directory "
                         "(--out DIR)")
    check_curve(curve)
    runs = [r for one in roots for r in collect(one)]
    missing = [m for one in roots for m in unfinished(one)]
    if not runs and not missing:
        raise FileNotFoundError("No finished runs (summary.json) below "
                                + ", ".join(map(str, roots)))
    out_dir = Path(out_dir or roots[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = score_table(runs, reps=reps, confidence=confidence, seed=seed) if runs else []
    md = markdown_table(rows, confidence) if runs else "No finished runs.\n"
    budgets = sorted({(label(r), r.get("pretrain_steps"), r.get("offline_steps"),
                       r.get("online_steps"), r.get("dataset_id"), r.get("dataset_source"))
                      for r in runs}, key=str)
    if budgets:
        md += "\nBudgets and data (pretrain / offline gradient steps, online env steps):\n\n" + \
            "\n".join(f"- {a}: {p} / {o} / {n}, dataset {d} ({s})"
                      for a, p, o, n, d, s in budgets) + "\n"
    if missing:
        md += (f"\n**Failed or missing cells** ({len(missing)}; not in the tables above):\n\n"
               "| cell | state | why | run_dir |\n|---|---|---|---|\n" + "".join(
                   f"| {m['label']} | {m['state']} | {m['why'].replace('|', '/')} | "
                   f"{m['run_dir']} |\n" for m in missing))
    (out_dir / "results.md").write_text(md)
    write_csv(rows, out_dir / "results.csv")
    files = [str(out_dir / "results.md"), str(out_dir / "results.csv")]
    files += plot_curves(runs, out_dir, x=x, curve=curve, reps=reps, confidence=confidence,
                         seed=seed)
    return {"rows": rows, "markdown": md, "files": files, "unfinished": missing}
