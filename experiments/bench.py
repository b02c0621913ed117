"""Speed of every agent on this machine at the reference implementations' configs, next to the
references' own figures and to the machine's matmul throughput.

    python experiments/bench.py [--agents=bc,dql,guided,dppo,qc,qc:qc-fql] [--out bench.json]
        [--quick] [--acting-only]

An entry ``<file>:<preset>`` measures a named preset of ``configs/<file>.py`` (``qc:qc-fql``:
QC-FQL's one-step policy). Per agent, through the agent interface (so every registered agent is
measured the same way):
  updates_per_s        fused gradient updates per second (batch 256, ``--fuse`` updates per jit
                       dispatch via lax.scan); DPPO: PPO minibatch steps per second at the paper's
                       minibatch of 50,000 (sample, denoising step) pairs, whole update included
  update_gflop         matmul FLOPs of one update (GFLOP), counted from the program's jaxpr with
                       every scan iteration counted (XLA's cost analysis counts a loop body once)
  % of roofline        update_gflop x updates/s over the machine's fp32 matmul GFLOP/s (2048^3),
                       and the same per CPU second (update_gflop / CPU time vs the matmul's)
  cpu_ms_per_update    process CPU time (all threads) per update: steadier than wall time on a
                       shared machine, where other jobs take turns on the cores
  latency_ms_b1        ``sample_actions`` on one observation, acting as its config says (multi- or
                       one-step): the acting table's median of many calls, ms
  latency_floor_ms_b1  that action's matmul FLOPs (``latency_gflop_b1``) at the machine's fp32
                       matmul rate: the latency no implementation reaches here without fewer FLOPs
  env_steps_per_s      online env steps per second on Hopper-v5 with the agent acting (policy
                       calls + MuJoCo), with its chunking (act_steps actions per call)
  online_*             off-policy agents (``--online-agents``): the online phase on Hopper-v5 at
                       ``--online-utd`` as the runner runs it (one replay step per env chunk),
                       env steps/s and its overhead: wall time per env step over the sum of its
                       parts timed alone (UTD x mixed-batch update + action / act_steps + env
                       step); ``--online-ab`` adds the three-dispatch loop it replaced
  reference            the reference implementation's figure (``REFERENCES``: where it comes from)
                       and dprl / reference
  acting               (issue 18) batch-1 latency of the agent acting multi-step and acting
                       one-step (``act_with='one_step'``: N one-step candidates where the agent
                       picks by Q), and of the one-step actor mu alone (one sample), timed
                       interleaved in turns of 10 calls so all see the same machine load; and the
                       control rate each sustains, actions/s = 1 / (latency / act_steps + one
                       real Hopper-v5 env step): a chunk is computed once per act_steps actions.
                       guided's one-step teacher needs guidance_mode='score' (set for that
                       column); dppo acts with its chain (on-policy: no one-step column);
                       qc:qc-fql is one-step by construction (no multi-step column).
                       ``--acting-only`` measures only this (no updates, no online phase).
Observations and actions are Hopper-shaped (O = 11, A = 3); data are random (speed only).
Configs are the references' (``REFERENCE_CONFIGS``): Diffusion-QL's T = 5 VP 3x256 Mish actor with
twin critics, QC's best-of-32 over 10-step flows of 4x512 GELU nets, DPPO's hopper finetuning
(20 denoising steps, last 10 finetuned, 3x512 residual MLP, horizon 4, 40 envs x 500 steps).
"""
from __future__ import annotations

import argparse
import functools
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

