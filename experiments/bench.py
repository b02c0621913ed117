"""Speed of every agent on this machine, next to its matmul throughput.

    python experiments/bench.py [--agents=bc,dql,guided,dppo,qc] [--out bench.json] [--quick]

Per agent, through the agent interface only (so every registered agent is measured the same way):
  updates_per_s        fused gradient updates per second (batch 256, its config's networks,
                       ``--fuse`` updates per jit dispatch via lax.scan); DPPO: PPO updates per
                       second over a collected rollout, with samples/s
  update_gflops        XLA's FLOP count of one update (cost analysis of the compiled program)
  achieved_gflop_s     update_gflops x updates_per_s, beside the machine's matmul GFLOP/s
  latency_ms_b1        ``sample_actions`` on one observation (median of many calls, ms)
  env_steps_per_s      online env steps per second on Hopper-v5 with the agent acting (policy
                       calls + MuJoCo), with its chunking (act_steps actions per call)
  online_*             off-policy agents (``--online-agents``): the online phase on Hopper-v5 at
                       ``--online-utd`` as the runner runs it (one replay step per env chunk),
                       env steps/s and its overhead: wall time per env step over the sum of its
                       parts timed alone (UTD x mixed-batch update + action / act_steps + env
                       step); ``--online-ab`` adds the three-dispatch loop it replaced
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
    config = load_config_file(os.path.join(root, "configs", f"{name}.py"))
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


def online_schedule(config, utd: float):
    from dprl.schedule import Schedule

    run = config.run.copy_and_resolve_references()
    run.utd, run.update_every, run.start_online_updates = utd, 1, 0
    return Schedule.of(run, "online")


def clocks() -> np.ndarray:
    """(wall, process CPU) seconds: CPU time counts this process's work only, so it stays
    meaningful while other jobs share the cores (it sums XLA's threads: compare it to itself)."""
    return np.array([time.perf_counter(), time.process_time()])


def online_loop(agent, offline, config, schedule, executor, env_steps: int, key,
                capacity: int) -> tuple:
    """The runner's off-policy online loop (``Run.online_replay``): per env chunk, the env steps
    on the host (``run_chunk``), then one ``replay_step`` (store, owed updates, act) and one
    host sync. Runs ``env_steps`` env steps: ``(agent, env steps done, [wall, cpu] seconds)``."""
    from dprl.buffer import Buffer, transition_block
    from dprl.collect import run_chunk
    from dprl.updates import replay_step

    rows, run = config.act_steps, config.run
    static = dict(update_slots=schedule.update_slots(rows), batch_size=run.batch_size,
                  horizon=config.horizon, obs_history=config.obs_history,
                  offline_ratio=float(run.offline_ratio))
    online = Buffer.empty(capacity, OBS_DIM, ACT_DIM)

    def step(transitions, num_updates):
        nonlocal agent, online, key
        block, count = transition_block(transitions, rows, OBS_DIM, ACT_DIM)
        agent, online, key, chunks, info = replay_step(
            agent, offline, online, key, block, np.int32(count), np.int32(num_updates),
            executor.policy_observations(), **static)
        return jax.device_get((chunks, info))[0]

    start = clocks()
    chunks, done, paid = step(None, 0), 0, 0
    while done < env_steps:
        transitions = run_chunk(executor, chunks, env_steps - done)
        done += len(transitions["actions"])
        owed = min(static["update_slots"], schedule.updates_owed(done) - paid)
        chunks = step(transitions, owed)
        paid += owed
    return agent, done, clocks() - start


def three_dispatch_loop(agent, offline, config, utd, executor, env_steps: int, key) -> tuple:
    """The loop before issue 16, for the A/B: per chunk ``sample_actions`` (a host sync for the
    chunk), ``Buffer.add`` and ``fused_updates`` of ``round(utd * n)`` steps (a sync for the
    info). It compiles both for every new chunk length ``n``: chunks that did are left out of
    the count (the steady state of a long run). ``(env steps counted, [wall, cpu] seconds)``."""
    from dprl.buffer import Buffer
    from dprl.collect import run_chunk
    from dprl.updates import fused_updates

    online = Buffer.empty(env_steps + config.act_steps, OBS_DIM, ACT_DIM)
    static = dict(method="update", batch_size=config.run.batch_size, horizon=config.horizon,
                  obs_history=config.obs_history, offline_ratio=float(config.run.offline_ratio))
    done, counted, total = 0, 0, np.zeros(2)
    while done < env_steps:
        start, compiled = clocks(), fused_updates._cache_size() + Buffer.add._cache_size()
        key, act_key, update_key = jax.random.split(key, 3)
        chunks, _ = agent.sample_actions(jnp.asarray(executor.policy_observations()), act_key)
        transitions = run_chunk(executor, np.asarray(chunks), env_steps - done)
        n = len(transitions["actions"])
        online = online.add(transitions)
        if round(utd * n):
            agent, info = fused_updates(agent, offline, online, update_key,
                                        num_steps=round(utd * n), **static)
            jax.device_get(info)
        done += n
        if fused_updates._cache_size() + Buffer.add._cache_size() == compiled:
            counted, total = counted + n, total + clocks() - start
    return counted, total


def online_parts(agent, offline, config, executor, steps: int, repeats: int) -> dict:
    """The online loop's parts, each timed alone, ``[wall, cpu]`` seconds: one env step with the
    executor's bookkeeping (``run_chunk``, random actions), one update on mixed batches (fused,
    an online buffer of those Hopper transitions), one action (``sample_actions``, batch 1)."""
    from dprl.buffer import Buffer
    from dprl.collect import run_chunk
    from dprl.updates import fused_updates

    rng, executed, env_n, start = np.random.default_rng(0), [], 0, clocks()
    while env_n < steps:
        chunk = rng.uniform(-1, 1, (1, config.horizon, ACT_DIM)).astype(np.float32)
        executed.append(run_chunk(executor, chunk, steps - env_n))
        env_n += len(executed[-1]["actions"])
    env = (clocks() - start) / env_n
    online = Buffer.empty(steps + config.act_steps, OBS_DIM, ACT_DIM).add(
        {k: np.concatenate([e[k] for e in executed]) for k in executed[0]})
    fuse = max(config.act_steps, 10)
    kwargs = dict(num_steps=fuse, method="update", batch_size=config.run.batch_size,
                  horizon=config.horizon, obs_history=config.obs_history,
                  offline_ratio=float(config.run.offline_ratio))
    jax.block_until_ready(fused_updates(agent, offline, online, jax.random.PRNGKey(0), **kwargs))
    updates = []
    for i in range(repeats):
        start = clocks()
        jax.block_until_ready(fused_updates(agent, offline, online, jax.random.PRNGKey(i),
                                            **kwargs))
        updates.append((clocks() - start) / fuse)
    obs = jnp.asarray(executor.policy_observations())
    jax.block_until_ready(agent.sample_actions(obs, jax.random.PRNGKey(0)))
    acts = []
    for i in range(50):
        start = clocks()
        jax.block_until_ready(agent.sample_actions(obs, jax.random.PRNGKey(i)))
        acts.append(clocks() - start)
    return {"env": env, "update": np.median(updates, 0), "action": np.median(acts, 0)}


def bench_online(agent, offline, config, args) -> dict:
    """The off-policy online phase at UTD ``args.online_utd`` on Hopper-v5 (batches mixing the
    synthetic offline data and the online buffer half and half), as the runner runs it: time
    per env step next to its parts timed alone, ``utd x update + action / act_steps + env
    step``; their ratio is the loop's overhead (issue 16: <= 1.2), in wall and in CPU time."""
    from dprl.envs import ChunkExecutor, VecEnv

    utd, steps = args.online_utd, args.online_env_steps
    schedule = online_schedule(config, utd)
    executor = ChunkExecutor(VecEnv("Hopper-v5", 1, seed=0), act_steps=config.act_steps)
    executor.reset()
    key, capacity = jax.random.PRNGKey(3), steps + config.act_steps
    # Warm up (compiles the step), then time; the agent keeps training throughout.
    agent, _, _ = online_loop(agent, offline, config, schedule, executor, 2 * config.act_steps,
                              key, capacity)
    agent, done, loop = online_loop(agent, offline, config, schedule, executor, steps, key,
                                    capacity)
    per_step = loop / done
    p = online_parts(agent, offline, config, executor, steps, args.repeats)
    parts = utd * p["update"] + p["action"] / config.act_steps + p["env"]
    out = {"online_utd": utd, "online_env_steps_per_s": 1.0 / per_step[0],
           "online_ms_per_env_step": 1e3 * per_step[0],
           "online_parts_ms_per_env_step": 1e3 * parts[0],
           "online_update_ms": 1e3 * p["update"][0], "online_action_ms": 1e3 * p["action"][0],
           "online_env_step_ms": 1e3 * p["env"][0], "online_overhead": per_step[0] / parts[0],
           "online_overhead_cpu": per_step[1] / parts[1]}
    if args.online_ab:
        n, old = three_dispatch_loop(agent, offline, config, utd, executor, steps, key)
        out["online_env_steps_per_s_three_dispatch"] = n / old[0]
        out["online_cpu_ms_per_env_step"] = 1e3 * per_step[1]
        out["online_cpu_ms_per_env_step_three_dispatch"] = 1e3 * old[1] / n
    return out


def bench_agent(name: str, args) -> dict:
    from agents import get_agent

    config = load_agent_config(name, args.quick)
    buffer = synthetic_buffer(2_000 if args.quick else 20_000)
    example = jax.device_get(buffer.sample(jax.random.PRNGKey(0), 2, config.horizon,
                                           config.obs_history))
    agent = get_agent(name).create(0, example, config)
    result = {"agent": name, "batch_size": config.run.batch_size, "horizon": config.horizon,
              "act_steps": config.act_steps, "actor_hidden": list(config.actor.hidden_dims),
              "model": config.actor.model,
              "denoising_steps": (config.actor.flow_steps if config.actor.model == "flow"
                                  else config.actor.sampling_steps or config.actor.diffusion_steps)}
    if get_agent(name).on_policy:
        result.update(bench_on_policy(agent, config, args.repeats))
    else:
        stats, agent = bench_off_policy_updates(agent, buffer, config, args.fuse, args.repeats)
        result.update(stats)
    result["latency_ms_b1"] = bench_latency(agent, config)
    result["env_steps_per_s"] = bench_env_steps(agent, config, 1, args.env_steps)
    if not get_agent(name).on_policy and name in args.online_agents.split(","):
        result.update(bench_online(agent, buffer, config, args))
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
    return "\n".join(lines + online_markdown(results))


def online_markdown(results: list[dict]) -> list[str]:
    online = [r for r in results if "online_overhead" in r]
    if not online:
        return []
    lines = ["", "Off-policy online phase on Hopper-v5, one replay step per env chunk: time per "
             "env step vs its parts timed alone (UTD x update + action / act_steps + env step); "
             "target overhead <= 1.2 (wall; CPU: this process's CPU time, steadier on a shared "
             "machine).", "",
             "| agent | UTD | env steps/s | ms per env step | parts (ms): update, action, env "
             "step | overhead wall (CPU) | three-dispatch loop: env steps/s, CPU ms per env step "
             "(replay step's) |", "|---|---|---|---|---|---|---|"]
    for r in online:
        ab = "not run (--online-ab)"
        if "online_env_steps_per_s_three_dispatch" in r:
            ab = (f"{r['online_env_steps_per_s_three_dispatch']:.1f}, "
                  f"{r['online_cpu_ms_per_env_step_three_dispatch']:.2f} "
                  f"({r['online_cpu_ms_per_env_step']:.2f})")
        lines.append(
            f"| {r['agent']} | {r['online_utd']:g} | {r['online_env_steps_per_s']:.1f} | "
            f"{r['online_ms_per_env_step']:.2f} | {r['online_parts_ms_per_env_step']:.2f}: "
            f"{r['online_update_ms']:.2f}, {r['online_action_ms']:.2f}, "
            f"{r['online_env_step_ms']:.3f} | {r['online_overhead']:.2f}x "
            f"({r['online_overhead_cpu']:.2f}x) | {ab} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="bc,dql,guided,dppo,qc")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--fuse", type=int, default=50, help="updates per dispatch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--env-steps", type=int, default=2000)
    parser.add_argument("--online-agents", default="dql,qc",
                        help="off-policy agents whose online phase is timed")
    parser.add_argument("--online-utd", type=float, default=1.0)
    parser.add_argument("--online-env-steps", type=int, default=200,
                        help="env steps of the timed online phase")
    parser.add_argument("--online-ab", action="store_true",
                        help="also time the three-dispatch loop this replaced (issue 16)")
    parser.add_argument("--quick", action="store_true", help="tiny networks (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.fuse, args.repeats, args.env_steps, args.online_env_steps = 5, 2, 100, 20

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
