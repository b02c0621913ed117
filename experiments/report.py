"""Paper-style results from a grid directory: tables (markdown + CSV) and learning curves (PNG).

    python experiments/report.py runs/grid [runs/grid2 ...] [--out DIR] [--x env_steps]
        [--curve iqm] [--reps 2000] [--confidence 0.95]

Normalized score per agent x task, offline and after online finetuning: mean ± std over seeds, IQM
with a percentile bootstrap CI (stratified over tasks for the aggregate, as rliable) and n seeds;
an agent run as one of its config's presets is named ``agent:preset`` (``qc:qc-fql``). Writes
results.md, results.csv and curves_<task>.png (default: into the grid directory; with several grid
directories, reported together, ``--out`` is required). The curves' x axis is the global step
(gradient + env steps) or ``--x env_steps``; their band +-1 std over seeds or, with ``--curve
iqm``, the IQM and its bootstrap CI. results.md then
lists every failed, refused, interrupted or missing cell, and every run whose summary.json cannot
be read, with the reason.
"""
import argparse
import sys

from dprl.tools.report import CURVES, X_AXES


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", metavar="root",
                   help="directory holding run directories (summary.json files); several are "
                        "reported together")
    p.add_argument("--out", default=None, help="output directory (default: root)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replicates")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    p.add_argument("--x", default="global_step", choices=tuple(X_AXES),
                   help="the curves' x axis")
    p.add_argument("--curve", default="mean-std", choices=CURVES,
                   help="the curves' line and band over seeds")
    args = p.parse_args(argv)

    from dprl.tools.report import report
    try:
        result = report(args.roots, args.out, reps=args.reps, confidence=args.confidence,
                        seed=args.seed, x=args.x, curve=args.curve)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print("wrote " + ", ".join(result["files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