# The reference implementations' figures on this machine kind, each timed with a small driver
# around the reference's own update and action functions (not in this repository; see issue 16),
# batch 256 (DPPO: 50,000-pair minibatches), Hopper-sized synthetic data. Measured 2026-12-04 on an
# idle 2 vCPU AMD EPYC (AVX-512, 32 MiB L3; 192-212 GFLOP/s fp32 matmul at 2048^3, the hardware's
# peak: 2 cores x 32 FLOP/cycle), nothing else running, in two sittings around this script's run
# (figures: the mean of the two; each sitting in ``source``). ``issue`` is the figure issue 16
# recorded on an earlier machine of this kind, for context.
REFERENCES = {  # every run: docs/results/references_2026-12-04.json
    "dql": dict(code="Diffusion-QL (PyTorch 2.13 CPU, 2 threads)", updates_per_s=24.8,
                cpu_ms_per_update=80.6, latency_ms_b1=3.44, unit="updates/s",
                latency_note="50 candidates", issue="31.3 updates/s, 2.25 ms",
                source="2026-12-04 idle, 2 sittings of 3 x 50 updates (24.1, 25.5/s; 82.8, "
                       "78.3 CPU ms; 3.63, 3.25 ms)",
                target_ratio=3.0, target_latency_ms=0.75),
    "qc": dict(code="qc (JAX 0.6.0, its pinned version)", updates_per_s=1.02,
               cpu_ms_per_update=1922.0, latency_ms_b1=7.60, unit="updates/s",
               latency_note="best-of-32 chunk", issue="1.66 updates/s, 2.66 ms",
               source="2026-12-04 idle, 2 sittings of 3 x 3 updates (1.007, 1.042/s; 1949, 1894 "
                      "CPU ms; 8.29, 6.90 ms). The same code on dprl's JAX 0.10.2: 0.953/s, "
                      "2054 CPU ms, 5.47 ms",
               target_ratio=1.3, target_latency_ms=2.0),
    "dppo": dict(code="dppo (PyTorch 2.13 CPU, 2 threads)", updates_per_s=0.300,
                 cpu_ms_per_update=5779.0, latency_ms_b1=7.32,
                 unit="minibatch steps/s at 50,000", latency_note="one chunk, 20 steps",
                 issue="0.38 minibatch steps/s (an earlier machine)",
                 source="2026-12-04 idle, 2 sittings of 2 minibatch steps (0.294, 0.306/s; "
                        "5843, 5715 CPU ms; 7.43, 7.22 ms)", target_ratio=2.0,
                 target_latency_ms=None),
}


def reference_config(name: str, config):
    """The reference implementation's settings where the agent config differs (speed only)."""
    if name == "dppo":
        config.actor.residual = True     # dppo hopper: residual_style True (3x512, one block)
        config.run.num_envs = 40         # dppo hopper: n_envs 40
        config.run.rollout_steps = 500   # dppo hopper: n_steps 500
        config.ppo_batch_size = 5000     # x 10 finetuned steps = dppo's batch_size 50,000
    return config


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
    """Matmul FLOPs of ``fn(*args)`` (every scan iteration counted)."""
    flops, whiles = jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)
    if whiles:
        print(f"[bench] note: {whiles} while loop(s) counted once", file=sys.stderr)
    return flops



