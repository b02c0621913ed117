"""The multimodality proof: MSE BC (a deterministic policy regressed on the actions, the mean of a
Gaussian) averages the two modes and hits the pole; diffusion BC passes on both sides.

    python experiments/multimodal.py --out DIR [--steps 8000] [--episodes 100]

Trains both policies on the pole task's demonstrations (half pass left, half right) through the
standard runner (DIR/mse, DIR/diffusion are ordinary run directories), rolls each out for
``--episodes`` episodes and writes DIR/result.json (success/left/right/collision rates per
policy) and DIR/trajectories.png (rollouts over the demonstrations).
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


def run(out: str, steps: int, episodes: int, seed: int = 0, progress: bool = True) -> dict:
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
    results, trajectories = {}, {}
    for policy in ("mse", "diffusion"):
        config = get_config()
        config.actor.model = policy
        config.run.pretrain_steps = steps
        config.run.eval_every = steps
        config.run.save_every = steps
        config.run.log_every = max(steps // 10, 1)
        run_dir = os.path.join(out, policy)
        start = time.perf_counter()
        train(config, "pole", run_dir, get_agent, seed=seed, progress=progress)
        agent, normalizer, _ = load_run(run_dir, get_agent)
        key = jax.random.PRNGKey(seed + 123)

        def act(obs, agent=agent):
            nonlocal key
            key, k = jax.random.split(key)
            return np.asarray(agent.sample_actions(jnp.asarray(obs), k)[0])

        ev = evaluate(act, "dprl/Pole-v0", episodes, act_steps=config.act_steps, seed=10_000 + seed,
                      normalize=normalizer, return_episodes=True)
        results[policy] = {**rollout_stats(ev["episodes"]), "bc_steps": steps,
                           "train_wall_s": round(time.perf_counter() - start, 1)}
        trajectories[policy] = ev["trajectories"]
        print(f"{policy:9s} " + " ".join(f"{k}={v}" for k, v in results[policy].items()),
              flush=True)
    demos = load_dataset("dprl/pole/demos-v0")
    plot(demos, trajectories, results, os.path.join(out, "trajectories.png"))
    result = {**results, "task": "pole", "source": f"python experiments/multimodal.py --out {out} "
              f"--steps {steps} --episodes {episodes} --seed {seed}"}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def plot(demos, trajectories: dict, results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dprl.envs.pole import GOAL_Y, POLE_RADIUS, POLE_XY

    fig, axes = plt.subplots(1, len(trajectories), figsize=(5 * len(trajectories), 5), sharey=True)
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
    fig.suptitle("Pole task: rollouts (colour) over the demonstrations (grey)")
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
    args = parser.parse_args()
    run(args.out, args.steps, args.episodes, args.seed, progress=not args.no_progress)
    print(f"wrote {args.out}/result.json, {args.out}/trajectories.png and the two runs "
          f"({args.out}/gaussian, {args.out}/diffusion)")


if __name__ == "__main__":
    main()
