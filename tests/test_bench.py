"""Smoke run of experiments/bench.py: every registered agent is measured through the interface."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_reports_every_agent(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments/bench.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["matmul_gflop_s"] > 0
    agents = {r["agent"] for r in report["results"]}
    assert agents == {"bc", "dql", "guided", "dppo", "qc", "qc:qc-fql"}
    for r in report["results"]:
        assert r["updates_per_s"] > 0 and r["latency_ms_b1"] > 0 and r["env_steps_per_s"] > 0
    assert "| dql |" in proc.stdout