def matmul_gflops(n: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """fp32 matmul throughput of this machine under XLA (the roofline we compare to): GFLOP per
    wall second (best of ``repeats``) and GFLOP per CPU second of this process (all threads)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 2 * n**3 / min(times) / 1e9, 2 * n**3 / min(cpu) / 1e9


# The agents' own matmul shapes [M, K] x [K, N]: DQL acting (50 candidates) and updating (batch
# 256) with 256-wide layers; QC's best-of-32 x 256 rows through 512-wide layers.
AGENT_MATMUL_SHAPES = ((50, 256, 256), (256, 256, 256), (8192, 512, 512))


def matmul_chain_gflops(m: int, k: int, n: int, chain: int = 20, repeats: int = 30) -> float:
    """GFLOP/s of a jitted chain of ``chain`` dependent ``[m, k] x [k, n]`` matmuls (median of
    ``repeats``): the best rate an agent's matmuls of that shape get here, whatever else it does."""
    weights = [jnp.full((k, n), 0.01, jnp.float32) for _ in range(chain)]
    f = jax.jit(lambda x, ws: functools.reduce(jnp.matmul, ws, x))
    x = jnp.ones((m, k), jnp.float32)
    f(x, weights).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(x, weights).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * m * k * n * chain / statistics.median(times) / 1e9


def synthetic_buffer(size: int = 20_000, episode_len: int = 1000):
    from dprl.data.buffer import Buffer
    from dprl.data.offline import Normalizer, OfflineData

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
    from dprl.run.config import load_config_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    file, sep, preset = name.partition(":")
    config = load_config_file(os.path.join(root, "configs", f"{file}.py") + sep + preset)
    config.action_dim = ACT_DIM
    config.run.batch_size = 256
    config = reference_config(name, config)
    if quick:
        config.actor.hidden_dims = (32, 32, 32) if config.actor.get("residual") else (32, 32)
        for key in config:
            if key.endswith("hidden_dims"):
                config[key] = (32, 32)
        config.run.batch_size = 32
        config.run.num_envs = min(config.run.num_envs, 4)
        config.run.rollout_steps = min(config.run.rollout_steps, 4)
        if "ppo_batch_size" in config:
            config.ppo_batch_size = 4
    return config


def bench_off_policy_updates(agent, buffer, config, fuse: int, repeats: int) -> dict:
    from dprl.run.updates import fused_updates

    kwargs = dict(num_steps=fuse, method="update", batch_size=config.run.batch_size,
                  horizon=config.horizon, obs_history=config.obs_history)
    key = jax.random.PRNGKey(1)
    one = functools.partial(fused_updates, **dict(kwargs, num_steps=1))
    flops = matmul_flops(one, agent, buffer, None, key)
    agent, info = fused_updates(agent, buffer, None, key, **kwargs)  # warm up
    jax.block_until_ready(info)
    times, cpu = [], []
    for i in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        agent, info = fused_updates(agent, buffer, None, jax.random.PRNGKey(i), **kwargs)
        jax.block_until_ready(info)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    per_update = statistics.median(times) / fuse
    return {"updates_per_s": 1.0 / per_update, "fused_updates_per_dispatch": fuse,
            "cpu_ms_per_update": 1e3 * statistics.median(cpu) / fuse,
            "update_gflop": flops / 1e9, "achieved_gflop_s": flops / 1e9 / per_update}, agent


def hopper_env_step_ms(steps: int) -> float:
    """Wall ms of one real Hopper-v5 env step (random actions, resets included)."""
    from dprl.envs.vector import make_env

    env = make_env("Hopper-v5")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, ACT_DIM)).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    env.close()
    return 1e3 * (time.perf_counter() - start) / steps


def one_step_variant(config):
    """``(config acting one-step, None)`` or ``(None, why not)``; the agent's own config when
    it already acts one-step (qc:qc-fql)."""
    from agents import get_agent
    from dprl.models.one_step import acts_one_step, check_act_with

    one = config.copy_and_resolve_references()
    one.act_with = "one_step"
    if "guidance_mode" in one:
        one.guidance_mode = "score"   # 'mean' guidance vanishes in the deterministic teacher
    try:
        check_act_with(one, get_agent(config.agent_name).on_policy)
    except ValueError as e:
        return None, str(e).split(";")[0]
    return (config if acts_one_step(config) else one), None


def interleaved_latency_ms(fns: dict, obs, repeats: int, block: int = 10) -> dict:
    """Median wall ms per call of each ``fn(obs, key)``, called in turns of ``block`` calls
    (A x block, B x block, ..., A x block, ...) so that each sees the same load on a shared
    machine; the median drops the first call of a turn (its weights are out of cache after the
    other actor's turn, which an actor acting alone does not see). Keys are made beforehand."""
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


def bench_acting(agent_cls, agent, config, example, env_step_ms: float, repeats: int) -> dict:
    """Batch-1 latency of the agent acting multi-step and one-step and of mu alone, and the
    control rate (actions/s, Hopper-v5 env step included) each sustains."""
    from dprl.models.one_step import acts_one_step

    one_config, why_not = one_step_variant(config)
    fns = {}
    if not acts_one_step(config):
        fns["multi_step"] = agent.sample_actions
    if one_config is not None:
        one = agent if one_config is config else agent_cls.create(0, example, one_config)
        fns["one_step"] = one.sample_actions
        fns["mu"] = jax.jit(lambda o, k, one=one: one.one_step.sample(o, k))
    obs = jnp.zeros((1, OBS_DIM) if config.obs_history == 1
                    else (1, config.obs_history, OBS_DIM))
    latency = interleaved_latency_ms(fns, obs, repeats)
    out = {"act_steps": config.act_steps, "env_step_ms": env_step_ms,
           "one_step_unavailable": why_not}
    for name, ms in latency.items():
        out[f"latency_ms_b1_{name}"] = ms
        out[f"latency_gflop_b1_{name}"] = matmul_flops(fns[name], obs,
                                                       jax.random.PRNGKey(0)) / 1e9
        if name != "mu":
            out[f"control_actions_per_s_{name}"] = 1e3 / (ms / config.act_steps + env_step_ms)
    if "one_step" in latency and "multi_step" in latency:
        out["one_step_speedup"] = latency["multi_step"] / latency["one_step"]
    return out


