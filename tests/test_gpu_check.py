"""experiments/gpu_check.py in its tiny mode on this CPU: every stage runs and the table comes
out (the GPU figures themselves need a GPU machine)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_runs_every_stage(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_check.py"), "--tiny",
                           "--budget-s=600", f"--out={out}"], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tests"]["returncode"] == 0 and "passed" in result["tests"]["summary"]
    bench = result["bench"]["report"]["results"]
    assert [r["agent"] for r in bench] == ["dql"]
    assert bench[0]["updates_per_s"] > 0 and bench[0]["updates_per_s_bfloat16"] > 0
    qc = result["qc_cell"]
    assert qc["updates"] == qc["target"] == 20 and qc["critic_loss"] == qc["critic_loss"]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| figure | this device | CPU (docs/results/")
    for row in ("| card | cpu", "| JAX |", "| tests -m gpu | 1 passed",
                "| bench dql updates/s, float32 |", "| bench dql updates/s, bfloat16 |",
                "| QC cell: 20/20 updates, updates/s |"):
        assert any(line.startswith(row) for line in lines), (row, proc.stdout)
