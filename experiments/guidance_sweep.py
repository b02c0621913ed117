"""Guidance-scale sweep of the value-guided agent: train once, evaluate the same frozen BC actor and
guide J at several guidance scales (and best-of-N sizes), and report the best scale (as QGPO
reports each run: the best of its scale grid; every scale is recorded).

    python experiments/guidance_sweep.py --agent=configs/guided.py:qgpo --task=hopper-medium \
        --run_dir=runs/qgpo-hopper [--scales=0,1,2,3,5,8,10] [--num_samples=1,4] [--episodes=10] \
        [--pretrain_steps=N --offline_steps=N --online_steps=0] [--agent.<key>=value ...]

``--scales`` defaults to the config's ``guidance_scales`` (QGPO: 0, 1, 2, 3, 5, 8, 10; AntMaze
1, 1.5, 2, 2.5, 3, 4; mse-guidance: 0, 10, 30, 100, 300). A config with ``reward_scale = 0``
(QGPO on locomotion) gets ``1000 / (max - min episode return)`` of the task's dataset before
training (``agents.guided.return_range_scale``), recorded in the run's config.

The run directory is an ordinary ``dprl.run.runner`` run (trained, or resumed/skipped when finished);
the sweep then loads its last checkpoint with ``dprl.run.checkpoint.load_run`` and writes
``guidance_sweep.json`` (one row per (scale, N): normalized score, return mean/std) and
``guidance_sweep.png`` (score vs scale) into ``--out`` (default: the run directory). Each row
also has ``q_of_samples``: the run's critic (``min_e Q``, in its own reward units) averaged over
the chunks sampled at that point on 512 fixed dataset states, which says whether guidance moves
the samples toward what the critic values. ``--step``
picks an earlier checkpoint (e.g. the end of the offline phase of a run that went online).
Every scale is evaluated on the same evaluation seeds (common random numbers).
"""
import os

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("agent", "configs/guided.py", "Agent config (configs/guided.py)",
                                lock_config=True)
flags.DEFINE_string("task", "hopper-medium", "Task preset (dprl/envs/tasks.py)")
flags.DEFINE_string("run_dir", None, "Run directory: trained here, or loaded if finished")
flags.DEFINE_string("out", None, "Where the JSON and PNG go (default: run_dir)")
flags.DEFINE_list("scales", None, "Guidance scales to evaluate (default: the config's "
                  "guidance_scales)")
flags.DEFINE_list("num_samples", ["1"], "Best-of-N sizes to evaluate (1 = guidance only)")
flags.DEFINE_integer("episodes", 0, "Evaluation episodes per point (0 = the task preset's)")
flags.DEFINE_integer("seed", 0, "Training seed")
flags.DEFINE_integer("eval_seed", 1000, "First evaluation env seed (shared by every point)")
flags.DEFINE_integer("step", None, "Checkpoint (global step) to sweep; default the last one")
flags.DEFINE_bool("train", True, "Train (or resume) the run first; False: only load it")
flags.DEFINE_integer("pretrain_steps", None, "Shortcut for --agent.run.pretrain_steps")
flags.DEFINE_integer("offline_steps", None, "Shortcut for --agent.run.offline_steps")
flags.DEFINE_integer("online_steps", None, "Shortcut for --agent.run.online_steps")
flags.DEFINE_bool("progress", True, "Show progress bars")
flags.mark_flags_as_required(["run_dir"])
FLAGS = flags.FLAGS