def bench_env_steps(agent, config, num_envs: int, env_steps: int) -> float:
    from dprl.envs.vector import ChunkExecutor, VecEnv

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


def synthetic_rollout(agent, config, key) -> dict:
    """A rollout of ``rollout_steps x num_envs`` chunk-steps in ``collect_rollout``'s schema:
    random observations, chunks and chains from the agent's own sampler, random rewards."""
    T, E = config.run.rollout_steps, config.run.num_envs
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((T, E, OBS_DIM)).astype(np.float32)
    sample = jax.jit(lambda o, k: agent.sample_actions(o, k))
    keys = jax.random.split(key, T)
    chunks, aux = [], []
    for t in range(T):  # one env step at a time, as when collecting
        c, a = sample(jnp.asarray(obs[t]), keys[t])
        chunks.append(c)
        aux.append(a)
    dones = rng.random((T, E)) < 0.01
    return {"observations": obs, "actions": jnp.stack(chunks),
            "aux": jax.tree.map(lambda *x: jnp.stack(x), *aux),
            "rewards": rng.standard_normal((T, E)).astype(np.float32),
            "terminals": (dones & (rng.random((T, E)) < 0.5)).astype(np.float32),
            "dones": dones.astype(np.float32), "next_observations": obs.copy(),
            "last_observations": rng.standard_normal((E, OBS_DIM)).astype(np.float32)}


