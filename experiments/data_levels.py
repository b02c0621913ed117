"""The level of every locomotion dataset dprl makes, next to D4RL's own datasets.

    python experiments/data_levels.py --out docs/results/data_levels [--steps 100000]
        [--robots hopper,walker2d,halfcheetah,ant] [--recipes random,medium,...]

Makes each ``<robot>-<recipe>`` dataset with the default policies (dprl's shipped SAC snapshots,
or ``--policy``-free recipes) into a private dataset root, so the datasets of your runs are not
touched, and writes ``OUT/data_levels.md`` and ``OUT/data_levels.json``: the dataset's mean
episode return and its D4RL-normalized score (0 = D4RL's random reference, 100 = its expert
reference), beside the normalized score of D4RL's v2 dataset of the same name.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# D4RL v2 MuJoCo datasets: the mean normalized episode return of D4RL's own files, approximate
# (the averages commonly tabulated in the offline-RL literature, rounded; D4RL's files cannot be
# downloaded here to re-measure them). Ant is left out: no figure known with confidence.
D4RL_DATA_SCORES = {
    "hopper": {"random": 1.2, "medium": 44.3, "medium-replay": 15.0, "expert": 108.5,
               "medium-expert": 64.7},
    "walker2d": {"random": 0.0, "medium": 62.1, "medium-replay": 14.8, "expert": 106.9,
                 "medium-expert": 82.7},
    "halfcheetah": {"random": 0.0, "medium": 40.7, "medium-replay": 27.2, "expert": 88.1,
                    "medium-expert": 64.3},
    "ant": {},
}


def measure(robots, recipes, steps: int, seed: int = 0) -> list[dict]:
    from dprl.datasets.locomotion import make_locomotion_dataset

    rows = []
    for robot in robots:
        for recipe in recipes:
            t0 = time.perf_counter()
            res = make_locomotion_dataset(f"{robot}-{recipe}", steps, seed=seed, overwrite=True)
            rows.append({"robot": robot, "recipe": recipe, "steps": res["total_steps"],
                         "episodes": res["num_episodes"], "return_mean": res["return_mean"],
                         "normalized_score": res["normalized_score"],
                         "d4rl_normalized_score": D4RL_DATA_SCORES[robot].get(recipe),
                         "wall_s": time.perf_counter() - t0})
            print(f"{robot}-{recipe}: {res['normalized_score']:.1f} "
                  f"({res['num_episodes']} episodes, {rows[-1]['wall_s']:.0f} s)", flush=True)
    return rows


def markdown(rows: list[dict], command: str) -> str:
    from dprl.experts import manifest

    lines = [f"Command: `{command}`", "",
             "| dataset | dprl: return (normalized) | D4RL v2, approximate (normalized) | episodes |",
             "|---|---|---|---|"]
    for r in rows:
        d4rl = r["d4rl_normalized_score"]
        lines.append(f"| {r['robot']}-{r['recipe']} | {r['return_mean']:.0f} "
                     f"({r['normalized_score']:.1f}) | {'-' if d4rl is None else d4rl} | "
                     f"{r['episodes']} |")
    lines += ["", "Policies (`python -m dprl.experts list`): ", ""]
    for robot, e in manifest().items():
        levels = e["levels"]
        med = levels.get("medium")
        lines.append(f"- {robot}: expert {levels['expert']['eval_return_mean']:.0f} at "
                     f"{levels['expert']['env_steps']:,} env steps"
                     + (f", medium {med['eval_return_mean']:.0f} at {med['env_steps']:,}"
                        if med else ", medium never reached")
                     + f" (SAC trained {e['env_steps']:,} env steps)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from dprl.envs.tasks import LOCOMOTION_ENVS, LOCOMOTION_RECIPES

    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for data_levels.md / .json")
    p.add_argument("--steps", type=int, default=100_000, help="transitions per dataset")
    p.add_argument("--robots", default=",".join(LOCOMOTION_ENVS))
    p.add_argument("--recipes", default=",".join(LOCOMOTION_RECIPES))
    args = p.parse_args(argv)
    robots = [r for r in args.robots.split(",") if r]
    recipes = [r for r in args.recipes.split(",") if r]
    bad = sorted(set(robots) - set(LOCOMOTION_ENVS)) + sorted(set(recipes) -
                                                              set(LOCOMOTION_RECIPES))
    if bad:
        sys.exit(f"error: unknown robot/recipe {', '.join(bad)}; robots: "
                 f"{', '.join(LOCOMOTION_ENVS)}; recipes: {', '.join(LOCOMOTION_RECIPES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dprl_levels_") as root:
        os.environ["MINARI_DATASETS_PATH"] = root
        rows = measure(robots, recipes, args.steps)
    command = "python experiments/data_levels.py " + " ".join(argv)
    (out / "data_levels.json").write_text(json.dumps({"command": command, "rows": rows},
                                                     indent=1) + "\n")
    (out / "data_levels.md").write_text(markdown(rows, command))
    print(f"wrote {out / 'data_levels.md'} and {out / 'data_levels.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
