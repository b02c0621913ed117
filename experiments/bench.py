"""Speed of every agent on this machine at the reference implementations' configs, next to the
references' own figures and to the machine's matmul throughput.

    python experiments/bench.py [--agents=bc,dql,guided,dppo:paper,qc,qc:qc-fql,rlpd,dsrl] [--quick]

An entry ``<file>:<preset>`` measures a named preset of ``configs/<file>.py`` (``qc:qc-fql``:
QC-FQL's one-step policy). Per agent, through the agent interface (so every registered agent is
measured the same way):
  updates_per_s        fused gradient updates/s (batch 256, ``--fuse`` per dispatch); DPPO: PPO
                       minibatch steps/s at the paper's 50,000 (sample, denoising step) pairs
  update_gflop         matmul GFLOP of one update, every scan iteration counted (from the jaxpr)
  % of roofline        update_gflop x updates/s over the fp32 matmul GFLOP/s (2048^3), and the
                       same per CPU second
  cpu_ms_per_update    process CPU time (all threads) per update: steadier on a shared machine
  latency_ms_b1        ``sample_actions`` on one observation, acting as its config says (ms)
  latency_floor_ms_b1  that action's matmul FLOPs at the machine's matmul rate
  env_steps_per_s      Hopper-v5 env steps/s with the agent acting (act_steps actions per call)
  online_*             ``--online-agents``: the online phase on Hopper-v5 at ``--online-utd`` as
                       the runner runs it (``replay_loop``), env steps/s and its overhead over
                       its parts timed alone (UTD x update + action / act_steps + env step)
  reference            the reference implementation's figure (``REFERENCES``), dprl / reference
  acting               batch-1 latency acting multi-step, one-step (``act_with='one_step'``: N
                       candidates of mu, the agent picks by Q) and of mu alone, interleaved in
                       turns of 10 calls, and the control rate each sustains: actions/s = 1 /
                       (latency / act_steps + one Hopper-v5 env step). guided's teacher uses
                       guidance_mode='score'; dppo has no one-step column, qc:qc-fql no
                       multi-step one. ``--acting-only`` measures only this.
  pixels               ``--pixels`` (only these rows): DQL and QC with ``--pixel-encoder`` on
                       random 64x64x3 frames in a pixel ``Buffer`` (shift augmentation), fused
                       updates/s at batch 256 and batch-1 latency, few dispatches (an update
                       takes minutes on a CPU); the RSS of a ``--pixel-frames`` dataset.
Observations and actions are Hopper-shaped (O = 11, A = 3); data are random (speed only).
Configs are the agents' own, which are the references': Diffusion-QL's T = 5 VP 3x256 Mish actor
with twin critics, QC's best-of-32 over 10-step flows of 4x512 GELU nets, DPPO's hopper finetuning
as ``configs/dppo.py:paper`` (20 denoising steps, last 10 finetuned, 3x512 residual actor, residual
3x256 Mish critic, horizon 4, 40 envs x 500 steps, minibatches of 50,000 pairs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp

from dprl.tools.speed import (acting_env_steps_per_s, bench_off_policy_updates,
                              chunk_env_step_clocks, denoising_steps, env_step_ms,
                              hopper_executor, interleaved_latency_ms, matmul_chain_gflops,
                              matmul_flops, matmul_gflops, markdown_tables, online_loop,
                              pixel_agent_row, pixel_markdown, pixel_memory, synthetic_buffer,
                              synthetic_rollout, time_calls, update_kwargs)

OBS_DIM, ACT_DIM = 11, 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The reference implementations' figures on this machine kind, each timed with a small driver
# around the reference's own update and action functions (not in this repository), batch 256
# (DPPO: 50,000-pair minibatches), Hopper-sized synthetic data. Measured 2026-12-04 on an idle 2
# vCPU AMD EPYC (AVX-512, 32 MiB L3; 192-212 GFLOP/s fp32 matmul at 2048^3, the hardware's peak:
# 2 cores x 32 FLOP/cycle), nothing else running, in two sittings around this script's run
# (figures: the mean of the two; each sitting in ``source``). ``issue`` is the figure recorded
# earlier on another machine of this kind, for context.
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
    "dppo:paper": dict(code="dppo (PyTorch 2.13 CPU, 2 threads)", updates_per_s=0.300,
                 cpu_ms_per_update=5779.0, latency_ms_b1=7.32,
                 unit="minibatch steps/s at 50,000", latency_note="one chunk, 20 steps",
                 issue="0.38 minibatch steps/s (an earlier machine)",
                 source="2026-12-04 idle, 2 sittings of 2 minibatch steps (0.294, 0.306/s; "
                        "5843, 5715 CPU ms; 7.43, 7.22 ms)", target_ratio=2.0,
                 target_latency_ms=None),
}


# The agents' own matmul shapes [M, K] x [K, N]: DQL acting (50 candidates) and updating (batch
# 256) with 256-wide layers; QC's best-of-32 x 256 rows through 512-wide layers.
AGENT_MATMUL_SHAPES = ((50, 256, 256), (256, 256, 256), (8192, 512, 512))


def load_agent_config(name: str, quick: bool):
    from dprl.run.config import load_config_file

    file, sep, preset = name.partition(":")
    config = load_config_file(os.path.join(ROOT, "configs", f"{file}.py") + sep + preset)
    config.action_dim = ACT_DIM
    config.run.batch_size = 256
    if quick:
        config.actor.hidden_dims = (32, 32, 32) if config.actor.get("residual") else (32, 32)
        for key in config:
            if key.endswith("hidden_dims"):  # a residual MLP takes an odd number of layers
                residual = config.get(key.replace("hidden_dims", "residual"))
                config[key] = (32, 32, 32) if residual else (32, 32)
        config.run.batch_size = 32
        config.run.num_envs = min(config.run.num_envs, 4)
        config.run.rollout_steps = min(config.run.rollout_steps, 4)
        if "ppo_batch_size" in config:
            config.ppo_batch_size = 4
    return config


def bench_on_policy(agent, config, repeats: int) -> dict:
    """PPO: one whole update (values, GAE, old log-probs, epochs x minibatches) on a synthetic
    rollout of the config's size, reported per minibatch step."""
    rollout = synthetic_rollout(agent, OBS_DIM, config.run.rollout_steps, config.run.num_envs,
                                jax.random.PRNGKey(0))
    N = config.run.rollout_steps * config.run.num_envs
    mb = min(config.ppo_batch_size, N)
    steps = config.update_epochs * (N // mb)
    flops = matmul_flops(lambda a, r: a.update(r), agent, rollout)
    upd = time_calls(lambda _: agent.update(rollout)[1], repeats)
    info = agent.update(rollout)[1]
    return {"updates_per_s": steps / upd[0], "update_s": upd[0],
            "minibatch_steps_per_update": steps, "cpu_ms_per_update": 1e3 * upd[1] / steps,
            "minibatch_pairs": mb * config.ft_denoising_steps,
            "applied_fraction": float(info["ppo/applied"]),
            "rollout": f"{config.run.rollout_steps} chunk-steps x {config.run.num_envs} envs",
            "update_gflop": flops / 1e9 / steps, "achieved_gflop_s": flops / 1e9 / upd[0]}


def one_step_variant(config):
    """``(config acting one-step, None)`` or ``(None, why not)``; the agent's own config when
    it already acts one-step (qc:qc-fql)."""
    from agents import get_agent
    from dprl.models.one_step import acts_one_step
    from dprl.run.one_step import acting

    one = config.copy_and_resolve_references()
    one.act_with = "one_step"
    if "guidance_mode" in one:
        one.guidance_mode = "score"   # 'mean' guidance vanishes in the deterministic teacher
    try:
        acting(get_agent(config.agent_name), one)
    except ValueError as e:
        return None, str(e).split(";")[0]
    return (config if acts_one_step(config) else one), None


def bench_acting(agent_cls, agent, config, example, env_step_ms: float, repeats: int) -> dict:
    """Batch-1 latency of the agent acting multi-step and one-step and of mu alone, and the
    control rate (actions/s, Hopper-v5 env step included) each sustains."""
    from dprl.models.one_step import acts_one_step
    from dprl.run.one_step import acting

    one_config, why_not = one_step_variant(config)
    fns = {}
    if not acts_one_step(config):
        fns["multi_step"] = agent.sample_actions
    if one_config is not None:
        one = agent if one_config is config else acting(agent_cls, one_config).create(
            0, example, one_config)
        fns["one_step"] = one.sample_actions
        fns["mu"] = jax.jit(lambda o, k, one=one: one.mu.sample(o, k))
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


def bench_online(agent, offline, config, args) -> dict:
    """The off-policy online phase at UTD ``args.online_utd`` on Hopper-v5 (batches mixing the
    synthetic offline data and the online buffer half and half), as the runner runs it: time
    per env step next to its parts timed alone, ``utd x update + action / act_steps + env
    step``; their ratio is the loop's overhead (target <= 1.2), in wall and in CPU time."""
    from dprl.data.buffer import Buffer
    from dprl.run.updates import Learner, fused_updates

    utd, steps = args.online_utd, args.online_env_steps
    config = config.copy_and_resolve_references()
    config.run.utd, config.run.update_every, config.run.start_online_updates = utd, 1, 0
    executor = hopper_executor(config)
    warmup = 2 * config.act_steps   # compiles the replay step; the agent trains throughout
    learner = Learner(agent, offline, Buffer.empty(warmup + steps + config.act_steps, OBS_DIM,
                                                   ACT_DIM), jax.random.PRNGKey(3), config)
    online_loop(learner, executor, warmup)
    per_step = online_loop(learner, executor, steps) / steps
    # The parts alone: an update on batches mixing the offline data and the Hopper transitions
    # just collected, an action, an env step with the loop's bookkeeping.
    fuse = max(config.act_steps, 10)
    update = time_calls(lambda i: fused_updates(
        learner.agent, offline, learner.online, jax.random.PRNGKey(i),
        **update_kwargs(config, fuse, online=True))[1], args.repeats) / fuse
    obs = jnp.asarray(executor.policy_observations())
    action = time_calls(lambda i: learner.agent.sample_actions(obs, jax.random.PRNGKey(i)), 50)
    env = chunk_env_step_clocks(executor, config.horizon, ACT_DIM, steps)
    parts = utd * update + action / config.act_steps + env
    return {"online_utd": utd, "online_env_steps_per_s": 1.0 / per_step[0],
            "online_ms_per_env_step": 1e3 * per_step[0],
            "online_cpu_ms_per_env_step": 1e3 * per_step[1],
            "online_parts_ms_per_env_step": 1e3 * parts[0], "online_update_ms": 1e3 * update[0],
            "online_action_ms": 1e3 * action[0], "online_env_step_ms": 1e3 * env[0],
            "online_overhead": per_step[0] / parts[0],
            "online_overhead_cpu": per_step[1] / parts[1]}


def make_agent(name: str, args, compute_dtype: str | None = None) -> tuple:
    """``(config, synthetic offline buffer, example batch, agent class, agent)`` of ``name``."""
    from agents import get_agent
    from dprl.run.config import with_compute_dtype

    config = load_agent_config(name, args.quick)
    if compute_dtype is not None:
        config.run.compute_dtype = compute_dtype
        config = with_compute_dtype(config)
    buffer = synthetic_buffer(OBS_DIM, ACT_DIM, 2_000 if args.quick else 20_000)
    example = jax.device_get(buffer.sample(jax.random.PRNGKey(0), 2, config.horizon,
                                           config.obs_history))
    agent_cls = get_agent(config.agent_name)
    return config, buffer, example, agent_cls, agent_cls.create(0, example, config)


def bench_updates(name: str, agent_cls, agent, buffer, config, args) -> dict:
    if agent_cls.on_policy:
        return bench_on_policy(agent, config, min(args.repeats, 2))  # ~20 s an update
    # A QC update is ~165 GFLOP (about a second here): a few per dispatch are plenty.
    fuse = min(args.fuse, 5) if name == "qc" else args.fuse
    return bench_off_policy_updates(agent, buffer, config, fuse, args.repeats)


def bench_agent(name: str, args) -> dict:
    from dprl.models.one_step import acts_one_step

    config, buffer, example, agent_cls, agent = make_agent(name, args)
    acting = bench_acting(agent_cls, agent, config, example, args.env_step_ms,
                          args.acting_repeats)
    if args.acting_only:
        return {"agent": name, "horizon": config.horizon,
                "actor_hidden": list(config.actor.hidden_dims), **acting}
    result = {"agent": name, "batch_size": config.run.batch_size, "horizon": config.horizon,
              "act_steps": config.act_steps, "actor_hidden": list(config.actor.hidden_dims),
              "model": config.actor.get("model", "gaussian"),
              "denoising_steps": denoising_steps(config.actor)}
    result.update(bench_updates(name, agent_cls, agent, buffer, config, args))
    # The agent's own way of acting, timed once (in the acting table, keys made beforehand).
    how = "one_step" if acts_one_step(config) else "multi_step"
    result["latency_ms_b1"] = acting[f"latency_ms_b1_{how}"]
    # What the action's matmuls alone would take at the machine's best fp32 matmul rate: no
    # implementation on this machine acts faster without doing fewer FLOPs.
    result["latency_gflop_b1"] = acting[f"latency_gflop_b1_{how}"]
    result["latency_floor_ms_b1"] = 1e3 * result["latency_gflop_b1"] / args.matmul_gflop_s
    result["env_steps_per_s"] = acting_env_steps_per_s(agent, hopper_executor(config),
                                                       args.env_steps)
    ref = REFERENCES.get(name)
    if ref and not args.quick:
        result["reference"] = ref
        result["ratio"] = result["updates_per_s"] / ref["updates_per_s"]
        result["cpu_ratio"] = ref["cpu_ms_per_update"] / result["cpu_ms_per_update"]
    if not agent_cls.on_policy and name in args.online_agents.split(","):
        result.update(bench_online(agent, buffer, config, args))
    return {**result, **acting}


def bench_pixels(args) -> dict:
    """``--pixels``: the pixel agents' rows (``pixel_agent_row``) and ``pixel_memory``."""
    from agents import get_agent
    from dprl.data.buffer import example_batch

    buffer, normalizer, memory = pixel_memory(args.pixel_frames, args.pixel_size, ACT_DIM)
    print(f"[bench] pixel memory {json.dumps(memory)}", file=sys.stderr, flush=True)
    rows = []
    for name in [a for a in args.pixel_agents.split(",") if a]:
        print(f"[bench] {name} from pixels ...", file=sys.stderr, flush=True)
        config = load_agent_config(name, args.quick)
        config.encoder.name = args.pixel_encoder
        example = example_batch(normalizer.dim, ACT_DIM, config.horizon, config.obs_history)
        agent = get_agent(config.agent_name).create(0, example, config)
        rows.append({"agent": name, **pixel_agent_row(agent, buffer, config, args.pixel_batch,
                                                      1, args.repeats, args.acting_repeats)})
        print(f"[bench] {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return {"encoder": args.pixel_encoder, "memory": memory, "agents": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="bc,dql,guided,dppo:paper,qc,qc:qc-fql,rlpd,dsrl")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--fuse", type=int, default=50, help="updates per dispatch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--env-steps", type=int, default=2000)
    parser.add_argument("--online-agents", default="dql,qc",
                        help="off-policy agents whose online phase is timed")
    parser.add_argument("--online-utd", type=float, default=1.0)
    parser.add_argument("--online-env-steps", type=int, default=200,
                        help="env steps of the timed online phase")
    parser.add_argument("--acting-only", action="store_true",
                        help="only the multi-step vs one-step acting table")
    parser.add_argument("--acting-repeats", type=int, default=200,
                        help="interleaved calls per actor for the acting latencies")
    parser.add_argument("--quick", action="store_true", help="tiny networks (a smoke test)")
    parser.add_argument("--compute-dtypes", default=None,
                        help="run.compute_dtype values to time the updates in, e.g. "
                             "float32,bfloat16 (mixed precision: updates_per_s_bfloat16); "
                             "default: both on a GPU or TPU, float32 on the CPU")
    parser.add_argument("--pixels", action="store_true", help="only the pixel rows")
    parser.add_argument("--pixel-agents", default="dql,qc")
    parser.add_argument("--pixel-encoder", default="impala")
    parser.add_argument("--pixel-batch", type=int, default=256)
    parser.add_argument("--pixel-size", type=int, default=64, help="frames are SIZExSIZEx3")
    parser.add_argument("--pixel-frames", type=int, default=100_000, help="of the RSS dataset")
    args = parser.parse_args()
    if args.pixels:
        report = {"machine": {"cpus": os.cpu_count(), "jax": jax.__version__,
                              "devices": [str(d) for d in jax.devices()]},
                  "pixels": bench_pixels(args), "date": time.strftime("%Y-%m-%d"),
                  "command": "python experiments/bench.py " + " ".join(sys.argv[1:])}
        print("\n".join(pixel_markdown(report["pixels"])))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
        return
    if args.quick:
        args.fuse, args.repeats, args.env_steps, args.online_env_steps = 5, 2, 100, 20
        args.acting_repeats = 10
    args.env_step_ms = env_step_ms("Hopper-v5", 200 if args.quick else 5000)
    machine = {"processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
               "devices": [str(d) for d in jax.devices()]}
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
    if args.compute_dtypes is None:
        args.compute_dtypes = "float32" if jax.default_backend() == "cpu" else "float32,bfloat16"
    for dtype in [d for d in args.compute_dtypes.split(",") if d and d != "float32"]:
        for r in results:
            if "updates_per_s" in r:
                r[f"updates_per_s_{dtype}"] = updates_per_s_in(r["agent"], dtype, args)
                print(f"[bench] {r['agent']} updates/s: float32 {r['updates_per_s']:.3g}, {dtype} "
                      f"{r[f'updates_per_s_{dtype}']:.3g}", file=sys.stderr, flush=True)
    report = {"machine": machine, "results": results,
              "command": "python experiments/bench.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d")}
    print(markdown_tables(results, machine))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    if any("error" in r for r in results):
        sys.exit(1)


def updates_per_s_in(name: str, dtype: str, args) -> float:
    """``updates_per_s`` of ``name`` (as ``bench_agent`` times it) with ``run.compute_dtype``."""
    config, buffer, _, agent_cls, agent = make_agent(name, args, compute_dtype=dtype)
    return bench_updates(name, agent_cls, agent, buffer, config, args)["updates_per_s"]


if __name__ == "__main__":
    main()
