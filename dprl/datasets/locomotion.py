"""D4RL-style locomotion recipes for gymnasium MuJoCo v5 envs (hopper, halfcheetah, walker2d, ant).

Recipes (D4RL, Fu et al. 2020), each ``steps`` transitions (1M by default) of whole episodes:
  random         uniform random actions in [-1, 1]
  expert         the expert policy's mean action plus small Gaussian noise (``EXPERT_NOISE``)
  medium         a policy at about 1/3 of the expert's level, sampled actions (as D4RL did)
  medium-replay  what a SAC learner saw on its way to the medium level
  medium-expert  medium episodes (half the steps) then expert episodes (the other half)

Where the policies come from, first match wins:
  ``--sac-run DIR``  a ``python -m dprl.sac`` run: ``DIR/medium.npz`` and the replay buffer up to
                     it (``DIR/medium_replay.npz``); the expert as below
  ``--policy FILE``  your own expert (or ``$DPRL_EXPERTS_DIR/<robot>.npz``): medium is the expert
                     with Gaussian action noise of the std in ``MEDIUM_NOISE``; medium-replay a
                     stand-in: noisy-expert episodes whose noise std falls linearly from
                     ``REPLAY_NOISE_START`` (near random) to the medium noise over the dataset
  (default)          dprl's shipped SAC policies (``dprl/experts``): expert and medium snapshots;
                     medium-replay rolls out uniform random actions, then the shipped replay
                     snapshots and the medium one, each for the share of the data SAC gathered
                     while it was current (the buffer itself would weigh megabytes per robot)

Every episode records its reset seed, so its actions can be replayed to recompute rewards.
Episodes are always whole: collection stops once finished episodes hold ``steps`` transitions (so
a dataset exceeds ``steps`` by less than one episode) and episodes still running are dropped, so
every episode ends where the env ended it (terminated or time limit).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dprl.envs.tasks import D4RL_REF_SCORES, LOCOMOTION_ENVS, LOCOMOTION_RECIPES

# Gaussian action-noise std that brings a given expert (--policy; measured with the experts of the
# Berkeley deep-RL course, 2x64 tanh MLPs) to about 1/3 of its
# return on its v5 env (deterministic mean + N(0, std^2), clipped). Measured here (12k steps each,
# D4RL-normalized): hopper 0.1 -> 77, 0.3 -> 30; walker2d 0.3 -> 60, 0.4 -> 34, 0.5 -> 20;
# ant 0.2 -> 78, 0.3 -> 43, 0.4 -> 22. The halfcheetah expert already scores ~36 (D4RL
# halfcheetah-medium: ~40), so it needs none.
MEDIUM_NOISE = {"hopper": 0.2, "walker2d": 0.4, "halfcheetah": 0.0, "ant": 0.3}
EXPERT_NOISE = 0.1          # small exploration noise on the expert's mean action
REPLAY_NOISE_START = 1.5    # medium-replay stand-in: first episodes are nearly random

# Our Ant preset is Ant-v5 with default kwargs (105-dim observation: v5 drops the world body's
# contact forces). The expert was trained on Ant-v4 with use_contact_forces=True (111 dims, whose
# entries 27:33 are the world body's contact forces, always zero). Inserting those six zeros gives
# the expert exactly its v4 input: measured returns are identical on v4 and v5 (~4740).
ANT_ENV_KWARGS: dict = {}


def robot_of(env_id: str) -> str:
    for robot, eid in LOCOMOTION_ENVS.items():
        if eid == env_id:
            return robot
    raise KeyError(f"{env_id!r} is not a locomotion env ({', '.join(LOCOMOTION_ENVS.values())})")


def policy_obs_adapter(policy_obs_dim: int, env_obs_dim: int, robot: str) -> Callable:
    """Map env observations ``[E, O_env]`` to the policy's input ``[E, O_policy]``."""
    if policy_obs_dim == env_obs_dim:
        return lambda obs: obs
    if robot == "ant" and policy_obs_dim == 111 and env_obs_dim == 105:
        return lambda obs: np.concatenate(
            [obs[..., :27], np.zeros(obs.shape[:-1] + (6,), obs.dtype), obs[..., 27:]], -1)
    raise ValueError(f"The policy expects {policy_obs_dim}-dim observations but the {robot} env "
                     f"gives {env_obs_dim}; pass a policy trained on this env "
                     f"(python -m dprl.sac --env ...).")


