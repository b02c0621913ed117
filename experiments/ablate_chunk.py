"""Chunk-length ablation: sweep the chunk length H (and act_steps) of any agent on any task.

    python experiments/ablate_chunk.py --agent=qc --task=chain --horizons=1,2,5,10 \
        [--act_steps=H,1] [--seeds=0,1] --out runs/ablate_qc [--set key=value ...] [--workers 2] \
        [--backend=local|ray] [--episodes 20]

Runs one grid cell per (H, act_steps, seed) through dprl.tools.grid (``OUT/H<h>_a<a>/seed<k>``, the run
contract; finished cells are skipped), then evaluates each saved checkpoint again, recording the
executed actions, and writes OUT/ablation.json and OUT/ablation.png: final normalized score, action
smoothness (mean squared jerk of the executed actions) and wall time against H, one line per
act_steps setting. ``--act_steps`` entries are integers or ``H`` (execute the whole chunk); pairs
with act_steps > H are left out. QC executes whole chunks only (act_steps must equal H).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from agents import REGISTRY
from configs import config_file
from dprl.tools import grid

TRAIN_SCRIPT = str(Path(__file__).with_name("train.py"))


def _list(s: str) -> list[str]:
    return [x.strip() for x in str(s).split(",") if x.strip()]


def make_cells(agent: str, task: str, horizons, act_steps=("H",), seeds=(0,), out: str = ".",
               sets=()):
    """The ablation's grid cells: one per (H, act_steps, seed)."""
    overrides = grid.parse_sets(sets, [agent], list(REGISTRY))[agent]
    cells, seen = [], set()
    for h in map(int, horizons):
        for a in act_steps:
            a = h if str(a).upper() == "H" else int(a)
            if a > h or (h, a) in seen:
                continue
            seen.add((h, a))
            o = tuple([(k, v) for k, v in overrides if k not in ("horizon", "act_steps")]
                      + [("horizon", str(h)), ("act_steps", str(a))])
            for s in map(int, seeds):
                cells.append(grid.Cell(
                    agent, task, s, str(Path(out).absolute() / f"H{h}_a{a}" / f"seed{s}"),
                    config_file(agent), TRAIN_SCRIPT, o, name=f"H{h}_a{a}/seed{s}"))
    if cells:
        grid.check_overrides(cells[0])
    return cells


def mean_squared_jerk(actions) -> float:
    """The project's smoothness metric, ``dprl.tools.realtime.mean_squared_jerk`` (imported lazily: this
    entry point loads jax only when it evaluates)."""
    from dprl.tools.realtime import mean_squared_jerk as jerk

    return jerk(actions)


