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
    assert set(report["machine"]["matmul_gflop_s_by_shape"]) == {
        "50x256x256", "256x256x256", "8192x512x512"}
    assert all(rate > 0 for rate in report["machine"]["matmul_gflop_s_by_shape"].values())
    agents = {r["agent"] for r in report["results"]}
    assert agents == {"bc", "dql", "guided", "dppo:paper", "qc", "qc:qc-fql", "rlpd", "dsrl"}
    for r in report["results"]:
        assert r["updates_per_s"] > 0 and r["latency_ms_b1"] > 0 and r["env_steps_per_s"] > 0
        # The FLOP floor: the action's matmuls at the machine's matmul rate, below the latency.
        assert 0 < r["latency_floor_ms_b1"] < r["latency_ms_b1"], r
    # The off-policy online phase of DQL and QC (the runner's loop), with its parts timed alone.
    online = {r["agent"]: r for r in report["results"] if "online_overhead" in r}
    assert set(online) == {"dql", "qc"}
    for r in online.values():
        assert r["online_env_steps_per_s"] > 0 and r["online_parts_ms_per_env_step"] > 0
        assert r["online_update_ms"] > 0 and r["online_env_step_ms"] > 0
    assert "| dql |" in proc.stdout
    # Acting: multi-step next to one-step and mu alone, with the control rate.
    acting = {r["agent"]: r for r in report["results"]}
    for name in ("bc", "dql", "guided", "qc"):
        r = acting[name]
        for key in ("latency_ms_b1_multi_step", "latency_ms_b1_one_step", "latency_ms_b1_mu",
                    "control_actions_per_s_multi_step", "control_actions_per_s_one_step"):
            assert r[key] > 0, (name, key)
        assert r["env_step_ms"] > 0 and r["one_step_unavailable"] is None
    assert "latency_ms_b1_one_step" not in acting["dppo:paper"]
    assert "likelihoods" in acting["dppo:paper"]["one_step_unavailable"]
    assert acting["dppo:paper"]["control_actions_per_s_multi_step"] > 0
    fql = acting["qc:qc-fql"]
    assert "latency_ms_b1_multi_step" not in fql and fql["latency_ms_b1_one_step"] > 0
    assert "Acting at batch 1" in proc.stdout


def test_bench_acting_only(tmp_path):
    out = tmp_path / "acting.json"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments/bench.py"), "--quick",
                           "--acting-only", "--agents=bc,dppo", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["agent"]: r for r in json.loads(out.read_text())["results"]}
    assert "updates_per_s" not in results["bc"] and results["bc"]["latency_ms_b1_mu"] > 0
    assert "| bc | 1 |" in proc.stdout and "| dppo | 4 |" in proc.stdout


def test_matmul_flops_count_every_scan_iteration_and_the_backward_pass():
    import jax
    import jax.numpy as jnp

    from dprl.tools.speed import matmul_flops

    m, k, n, steps = 4, 8, 6, 7
    w_in, w = jnp.ones((k, n)), jnp.ones((n, n))

    def f(x, w):
        def body(h, _):
            return jnp.tanh(h @ w), None
        return jax.lax.scan(body, x @ w_in, None, length=steps)[0].sum()

    x = jnp.ones((m, k))
    forward = 2 * m * k * n + steps * 2 * m * n * n
    assert matmul_flops(f, x, w) == forward
    # Backward: each scanned matmul gives two (input and weight gradients); w_in only its input's.
    assert matmul_flops(jax.grad(f, argnums=(0, 1)), x, w) == (
        forward + steps * 2 * (2 * m * n * n) + 2 * m * k * n)

    def g(x, flag):  # a cond counts its costliest branch
        return jax.lax.cond(flag, lambda: (x @ w_in @ w).sum(), lambda: (x @ w_in).sum())

    assert matmul_flops(g, x, True) == 2 * m * k * n + 2 * m * n * n


def test_bench_pixels_option_tiny(tmp_path):
    """``--pixels``: DQL and QC from pixels through a pixel Buffer (updates, batch-1 action) and
    the memory rows of a pixel dataset whose frames are stored once."""
    out = tmp_path / "pixels.json"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments/bench.py"), "--pixels",
                           "--quick", "--pixel-encoder", "impala_debug", "--pixel-batch", "4",
                           "--pixel-size", "16", "--pixel-frames", "300", "--repeats", "1",
                           "--acting-repeats", "2", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    pixels = report["pixels"]
    assert [r["agent"] for r in pixels["agents"]] == ["dql", "qc"]
    for r in pixels["agents"]:
        assert r["batch_size"] == 4 and r["updates_per_s"] > 0 and r["latency_ms_b1"] > 0
    memory = pixels["memory"]
    frame = 16 * 16 * 3
    assert memory["frame_shape"] == [16, 16, 3]
    # every frame once: an episode of 100 transitions holds 101 frames
    assert memory["frames"] == memory["transitions"] + memory["transitions"] // 100
    for key in ("host_bytes_per_transition", "device_bytes_per_transition"):
        assert frame < memory[key] < 2 * frame, (key, memory[key])
    assert "| dql | 4 |" in proc.stdout and "| qc | 4 |" in proc.stdout
    assert "updates_per_s" not in json.dumps(report.get("results", []))
