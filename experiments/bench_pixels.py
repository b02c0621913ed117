"""Pixel speed and memory: DQL and QC with an image encoder on 64x64x3 frames.

    python experiments/bench_pixels.py [--encoder impala] [--batch 256] [--frames 100000]

For each agent: fused offline updates per second at ``--batch`` (on random uint8 frames stored
once in a pixel ``Buffer``, shift augmentation on), and the batch-1 action latency of
``sample_actions`` (median of ``--repeats`` calls, compiled first). Then the resident memory of a
``--frames``-frame 64x64x3 pixel dataset: its frames on the host, and with its ``Buffer`` on the
device (on CPU the device is the same memory). ``experiments/bench.py --pixels`` gives the same
rows at the agents' reference configs; both use ``dprl.tools.speed``'s pixel helpers. Speed is
measured here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import json


def bench_agent(name: str, buffer, normalizer, args) -> dict:
    """``pixel_agent_row`` of agent ``name`` (its config file's defaults, ``--encoder``)."""
    import importlib

    from agents import get_agent
    from dprl.data.buffer import example_batch
    from dprl.tools.speed import pixel_agent_row

    config = importlib.import_module(f"configs.{name}").get_config()
    config.action_dim = 2
    config.encoder.name = args.encoder
    agent = get_agent(name).create(0, example_batch(normalizer.dim, 2, config.horizon,
                                                    config.obs_history), config)
    row = pixel_agent_row(agent, buffer, config, args.batch, args.fuse, 1, args.repeats)
    return {"agent": name, "encoder": args.encoder, "batch": args.batch,
            "updates_per_s": round(row["updates_per_s"], 3),
            "compile_s": round(row["first_dispatch_s"], 1),
            "act_ms_b1_median": round(row["latency_ms_b1"], 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="dql,qc")
    parser.add_argument("--encoder", default="impala")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--fuse", type=int, default=5, help="updates per timed dispatch")
    parser.add_argument("--repeats", type=int, default=20, help="batch-1 acting calls timed")
    parser.add_argument("--frames", type=int, default=100_000, help="frames of the RSS dataset")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    import jax

    from dprl.tools.speed import pixel_memory

    buffer, normalizer, memory = pixel_memory(args.frames)
    print(json.dumps(memory), flush=True)
    rows = [bench_agent(name, buffer, normalizer, args) for name in args.agents.split(",")]
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"memory": memory, "agents": rows, "devices": str(jax.devices())}, f,
                      indent=2)


if __name__ == "__main__":
    main()
