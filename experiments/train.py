"""Train one agent on one task: BC pretraining -> offline RL -> online finetuning.

    python experiments/train.py --agent=configs/dql.py --task=hopper-medium --run_dir=runs/dql
        [--seed=0] [--agent.eta=1.0 ...] [--pretrain_steps=N] [--offline_steps=N] [--online_steps=M]

Writes config.json, metrics.csv, summary.json and checkpoints/ into --run_dir; running the same
command again resumes from the last checkpoint. One process at a time per --run_dir; a command
that describes another run than the one there is refused (--restart starts over). Ctrl-C or
SIGTERM checkpoints and exits 130 / 143; any error ends with one line ``error (Type): message``
(then, for an unexpected one, the frames in this repository's code), which grids report.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("agent", None, "Agent config file, e.g. configs/dql.py",
                                lock_config=True)
flags.DEFINE_string("task", "pole", "Task preset (dprl/envs/tasks.py), e.g. hopper-medium")
flags.DEFINE_string("run_dir", None, "Output directory (resumes if it holds a checkpoint)")
flags.DEFINE_integer("seed", 0, "Random seed")
flags.DEFINE_string("dataset", None, "Force this data source instead of the task's: "
                    "ogbench:FILE.npz | ogbench:SHARD_DIR[@K] | minari:ID | "
                    "robomimic:FILE.hdf5 | a dprl or Minari id (docs/benchmarks.md)")
flags.DEFINE_integer("pretrain_steps", None, "Shortcut for --agent.run.pretrain_steps")
flags.DEFINE_integer("offline_steps", None, "Shortcut for --agent.run.offline_steps")
flags.DEFINE_integer("online_steps", None, "Shortcut for --agent.run.online_steps")
flags.DEFINE_bool("progress", True, "Show progress bars")
flags.DEFINE_integer("num_seeds", 1, "Train seeds seed..seed+S-1 in one program (vmap over seeds, "
                     "dprl/run/multiseed.py); writes --run_dir/seed<k> for each")
flags.DEFINE_bool("restart", False, "Start over in --run_dir even if it holds another run (its "
                  "contents move to <run_dir>.replaced-<time>)")
flags.DEFINE_bool("allow_env_mismatch", False, "Train on a dataset recorded in another env than "
                  "the task's (scores use the task's reference scores)")
flags.mark_flags_as_required(["agent", "run_dir"])
FLAGS = flags.FLAGS


def main(_):
    import json

    from absl import logging
    logging.set_verbosity(logging.WARNING)

    import gymnasium as gym

    from agents import get_agent
    from dprl.run.checkpoint import CheckpointError
    from dprl.tools.grid import error_block
    from dprl.base.logging import TrainingDiverged
    from dprl.run.rundir import Interrupted, RunDirError
    from dprl.run.runner import train

    config = FLAGS.agent
    for name in ("pretrain_steps", "offline_steps", "online_steps"):
        value = getattr(FLAGS, name)
        if value is not None:
            config.run[name] = value
    options = dict(dataset=FLAGS.dataset, progress=FLAGS.progress, restart=FLAGS.restart,
                   allow_env_mismatch=FLAGS.allow_env_mismatch)
    try:
        if FLAGS.num_seeds > 1:
            from dprl.run.multiseed import seed_dirs, train_seeds
            seeds = list(range(FLAGS.seed, FLAGS.seed + FLAGS.num_seeds))
            summary = train_seeds(config, FLAGS.task, seed_dirs(FLAGS.run_dir, seeds), seeds,
                                  get_agent, **options)
        else:
            summary = train(config, FLAGS.task, FLAGS.run_dir, get_agent, seed=FLAGS.seed,
                            **options)
    except Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        print("interrupted again: stopped without checkpointing this step; run the same "
              "command to resume from the last checkpoint", file=sys.stderr)
        sys.exit(130)
    except (FileNotFoundError, ValueError, KeyError, TrainingDiverged, gym.error.Error,
            RunDirError, CheckpointError) as e:
        # User-facing problems: say what is wrong and what to do, without a traceback.
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        sys.exit(f"error ({type(e).__name__}): {message}")
    except Exception as e:  # noqa: BLE001  a bug: the traceback, then what grids report
        import traceback
        traceback.print_exc()
        sys.exit(error_block(e))
    print(json.dumps(summary, indent=2))
    where = (FLAGS.run_dir if FLAGS.num_seeds == 1 else
             ", ".join(seed_dirs(FLAGS.run_dir, seeds)))
    print(f"wrote {where} (config.json, metrics.csv, summary.json, checkpoints)")


SCORE_HELP = """\
Scores: `eval_score` on the progress bar and `eval/normalized_score` in metrics.csv are the
D4RL-normalized return, 100 * (R - ref_min) / (ref_max - ref_min), with the task's reference
returns (dprl/envs/tasks.py; D4RL's random and expert scores for locomotion), so 0 = random and
100 = expert; for success tasks (pole, chain, OGBench) it is 100 x the success rate."""


def print_help(path: str | None) -> None:
    """The flags, the score's definition and, with --agent, every --agent.<key>."""
    from dprl.run.config import describe_config

    print(__doc__)
    print(FLAGS.module_help(sys.modules[__name__]))
    print("\n" + SCORE_HELP)
    if not path:
        print("\nPass --agent=configs/<agent>.py (bc, dql, guided, dppo, qc) with --help to list "
              "its --agent.<key> settings.")
        return
    print(f"\n--agent.<key> settings of {path} (default, then what it is):")
    for key, value, comment in describe_config(path):
        print(f"  --agent.{key}={value!r}\n      {comment}" if comment else
              f"  --agent.{key}={value!r}")


def check_argv(argv):
    """Fail fast, in one line, on a missing --agent file or an unknown --agent.<key> (absl would
    raise two chained tracebacks, or a bare KeyError)."""
    from dprl.run.config import (check_layer_sizes, check_override_keys, load_config_file,
                                 overrides_from_argv)

    path, keys, values = overrides_from_argv(argv)
    if {"-h", "--help", "--helpfull", "-?"} & set(argv):
        try:
            print_help(path)
        except FileNotFoundError as e:
            sys.exit(f"error: {e}")
        sys.exit(0)
    try:
        if path:
            config = load_config_file(path)
            if keys:
                check_override_keys(config, keys, path)
                check_layer_sizes(config, values)
    except (ValueError, FileNotFoundError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        sys.exit(f"error ({type(e).__name__}): {message}")


if __name__ == "__main__":
    check_argv(sys.argv)
    app.run(main)
