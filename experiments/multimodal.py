"""The multimodality proof: MSE BC (a deterministic policy regressed on the actions, the mean of a
Gaussian) averages the two modes and hits the pole; diffusion BC passes on both sides.

    python experiments/multimodal.py --out DIR [--steps 8000] [--episodes 100] [--pixels]

Trains both policies on the pole task's demonstrations (half pass left, half right) through the
standard runner (DIR/mse, DIR/diffusion are ordinary run directories), rolls each out for
``--episodes`` episodes and writes DIR/result.json (success/left/right/collision rates per
policy) and DIR/trajectories.png (rollouts over the demonstrations).

``--pixels``: the same proof from a camera (task ``pixel-pole``, dprl/envs/pixels.py): both
policies see only 32 x 32 images and the velocity, through an image encoder (``--encoder``,
dprl/models/encoders.py; batches of ``--batch-size`` 64, as convolution gradients are slow on
this CPU); the rollouts' positions are read back from the frames (the agent
blob's centroid), and a few input frames of one diffusion rollout are drawn beside them.
"""
import argparse
import json
import os
import time


def rollout_stats(episodes) -> dict:
    n = len(episodes)
    return {
        "success_rate": sum(bool(e["success"]) for e in episodes) / n,
        "left_rate": sum(bool(e["success"]) and e.get("side") == "left" for e in episodes) / n,
        "right_rate": sum(bool(e["success"]) and e.get("side") == "right" for e in episodes) / n,
        "collision_rate": sum(bool(e["collision"]) for e in episodes) / n,
        "episodes": n,
    }


def blob_positions(images):
    """Agent positions ``[T, 2]`` read back from pixel-pole frames ``[T, S, S, 3]`` (the centroid
    of the agent's blob in channel 0, in world coordinates)."""
    import numpy as np

    from dprl.envs.pixels import POLE_WINDOW, _pixel_centres

    xs, ys = _pixel_centres(POLE_WINDOW, images.shape[1])
    w = images[..., 0].astype(np.float64)
    w = w * (w >= 64)                     # the blob's core (the tails are rounded to 0 anyway)
    total = np.maximum(w.sum((1, 2)), 1e-9)
    return np.stack([(w * xs).sum((1, 2)) / total, (w * ys).sum((1, 2)) / total], axis=1)


