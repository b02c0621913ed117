"""Write qc_paper_curves.csv from the QC paper's released plot data (numbers only).

    python experiments/make_qc_paper_curves.py PATH/TO/ogbench-individual.pkl

The pickle is ``plot_data/ogbench-individual.pkl`` of github.com/ColinQiyangLi/qc (commit
48283b4f662bd1c127ec9fa80647b49759f10653): a dict keyed by ``(task, method)`` whose values hold
numpy arrays ``steps`` (millions of steps; 0-1M offline, 1M-2M online), ``means`` (success rate)
and ``ci_lows``/``ci_highs`` (95% bootstrap CI over seeds, 5000 resamples; the repository's
plot_data/README.md). It is read with an unpickler that admits numpy arrays only.
"""
from __future__ import annotations

import csv
import pickle
import sys
from pathlib import Path

import numpy as np

REPO, COMMIT = "github.com/ColinQiyangLi/qc", "48283b4f662bd1c127ec9fa80647b49759f10653"
SOURCE_FILE = "plot_data/ogbench-individual.pkl"
METHODS = ("QC", "BFN", "BFN-n", "QC-FQL", "FQL", "FQL-n")
ENVS = ("scene", "cube-double", "puzzle-3x3")   # the released OGBench envs dprl has presets for
OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "paper_data" / "qc_paper_curves.csv"


class _NumpyOnly(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: numbers only")
        from numpy._core.multiarray import _reconstruct
        return {"_reconstruct": _reconstruct, "ndarray": np.ndarray, "dtype": np.dtype}[name]


def main(pkl_path: str) -> None:
    with open(pkl_path, "rb") as f:
        data = _NumpyOnly(f).load()
    rows = []
    for env in ENVS:
        for k in range(1, 6):
            paper_task = f"{env}-play-task{k}"
            for method in METHODS:
                entry = data[(paper_task, method)]
                for s, m, lo, hi in zip(entry["steps"], entry["means"], entry["ci_lows"],
                                        entry["ci_highs"]):
                    step = int(round(float(s) * 1_000_000))
                    rows.append([f"{env}-task{k}", paper_task, method, step,
                                 "offline" if step <= 1_000_000 else "online",
                                 f"{float(m):.6g}", f"{float(lo):.6g}", f"{float(hi):.6g}"])
    with open(OUT, "w", newline="") as f:
        f.write(f"# The QC paper's published learning curves (Li, Zhou, Levine 2025, "
                f"'Reinforcement Learning with Action Chunking'), OGBench single-task, "
                f"{len(rows)} rows.\n"
                f"# Source: {REPO} at commit {COMMIT}, file {SOURCE_FILE} (the authors' released "
                f"plot data; figures only).\n"
                f"# Made by: python experiments/make_qc_paper_curves.py "
                f"{SOURCE_FILE}\n"
                f"# Columns: task = dprl's task preset; paper_task = the key in the source; "
                f"method = the paper's name;\n"
                f"#   step = training steps (gradient steps 0-1M offline, then env steps 1M-2M "
                f"online, utd 1); mean = success rate\n"
                f"#   over seeds (each seed: 50 evaluation episodes); ci_low, ci_high = 95% "
                f"bootstrap CI (5000 resamples).\n"
                f"# scene and puzzle-3x3 use the sparse reward (-1 until solved, 0 then; the "
                f"README's --sparse=True).\n")
        w = csv.writer(f)
        w.writerow(["task", "paper_task", "method", "step", "phase", "mean", "ci_low", "ci_high"])
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
