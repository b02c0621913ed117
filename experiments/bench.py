"""Speed of every agent on this machine, next to its matmul throughput.

    python experiments/bench.py [--agents=bc,dql,guided,dppo,qc,qc:qc-fql] [--out bench.json]
        [--quick]

An entry ``<file>:<preset>`` measures a named preset of ``configs/<file>.py`` (``qc:qc-fql``:
QC-FQL's one-step policy). Per agent, through the agent interface only (so every registered
agent is measured the same way):
  updates_per_s        fused gradient updates per second (batch 256, its config's networks,
                       ``--fuse`` updates per jit dispatch via lax.scan); DPPO: PPO updates per
                       second over a collected rollout, with samples/s
  update_gflops        XLA's FLOP count of one update (cost analysis of the compiled program)
  achieved_gflop_s     update_gflops x updates_per_s, beside the machine's matmul GFLOP/s
  latency_ms_b1        ``sample_actions`` on one observation (median of many calls, ms)
  env_steps_per_s      online env steps per second on Hopper-v5 with the agent acting (policy
                       calls + MuJoCo), with its chunking (act_steps actions per call)
Observations and actions are Hopper-shaped (O = 11, A = 3); data are random (speed only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

OBS_DIM, ACT_DIM = 11, 3


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul throughput of this machine under XLA, GFLOP/s (the roofline we compare to)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def synthetic_buffer(size: int = 20_000, episode_len: int = 1000):
    from dprl.buffer import Buffer
    from dprl.data import Normalizer, OfflineData

    rng = np.random.default_rng(0)
    dones = np.zeros(size, bool)
    dones[episode_len - 1::episode_len] = True
    dones[-1] = True
    obs = rng.standard_normal((size, OBS_DIM)).astype(np.float32)
    data = OfflineData(observations=obs, actions=rng.uniform(-1, 1, (size, ACT_DIM)).astype(np.float32),
                       rewards=rng.standard_normal(size).astype(np.float32),
                       terminals=np.zeros(size, bool), timeouts=dones, dones=dones,
                       next_observations=np.roll(obs, -1, 0))
    return Buffer.from_offline(data, Normalizer.identity(OBS_DIM))


def load_agent_config(name: str, quick: bool):
    from dprl.config import load_config_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    file, sep, preset = name.partition(":")
    config = load_config_file(os.path.join(root, "configs", f"{file}.py") + sep + preset)
    config.action_dim = ACT_DIM
    config.run.batch_size = 256
    if quick:
        config.actor.hidden_dims = (32, 32)
        for key in config:
            if key.endswith("hidden_dims"):
                config[key] = (32, 32)
        config.run.batch_size = 32
        config.run.num_envs = min(config.run.num_envs, 4)
        config.run.rollout_steps = min(config.run.rollout_steps, 4)
    return config


def cost_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001  not every backend reports costs
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) or None


def bench_off_policy_updates(agent, buffer, config, fuse: int, repeats: int) -> dict:
    from dprl.updates import fused_updates

    kwargs = dict(num_steps=fuse, method="update", batch_size=config.run.batch_size,
                  horizon=config.horizon, obs_history=config.obs_history)
    key = jax.random.PRNGKey(1)
    # XLA's cost analysis counts a loop body once, so count one update (a scan of length 1).
    one = dict(kwargs, num_steps=1)
    flops = cost_flops(fused_updates.lower(agent, buffer, None, key, **one).compile())
    agent, info = fused_updates(agent, buffer, None, key, **kwargs)  # warm up
    jax.block_until_ready(info)
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        agent, info = fused_updates(agent, buffer, None, jax.random.PRNGKey(i), **kwargs)
        jax.block_until_ready(info)
        times.append(time.perf_counter() - t)
    per_update = statistics.median(times) / fuse
    out = {"updates_per_s": 1.0 / per_update, "fused_updates_per_dispatch": fuse}
    if flops:
        out["update_gflops"] = flops / 1e9
        out["achieved_gflop_s"] = out["update_gflops"] / per_update
    return out, agent


def bench_latency(agent, config, repeats: int = 50) -> float:
    obs = jnp.zeros((1, OBS_DIM) if config.obs_history == 1 else (1, config.obs_history, OBS_DIM))
    jax.block_until_ready(agent.sample_actions(obs, jax.random.PRNGKey(0)))
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(agent.sample_actions(obs, jax.random.PRNGKey(i)))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def bench_env_steps(agent, config, num_envs: int, env_steps: int) -> float:
    from dprl.envs import ChunkExecutor, VecEnv

    ex = ChunkExecutor(VecEnv("Hopper-v5", num_envs, seed=0), act_steps=config.act_steps,
                       obs_history=config.obs_history)
    ex.reset()
    key = jax.random.PRNGKey(0)
    chunks, _ = agent.sample_actions(jnp.asarray(ex.policy_observations()), key)  # compile
    done, t = 0, time.perf_counter()
    while done < env_steps:
        key, k = jax.random.split(key)
        chunks, _ = agent.sample_actions(jnp.asarray(ex.policy_observations()), k)
        done += int(ex.step_chunks(np.asarray(chunks))["valid"].sum())
    return done / (time.perf_counter() - t)


def bench_on_policy(agent, config, repeats: int) -> dict:
    from dprl.collect import collect_rollout
    from dprl.envs import ChunkExecutor, VecEnv

    E, T = config.run.num_envs, config.run.rollout_steps
    ex = ChunkExecutor(VecEnv("Hopper-v5", E, seed=0), act_steps=config.act_steps,
                       obs_history=config.obs_history)
    ex.reset()
    collect_rollout(agent, ex, 1, jax.random.PRNGKey(0))  # compile the sampler
    t = time.perf_counter()
    rollout, n_env = collect_rollout(agent, ex, T, jax.random.PRNGKey(1))
    collect_s = time.perf_counter() - t
    agent, info = agent.update(rollout)  # compile
    jax.block_until_ready(info)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        agent, info = agent.update(rollout)
        jax.block_until_ready(info)
        times.append(time.perf_counter() - t)
    upd = statistics.median(times)
    return {"updates_per_s": 1.0 / upd, "update_samples_per_s": T * E / upd,
            "rollout": f"{T} chunk-steps x {E} envs", "collect_env_steps_per_s": n_env / collect_s}


def bench_agent(name: str, args) -> dict:
    from agents import get_agent

    config = load_agent_config(name, args.quick)
    buffer = synthetic_buffer(2_000 if args.quick else 20_000)
    example = jax.device_get(buffer.sample(jax.random.PRNGKey(0), 2, config.horizon,
                                           config.obs_history))
    agent_cls = get_agent(config.agent_name)
    agent = agent_cls.create(0, example, config)
    result = {"agent": name, "batch_size": config.run.batch_size, "horizon": config.horizon,
              "act_steps": config.act_steps, "actor_hidden": list(config.actor.hidden_dims),
              "model": config.actor.model,
              "denoising_steps": (config.actor.flow_steps if config.actor.model == "flow"
                                  else config.actor.sampling_steps or config.actor.diffusion_steps)}
    if agent_cls.on_policy:
        result.update(bench_on_policy(agent, config, args.repeats))
    else:
        stats, agent = bench_off_policy_updates(agent, buffer, config, args.fuse, args.repeats)
        result.update(stats)
    result["latency_ms_b1"] = bench_latency(agent, config)
    result["env_steps_per_s"] = bench_env_steps(agent, config, 1, args.env_steps)
    return result


def markdown(results: list[dict], machine: dict) -> str:
    lines = [f"Machine: {machine['processor']} ({machine['cpus']} CPUs, JAX {machine['jax']} on "
             f"{machine['backend']}); fp32 matmul {machine['matmul_gflop_s']:.0f} GFLOP/s "
             f"(2048^3).", "",
             "| agent | updates/s | GFLOP/update | achieved GFLOP/s (% of matmul) | latency b=1 (ms) "
             "| env steps/s (Hopper, acting) |", "|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['agent']} | error: {r['error']} | | | | |")
            continue
        ach = r.get("achieved_gflop_s")
        pct = f"{ach:.1f} ({100 * ach / machine['matmul_gflop_s']:.0f}%)" if ach else "n/a"
        gf = f"{r['update_gflops']:.3f}" if r.get("update_gflops") else "n/a"
        extra = (f" ({r['update_samples_per_s']:.0f} samples/s; collect "
                 f"{r['collect_env_steps_per_s']:.0f} env steps/s)" if "update_samples_per_s" in r
                 else "")
        lines.append(f"| {r['agent']} | {r['updates_per_s']:.1f}{extra} | {gf} | {pct} | "
                     f"{r['latency_ms_b1']:.2f} | {r['env_steps_per_s']:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="bc,dql,guided,dppo,qc,qc:qc-fql")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--fuse", type=int, default=50, help="updates per dispatch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--env-steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="tiny networks (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.fuse, args.repeats, args.env_steps = 5, 2, 100

    machine = {"processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
               "devices": [str(d) for d in jax.devices()],
               "matmul_gflop_s": matmul_gflops(512 if args.quick else 2048)}
    results = []
    for name in [a for a in args.agents.split(",") if a]:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            results.append(bench_agent(name, args))
        except Exception as e:  # noqa: BLE001  one broken agent must not hide the others
            results.append({"agent": name, "error": f"{type(e).__name__}: {e}"})
    report = {"machine": machine, "results": results,
              "command": "python experiments/bench.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d")}
    print(markdown(results, machine))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
