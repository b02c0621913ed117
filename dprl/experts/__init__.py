"""dprl's own expert policies, trained here by dprl's SAC and shipped in the package.

For each locomotion robot (hopper, walker2d, halfcheetah, ant) this folder holds small ``.npz``
policies in dprl's policy format (``dprl/experts/policies.py``, weights stored as float16):
  ``<robot>-expert.npz``     the best SAC snapshot of the run: of the ``NUM_CANDIDATES`` best
                             by the run's own (5-episode) evaluations, the best re-evaluated
  ``<robot>-medium.npz``     a snapshot at about 1/3 of D4RL's expert reference return (D4RL's
                             "medium": a policy part-way through training): of the snapshots up
                             to the first that reached it, the ``NUM_CANDIDATES`` nearest to it,
                             re-evaluated, the nearest
  ``<robot>-replay-<k>.npz`` snapshots between the start of training and the medium one; rolled
                             out with sampled actions after a stretch of uniform random actions,
                             they stand in for the SAC replay buffer up to medium (D4RL's
                             "medium-replay"), which would weigh megabytes per robot
``manifest.json`` records, per robot, the SAC command, seed, env steps and evaluation returns of
every file; each file's ``meta`` carries the same. ``python -m dprl.experts list`` prints them,
``python -m dprl.experts export --sac-run DIR --robot hopper`` makes them from a SAC run.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

SHIPPED_DIR = Path(__file__).resolve().parent
MANIFEST = SHIPPED_DIR / "manifest.json"
MEDIUM_FRACTION = 1 / 3        # D4RL: medium = a policy at about 1/3 of the expert's return
EVAL_EPISODES = 10             # deterministic episodes behind every return in the manifest
NUM_REPLAY_SNAPSHOTS = 3
NUM_CANDIDATES = 3             # snapshots re-evaluated per level: SAC's evaluations are noisy


def manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def _missing(robot: str, level: str) -> FileNotFoundError:
    entry = manifest().get(robot)
    if entry is None:
        what = f"dprl ships no policies for {robot!r} (shipped: {', '.join(manifest()) or 'none'})"
    else:
        what = (f"dprl's SAC run for {robot} never reached the {level} level: its best "
                f"evaluation return was {entry['best_eval_return']:.0f} at "
                f"{entry['best_step']} env steps of {entry['env_steps']} trained "
                f"(medium target {entry['medium_target']:.0f})")
    return FileNotFoundError(
        f"{what}. The README's expert table gives the env steps SAC needs per robot; train "
        f"longer with `python -m dprl.sac --env <EnvId> --steps N --out DIR` (it resumes) and "
        f"pass --sac-run DIR, or pass your own expert with --policy FILE.")


def shipped_policy(robot: str, level: str) -> Path:
    """Path of the shipped ``level`` ('expert' | 'medium') policy of ``robot``."""
    entry = manifest().get(robot, {}).get("levels", {}).get(level)
    if entry is None:
        raise _missing(robot, level)
    return SHIPPED_DIR / entry["file"]


def shipped_replay(robot: str) -> list[dict]:
    """The medium-replay stand-in's schedule: ``[{'path', 'start', 'end'}, ...]``, each a policy
    (``None``: uniform random actions) and the fraction of the data it collects."""
    entry = manifest().get(robot, {}).get("levels", {}).get("replay")
    if entry is None:
        raise _missing(robot, "medium")
    return [{"path": None if s["file"] is None else SHIPPED_DIR / s["file"],
             "start": s["start"], "end": s["end"]} for s in entry]


def _read_curve(sac_run: Path) -> list[dict]:
    return [{k: float(v) for k, v in r.items() if v not in ("", "None")}
            for r in csv.DictReader(open(sac_run / "curve.csv"))]


def export(sac_run: str | Path, robot: str, *, out_dir: Path = SHIPPED_DIR,
           eval_episodes: int = EVAL_EPISODES, num_replay: int = NUM_REPLAY_SNAPSHOTS,
           command: str | None = None) -> dict:
    """Pick the expert, medium and replay snapshots of a SAC run, re-evaluate them and write them
    (float16) with their provenance into ``out_dir``; returns the robot's manifest entry."""
    from dprl.experts.policies import load_policy, save_policy
    from dprl.experts.sac import rollout_returns
    from dprl.envs.tasks import D4RL_REF_SCORES, LOCOMOTION_ENVS

    sac_run = Path(sac_run)
    env_id = LOCOMOTION_ENVS[robot]
    lo, hi = D4RL_REF_SCORES[robot]
    curve = [r for r in _read_curve(sac_run)
             if (sac_run / "snapshots" / f"step_{int(r['step'])}.npz").is_file()]
    if not curve:
        raise FileNotFoundError(f"{sac_run} has no snapshots with an evaluation in curve.csv")
    target = MEDIUM_FRACTION * hi
    reached = next((r for r in curve if r["eval_return_mean"] >= target), None)
    run_meta = load_policy(sac_run / "snapshots" / f"step_{int(curve[-1]['step'])}.npz").meta
    evaluated: dict[int, np.ndarray] = {}

    def returns(step: int) -> np.ndarray:
        if step not in evaluated:
            pol = load_policy(sac_run / "snapshots" / f"step_{step}.npz")
            evaluated[step] = rollout_returns(lambda o: pol.act(o, deterministic=True), env_id,
                                              eval_episodes, seed=20_000)
        return evaluated[step]

    by_return = sorted(curve, key=lambda r: -r["eval_return_mean"])[:NUM_CANDIDATES]
    best_step = max((int(r["step"]) for r in by_return), key=lambda st: returns(st).mean())
    medium_step = None
    if reached is not None:
        ascent = [r for r in curve if r["step"] <= reached["step"]]
        nearest = sorted(ascent, key=lambda r: abs(r["eval_return_mean"] - target))
        medium_step = min((int(r["step"]) for r in nearest[:NUM_CANDIDATES]),
                          key=lambda st: abs(returns(st).mean() - target))
    seed = run_meta.get("seed", 0)
    entry = {"env_id": env_id, "sac_run": str(sac_run), "seed": seed,
             "command": (command or
                         f"python -m dprl.sac --env {env_id} --seed {seed} --out {sac_run}"),
             "env_steps": int(curve[-1]["step"]), "medium_target": target,
             "best_step": best_step, "best_eval_return": float(returns(best_step).mean()),
             "eval_episodes": eval_episodes,
             "candidates": {str(st): float(r.mean()) for st, r in sorted(evaluated.items())},
             "levels": {}}

    def write(step: int, name: str, level: str) -> dict:
        pol = load_policy(sac_run / "snapshots" / f"step_{step}.npz")
        rets = returns(step)
        info = {"file": name, "env_steps": step, "eval_return_mean": float(rets.mean()),
                "eval_return_std": float(rets.std()),
                "normalized_score": float(100 * (rets.mean() - lo) / (hi - lo))}
        meta = {**pol.meta, "level": level, "robot": robot, "command": entry["command"],
                "evaluation": f"{eval_episodes} deterministic episodes, reset seeds 20000+",
                **info}
        save_policy(out_dir / name, hidden=pol.hidden, W_out=pol.W_out, b_out=pol.b_out,
                    obs_mean=pol.obs_mean, obs_std=pol.obs_std, log_std=pol.log_std,
                    W_log_std=pol.W_log_std, b_log_std=pol.b_log_std,
                    activation=pol.activation, squash=pol.squash, log_std_min=pol.log_std_min,
                    log_std_max=pol.log_std_max, meta=meta, dtype=np.float16)
        return info

    entry["levels"]["expert"] = write(best_step, f"{robot}-expert.npz", "expert")
    if medium_step is not None:
        m_step = medium_step
        entry["levels"]["medium"] = write(m_step, f"{robot}-medium.npz", "medium")
        # Replay stand-in: random actions for SAC's warm-up share, then snapshots evenly spaced
        # up to medium, each collecting the share of data SAC gathered while it was current.
        warmup = run_meta.get("start_steps", 5000) / m_step
        earlier = [r for r in curve if r["step"] < m_step]
        picks = [earlier[round(i * (len(earlier) - 1) / max(num_replay - 1, 1))]
                 for i in range(num_replay)] if earlier else []
        picks = list({int(r["step"]): r for r in picks}.values())
        bounds = np.linspace(warmup, 1.0, len(picks) + 2)
        schedule = [{"file": None, "start": 0.0, "end": float(bounds[0])}]
        for i, r in enumerate(picks):
            name = f"{robot}-replay-{i}.npz"
            schedule.append({**write(int(r["step"]), name, f"replay-{i}"),
                             "start": float(bounds[i]), "end": float(bounds[i + 1])})
        schedule.append({"file": entry["levels"]["medium"]["file"], "start": float(bounds[-2]),
                         "end": 1.0})
        entry["levels"]["replay"] = schedule
    all_entries = {**manifest(), robot: entry} if out_dir == SHIPPED_DIR else {robot: entry}
    (out_dir / "manifest.json").write_text(json.dumps(all_entries, indent=1) + "\n")
    return entry
