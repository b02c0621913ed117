"""Distill a finished run's multi-step actor into a one-step actor and score both.

    python experiments/distill.py --run_dir runs/X [--steps 20000] [--batch_size 256]
        [--episodes 0] [--seed 0] [--no-progress]

Writes RUN_DIR/one_step/ (the one-step actor's weights and one_step.json: settings, loss, wall
time and the evaluation scores of the multi-step actor, of its deterministic teacher sampler when
that differs (DDIM eta 0 for a DDPM-sampled diffusion actor) and of the one-step actor). Off-policy
agents only (bc, dql, guided with guidance_mode='score', qc best-of-N); ``dprl/tools/distill.py`` does
the work, ``dprl/models/one_step.py`` says why this method. ``--episodes 0``: the run's evaluation
episodes.
"""
import argparse


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a dprl run directory with checkpoints")
    parser.add_argument("--steps", type=int, default=20_000, help="distillation gradient steps")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--episodes", type=int, default=0,
                        help="evaluation episodes per actor (0: the run's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    from agents import get_agent
    from dprl.tools.distill import distill_run

    record = distill_run(args.run_dir, get_agent, steps=args.steps, batch_size=args.batch_size,
                         episodes=args.episodes, seed=args.seed, progress=not args.no_progress)
    for name, s in record["eval"].items():
        print(f"{name:28s} score {s['score']:7.2f}  return {s['return_mean']:8.1f}  "
              f"({s['episodes']} episodes; {record['score_unit']})")
    print(f"wrote {record['run_dir']}/one_step/ (weights, one_step.json)")


if __name__ == "__main__":
    main()
