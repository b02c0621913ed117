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
    assert agents == {"bc", "dql", "guided", "dppo", "qc"}
    for r in report["results"]:
        assert r["updates_per_s"] > 0 and r["latency_ms_b1"] > 0 and r["env_steps_per_s"] > 0
    # The off-policy online phase (issue 16) of DQL and QC, with its parts timed alone.
    online = {r["agent"]: r for r in report["results"] if "online_overhead" in r}
    assert set(online) == {"dql", "qc"}
    for r in online.values():
        assert r["online_env_steps_per_s"] > 0 and r["online_parts_ms_per_env_step"] > 0
        assert r["online_update_ms"] > 0 and r["online_env_step_ms"] > 0
    assert "| dql |" in proc.stdout