def bench_on_policy(agent, config, repeats: int) -> dict:
    """PPO: one whole update (values, GAE, old log-probs, epochs x minibatches) on a synthetic
    rollout of the config's size, reported per minibatch step."""
    rollout = synthetic_rollout(agent, config, jax.random.PRNGKey(0))
    N = config.run.rollout_steps * config.run.num_envs
    mb = min(config.ppo_batch_size, N)
    steps = config.update_epochs * (N // mb)
    flops = matmul_flops(lambda a, r: a.update(r), agent, rollout)
    agent2, info = agent.update(rollout)  # compile
    jax.block_until_ready(info)
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        agent2, info = agent.update(rollout)
        jax.block_until_ready(info)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    upd = statistics.median(times)
    K = config.ft_denoising_steps
    return {"updates_per_s": steps / upd, "update_s": upd, "minibatch_steps_per_update": steps,
            "cpu_ms_per_update": 1e3 * statistics.median(cpu) / steps,
            "minibatch_pairs": mb * K, "applied_fraction": float(info["ppo/applied"]),
            "rollout": f"{config.run.rollout_steps} chunk-steps x {config.run.num_envs} envs",
            "update_gflop": flops / 1e9 / steps, "achieved_gflop_s": flops / 1e9 / upd}


def online_schedule(config, utd: float):
    from dprl.run.schedule import Schedule

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
    from dprl.data.buffer import Buffer, transition_block
    from dprl.run.collect import run_chunk
    from dprl.run.updates import replay_step

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
    from dprl.data.buffer import Buffer
    from dprl.run.collect import run_chunk
    from dprl.run.updates import fused_updates

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
    from dprl.data.buffer import Buffer
    from dprl.run.collect import run_chunk
    from dprl.run.updates import fused_updates

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
    from dprl.envs.vector import ChunkExecutor, VecEnv

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
    from dprl.models.one_step import acts_one_step

    config = load_agent_config(name, args.quick)
    buffer = synthetic_buffer(2_000 if args.quick else 20_000)
    example = jax.device_get(buffer.sample(jax.random.PRNGKey(0), 2, config.horizon,
                                           config.obs_history))
    agent_cls = get_agent(config.agent_name)
    agent = agent_cls.create(0, example, config)
    acting = bench_acting(agent_cls, agent, config, example, args.env_step_ms,
                          args.acting_repeats)
    if args.acting_only:
        return {"agent": name, "horizon": config.horizon,
                "actor_hidden": list(config.actor.hidden_dims), **acting}
    result = {"agent": name, "batch_size": config.run.batch_size, "horizon": config.horizon,
              "act_steps": config.act_steps, "actor_hidden": list(config.actor.hidden_dims),
              "model": config.actor.model,
              "denoising_steps": (config.actor.flow_steps if config.actor.model == "flow"
                                  else config.actor.sampling_steps or config.actor.diffusion_steps)}
    if agent_cls.on_policy:
        result.update(bench_on_policy(agent, config, min(args.repeats, 2)))  # ~20 s an update
    else:
        # A QC update is ~165 GFLOP (about a second here): a few per dispatch are plenty.
        fuse = min(args.fuse, 5) if name == "qc" else args.fuse
        stats, agent = bench_off_policy_updates(agent, buffer, config, fuse, args.repeats)
        result.update(stats)
    # The agent's own way of acting, timed once (in the acting table, keys made beforehand).
    how = "one_step" if acts_one_step(config) else "multi_step"
    result["latency_ms_b1"] = acting[f"latency_ms_b1_{how}"]
    # What the action's matmuls alone would take at the machine's best fp32 matmul rate: no
    # implementation on this machine acts faster without doing fewer FLOPs.
    result["latency_gflop_b1"] = acting[f"latency_gflop_b1_{how}"]
    result["latency_floor_ms_b1"] = 1e3 * result["latency_gflop_b1"] / args.matmul_gflop_s
    result["env_steps_per_s"] = bench_env_steps(agent, config, 1, args.env_steps)
    ref = REFERENCES.get(name)
    if ref and not args.quick:
        result["reference"] = ref
        result["ratio"] = result["updates_per_s"] / ref["updates_per_s"]
        result["cpu_ratio"] = ref["cpu_ms_per_update"] / result["cpu_ms_per_update"]
    if not agent_cls.on_policy and name in args.online_agents.split(","):
        result.update(bench_online(agent, buffer, config, args))
    return {**result, **acting}


def acting_markdown(results: list[dict]) -> list[str]:
    rows = [r for r in results if "env_step_ms" in r]
    if not rows:
        return []

    def cell(r, key, fmt):
        return fmt.format(r[key]) if key in r else "-"

    env_ms = statistics.median([r["env_step_ms"] for r in rows])
    lines = ["", f"Acting at batch 1 (issue 18): multi-step vs one-step (act_with='one_step'; "
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


def markdown(results: list[dict], machine: dict) -> str:
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
    parser.add_argument("--agents", default="bc,dql,guided,dppo,qc,qc:qc-fql")
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
    parser.add_argument("--acting-only", action="store_true",
                        help="only the multi-step vs one-step acting table (issue 18)")
    parser.add_argument("--acting-repeats", type=int, default=200,
                        help="interleaved calls per actor for the acting latencies")
    parser.add_argument("--quick", action="store_true", help="tiny networks (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.fuse, args.repeats, args.env_steps, args.online_env_steps = 5, 2, 100, 20
        args.acting_repeats = 10
    args.env_step_ms = hopper_env_step_ms(200 if args.quick else 5000)

    machine = {"processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
               "devices": [str(d) for d in jax.devices()],
               }
    machine["matmul_gflop_s"], machine["matmul_gflop_per_cpu_s"] = matmul_gflops(
        512 if args.quick else 2048)
    args.matmul_gflop_s = machine["matmul_gflop_s"]
    machine["matmul_gflop_s_by_shape"] = {
        "x".join(map(str, shape)): matmul_chain_gflops(*shape, repeats=3 if args.quick else 30)
        for shape in AGENT_MATMUL_SHAPES}
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
