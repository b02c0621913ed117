"""Measuring speed: matmul FLOPs of a program, the machine's matmul rates, timed calls,
synthetic data and env steps to time agents on, and the tables ``experiments/bench.py`` prints.

Times are ``[wall, cpu]`` seconds (``clocks``): CPU time counts this process's work only (all its
threads), so it stays meaningful while other jobs share the cores.
"""
from __future__ import annotations

import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


# ---- FLOPs --------------------------------------------------------------------------------------
def _sub_jaxprs(params: dict) -> list:
    subs = []
    for v in params.values():
        for item in (v if isinstance(v, (tuple, list)) else [v]):
            if hasattr(item, "jaxpr") and hasattr(item, "consts"):   # ClosedJaxpr
                subs.append(item.jaxpr)
            elif type(item).__name__ == "Jaxpr":
                subs.append(item)
    return subs


def jaxpr_matmul_flops(jaxpr) -> tuple[float, int]:
    """Matmul/conv FLOPs of a jaxpr with every loop iteration counted: a scan's body times its
    length, a cond's costliest branch. Returns ``(flops, while_loops)``; a while loop's trip count
    is unknown, so its body is counted once and reported in ``while_loops``."""
    total, whiles = 0.0, 0
    for e in jaxpr.eqns:
        name = e.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = e.params["dimension_numbers"]
            lhs = e.invars[0].aval.shape
            k = float(np.prod([lhs[i] for i in lhs_contract])) if lhs_contract else 1.0
            total += 2.0 * float(np.prod(e.outvars[0].aval.shape)) * k
        elif name == "conv_general_dilated":
            rhs = e.invars[1].aval.shape
            spec = e.params["dimension_numbers"].rhs_spec   # (out, in, spatial...)
            total += 2.0 * float(np.prod(e.outvars[0].aval.shape)) * float(
                np.prod([rhs[i] for i in spec[1:]]))
        counts = [jaxpr_matmul_flops(j) for j in _sub_jaxprs(e.params)]
        whiles += sum(w for _, w in counts) + (name == "while")
        flops = [f for f, _ in counts]
        if name == "scan":
            total += e.params["length"] * sum(flops)
        elif name == "cond":
            total += max(flops, default=0.0)
        else:
            total += sum(flops)
    return total, whiles


def matmul_flops(fn, *args) -> float:
    """Matmul FLOPs of ``fn(*args)`` (every scan iteration counted; XLA's cost analysis counts a
    loop body once)."""
    flops, whiles = jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)
    if whiles:
        print(f"[speed] note: {whiles} while loop(s) counted once", file=sys.stderr)
    return flops


