"""Train one agent on one task: BC pretraining -> offline RL -> online finetuning.

    python experiments/train.py --agent=configs/dql.py --task=hopper-medium --run_dir=runs/dql \
        [--seed=0] [--agent.eta=1.0 ...] [--pretrain_steps=N] [--offline_steps=N] [--online_steps=M]

Writes config.json, metrics.csv, summary.json and checkpoints/ into --run_dir; running the same
command again resumes from the last checkpoint.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("agent", None, "Agent config file, e.g. configs/dql.py",
                                lock_config=True)
flags.DEFINE_string("task", "pole", "Task preset (dprl/tasks.py), e.g. hopper-medium")
flags.DEFINE_string("run_dir", None, "Output directory (resumes if it holds a checkpoint)")
flags.DEFINE_integer("seed", 0, "Random seed")
flags.DEFINE_string("dataset", None, "Force this Minari dataset id instead of the task's")
flags.DEFINE_integer("pretrain_steps", None, "Shortcut for --agent.run.pretrain_steps")
flags.DEFINE_integer("offline_steps", None, "Shortcut for --agent.run.offline_steps")
flags.DEFINE_integer("online_steps", None, "Shortcut for --agent.run.online_steps")
flags.DEFINE_bool("progress", True, "Show progress bars")
flags.DEFINE_integer("num_seeds", 1, "Train seeds seed..seed+S-1 in one program (vmap over seeds, "
                     "dprl/multiseed.py); writes --run_dir/seed<k> for each")
flags.mark_flags_as_required(["agent", "run_dir"])
FLAGS = flags.FLAGS


def main(_):
    import json

    from absl import logging
    logging.set_verbosity(logging.WARNING)

    import gymnasium as gym

    from agents import get_agent
    from dprl.logging import TrainingDiverged
    from dprl.runner import train

    config = FLAGS.agent
    for name in ("pretrain_steps", "offline_steps", "online_steps"):
        value = getattr(FLAGS, name)
        if value is not None:
            config.run[name] = value
    try:
        if FLAGS.num_seeds > 1:
            from dprl.multiseed import seed_dirs, train_seeds
            seeds = list(range(FLAGS.seed, FLAGS.seed + FLAGS.num_seeds))
            summary = train_seeds(config, FLAGS.task, seed_dirs(FLAGS.run_dir, seeds), seeds,
                                  get_agent, dataset=FLAGS.dataset, progress=FLAGS.progress)
        else:
            summary = train(config, FLAGS.task, FLAGS.run_dir, get_agent, seed=FLAGS.seed,
                            dataset=FLAGS.dataset, progress=FLAGS.progress)
    except (FileNotFoundError, ValueError, KeyError, TrainingDiverged, gym.error.Error) as e:
        # User-facing problems: say what is wrong and what to do, without a traceback.
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        sys.exit(f"error ({type(e).__name__}): {message}")
    print(json.dumps(summary, indent=2))


def check_argv(argv):
    """Fail fast, with the fix, on an unknown --agent.<key> (absl would raise a bare KeyError)."""
    from dprl.config import check_override_keys, load_config_file, overrides_from_argv

    path, keys = overrides_from_argv(argv)
    if path and keys:
        try:
            check_override_keys(load_config_file(path), keys, path)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"error: {e}")


if __name__ == "__main__":
    check_argv(sys.argv)
    app.run(main)
