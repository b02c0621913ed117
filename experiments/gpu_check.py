"""The GPU check: one command that, on a machine with a GPU, shows in at most 8 minutes that dprl
runs there and how fast, next to this project's CPU figures.

    python experiments/gpu_check.py [--out gpu_check.json]   # on the GPU machine (~8 min)
    python experiments/gpu_check.py --tiny                   # the same stages, tiny (CPU smoke)

Stages, each under its own share of ``--budget-s`` (default 480 s; a stage that runs out is
stopped and reported as such, never extrapolated):
  tests    ``pytest -m gpu``: every agent's fused updates and acting on JAX's default device,
           seeds spread over all local devices (tests/test_sharding.py)
  bench    ``experiments/bench.py`` at the references' configs (dql, qc, dppo: batch 256; DPPO's
           50,000-pair minibatches), updates timed in float32 and in bfloat16 (run.compute_dtype);
           one subprocess per agent, each with a share of the stage's time
  qc cell  10,000 QC updates at the paper's config (configs/qc.py: 4x512 GELU, batch 256, chunks
           of 5, best-of-32) on synthetic OGBench-sized data (scene: 1M transitions, O = 40,
           A = 5), fused ``run.steps_per_dispatch`` per dispatch as the runner does
Then one table: the card, the JAX version, every figure, and its ratio to the CPU figure in
``docs/results/bench_idle_2026-12-04.json`` (2-vCPU AMD EPYC, idle). ``--tiny`` shrinks every
stage (one agent's test, bench --quick, 20 QC updates with small networks): it checks that the
script works (tests/test_gpu_check.py runs it), and its figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_RESULTS = "docs/results/bench_idle_2026-12-04.json"
BENCH_AGENTS = "dql,qc,dppo"
# OGBench's scene-play dataset: 1M transitions in episodes of 750, 40-dim state, 5-dim action.
SCENE = dict(size=1_000_000, obs_dim=40, action_dim=5, episode_len=750)
QC_UPDATES = 10_000
SHARES = {"tests": 0.3, "bench": 0.4}   # of the budget; the QC cell gets what is left


def run_stage(cmd: list[str], limit_s: float) -> tuple[int | None, float, str]:
    """``(returncode or None if stopped at the limit, seconds, output)`` of a subprocess."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              timeout=max(limit_s, 1.0))
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        out = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
               else e.stdout or "")
    return rc, time.perf_counter() - start, out


def tests_stage(tiny: bool, limit_s: float) -> dict:
    select = ["-k", "bc"] if tiny else []
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
           "tests/test_sharding.py", *select]
    rc, secs, out = run_stage(cmd, limit_s)
    summary = next((line for line in reversed(out.splitlines())
                    if " passed" in line or " failed" in line or " error" in line), "")
    return {"returncode": rc, "seconds": secs, "summary": summary.strip("= "),
            "tail": "\n".join(out.splitlines()[-30:]) if rc != 0 else ""}


def bench_stage(tiny: bool, limit_s: float) -> dict:
    """bench.py once per agent (one that runs out of time or fails costs only its own row),
    each with an equal share of what is left of ``limit_s``."""
    agents = ["dql"] if tiny else BENCH_AGENTS.split(",")
    results, machine, tails, rcs, start = [], None, [], [], time.perf_counter()
    for i, agent in enumerate(agents):
        share = (limit_s - (time.perf_counter() - start)) / (len(agents) - i)
        with tempfile.TemporaryDirectory() as tmp:
            out_json = os.path.join(tmp, "bench.json")
            cmd = [sys.executable, "experiments/bench.py", f"--agents={agent}",
                   "--online-agents=", "--compute-dtypes=float32,bfloat16", f"--out={out_json}"]
            cmd += ["--quick"] if tiny else ["--repeats=3", "--env-steps=500",
                                             "--acting-repeats=50"]
            rc, secs, out = run_stage(cmd, share)
            report = json.load(open(out_json)) if os.path.exists(out_json) else None
        rcs.append(rc)
        if report is None:
            why = "stopped at its time limit" if rc is None else f"exit code {rc}"
            results.append({"agent": agent, "error": f"{why} after {secs:.0f} s"})
        else:
            machine = report["machine"]
            results += report["results"]
        if rc != 0:
            tails.append(f"--- bench {agent} ---\n" + "\n".join(out.splitlines()[-30:]))
    return {"returncode": 0 if all(rc == 0 for rc in rcs) else 1,
            "seconds": time.perf_counter() - start,
            "report": {"machine": machine, "results": results}, "tail": "\n".join(tails)}


