"""Score vs guidance scale of guidance-sweep runs, per seed and the mean: a markdown table and a figure.

    python docs/results/qgpo_hopper_scales.py OUT.png RUNS_DIR/qgpo-s0 RUNS_DIR/qgpo-s1 ... \
        [--label NAME RUNS_DIR/mse-guidance-s0 ...]

Each run directory holds the ``guidance_sweep.json`` that ``experiments/guidance_sweep.py`` wrote;
arguments after ``--label NAME`` form another panel. Scale 0 is the run's own unguided BC actor.
"""
import json
import sys
from pathlib import Path

import numpy as np


def read(run_dir: str) -> dict[float, float]:
    rows = json.loads((Path(run_dir) / "guidance_sweep.json").read_text())["rows"]
    return {float(r["guidance_scale"]): float(r["normalized_score"]) for r in rows
            if int(r["num_samples"]) == 1}


def groups(args: list[str]) -> list[tuple[str, list[str]]]:
    out, name = [], "qgpo"
    current: list[str] = []
    it = iter(args)
    for a in it:
        if a == "--label":
            if current:
                out.append((name, current))
            name, current = next(it), []
        else:
            current.append(a)
    if current:
        out.append((name, current))
    return out


def table(name: str, runs: list[str]) -> list[str]:
    scores = [read(r) for r in runs]
    scales = sorted(scores[0])
    lines = [f"`{name}`", "", "| scale | " + " | ".join(f"seed {i}" for i in range(len(runs)))
             + " | mean |", "|---|" + "---|" * (len(runs) + 1)]
    for s in scales:
        vals = [sc[s] for sc in scores]
        lines.append(f"| {s:g} | " + " | ".join(f"{v:.1f}" for v in vals)
                     + f" | {np.mean(vals):.1f} |")
    best = [max(sc, key=sc.get) for sc in scores]
    lines += ["", "best scale per seed (score): " + ", ".join(
        f"{b:g} ({sc[b]:.1f})" for b, sc in zip(best, scores))
        + f"; mean of the bests {np.mean([sc[b] for b, sc in zip(best, scores)]):.1f}", ""]
    return lines


def main(argv: list[str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, panels = argv[0], groups(argv[1:])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (name, runs) in zip(axes[0], panels):
        print("\n".join(table(name, runs)))
        scores = [read(r) for r in runs]
        scales = sorted(scores[0])
        for i, sc in enumerate(scores):
            ax.plot(scales, [sc[s] for s in scales], "o-", alpha=0.4, label=f"seed {i}")
        ax.plot(scales, [np.mean([sc[s] for sc in scores]) for s in scales], "k-", lw=2,
                label="mean")
        ax.axhline(np.mean([sc[0.0] for sc in scores]), color="gray", ls=":",
                   label="unguided BC (scale 0), mean")
        ax.set_xlabel("guidance scale")
        ax.set_ylabel("normalized score (10 episodes)")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1:])
