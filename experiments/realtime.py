"""Chunked policies under inference delay: success/score and jerk against the delay d for the
three ways to join chunks (naive switch, temporal ensembling, real-time chunking).

    python experiments/realtime.py --out DIR [--tasks pole,chain,hopper-medium] \
        [--joins naive,ensemble,rtc] [--schedules run_out,1] [--episodes N | TASK=N,...] \
        [--run_dir TASK=RUN_DIR ...] [--scale 1.0] [--seed 0]

For every task it trains (or loads, with ``--run_dir``) one chunked agent with fixed seeds through
the standard runner (DIR/runs/<task> is an ordinary run directory; re-running resumes or skips
it), then runs ``dprl.tools.realtime.run_async`` for every join, every delay d = 0 .. H-1 and every
schedule: ``run_out`` (s = H - d: each chunk runs until it runs out, the next is requested d
steps before; d = 0 is synchronous execution) and an integer s (a request every s steps, e.g. 1
as in ACT). Settings a join cannot run are recorded as skipped with the reason (rtc needs d <= s).
Every cell uses the same evaluation env seeds and key, so joins are compared on the same episodes.

Writes DIR/realtime.csv, DIR/realtime.md (the table, the command, wall times, machine load) and
DIR/realtime.png (score and jerk vs d, one column per task), and prints their paths.

Agents (``RECIPES``): pole: diffusion BC (DDPM, 20 steps), H = 4; chain: QC (flow, best of 4)
with h = 5, the recipe of docs/results/qc_results.md (its seed 2 reached 84 % success);
hopper-medium: flow BC, H = 4 (10 Euler steps). ``--scale`` multiplies every training budget
(for smoke tests).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# task -> the agent that is trained for it: config file, seed, overrides (dotted keys), and the
# training budget (BC pretraining / offline RL gradient steps, online env steps).
RECIPES = {
    "pole": dict(agent="bc", seed=0, horizon=4, pretrain=5000, offline=0, online=0,
                 sets={"actor.model": "diffusion"}),
    "chain": dict(agent="qc", seed=2, horizon=5, pretrain=2000, offline=1000, online=4000,
                  sets={"num_samples": 4, "actor.flow_steps": 5, "actor.hidden_dims": (128, 128),
                        "critic_hidden_dims": (128, 128), "actor.activation": "relu",
                        "critic_activation": "relu", "run.batch_size": 128,
                        "run.normalize_obs": True, "run.start_online_updates": 0,
                        "run.online_eval_every": 1000, "run.online_log_every": 500}),
    "hopper-medium": dict(agent="bc", seed=0, horizon=4, pretrain=60000, offline=0, online=0,
                          sets={"actor.model": "flow"}),
}
EVAL_SEED = 10_000   # evaluation envs are seeded 10000, 10001, ... (not the runs' eval seeds)


def agent_config(task: str, scale: float = 1.0):
    """The resolved agent config of a task's recipe (budgets multiplied by ``scale``)."""
    from configs import config_file
    from dprl.run.config import load_config_file

    r = RECIPES[task]
    config = load_config_file(config_file(r["agent"]))
    config.horizon = config.act_steps = r["horizon"]
    for key, value in r["sets"].items():
        node = config
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    steps = {k: max(int(r[k] * scale), 1) if r[k] else 0
             for k in ("pretrain", "offline", "online")}
    config.run.pretrain_steps = steps["pretrain"]
    config.run.offline_steps = steps["offline"]
    config.run.online_steps = steps["online"]
    last = steps["offline"] or steps["pretrain"]
    config.run.eval_every = max(last, 1)
    config.run.save_every = max(last, steps["online"], 1)
    config.run.log_every = max(last // 10, 1)
    config.run.steps_per_dispatch = min(config.run.steps_per_dispatch, max(last, 1))
    config.run.tensorboard = False
    return config


def train_agent(task: str, run_dir: str, scale: float, progress: bool) -> dict:
    """Train (or resume, or skip when finished) the task's recipe in ``run_dir``."""
    from agents import get_agent
    from dprl.run.runner import train

    config = agent_config(task, scale)
    summary_path = Path(run_dir) / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        budget = (config.run.pretrain_steps, config.run.offline_steps, config.run.online_steps)
        done = (summary["pretrain_steps"], summary["offline_steps"], summary["online_steps"])
        if tuple(done) != budget:
            raise ValueError(f"{run_dir} holds a finished run with budget (pretrain, offline, "
                             f"online) = {done}, not this recipe's {budget}: use another --out "
                             f"or pass it with --run_dir {task}={run_dir}")
        return summary
    return train(config, task, run_dir, get_agent,
                 seed=RECIPES[task]["seed"], progress=progress)


def schedules_for(horizon: int, delay: int, schedules) -> list[tuple[str, int | None]]:
    """``(name, s)`` for every schedule that fits H and d (a fixed s needs s <= H - d)."""
    out = []
    for name in schedules:
        if name == "run_out":
            out.append(("run_out", None))
        elif int(name) <= horizon - delay:
            out.append((f"s={int(name)}", int(name)))
    return out


def parse_episodes(spec: str, tasks) -> dict:
    """``'200'`` (every task) or ``'pole=200,hopper-medium=50'`` -> {task: episodes}; 0 or a task
    left out: the task preset's evaluation episodes."""
    spec = str(spec or "0").strip()
    if "=" not in spec:
        return {t: int(spec) for t in tasks}
    out = {t: 0 for t in tasks}
    for part in spec.split(","):
        task, n = part.split("=", 1)
        if task.strip() in out:   # tasks not swept are ignored
            out[task.strip()] = int(n)
    return out


def sweep_task(task: str, run_dir: str, joins, schedules, episodes: int, seed: int) -> list[dict]:
    """Every (schedule, join, d) cell of one task: its score, success rate and jerk."""
    import jax

    from agents import get_agent
    from dprl.run.checkpoint import load_run
    from dprl.tools.realtime import agent_policy, check_schedule, run_async

    agent, normalizer, resolved = load_run(run_dir, get_agent)
    cfg, preset = resolved["agent"], resolved["task_preset"]
    H = int(cfg["horizon"]) if cfg.get("action_chunking", True) else 1
    policy = agent_policy(agent)
    episodes = episodes or int(preset["eval_episodes"])
    rows, measured = [], {}   # (d, s, join) -> the row's results: s = H - d is run_out too
    for d in range(H):
        for sched, s in schedules_for(H, d, schedules):
            for join in joins:
                row = {"task": task, "agent": cfg["agent_name"], "horizon": H, "schedule": sched,
                       "exec_horizon": s if s is not None else H - d, "delay": d, "join": join,
                       "episodes": episodes}
                try:
                    check_schedule(join, H, d, s)
                except ValueError as e:
                    rows.append({**row, "skipped": str(e).split(";")[0]})
                    print(f"  {task} {sched} d={d} {join}: skipped ({row.get('skipped', e)})",
                          flush=True)
                    continue
                same = measured.get((d, s if s is not None else H - d, join))
                if same is not None:
                    rows.append({**row, **same})
                    continue
                res = run_async(policy, preset["env_id"], episodes, H, d, join,
                                jax.random.PRNGKey(seed), exec_horizon=s, seed=EVAL_SEED,
                                obs_history=int(cfg["obs_history"]), normalize=normalizer,
                                env_kwargs=preset["env_kwargs"],
                                ref_min_score=preset["ref_min_score"],
                                ref_max_score=preset["ref_max_score"], score=preset["score"])
                row.update(score=res["normalized_score"], success_rate=res.get("success_rate"),
                           return_mean=res["return_mean"], jerk=res["jerk"],
                           length_mean=res["length_mean"], policy_calls=res["policy_calls"],
                           wall_s=round(res["wall_s"], 1), skipped="")
                rows.append(row)
                measured[(d, row["exec_horizon"], join)] = {
                    k: row[k] for k in ("score", "success_rate", "return_mean", "jerk",
                                        "length_mean", "policy_calls", "wall_s", "skipped")}
                print(f"  {task} {sched} d={d} {join:8s} score={row['score']:.1f} "
                      f"jerk={row['jerk']:.4g} ({row['wall_s']}s)", flush=True)
    return rows


def plot(rows: list[dict], path: str) -> str:
    """Score (top) and mean squared jerk (bottom, log scale) against d; one column per task, a
    colour per join, a line style per schedule."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if not r.get("skipped")]
    tasks = list(dict.fromkeys(r["task"] for r in done))
    scheds = list(dict.fromkeys(r["schedule"] for r in done))
    colours = {"naive": "tab:red", "ensemble": "tab:orange", "rtc": "tab:blue"}
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.6 * len(tasks), 7), squeeze=False)
    for col, task in enumerate(tasks):
        for si, sched in enumerate(scheds):
            for join, colour in colours.items():
                pts = sorted((r["delay"], r["score"], r["jerk"]) for r in done
                             if r["task"] == task and r["schedule"] == sched and r["join"] == join)
                if not pts:
                    continue
                ds, scores, jerks = zip(*pts)
                kw = dict(color=colour, ls=styles[si % len(styles)], marker="o", ms=4,
                          label=f"{join} ({sched})")
                axes[0, col].plot(ds, scores, **kw)
                axes[1, col].plot(ds, jerks, **kw)
        r0 = next(r for r in done if r["task"] == task)
        axes[0, col].set_title(f"{task}: {r0['agent']}, H = {r0['horizon']}, "
                               f"{r0['episodes']} episodes", fontsize=10)
        axes[0, col].set_ylabel("success rate x 100" if task != "hopper-medium"
                                else "normalized score")
        axes[1, col].set_ylabel("mean squared jerk of actions")
        axes[1, col].set_yscale("log")
        for ax in axes[:, col]:
            ax.set_xlabel("inference delay d (env steps)")
            ax.set_xticks(range(r0["horizon"]))
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Chunk joins under inference delay (run_out: s = H - d; s = 1: a request every "
                 "step)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


COLUMNS = ["task", "agent", "horizon", "schedule", "exec_horizon", "delay", "join", "episodes",
           "score", "success_rate", "return_mean", "jerk", "length_mean", "policy_calls",
           "wall_s", "skipped"]


def write_tables(rows: list[dict], out: str, header: str) -> tuple[str, str]:
    csv_path, md_path = os.path.join(out, "realtime.csv"), os.path.join(out, "realtime.md")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    def fmt(v, digits=3):
        if v is None or v == "":
            return ""
        return f"{v:.{digits}g}" if isinstance(v, float) else str(v)

    lines = [header, "",
             "| task | schedule | d | join | score | success | return | jerk | calls | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['task']} | {r['schedule']} | {r['delay']} | {r['join']} | "
                         f"skipped: {r['skipped']} | | | | | |")
            continue
        lines.append(f"| {r['task']} | {r['schedule']} | {r['delay']} | {r['join']} | "
                     f"{r['score']:.1f} | {fmt(r['success_rate'])} | {r['return_mean']:.4g} | "
                     f"{r['jerk']:.4g} | {r['policy_calls']} | {r['wall_s']} |")
    Path(md_path).write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def run(out: str, tasks, joins, schedules, episodes: str = "0", run_dirs: dict | None = None,
        scale: float = 1.0, seed: int = 0, progress: bool = True, command: str = "") -> dict:
    from dprl.tools.realtime import JOINS

    for task in tasks:
        if task not in RECIPES and task not in (run_dirs or {}):
            raise ValueError(f"No recipe for task {task!r} ({', '.join(RECIPES)}); give a trained "
                             f"chunked agent with --run_dir {task}=RUN_DIR")
    for join in joins:
        if join not in JOINS:
            raise ValueError(f"Unknown join {join!r}; use some of {', '.join(JOINS)}")
    for s in schedules:
        if s != "run_out" and not (s.isdigit() and int(s) >= 1):
            raise ValueError(f"Unknown schedule {s!r}: 'run_out' or an integer s >= 1")
    per_task = parse_episodes(episodes, tasks)
    os.makedirs(out, exist_ok=True)
    start, load_before = time.perf_counter(), _uptime()
    rows, trained = [], {}
    for task in tasks:
        run_dir = (run_dirs or {}).get(task) or os.path.join(out, "runs", task)
        t0 = time.perf_counter()
        if not (run_dirs or {}).get(task):
            print(f"[{task}] training {RECIPES[task]['agent']} (H = {RECIPES[task]['horizon']}) "
                  f"in {run_dir}", flush=True)
            summary = train_agent(task, run_dir, scale, progress)
            trained[task] = {"run_dir": run_dir, "wall_s": round(summary.get("wall_s", 0.0), 1),
                             "offline_score": summary.get("offline_score"),
                             "online_score": summary.get("online_score")}
        print(f"[{task}] sweeping d with joins {', '.join(joins)}", flush=True)
        rows += sweep_task(task, run_dir, joins, schedules, per_task[task], seed)
        print(f"[{task}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    wall = time.perf_counter() - start
    header = "\n".join([
        "# Chunk joins under inference delay (experiments/realtime.py)", "",
        f"Command: `{command}`", "",
        f"Wall time: {wall:.0f} s (training included). Load before: `{load_before}`; after: "
        f"`{_uptime()}`.", "",
        "Agents: " + "; ".join(
            f"{t}: {RECIPES[t]['agent']} H = {RECIPES[t]['horizon']}, seed {RECIPES[t]['seed']}, "
            f"{int(RECIPES[t]['pretrain'] * scale)} BC + {int(RECIPES[t]['offline'] * scale)} "
            f"offline steps + {int(RECIPES[t]['online'] * scale)} online env steps"
            + (f", trained in {trained[t]['wall_s']} s (run score: offline "
               f"{trained[t]['offline_score']}, online {trained[t]['online_score']})"
               if t in trained else f" (loaded from {(run_dirs or {}).get(t)})")
            for t in tasks if t in RECIPES) + ".", "",
        "score: 100 x success rate (pole, chain) or D4RL normalized score (hopper); jerk: mean "
        "squared third difference of the executed actions (in [-1, 1]), averaged over episodes; "
        "calls: policy calls per evaluation; every cell runs the same env seeds "
        f"({EVAL_SEED}, ...) and key."])
    csv_path, md_path = write_tables(rows, out, header)
    fig_path = plot(rows, os.path.join(out, "realtime.png"))
    return {"rows": rows, "csv": csv_path, "md": md_path, "figure": fig_path, "wall_s": wall}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tasks", default="pole,chain,hopper-medium")
    p.add_argument("--joins", default="naive,ensemble,rtc")
    p.add_argument("--schedules", default="run_out,1",
                   help="'run_out' (s = H - d) and/or integers s (a request every s steps)")
    p.add_argument("--episodes", default="pole=200,chain=200,hopper-medium=50",
                   help="evaluation episodes per cell: N for every task, or TASK=N,...; 0 (or a "
                        "task left out): the task preset's number")
    p.add_argument("--run_dir", action="append", default=[], metavar="TASK=RUN_DIR",
                   help="use this trained run for TASK instead of training one")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every training budget")
    p.add_argument("--seed", type=int, default=0, help="the acting key's seed")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    run_dirs = {}
    for spec in args.run_dir:
        if "=" not in spec:
            p.error(f"--run_dir takes TASK=RUN_DIR, got {spec!r}")
        task, path = spec.split("=", 1)
        run_dirs[task] = path
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    command = "python experiments/realtime.py " + " ".join(sys.argv[1:])
    result = run(args.out, split(args.tasks), split(args.joins), split(args.schedules),
                 args.episodes, run_dirs, args.scale, args.seed, not args.no_progress, command)
    print(f"wrote {result['md']}, {result['csv']} and {result['figure']} "
          f"({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