def run(out: str, steps: int, episodes: int, seed: int = 0, progress: bool = True,
        pixels: bool = False, encoder: str = "impala_debug", batch_size: int = 64) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from agents import get_agent
    from configs.bc import get_config
    from dprl.run.checkpoint import load_run
    from dprl.data.offline import load_dataset
    from dprl.envs.vector import evaluate
    from dprl.run.runner import train

    os.makedirs(out, exist_ok=True)
    results, trajectories, frames = {}, {}, {}
    task, env_id = ("pixel-pole", "dprl/PixelPole-v0") if pixels else ("pole", "dprl/Pole-v0")
    for policy in ("mse", "diffusion"):
        config = get_config()
        config.actor.model = policy
        config.run.pretrain_steps = steps
        config.run.eval_every = steps
        config.run.save_every = steps
        config.run.log_every = max(steps // 10, 1)
        if pixels:
            config.encoder.name = encoder
            config.encoder.mlp_dims = (64,)
            config.run.batch_size = batch_size
        run_dir = os.path.join(out, policy)
        start = time.perf_counter()
        train(config, task, run_dir, get_agent, seed=seed, progress=progress)
        agent, normalizer, _ = load_run(run_dir, get_agent)
        key = jax.random.PRNGKey(seed + 123)

        def act(obs, agent=agent):
            nonlocal key
            key, k = jax.random.split(key)
            return np.asarray(agent.sample_actions(jax.tree.map(jnp.asarray, obs), k)[0])

        ev = evaluate(act, env_id, episodes, act_steps=config.act_steps, seed=10_000 + seed,
                      normalize=normalizer, return_episodes=True)
        results[policy] = {**rollout_stats(ev["episodes"]), "bc_steps": steps,
                           "train_wall_s": round(time.perf_counter() - start, 1)}
        trajectories[policy] = ev["trajectories"]
        if pixels:
            frames[policy] = [t["image"] for t in ev["trajectories"]]
            trajectories[policy] = [blob_positions(f) for f in frames[policy]]
        print(f"{policy:9s} " + " ".join(f"{k}={v}" for k, v in results[policy].items()),
              flush=True)
    demos = load_dataset("dprl/pole/demos-v0")
    plot(demos, trajectories, results, os.path.join(out, "trajectories.png"),
         frames.get("diffusion"))
    flags = f" --pixels --encoder {encoder} --batch-size {batch_size}" if pixels else ""
    result = {**results, "task": task, "source": f"python experiments/multimodal.py --out {out} "
              f"--steps {steps} --episodes {episodes} --seed {seed}{flags}"}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def plot(demos, trajectories: dict, results: dict, path: str, frames=None) -> None:
    """Rollouts over the demonstrations, one panel per policy; with ``frames`` (pixel runs: one
    ``[T, S, S, 3]`` array per diffusion rollout) a row of one rollout's input frames below."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dprl.envs.pole import GOAL_Y, POLE_RADIUS, POLE_XY

    if frames:
        fig = plt.figure(figsize=(5 * len(trajectories), 7.2))
        grid = fig.add_gridspec(2, 1, height_ratios=[5, 1.6])
        axes = grid[0].subgridspec(1, len(trajectories)).subplots(sharey=True)
        episode = frames[0]
        strip = np.atleast_1d(grid[1].subgridspec(1, min(6, len(episode))).subplots())
        for ax, t in zip(strip, np.linspace(0, len(episode) - 1, len(strip)).round().astype(int)):
            ax.imshow(episode[t], interpolation="nearest")
            ax.set_title(f"input frame t={t}", fontsize=8)
            ax.set_axis_off()
    else:
        fig, axes = plt.subplots(1, len(trajectories), figsize=(5 * len(trajectories), 5),
                                 sharey=True)
    ends = np.flatnonzero(demos.dones)
    starts = np.concatenate([[0], ends[:-1] + 1])
    for ax, (name, trajs) in zip(np.atleast_1d(axes), trajectories.items()):
        for s, e in zip(starts, ends):
            xy = np.concatenate([demos.observations[s:e + 1, :2], demos.next_observations[e:e + 1, :2]])
            ax.plot(xy[:, 0], xy[:, 1], color="0.8", lw=0.8, zorder=1)
        for t in trajs:
            ax.plot(t[:, 0], t[:, 1], color="tab:blue" if name == "diffusion" else "tab:red",
                    lw=1.0, alpha=0.6, zorder=2)
        ax.add_patch(plt.Circle(POLE_XY, POLE_RADIUS, color="k", zorder=3))
        ax.axhline(GOAL_Y, color="tab:green", ls="--", lw=1)
        r = results[name]
        ax.set_title(f"{name} BC: success {r['success_rate']:.0%} (L {r['left_rate']:.0%} / "
                     f"R {r['right_rate']:.0%}), collisions {r['collision_rate']:.0%}", fontsize=9)
        ax.set_xlim(-0.8, 0.8)
        ax.set_ylim(-0.1, 0.9)
        ax.set_aspect("equal")
        ax.set_xlabel("x")
    np.atleast_1d(axes)[0].set_ylabel("y")
    fig.suptitle("Pole task" + (" from 32x32 pixels" if frames else "")
                 + ": rollouts (colour) over the demonstrations (grey)")
    if not frames:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--steps", type=int, default=8000, help="BC gradient steps per policy")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--pixels", action="store_true",
                        help="the proof from 32x32 camera images (task pixel-pole)")
    parser.add_argument("--encoder", default="impala_debug",
                        help="--pixels: the image encoder (dprl/models/encoders.py ENCODERS)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="--pixels: the BC batch (the state proof keeps the config's 256)")
    args = parser.parse_args()
    run(args.out, args.steps, args.episodes, args.seed, progress=not args.no_progress,
        pixels=args.pixels, encoder=args.encoder, batch_size=args.batch_size)
    print(f"wrote {args.out}/result.json, {args.out}/trajectories.png and the two runs "
          f"({args.out}/mse, {args.out}/diffusion)")


if __name__ == "__main__":
    main()