def evaluate_run(run_dir: str, episodes: int = 20, seed: int = 10_000) -> dict:
    """Re-evaluate a run's last checkpoint, recording the executed actions (policy space, [-1, 1]).

    Every call of the policy acts on all envs at once and each env executes the first
    ``act_steps`` actions of its chunk, so env i's action at step t is
    ``calls[t // act_steps][i, t % act_steps]``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from agents import get_agent
    from dprl.run.checkpoint import load_run
    from dprl.envs.vector import evaluate

    agent, normalizer, resolved = load_run(run_dir, get_agent)
    cfg, task = resolved["agent"], resolved["task_preset"]
    act_steps = int(cfg["act_steps"])
    key = jax.random.PRNGKey(seed)
    calls = []

    def policy(obs):
        nonlocal key
        key, k = jax.random.split(key)
        chunks = np.asarray(agent.sample_actions(jnp.asarray(obs), k)[0])
        calls.append(chunks[:, :act_steps])
        return chunks

    result = evaluate(policy, task["env_id"], episodes, act_steps, seed=seed,
                      obs_history=int(cfg["obs_history"]), normalize=normalizer,
                      env_kwargs=task["env_kwargs"], ref_min_score=task["ref_min_score"],
                      ref_max_score=task["ref_max_score"], score=task["score"],
                      return_episodes=True)
    executed = np.concatenate(calls, axis=1)                      # [E, calls * act_steps, A]
    jerks = [mean_squared_jerk(executed[i, :e["length"]])
             for i, e in enumerate(result["episodes"])]
    return {"normalized_score": result["normalized_score"],
            "jerk": float(np.nanmean(jerks)) if np.isfinite(jerks).any() else float("nan"),
            "episodes": episodes}


def analyze(out: str, episodes: int = 20) -> dict:
    """Evaluate every finished cell under ``out``; write and return ``out/ablation.json``."""
    rows = []
    for summary_path in sorted(Path(out).glob("H*_a*/seed*/summary.json")):
        run_dir = summary_path.parent
        summary = json.loads(summary_path.read_text())
        config = json.loads((run_dir / "config.json").read_text())["agent"]
        ev = evaluate_run(str(run_dir), episodes)
        score = summary["online_score"] if summary.get("online_steps") else summary["offline_score"]
        rows.append({"horizon": int(config["horizon"]), "act_steps": int(config["act_steps"]),
                     "seed": summary["seed"], "agent": summary["agent"], "task": summary["task"],
                     "final_score": score, "eval_score": ev["normalized_score"],
                     "jerk": ev["jerk"], "wall_s": summary["wall_s"],
                     "updates_per_s": summary.get("updates_per_s"), "run_dir": str(run_dir)})
    result = {"out": str(out), "episodes": episodes, "rows": rows}
    Path(out, "ablation.json").write_text(json.dumps(result, indent=2))
    return result


def plot(result: dict, path: str) -> str:
    """Final score, mean squared jerk and wall time against H (mean ± std over seeds); one line
    per act_steps setting ('act_steps = H' or a fixed number)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    modes = sorted({"H" if r["act_steps"] == r["horizon"] else str(r["act_steps"]) for r in rows},
                   key=lambda m: (m != "H", m))
    for metric, ax, label in (("final_score", axes[0], "final normalized score"),
                              ("jerk", axes[1], "mean squared jerk (actions)"),
                              ("wall_s", axes[2], "wall time per run (s)")):
        for mode in modes:
            sel = [r for r in rows
                   if ("H" if r["act_steps"] == r["horizon"] else str(r["act_steps"])) == mode]
            hs = sorted({r["horizon"] for r in sel})
            vals = [[r[metric] for r in sel if r["horizon"] == h and r[metric] is not None]
                    for h in hs]
            mean = np.array([np.mean(v) if v else np.nan for v in vals])
            std = np.array([np.std(v) if v else np.nan for v in vals])
            ax.errorbar(hs, mean, yerr=std, marker="o", capsize=3, label=f"act_steps = {mode}")
        ax.set_xlabel("chunk length H")
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    if rows:
        axes[0].set_title(f"{rows[0]['agent']} on {rows[0]['task']}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--horizons", default="1,2,5,10")
    p.add_argument("--act_steps", "--act-steps", default="H",
                   help="comma-separated: integers or H (= the chunk length)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--ray-address", "--ray_address", default=None)
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes for the jerk")
    p.add_argument("--dry-run", "--dry_run", action="store_true")
    args = p.parse_args(argv)

    cells = make_cells(args.agent, args.task, _list(args.horizons), _list(args.act_steps),
                       _list(args.seeds), args.out, args.set)
    if args.dry_run:
        for c in cells:
            print(f"{c.label:24s} {' '.join(c.command()[1:])}")
        return 0
    status = grid.run_grid(cells, args.out, backend=args.backend, workers=args.workers,
                      ray_address=args.ray_address)
    result = analyze(args.out, args.episodes)
    plot(result, os.path.join(args.out, "ablation.png"))
    for r in result["rows"]:
        print(f"H={r['horizon']:3d} act_steps={r['act_steps']:3d} seed={r['seed']} "
              f"score={r['final_score']} jerk={r['jerk']:.4g} wall={r['wall_s']:.0f}s")
    print(f"wrote {args.out}/ablation.json, {args.out}/ablation.png")
    return 1 if status["counts"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
