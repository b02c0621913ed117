"""Paper-style results from a grid directory: tables (markdown + CSV) and learning curves (PNG).

    python experiments/report.py runs/grid [--out DIR] [--reps 2000] [--confidence 0.95]

Normalized score per agent x task, offline and after online finetuning: mean ± std over seeds, IQM
with a percentile bootstrap CI (stratified over tasks for the aggregate, as rliable) and n seeds;
an agent run as one of its config's presets is named ``agent:preset`` (``qc:qc-fql``). Writes
results.md, results.csv and curves_<task>.png (default: into the grid directory); results.md then
lists every failed, refused, interrupted or missing cell, and every run whose summary.json cannot
be read, with the reason.
"""
import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="directory holding run directories (summary.json files)")
    p.add_argument("--out", default=None, help="output directory (default: root)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replicates")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    args = p.parse_args(argv)

    from dprl.tools.report import report
    try:
        result = report(args.root, args.out, reps=args.reps, confidence=args.confidence,
                        seed=args.seed)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print("wrote " + ", ".join(result["files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