def rollout_episodes(
    env_id: str,
    policy_fn: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray],
    steps: int,
    *,
    seed: int,
    env_kwargs: dict | None = None,
    num_envs: int = 8,
    progress: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Run ``num_envs`` envs in lock-step until finished episodes hold at least ``steps`` steps.

    ``policy_fn(obs [E, O], progress [E], rng) -> actions [E, A]`` in [-1, 1]; ``progress`` is the
    fraction of the step budget collected when each env's current episode started (for schedules).
    Episode ``k`` (in start order) is reset with seed ``seed * 1_000_000 + k``.
    Returns episodes in the ``write_minari_dataset`` layout, with ``seed``.
    """
    from dprl.envs.vector import make_env, to_env_action

    rng = np.random.default_rng(seed)
    envs = [make_env(env_id, **(env_kwargs or {})) for _ in range(num_envs)]
    low = np.asarray(envs[0].action_space.low, np.float64)
    high = np.asarray(envs[0].action_space.high, np.float64)
    started = 0
    collected = 0      # transitions in finished episodes
    in_flight = 0      # transitions in running episodes
    episodes: list[dict] = []
    cur: list[dict | None] = [None] * num_envs
    obs = np.zeros((num_envs,) + envs[0].observation_space.shape, np.float64)
    start_progress = np.zeros(num_envs)

    def start(i: int) -> None:
        nonlocal started
        ep_seed = seed * 1_000_000 + started
        started += 1
        o, _ = envs[i].reset(seed=ep_seed)
        obs[i] = o
        start_progress[i] = min(1.0, (collected + in_flight) / max(steps, 1))
        cur[i] = {"seed": ep_seed, "observations": [o], "actions": [], "rewards": [],
                  "terminations": [], "truncations": []}

    for i in range(num_envs):
        start(i)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=f"rollout {env_id}", unit="step", mininterval=1.0)
    # Stop as soon as finished episodes cover the budget; episodes still running then are dropped
    # (never cut), so every stored episode ends where the env ended it.
    while collected < steps and any(c is not None for c in cur):
        active = np.array([c is not None for c in cur])
        actions = np.asarray(policy_fn(obs.astype(np.float32), start_progress, rng), np.float32)
        # float32 before stepping: the stored action is exactly the executed one (exact replays).
        env_actions = to_env_action(actions.astype(np.float64), low, high).astype(np.float32)
        for i in np.flatnonzero(active):
            o, r, te, tr, _ = envs[i].step(env_actions[i])
            ep = cur[i]
            ep["actions"].append(env_actions[i])
            ep["observations"].append(o)
            ep["rewards"].append(float(r))
            ep["terminations"].append(bool(te))
            ep["truncations"].append(bool(tr))
            in_flight += 1
            obs[i] = o
            if te or tr:
                n = len(ep["actions"])
                in_flight -= n
                collected += n
                if bar is not None:
                    bar.update(n)
                episodes.append({k: np.asarray(v) if k != "seed" else v for k, v in ep.items()})
                cur[i] = None
                # Start a new episode only while the budget is not yet covered by started ones.
                if collected + in_flight < steps:
                    start(i)
    if bar is not None:
        bar.close()
    # Lock-step envs finish several episodes on one step: keep the shortest prefix (in finishing
    # order) that covers the budget, then restore start order.
    return sorted(covering_prefix(episodes, steps), key=lambda e: e["seed"])


def covering_prefix(episodes: list[dict], steps: int) -> list[dict]:
    """The shortest prefix of ``episodes`` holding at least ``steps`` transitions (or all)."""
    kept, total = [], 0
    for ep in episodes:
        if total >= steps:
            break
        kept.append(ep)
        total += len(ep["actions"])
    return kept


def _scheduled(schedule: list[dict], pols: list, env_obs_dim: int, robot: str,
               action_dim: int) -> Callable:
    """A policy_fn that acts, per env, with the schedule entry its episode's start falls in
    (``None``: uniform random actions); the policies' actions are sampled."""
    adapts = [None if p is None else policy_obs_adapter(p.obs_dim, env_obs_dim, robot)
              for p in pols]

    def fn(obs, prog, rng):
        out = np.empty((len(obs), action_dim), np.float32)
        for k, (seg, pol) in enumerate(zip(schedule, pols)):
            last = k == len(schedule) - 1
            sel = (prog >= seg["start"]) & ((prog <= seg["end"]) if last else (prog < seg["end"]))
            if sel.any():
                out[sel] = (rng.uniform(-1, 1, (int(sel.sum()), action_dim)) if pol is None
                            else pol.act(adapts[k](obs[sel]), rng))
        return out
    return fn


