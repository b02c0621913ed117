"""Pixel speed and memory: DQL and QC with an image encoder on 64x64x3 frames.

    python experiments/bench_pixels.py [--encoder impala] [--batch 256] [--frames 100000]

For each agent: fused offline updates per second at ``--batch`` (on random uint8 frames stored
once in a pixel ``Buffer``, shift augmentation on), and the batch-1 action latency of
``sample_actions`` (median of ``--repeats`` calls, compiled first). Then the resident memory of a
``--frames``-frame 64x64x3 pixel dataset: its frames on the host, and with its ``Buffer`` on the
device (on CPU the device is the same memory). Speed is measured here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import json
import time


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def pixel_data(num_frames: int, episode_len: int = 100, size: int = 64, seed: int = 0):
    """A synthetic pixel dataset: ``num_frames`` random uint8 frames in episodes of
    ``episode_len`` steps, each frame stored once (``dprl.data.frames``)."""
    import numpy as np

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
    state = rng.standard_normal((n + episodes, 3)).astype(np.float32)
    return OfflineData(
        observations=PixelObservations(image=Frames(frames, obs_frame), state=state[obs_frame]),
        actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32), terminals=np.zeros(n, bool),
        timeouts=dones.copy(), dones=dones,
        next_observations=PixelObservations(image=Frames(frames, obs_frame + 1),
                                            state=state[obs_frame + 1]),
        metadata={"augment": "shift"})


def bench_agent(name: str, buffer, normalizer, args) -> dict:
    import importlib

    import jax
    import numpy as np

    from agents import get_agent
    from dprl.data.buffer import example_batch

    config = importlib.import_module(f"configs.{name}").get_config()
    config.action_dim = 2
    config.encoder.name = args.encoder
    agent = get_agent(name).create(0, example_batch(normalizer.dim, 2, config.horizon,
                                                    config.obs_history), config)

    @jax.jit
    def updates(agent, key):
        def body(a, k):
            return a.update(buffer.sample(k, args.batch, config.horizon))
        return jax.lax.scan(body, agent, jax.random.split(key, args.fuse))

    start = time.perf_counter()
    agent, _ = jax.block_until_ready(updates(agent, jax.random.PRNGKey(0)))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    agent, _ = jax.block_until_ready(updates(agent, jax.random.PRNGKey(1)))
    ups = args.fuse / (time.perf_counter() - start)
    obs = jax.tree.map(lambda x: x[:1], buffer.sample(jax.random.PRNGKey(2), 1)["observations"])
    jax.block_until_ready(agent.sample_actions(obs, jax.random.PRNGKey(0)))
    times = []
    for i in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(agent.sample_actions(obs, jax.random.PRNGKey(i)))
        times.append(time.perf_counter() - start)
    return {"agent": name, "encoder": args.encoder, "batch": args.batch,
            "updates_per_s": round(ups, 3), "compile_s": round(compile_s, 1),
            "act_ms_b1_median": round(1000 * float(np.median(times)), 2)}


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

    from dprl.data.buffer import Buffer
    from dprl.data.frames import bytes_per_transition
    from dprl.data.offline import Normalizer

    base = rss_mib()
    data = pixel_data(args.frames)
    host = rss_mib() - base
    normalizer = Normalizer.fit(data.observations)
    buffer = Buffer.from_offline(data, normalizer)
    jax.block_until_ready(buffer.frames)
    memory = {"frames": int(data.observations["image"].store.shape[0]),
              "transitions": data.size, "host_bytes_per_transition":
              round(bytes_per_transition(data)), "device_bytes_per_transition":
              round(buffer.nbytes_per_transition()), "rss_mib_host_frames": round(host),
              "rss_mib_with_device_buffer": round(rss_mib() - base)}
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