def sweep(run_dir: str, scales, num_samples=(1,), episodes: int = 0, eval_seed: int = 1000,
          step: int | None = None) -> list[dict]:
    """Evaluate the run's checkpoint at every (scale, N); one result row each. ``scales=None``:
    the run config's ``guidance_scales``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from agents import get_agent
    from dprl.run.checkpoint import load_run
    from dprl.envs.vector import evaluate
    from dprl.envs.tasks import get_task

    agent, normalizer, resolved = load_run(run_dir, get_agent, step)
    task = get_task(resolved["task"])
    cfg = agent.config
    episodes = episodes or cfg.run.eval_episodes or task["eval_episodes"]
    if scales is None:
        scales = [float(s) for s in cfg.get("guidance_scales", (0.0,))]
    states = critic_states(resolved["task"], normalizer, cfg)
    rows = []
    for n in num_samples:
        for scale in scales:
            key = jax.random.PRNGKey(eval_seed)
            q_of_samples = None
            if states is not None:   # what the critic thinks of the chunks guidance picks
                chunks = agent.sample_guided(states, jax.random.PRNGKey(eval_seed + 1),
                                             float(scale), num_samples=int(n))
                q_of_samples = float(agent.q_min(agent.critic.params, states, chunks).mean())

            def policy(obs, n=n, scale=scale):
                nonlocal key
                key, k = jax.random.split(key)
                return np.asarray(agent.sample_guided(jnp.asarray(obs), k, float(scale),
                                                      num_samples=int(n)))

            res = evaluate(policy, task["env_id"], episodes, cfg.act_steps, seed=eval_seed,
                           obs_history=cfg.obs_history, normalize=normalizer,
                           env_kwargs=task["env_kwargs"], ref_min_score=task["ref_min_score"],
                           ref_max_score=task["ref_max_score"], score=task["score"])
            row = {"guidance_scale": float(scale), "num_samples": int(n), "episodes": episodes,
                   **{k: v for k, v in res.items() if isinstance(v, (int, float))},
                   "q_of_samples": q_of_samples}
            rows.append(row)
            q_text = "" if q_of_samples is None else f" Q(s, a)={q_of_samples:.2f}"
            print(f"scale={scale:<8} N={n:<3} score={row['normalized_score']:.1f} "
                  f"return={row['return_mean']:.1f}±{row['return_std']:.1f}{q_text}", flush=True)
    return rows


def critic_states(task: str, normalizer, cfg, count: int = 512, seed: int = 0):
    """``count`` dataset states ``[count, O]`` (normalized as the agent sees them), the same for
    every point of a sweep, on which ``q_of_samples`` (the run's pessimistic critic, ``min_e Q``,
    averaged over the sampled chunks) is measured; None for observation histories or pixels."""
    import jax.numpy as jnp
    import numpy as np

    from dprl.data.offline import load_task_data

    if cfg.obs_history > 1:
        return None
    observations = load_task_data(task).observations
    if not isinstance(observations, np.ndarray) or observations.ndim != 2:
        return None
    rows = np.random.default_rng(seed).choice(len(observations), count, replace=False)
    return jnp.asarray(normalizer(observations[rows]), jnp.float32)


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for n in sorted({r["num_samples"] for r in rows}):
        sel = sorted((r for r in rows if r["num_samples"] == n), key=lambda r: r["guidance_scale"])
        x = np.arange(len(sel))
        y = [r["normalized_score"] for r in sel]
        # Normalized-score standard error from the return std (same affine map as the score).
        ref = sel[0]
        unit = ref["normalized_score"] / ref["return_mean"] if ref.get("return_mean") else 0.0
        err = [abs(unit) * r.get("return_std", 0.0) / np.sqrt(r["episodes"]) for r in sel]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"best-of-{n}")
        ax.set_xticks(x, [f"{r['guidance_scale']:g}" for r in sel])
    ax.set_xlabel("guidance scale")
    ax.set_ylabel("normalized score")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(_):
    import json

    from absl import logging
    logging.set_verbosity(logging.WARNING)

    from agents import get_agent
    from dprl.run.runner import train

    config = FLAGS.agent
    if FLAGS.train:
        if config.get("reward_scale", 1.0) == 0:
            from agents.guided import return_range_scale
            from dprl.data.offline import load_task_data
            data = load_task_data(FLAGS.task)
            config.reward_scale = return_range_scale(data.rewards, data.dones,
                                                     data.terminals | data.timeouts)
            print(f"reward_scale = 1000 / (return range) = {config.reward_scale:.6g}", flush=True)
        for name in ("pretrain_steps", "offline_steps", "online_steps"):
            value = getattr(FLAGS, name)
            if value is not None:
                config.run[name] = value
        summary = train(config, FLAGS.task, FLAGS.run_dir, get_agent, seed=FLAGS.seed,
                        progress=FLAGS.progress)
        print(json.dumps(summary, indent=2))
    out = FLAGS.out or FLAGS.run_dir
    os.makedirs(out, exist_ok=True)
    scales = None if FLAGS.scales is None else [float(s) for s in FLAGS.scales]
    rows = sweep(FLAGS.run_dir, scales,
                 [int(n) for n in FLAGS.num_samples], FLAGS.episodes, FLAGS.eval_seed, FLAGS.step)
    best = max(rows, key=lambda r: r["normalized_score"])
    print(f"best: scale={best['guidance_scale']:g} N={best['num_samples']} "
          f"score={best['normalized_score']:.1f}", flush=True)
    result = {"run_dir": FLAGS.run_dir, "task": FLAGS.task, "step": FLAGS.step, "rows": rows,
              "best": {k: best[k] for k in ("guidance_scale", "num_samples", "normalized_score")}}
    with open(os.path.join(out, "guidance_sweep.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(rows, os.path.join(out, "guidance_sweep.png"),
         f"{FLAGS.task}: guided sampling of a frozen BC actor")
    print(f"wrote {out}/guidance_sweep.json and guidance_sweep.png")


if __name__ == "__main__":
    app.run(main)