def _sac_run_file(sac_run: Path, name: str, robot: str) -> Path:
    """``sac_run/name``, or an error that says how far that SAC run got and what it needs."""
    path = sac_run / name
    if path.is_file():
        return path
    import csv
    rows = list(csv.DictReader(open(sac_run / "curve.csv"))) if (sac_run / "curve.csv").is_file() \
        else []
    if not rows:
        raise FileNotFoundError(f"{sac_run} is not a `python -m dprl.sac` run (no curve.csv).")
    best = max(rows, key=lambda r: float(r["eval_return_mean"]))
    target = D4RL_REF_SCORES[robot][1] / 3
    raise FileNotFoundError(
        f"{path} is missing: that SAC run never reached the medium level (1/3 of D4RL's expert "
        f"return, {target:.0f}); its best evaluation return was "
        f"{float(best['eval_return_mean']):.0f} at {best['step']} of {rows[-1]['step']} env "
        f"steps. The README's expert table gives the env steps SAC needs for {robot}; train "
        f"longer by re-running the SAC command with a larger --steps (it resumes).")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _episode_stats(episodes, robot) -> dict:
    returns = np.array([e["rewards"].sum() for e in episodes])
    lo, hi = D4RL_REF_SCORES[robot]
    return {"num_episodes": len(episodes),
            "total_steps": int(sum(len(e["actions"]) for e in episodes)),
            "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "normalized_score": float(100 * (returns.mean() - lo) / (hi - lo))}


def make_locomotion_episodes(robot: str, recipe: str, steps: int, *, seed: int = 0,
                             policy_path: str | Path | None = None,
                             sac_run: str | Path | None = None, noise: float | None = None,
                             num_envs: int = 8, progress: bool = False
                             ) -> tuple[list[dict], dict]:
    """Episodes and provenance for ``<robot>-<recipe>``; see the module docstring."""
    from dprl.experts.policies import find_expert, load_policy
    from dprl.experts import shipped_policy, shipped_replay
    from dprl.experts.sac import replay_to_episodes

    if recipe not in LOCOMOTION_RECIPES:
        raise KeyError(f"Unknown recipe {recipe!r}; known: {', '.join(LOCOMOTION_RECIPES)}")
    env_id = LOCOMOTION_ENVS[robot]
    env_kwargs = ANT_ENV_KWARGS if robot == "ant" else {}
    prov: dict = {"recipe": recipe, "robot": robot, "env_id": env_id, "env_kwargs": env_kwargs,
                  "seed": seed, "episode_seeds": "seed * 1_000_000 + k (k = episode start order)",
                  "steps_requested": steps}
    if robot == "ant":
        prov["policy_obs_adapter"] = ("a 111-dim (Ant-v4, use_contact_forces=True) policy sees the "
                                      "105-dim Ant-v5 observation with 6 zeros inserted at index "
                                      "27 (the world body's contact forces, always zero in v4)")
    from dprl.envs.vector import make_env
    probe = make_env(env_id, **env_kwargs)
    env_obs_dim = probe.observation_space.shape[0]
    action_dim = probe.action_space.shape[0]
    probe.close()

    own_expert = Path(policy_path) if policy_path else find_expert(robot)

    def expert_policy():
        path = own_expert or shipped_policy(robot, "expert")
        pol = load_policy(path)
        return pol, {"path": str(path.resolve()), "sha256_16": _file_digest(path),
                     "meta": pol.meta}

    def noisy(pol, std_fn) -> Callable:
        adapt = policy_obs_adapter(pol.obs_dim, env_obs_dim, robot)

        def fn(obs, prog, rng):
            mean = pol.act(adapt(obs), deterministic=True)
            std = np.asarray(std_fn(prog), np.float32)[:, None]
            return np.clip(mean + std * rng.standard_normal(mean.shape), -1, 1)
        return fn

    def sampled(pol) -> Callable:
        adapt = policy_obs_adapter(pol.obs_dim, env_obs_dim, robot)
        return lambda obs, prog, rng: pol.act(adapt(obs), rng)

    def medium_part(n, part_seed):
        if sac_run is not None or own_expert is None:
            path = (_sac_run_file(Path(sac_run), "medium.npz", robot) if sac_run is not None
                    else shipped_policy(robot, "medium"))
            pol = load_policy(path)
            prov["medium_policy"] = {"source": "SAC snapshot (sampled actions)", "path": str(path),
                                     "sha256_16": _file_digest(path), "meta": pol.meta}
            fn = sampled(pol)
        else:
            pol, info = expert_policy()
            std = MEDIUM_NOISE[robot] if noise is None else noise
            prov["medium_policy"] = {"source": "expert + Gaussian action noise",
                                     "noise_std": std, "expert": info}
            fn = noisy(pol, lambda prog: np.full_like(prog, std))
        return rollout_episodes(env_id, fn, n, seed=part_seed, env_kwargs=env_kwargs,
                                num_envs=num_envs, progress=progress)

    def expert_part(n, part_seed):
        pol, info = expert_policy()
        std = EXPERT_NOISE if (noise is None or recipe == "medium-expert") else noise
        prov["expert_policy"] = {"source": "expert mean + Gaussian action noise",
                                 "noise_std": std, "expert": info}
        return rollout_episodes(env_id, noisy(pol, lambda prog: np.full_like(prog, std)), n,
                                seed=part_seed, env_kwargs=env_kwargs, num_envs=num_envs,
                                progress=progress)

    if recipe == "random":
        prov["policy"] = "uniform random actions in [-1, 1]"
        episodes = rollout_episodes(
            env_id, lambda obs, prog, rng: rng.uniform(-1, 1, (len(obs), action_dim)), steps,
            seed=seed, env_kwargs=env_kwargs, num_envs=num_envs, progress=progress)
    elif recipe == "expert":
        episodes = expert_part(steps, seed)
    elif recipe == "medium":
        episodes = medium_part(steps, seed)
    elif recipe == "medium-expert":
        # Seeds differ between the halves so no reset state appears twice.
        episodes = medium_part(steps // 2, seed) + expert_part(steps - steps // 2, seed + 500_000)
        prov["composition"] = "medium episodes (first half of steps), then expert episodes"
    else:  # medium-replay
        if sac_run is not None:
            path = _sac_run_file(Path(sac_run), "medium_replay.npz", robot)
            episodes = covering_prefix(replay_to_episodes(path), steps)
            prov["policy"] = {"source": "SAC replay buffer up to the medium snapshot",
                              "path": str(path), "sha256_16": _file_digest(path)}
        elif own_expert is None:
            schedule = shipped_replay(robot)
            pols = [None if seg["path"] is None else load_policy(seg["path"]) for seg in schedule]
            episodes = rollout_episodes(env_id, _scheduled(schedule, pols, env_obs_dim, robot,
                                                           action_dim),
                                        steps, seed=seed, env_kwargs=env_kwargs,
                                        num_envs=num_envs, progress=progress)
            prov["policy"] = {
                "source": "stand-in for the SAC replay buffer up to medium: uniform random "
                          "actions, then dprl's shipped SAC snapshots (sampled actions), each "
                          "for its share of the data (start/end: fractions of the dataset)",
                "schedule": [{"file": None if p is None else seg["path"].name,
                              "start": seg["start"], "end": seg["end"],
                              "env_steps": None if p is None else p.meta.get("env_steps")}
                             for seg, p in zip(schedule, pols)]}
        else:
            pol, info = expert_policy()
            lo = MEDIUM_NOISE[robot] if noise is None else noise
            hi = REPLAY_NOISE_START
            episodes = rollout_episodes(
                env_id, noisy(pol, lambda prog: hi + (lo - hi) * prog), steps, seed=seed,
                env_kwargs=env_kwargs, num_envs=num_envs, progress=progress)
            prov["policy"] = {
                "source": "stand-in for a SAC replay buffer (no --sac-run given): expert + "
                          "Gaussian action noise whose std falls linearly with the fraction of "
                          "the dataset collected",
                "noise_std_start": hi, "noise_std_end": lo, "expert": info}
    prov.update(_episode_stats(episodes, robot))
    return episodes, prov


def make_locomotion_dataset(task_name: str, steps: int = 1_000_000, *, seed: int = 0,
                            policy_path=None, sac_run=None, noise=None, overwrite=False,
                            progress: bool = False, dataset_id: str | None = None) -> dict:
    """Generate and write the dataset of a locomotion task preset; returns a summary."""
    from dprl.envs.tasks import get_task
    from dprl.data.io import write_minari_dataset

    task = get_task(task_name)
    robot, recipe = task_name.split("-", 1)
    t0 = time.perf_counter()
    episodes, prov = make_locomotion_episodes(robot, recipe, steps, seed=seed,
                                              policy_path=policy_path, sac_run=sac_run,
                                              noise=noise, progress=progress)
    t_roll = time.perf_counter() - t0
    dataset_id = dataset_id or task["dataset_id"]
    lo, hi = D4RL_REF_SCORES[robot]
    path = write_minari_dataset(
        dataset_id, episodes, task["env_id"], ref_min_score=lo, ref_max_score=hi,
        provenance={**prov, "task": task_name}, env_kwargs=prov["env_kwargs"],
        description=f"dprl stand-in for D4RL {task_name} ({recipe} recipe) on {task['env_id']}",
        overwrite=overwrite)
    return {"dataset_id": dataset_id, "path": str(path), "rollout_s": t_roll,
            "total_s": time.perf_counter() - t0, **{k: prov[k] for k in (
                "num_episodes", "total_steps", "return_mean", "normalized_score")}}