def qc_cell_stage(tiny: bool, limit_s: float) -> dict:
    """QC_UPDATES fused QC updates at the paper's config on synthetic scene-sized data, stopped
    at ``limit_s`` if it gets there first (the updates done are reported)."""
    import jax

    from agents import get_agent
    from configs.qc import get_config
    from dprl.run.updates import fused_updates
    from dprl.tools.speed import synthetic_buffer

    config = get_config("qc")
    config.action_dim = SCENE["action_dim"]
    shape = dict(SCENE)
    updates, per_dispatch = QC_UPDATES, int(config.run.steps_per_dispatch)
    if tiny:
        config.actor.hidden_dims = config.critic_hidden_dims = (32, 32)
        config.num_samples = 4
        config.actor.flow_steps = 2
        shape.update(size=5_000)
        updates, per_dispatch = 20, 10
    start = time.perf_counter()
    buffer = synthetic_buffer(shape["obs_dim"], shape["action_dim"], shape["size"],
                              shape["episode_len"])
    example = jax.device_get(buffer.sample(jax.random.PRNGKey(0), 2, config.horizon,
                                           config.obs_history))
    agent = get_agent(config.agent_name).create(0, example, config)
    kw = dict(num_steps=per_dispatch, method="update", batch_size=config.run.batch_size,
              horizon=config.horizon, obs_history=config.obs_history)
    key = jax.random.PRNGKey(1)
    compile_start = time.perf_counter()
    step = fused_updates.lower(agent, buffer, None, key, **kw).compile()
    compile_s = time.perf_counter() - compile_start
    done, info, loop_start = 0, {}, time.perf_counter()
    while done < updates and time.perf_counter() - start < limit_s:
        key, k = jax.random.split(key)
        agent, info = step(agent, buffer, None, k)
        info = jax.device_get(info)   # a host sync per dispatch, as the runner's logging does
        done += per_dispatch
    loop_s = time.perf_counter() - loop_start
    return {"updates": done, "target": updates, "seconds": loop_s, "compile_s": compile_s,
            "setup_s": compile_start - start, "updates_per_s": done / loop_s if loop_s else 0.0,
            "critic_loss": float(info.get("critic/loss", float("nan"))),
            "config": {"hidden": list(config.actor.hidden_dims), "batch": config.run.batch_size,
                       "horizon": config.horizon, "num_samples": config.num_samples,
                       "data": shape},
            "devices": [str(d) for d in jax.devices()], "card": jax.devices()[0].device_kind,
            "backend": jax.default_backend(), "jax": jax.__version__}


def cpu_figures() -> dict:
    """updates/s of each agent in this project's idle CPU benchmark."""
    with open(os.path.join(ROOT, CPU_RESULTS)) as f:
        return {r["agent"]: r["updates_per_s"] for r in json.load(f)["results"]
                if "updates_per_s" in r}


def table(result: dict, tiny: bool) -> str:
    cpu = cpu_figures()
    qc = result["qc_cell"]
    rows = [("card", f"{qc.get('card')} x {len(qc.get('devices', []))} ({qc.get('backend')})",
             "2-vCPU AMD EPYC", ""),
            ("JAX", qc.get("jax", "?"), "0.10.2", "")]
    t = result["tests"]
    state = "stopped at its time limit" if t["returncode"] is None else t["summary"]
    rows.append(("tests -m gpu", f"{state} ({t['seconds']:.0f} s)", "", ""))

    def ratio(x, ref):
        return "" if tiny or not x or not ref else f"{x / ref:.2f}x"

    for r in result["bench"]["report"]["results"]:
        if "error" in r:
            rows.append((f"bench {r['agent']}", f"error: {r['error']}", "", ""))
            continue
        unit = "minibatch steps/s" if r["agent"] == "dppo" else "updates/s"
        ref = cpu.get(r["agent"])
        for dtype, key in (("float32", "updates_per_s"), ("bfloat16", "updates_per_s_bfloat16")):
            x = r.get(key)
            rows.append((f"bench {r['agent']} {unit}, {dtype}", "-" if x is None else f"{x:.3g}",
                         f"{ref:.3g} (float32)" if ref else "", ratio(x, ref)))
        rows.append((f"bench {r['agent']} latency b=1 ms", f"{r['latency_ms_b1']:.3g}", "", ""))
    ups = qc["updates_per_s"]
    rows.append((f"QC cell: {qc['updates']}/{qc['target']} updates, updates/s", f"{ups:.3g}",
                 f"{cpu.get('qc', 0):.3g}", ratio(ups, cpu.get("qc"))))
    rows.append(("QC cell: seconds (compile)", f"{qc['seconds']:.1f} ({qc['compile_s']:.1f})",
                 f"{qc['target'] / cpu['qc']:.0f} (at the CPU rate)" if cpu.get("qc") and not tiny
                 else "", ""))
    lines = ["| figure | this device | CPU (" + CPU_RESULTS + ") | device / CPU |",
             "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    if tiny:
        lines.append("(--tiny: small networks and data; the figures say nothing about speed)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="every stage small (a CPU smoke test)")
    p.add_argument("--budget-s", type=float, default=480.0, help="seconds for all the stages")
    p.add_argument("--out", default=None, help="write every figure as JSON here")
    args = p.parse_args(argv)
    start = time.perf_counter()
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "tiny": args.tiny,
              "command": "python experiments/gpu_check.py " + " ".join(argv or sys.argv[1:])}
    print("[gpu_check] tests ...", file=sys.stderr, flush=True)
    result["tests"] = tests_stage(args.tiny, SHARES["tests"] * args.budget_s)
    print("[gpu_check] bench ...", file=sys.stderr, flush=True)
    result["bench"] = bench_stage(args.tiny, SHARES["bench"] * args.budget_s)
    print("[gpu_check] QC cell ...", file=sys.stderr, flush=True)
    left = args.budget_s - (time.perf_counter() - start)
    result["qc_cell"] = qc_cell_stage(args.tiny, max(left, 30.0))
    result["seconds"] = time.perf_counter() - start
    for stage in ("tests", "bench"):
        if result[stage].get("tail"):
            print(f"[gpu_check] {stage} output (tail):\n{result[stage]['tail']}", file=sys.stderr)
    print(table(result, args.tiny))
    print(f"total {result['seconds']:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    ok = result["tests"]["returncode"] == 0 and result["bench"]["returncode"] == 0 and \
        result["qc_cell"]["updates"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())