# ---- the machine's matmul rates -----------------------------------------------------------------
def matmul_gflops(n: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """fp32 ``[n, n]`` matmul throughput under XLA (the roofline): GFLOP per wall second (best of
    ``repeats``) and GFLOP per CPU second of this process."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    best = time_calls(lambda _: f(a), repeats, reduce=min)
    return 2 * n**3 / best[0] / 1e9, 2 * n**3 / best[1] / 1e9


def matmul_chain_gflops(m: int, k: int, n: int, chain: int = 20, repeats: int = 30) -> float:
    """GFLOP/s of a jitted chain of ``chain`` dependent ``[m, k] x [k, n]`` matmuls (median of
    ``repeats``): the best rate an agent's matmuls of that shape get here, whatever else it does."""
    weights = [jnp.full((k, n), 0.01, jnp.float32) for _ in range(chain)]
    f = jax.jit(lambda x, ws: functools.reduce(jnp.matmul, ws, x))
    x = jnp.ones((m, k), jnp.float32)
    return 2 * m * k * n * chain / time_calls(lambda _: f(x, weights), repeats)[0] / 1e9


# ---- timing -------------------------------------------------------------------------------------
def clocks() -> np.ndarray:
    """``[wall, process CPU]`` seconds now."""
    return np.array([time.perf_counter(), time.process_time()])


def time_calls(fn, repeats: int, reduce=statistics.median) -> np.ndarray:
    """``[wall, cpu]`` seconds of one call of ``fn(i)`` (``i``: the call's number), results
    waited for: ``reduce`` (median) over ``repeats`` calls after a first (compiling) call."""
    jax.block_until_ready(fn(0))
    times = []
    for i in range(repeats):
        start = clocks()
        jax.block_until_ready(fn(i))
        times.append(clocks() - start)
    return np.array([reduce(t[0] for t in times), reduce(t[1] for t in times)])


def interleaved_latency_ms(fns: dict, obs, repeats: int, block: int = 10) -> dict:
    """Median wall ms per call of each ``fn(obs, key)``, called in turns of ``block`` calls
    (A x block, B x block, ..., A x block, ...) so that each sees the same load on a shared
    machine; keys are made beforehand."""
    keys = list(jax.random.split(jax.random.PRNGKey(0), block))
    for fn in fns.values():
        jax.block_until_ready(fn(obs, keys[0]))   # compile
    times = {name: [] for name in fns}
    for _ in range(max(repeats // block, 1)):
        for name, fn in fns.items():
            for key in keys:
                t = time.perf_counter()
                jax.block_until_ready(fn(obs, key))
                times[name].append(time.perf_counter() - t)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


# ---- off-policy updates and the online loop, as the runner runs them -------------------------
def update_kwargs(config, fuse: int, online: bool = False) -> dict:
    """``fused_updates``' settings for ``fuse`` updates per dispatch at the config's batch."""
    kwargs = dict(num_steps=fuse, method="update", batch_size=config.run.batch_size,
                  horizon=config.horizon, obs_history=config.obs_history)
    return dict(kwargs, offline_ratio=float(config.run.offline_ratio)) if online else kwargs


def bench_off_policy_updates(agent, buffer, config, fuse: int, repeats: int) -> dict:
    """``fuse`` fused updates per dispatch (``fused_updates``), per update."""
    from dprl.run.updates import fused_updates

    flops = matmul_flops(lambda a, b, k: fused_updates(a, b, None, k, **update_kwargs(config, 1)),
                         agent, buffer, jax.random.PRNGKey(1))
    per_update = time_calls(lambda i: fused_updates(
        agent, buffer, None, jax.random.PRNGKey(i), **update_kwargs(config, fuse))[1],
        repeats) / fuse
    return {"updates_per_s": 1.0 / per_update[0], "fused_updates_per_dispatch": fuse,
            "cpu_ms_per_update": 1e3 * per_update[1], "update_gflop": flops / 1e9,
            "achieved_gflop_s": flops / 1e9 / per_update[0]}


def online_loop(learner, executor, env_steps: int) -> np.ndarray:
    """The runner's off-policy online loop (``replay_loop``) for ``env_steps`` more env steps at
    UTD ``learner.config.run.utd``, one update dispatch per chunk: ``[wall, cpu]`` seconds."""
    from dprl.run.runner import replay_loop
    from dprl.run.schedule import Schedule

    run = learner.config.run
    run.online_steps = learner.counters["env_steps"] + env_steps
    start = clocks()
    replay_loop(learner, executor, Schedule.of(run, "online"))
    return clocks() - start


# ---- env steps ----------------------------------------------------------------------------------
def env_step_ms(env_id: str, steps: int) -> float:
    """Wall ms of one step of ``env_id`` (random actions, resets included)."""
    from dprl.envs.vector import make_env

    env = make_env(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    env.close()
    return 1e3 * (time.perf_counter() - start) / steps


def chunk_env_step_clocks(executor, horizon: int, action_dim: int, steps: int) -> np.ndarray:
    """``[wall, cpu]`` seconds of one env step with the online loop's bookkeeping (``run_chunk``
    of random chunks ``[E, horizon, action_dim]``), over ``steps`` env steps."""
    from dprl.run.collect import run_chunk

    rng, done, start = np.random.default_rng(0), 0, clocks()
    while done < steps:
        shape = (executor.vec_env.num_envs, horizon, action_dim)
        chunk = rng.uniform(-1, 1, shape).astype(np.float32)
        done += len(run_chunk(executor, chunk, steps - done)["actions"])
    return (clocks() - start) / done


def acting_env_steps_per_s(agent, executor, env_steps: int) -> float:
    """Env steps per second with ``agent`` acting (``sample_actions`` on the executor's
    observations, chunks run by the executor), compile excluded."""
    key = jax.random.PRNGKey(0)
    agent.sample_actions(jnp.asarray(executor.policy_observations()), key)  # compile
    done, start = 0, time.perf_counter()
    while done < env_steps:
        key, k = jax.random.split(key)
        chunks, _ = agent.sample_actions(jnp.asarray(executor.policy_observations()), k)
        done += int(executor.step_chunks(np.asarray(chunks))["valid"].sum())
    return done / (time.perf_counter() - start)


# ---- synthetic data -----------------------------------------------------------------------------
def hopper_executor(config):
    """A ``ChunkExecutor`` over one Hopper-v5 env acting as ``config`` says, reset."""
    from dprl.envs.vector import ChunkExecutor, VecEnv

    executor = ChunkExecutor(VecEnv("Hopper-v5", 1, seed=0), act_steps=config.act_steps,
                             obs_history=config.obs_history)
    executor.reset()
    return executor


def denoising_steps(actor) -> int | None:
    """The steps of one action sample (None: a one-step Gaussian actor, RLPD's)."""
    model = actor.get("model")
    return (actor.flow_steps if model == "flow" else
            (actor.sampling_steps or actor.diffusion_steps) if model == "diffusion" else None)


def synthetic_buffer(obs_dim: int, action_dim: int, size: int = 20_000,
                     episode_len: int = 1000):
    """A ``Buffer`` of random transitions in episodes of ``episode_len`` (speed only)."""
    from dprl.data.buffer import Buffer
    from dprl.data.offline import Normalizer, OfflineData

    rng = np.random.default_rng(0)
    dones = np.zeros(size, bool)
    dones[episode_len - 1::episode_len] = True
    dones[-1] = True
    obs = rng.standard_normal((size, obs_dim)).astype(np.float32)
    data = OfflineData(observations=obs,
                       actions=rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
                       rewards=rng.standard_normal(size).astype(np.float32),
                       terminals=np.zeros(size, bool), timeouts=dones, dones=dones,
                       next_observations=np.roll(obs, -1, 0))
    return Buffer.from_offline(data, Normalizer.identity(obs_dim))


def synthetic_rollout(agent, obs_dim: int, steps: int, num_envs: int, key) -> dict:
    """A rollout of ``steps x num_envs`` chunk-steps in ``collect_rollout``'s schema: random
    observations, chunks and chains from the agent's own sampler (one call per step, as when
    collecting), random rewards and episode ends."""
    T, E = steps, num_envs
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((T, E, obs_dim)).astype(np.float32)
    sample = jax.jit(lambda o, k: agent.sample_actions(o, k))
    acted = [sample(jnp.asarray(o), k) for o, k in zip(obs, jax.random.split(key, T))]
    dones = rng.random((T, E)) < 0.01
    return {"observations": obs, "actions": jnp.stack([c for c, _ in acted]),
            "aux": jax.tree.map(lambda *x: jnp.stack(x), *[a for _, a in acted]),
            "rewards": rng.standard_normal((T, E)).astype(np.float32),
            "terminals": (dones & (rng.random((T, E)) < 0.5)).astype(np.float32),
            "dones": dones.astype(np.float32), "next_observations": obs.copy(),
            "last_observations": rng.standard_normal((E, obs_dim)).astype(np.float32)}


# ---- the benchmark's tables ---------------------------------------------------------------------
def acting_markdown(results: list[dict]) -> list[str]:
    """The acting table: multi-step vs one-step latency at batch 1 and the control rates."""
    rows = [r for r in results if "env_step_ms" in r]
    if not rows:
        return []

    def cell(r, key, fmt):
        return fmt.format(r[key]) if key in r else "-"

    env_ms = statistics.median([r["env_step_ms"] for r in rows])
    lines = ["", f"Acting at batch 1: multi-step vs one-step (act_with='one_step'; "
             f"N one-step candidates where the agent picks by Q) and mu alone, ms per call, "
             f"timed interleaved; control rate = actions/s with a real Hopper-v5 env step "
             f"({env_ms:.3f} ms) and a chunk per act_steps actions.", "",
             "| agent | act_steps | multi-step ms | one-step ms | mu alone ms | speedup "
             "| actions/s multi-step | actions/s one-step | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        note = r.get("one_step_unavailable") or ""
        lines.append(
            f"| {r['agent']} | {r['act_steps']} | {cell(r, 'latency_ms_b1_multi_step', '{:.3f}')} "
            f"| {cell(r, 'latency_ms_b1_one_step', '{:.3f}')} "
            f"| {cell(r, 'latency_ms_b1_mu', '{:.3f}')} | {cell(r, 'one_step_speedup', '{:.1f}x')} "
            f"| {cell(r, 'control_actions_per_s_multi_step', '{:.0f}')} "
            f"| {cell(r, 'control_actions_per_s_one_step', '{:.0f}')} | {note} |")
    return lines


def markdown_tables(results: list[dict], machine: dict) -> str:
    """``experiments/bench.py``'s report (its ``results`` and ``machine``) as markdown tables:
    updates and acting next to the references and the matmul roofline, the online phase, acting
    multi- vs one-step."""
    if all("updates_per_s" not in r for r in results):   # --acting-only
        return "\n".join(acting_markdown(results)[1:])
    peak, peak_cpu = machine["matmul_gflop_s"], machine["matmul_gflop_per_cpu_s"]
    lines = [f"Machine: {machine['processor']} ({machine['cpus']} CPUs, JAX {machine['jax']} on "
             f"{machine['backend']}); fp32 matmul {peak:.0f} GFLOP/s, {peak_cpu:.0f} GFLOP per "
             f"CPU second (2048^3); at the agents' shapes [M, K] x [K, N] (chains of 20 "
             f"matmuls): " + ", ".join(f"{shape} {rate:.0f}" for shape, rate
                                       in machine["matmul_gflop_s_by_shape"].items())
             + " GFLOP/s.", "",
             "| agent | updates/s | CPU ms/update | matmul GFLOP/update "
             "| % of matmul roofline (wall; CPU) "
             "| latency b=1, ms (floor: its FLOPs at the matmul rate) "
             "| env steps/s (Hopper, acting) | reference "
             "| dprl / reference (target) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['agent']} | error: {r['error']} | | | | | | | |")
            continue
        unit = ""
        if "minibatch_pairs" in r:
            unit = f" minibatch steps/s at {r['minibatch_pairs']:,} pairs ({r['rollout']})"
        ref, ratio = r.get("reference"), ""
        if ref:
            target = (f", target <= {ref['target_latency_ms']} ms" if ref["target_latency_ms"]
                      else "")
            ref_s = (f"{ref['code']}: {ref['updates_per_s']:g} {ref['unit']}, "
                     f"{ref['cpu_ms_per_update']:.0f} CPU ms; {ref['latency_ms_b1']:.2f} ms "
                     f"({ref['latency_note']}{target}) [{ref['source']}]")
            ratio = (f"{r['ratio']:.2f}x wall, {r['cpu_ratio']:.2f}x CPU "
                     f"(>= {ref['target_ratio']}x)")
        else:
            ref_s = "none"
        lines.append(f"| {r['agent']} | {r['updates_per_s']:.2f}{unit} | "
                     f"{r['cpu_ms_per_update']:.1f} | {r['update_gflop']:.3g} "
                     f"| {100 * r['achieved_gflop_s'] / peak:.0f}%; "
                     f"{100 * r['update_gflop'] / (r['cpu_ms_per_update'] / 1e3) / peak_cpu:.0f}% "
                     f"| {r['latency_ms_b1']:.2f} ({r['latency_floor_ms_b1']:.2f}) | "
                     f"{r['env_steps_per_s']:.0f} | {ref_s} | {ratio} |")
    return "\n".join(lines + online_markdown(results) + acting_markdown(results))


def online_markdown(results: list[dict]) -> list[str]:
    """The off-policy online phase's table: time per env step vs its parts timed alone."""
    online = [r for r in results if "online_overhead" in r]
    if not online:
        return []
    lines = ["", "Off-policy online phase on Hopper-v5, one replay step per env chunk: time per "
             "env step vs its parts timed alone (UTD x update + action / act_steps + env step); "
             "target overhead <= 1.2 (wall; CPU: this process's CPU time, steadier on a shared "
             "machine).", "",
             "| agent | UTD | env steps/s | ms per env step | parts (ms): update, action, env "
             "step | overhead wall (CPU) | CPU ms per env step |", "|---|---|---|---|---|---|---|"]
    for r in online:
        lines.append(
            f"| {r['agent']} | {r['online_utd']:g} | {r['online_env_steps_per_s']:.1f} | "
            f"{r['online_ms_per_env_step']:.2f} | {r['online_parts_ms_per_env_step']:.2f}: "
            f"{r['online_update_ms']:.2f}, {r['online_action_ms']:.2f}, "
            f"{r['online_env_step_ms']:.3f} | {r['online_overhead']:.2f}x "
            f"({r['online_overhead_cpu']:.2f}x) | {r['online_cpu_ms_per_env_step']:.2f} |")
    return lines


# ---- pixels -------------------------------------------------------------------------------------
def rss_mib() -> float:
    """This process's resident memory now (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def pixel_dataset(num_frames: int, episode_len: int = 100, size: int = 64, state_dim: int = 3,
                  action_dim: int = 2, augment: str = "shift", seed: int = 0):
    """Random pixel ``OfflineData`` (speed and memory only): about ``num_frames`` uint8 frames
    ``[size, size, 3]`` in episodes of ``episode_len`` transitions, every frame stored once
    (``dprl.data.frames``: an episode of T transitions holds T + 1 frames)."""
    from dprl.data.frames import Frames, PixelObservations
    from dprl.data.offline import OfflineData
    from dprl.envs.pixels import frame_layout

    rng = np.random.default_rng(seed)
    episodes = max(num_frames // (episode_len + 1), 1)
    n = episodes * episode_len
    dones = np.zeros(n, bool)
    dones[episode_len - 1::episode_len] = True
    obs_frame, _ = frame_layout(dones)
    frames = rng.integers(0, 256, (n + episodes, size, size, 3), dtype=np.uint8)
    state = rng.standard_normal((n + episodes, state_dim)).astype(np.float32)
    return OfflineData(
        observations=PixelObservations(image=Frames(frames, obs_frame), state=state[obs_frame]),
        actions=rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32), terminals=np.zeros(n, bool),
        timeouts=dones.copy(), dones=dones,
        next_observations=PixelObservations(image=Frames(frames, obs_frame + 1),
                                            state=state[obs_frame + 1]),
        metadata={"augment": augment})


def pixel_memory(num_frames: int, size: int = 64, action_dim: int = 2,
                 augment: str = "shift") -> tuple:
    """``(buffer, normalizer, memory)`` of a ``pixel_dataset`` of ``num_frames`` frames loaded
    into a ``Buffer``: resident memory (MiB) grown by the host frames and then by the device
    ``Buffer`` (on a CPU backend the same memory, the host copy still held), and bytes per
    transition on the host and on the device."""
    from dprl.data.buffer import Buffer
    from dprl.data.frames import bytes_per_transition
    from dprl.data.offline import Normalizer

    base = rss_mib()
    data = pixel_dataset(num_frames, size=size, action_dim=action_dim, augment=augment)
    host = rss_mib() - base
    normalizer = Normalizer.fit(data.observations)
    buffer = jax.block_until_ready(Buffer.from_offline(data, normalizer))
    memory = {"frames": int(data.observations["image"].store.shape[0]),
              "frame_shape": list(data.observations["image"].shape[1:]),
              "transitions": int(data.size),
              "host_bytes_per_transition": round(bytes_per_transition(data), 1),
              "device_bytes_per_transition": round(buffer.nbytes_per_transition(), 1),
              "rss_mib_host_frames": round(host, 1),
              "rss_mib_with_device_buffer": round(rss_mib() - base, 1)}
    return buffer, normalizer, memory


def pixel_agent_row(agent, buffer, config, batch_size: int, fuse: int, repeats: int,
                    act_repeats: int) -> dict:
    """Fused offline updates per second of a pixel ``agent`` at ``batch_size`` (``fuse`` per
    dispatch, median of ``repeats`` dispatches after the compiling one) and its batch-1
    ``sample_actions`` latency (median of ``act_repeats`` calls)."""
    from dprl.run.updates import fused_updates

    kwargs = dict(num_steps=fuse, method="update", batch_size=batch_size,
                  horizon=config.horizon, obs_history=config.obs_history)
    run = jax.jit(lambda a, k: fused_updates(a, buffer, None, k, **kwargs)[1])
    start = time.perf_counter()
    jax.block_until_ready(run(agent, jax.random.PRNGKey(0)))
    compile_s = time.perf_counter() - start
    times = []
    for i in range(repeats):        # no second warm-up call: one update may take seconds here
        start = clocks()
        jax.block_until_ready(run(agent, jax.random.PRNGKey(i + 1)))
        times.append(clocks() - start)
    per_update = np.median(np.array(times), axis=0) / fuse
    obs = jax.tree.map(lambda x: x[:1], buffer.sample(jax.random.PRNGKey(2), 1, 1,
                                                      config.obs_history)["observations"])
    act = time_calls(lambda i: agent.sample_actions(obs, jax.random.PRNGKey(i)), act_repeats)
    return {"batch_size": batch_size, "updates_per_s": 1.0 / per_update[0],
            "cpu_ms_per_update": 1e3 * per_update[1], "fused_updates_per_dispatch": fuse,
            "timed_dispatches": repeats, "first_dispatch_s": compile_s,
            "latency_ms_b1": 1e3 * act[0], "timed_actions": act_repeats}


def pixel_markdown(pixels: dict) -> list[str]:
    """The pixel tables: DQL / QC updates and batch-1 latency, and the dataset's memory."""
    m = pixels["memory"]
    lines = ["", f"Pixels ({'x'.join(map(str, m['frame_shape']))} frames, encoder "
             f"{pixels['encoder']}):", "",
             "| agent | batch | updates/s | CPU ms / update | batch-1 action ms "
             "| first dispatch s |",
             "|---|---|---|---|---|---|"]
    for r in pixels["agents"]:
        if "error" in r:
            lines.append(f"| {r['agent']} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['agent']} | {r['batch_size']} | {r['updates_per_s']:.3g} | "
                     f"{r['cpu_ms_per_update']:.0f} | {r['latency_ms_b1']:.1f} | "
                     f"{r['first_dispatch_s']:.0f} |")
    lines += ["", "| frames | transitions | host RSS MiB (frames) | RSS MiB (+ device Buffer) | "
              "host B / transition | device B / transition |", "|---|---|---|---|---|---|",
              f"| {m['frames']} | {m['transitions']} | {m['rss_mib_host_frames']:.0f} | "
              f"{m['rss_mib_with_device_buffer']:.0f} | {m['host_bytes_per_transition']:.0f} | "
              f"{m['device_bytes_per_transition']:.0f} |"]
    return lines
