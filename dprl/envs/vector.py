"""Environments: the env factory, a simple vector env, chunk execution and evaluation.

Agents act in action chunks ``[E, H, A]`` in [-1, 1]; the executor runs the first ``act_steps``
actions of each chunk (receding horizon), rescales them to the env's action bounds, and keeps an
observation history of ``K`` frames per env when the agent asks for one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np

import dprl  # noqa: F401  (warning filters)

_REGISTERED = False


def register_dprl_envs() -> None:
    """Register dprl's own env ids with gymnasium (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    ids = set(gym.registry)
    if "dprl/Pole-v0" not in ids:
        gym.register("dprl/Pole-v0", entry_point="dprl.envs.pole:PoleEnv")
    if "dprl/PoleRight-v0" not in ids:
        gym.register("dprl/PoleRight-v0", entry_point="dprl.envs.pole:PoleEnv",
                     kwargs={"rewarded_side": "right"})
    if "dprl/WaypointChain-v0" not in ids:  # QC's long-horizon sparse-reward toy
        gym.register("dprl/WaypointChain-v0", entry_point="dprl.envs.chain:WaypointChainEnv")
    if "dprl/PixelPole-v0" not in ids:      # the toy tasks through a camera (dprl/envs/pixels.py)
        gym.register("dprl/PixelPole-v0", entry_point="dprl.envs.pixels:PixelPoleEnv")
    if "dprl/PixelWaypointChain-v0" not in ids:
        gym.register("dprl/PixelWaypointChain-v0",
                     entry_point="dprl.envs.pixels:PixelWaypointChainEnv")
    # OGBench single-task envs with the QC paper's sparse reward (its --sparse on scene, puzzle).
    for env in ("cube-single", "cube-double", "scene", "puzzle-3x3"):
        for k in range(1, 6):
            sparse_id = f"dprl/{env}-singletask-task{k}-sparse-v0"
            if sparse_id not in ids:
                gym.register(sparse_id, entry_point="dprl.envs.vector:make_sparse_reward_env",
                             kwargs={"env_id": f"{env}-singletask-task{k}-v0"})
    from dprl.envs.benchmarks import register_benchmark_envs   # robomimic, AntMaze
    register_benchmark_envs()
    _REGISTERED = True


class SparseReward(gym.Wrapper):
    """-1 until the task is solved, 0 then: ``(r != 0) * -1`` of OGBench's single-task reward
    (``#satisfied - #sub-goals``), the QC paper's ``--sparse``."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, (0.0 if reward == 0 else -1.0), terminated, truncated, info


def make_sparse_reward_env(env_id: str, **kwargs) -> gym.Env:
    """``env_id`` (an OGBench single-task env, its own time limit) with ``SparseReward``."""
    return SparseReward(make_env(env_id, **kwargs))


register_dprl_envs()


def make_env(env_id: str, **kwargs) -> gym.Env:
    """``gym.make`` with dprl's ids registered and a clear error for an unknown id."""
    if env_id not in gym.registry:
        if env_id.split("-")[0] in ("cube", "scene", "puzzle") or "singletask" in env_id:
            try:
                import ogbench  # noqa: F401  registers the manipulation envs
            except ImportError as e:
                raise gym.error.NameNotFound(
                    f"Env {env_id!r} is an OGBench env, but ogbench is not installed. "
                    f"Run: pip install -e '.[ogbench]'") from e
    if env_id not in gym.registry:
        import difflib
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        raise gym.error.NameNotFound(
            f"Env id {env_id!r} is not registered with gymnasium."
            + (f" Did you mean {', '.join(close)}?" if close else "")
            + " Install the package that provides it (e.g. pip install 'gymnasium[mujoco]').")
    return gym.make(env_id, **kwargs)


def action_bounds(space: gym.spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)


def to_env_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map an action in [-1, 1] to the env's box [low, high]."""
    action = np.clip(action, -1.0, 1.0)
    return low + (action + 1.0) * 0.5 * (high - low)


def from_env_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map an env action in [low, high] to [-1, 1] (the inverse of ``to_env_action``)."""
    return np.clip(2.0 * (action - low) / (high - low) - 1.0, -1.0, 1.0)


class VecEnv:
    """E independent envs stepped in lock-step, with per-env auto-reset.

    Unlike gymnasium's vector envs it returns each finished episode's final observation next to
    the first observation of the next one, and it can leave some envs unstepped (``active``).
    """

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None):
        self.envs = [make_env(env_id, **(env_kwargs or {})) for _ in range(num_envs)]
        self.num_envs = num_envs
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self.low, self.high = action_bounds(self.action_space)
        self._seed = seed
        self._episodes_started = 0

    def _next_seed(self) -> int:
        seed = self._seed + self._episodes_started
        self._episodes_started += 1
        return seed

    def reset(self) -> np.ndarray:
        return np.stack([env.reset(seed=self._next_seed())[0] for env in self.envs])

    def reset_one(self, i: int) -> np.ndarray:
        return self.envs[i].reset(seed=self._next_seed())[0]

    def step(self, actions: np.ndarray, active: np.ndarray | None = None):
        """Step every active env with its action in [-1, 1].

        Returns ``(obs, rewards, terminated, truncated, infos)``; inactive envs keep their
        observation and report zero reward, not done.
        """
        E = self.num_envs
        active = np.ones(E, bool) if active is None else active
        obs, rew = [], np.zeros(E, np.float64)
        term, trunc = np.zeros(E, bool), np.zeros(E, bool)
        infos: list[dict] = [{} for _ in range(E)]
        env_actions = to_env_action(np.asarray(actions, np.float64), self.low, self.high)
        for i, env in enumerate(self.envs):
            if not active[i]:
                obs.append(None)
                continue
            o, r, te, tr, info = env.step(env_actions[i])
            obs.append(o)
            rew[i], term[i], trunc[i], infos[i] = r, te, tr, info
        return obs, rew, term, trunc, infos


def _history(frames: list[np.ndarray]) -> np.ndarray:
    return stack_observations(frames)


def stack_observations(observations: list) -> np.ndarray | dict:
    """Stack flat observations ``[O]`` -> ``[n, O]``, or pixel ones (dicts of named parts) part
    by part -> ``{'image': [n, H, W, C], 'state': [n, S]}``."""
    if isinstance(observations[0], dict):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


def observation_at(observations, i):
    """Row ``i`` of stacked flat or pixel observations."""
    if isinstance(observations, dict):
        return {k: v[i] for k, v in observations.items()}
    return observations[i]


def _as_policy_input(observations):
    """float32 for flat observations and pixel states; images stay uint8."""
    if isinstance(observations, dict):
        return {k: (v if v.dtype == np.uint8 else v.astype(np.float32))
                for k, v in observations.items()}
    return observations.astype(np.float32)


@dataclass
class ChunkExecutor:
    """Runs action chunks in a VecEnv, keeping the observation history each policy call needs.

    ``step_chunks(chunks [E, H, A])`` executes the first ``act_steps`` actions of every env's
    chunk (an env whose episode ends mid-chunk drops the rest of its chunk and is reset) and
    returns the executed transitions, each an array ``[act_steps, E, ...]`` with ``valid``
    marking the steps that were taken.
    """

    vec_env: VecEnv
    act_steps: int
    obs_history: int = 1  # K: frames of observation history given to the policy (1 = none)
    normalize: Callable[[np.ndarray], np.ndarray] = lambda obs: obs
    _frames: list[list[np.ndarray]] = field(default_factory=list)
    episode_returns: np.ndarray | None = None
    episode_lengths: np.ndarray | None = None
    finished: list[dict] = field(default_factory=list)

    def reset(self) -> None:
        obs = self.vec_env.reset()
        self._frames = [[o] * self.obs_history for o in obs]
        E = self.vec_env.num_envs
        self.episode_returns = np.zeros(E)
        self.episode_lengths = np.zeros(E, np.int64)

    def raw_observations(self) -> np.ndarray:
        """Latest observation per env, ``[E, O]`` (unnormalized)."""
        return stack_observations([f[-1] for f in self._frames])

    def policy_observations(self) -> np.ndarray:
        """Normalized policy input: ``[E, O]`` or ``[E, K, O]`` with history."""
        if self.obs_history == 1:
            return _as_policy_input(self.normalize(self.raw_observations()))
        return _as_policy_input(self.normalize(
            stack_observations([_history(f) for f in self._frames])))

    def advance(self, active: np.ndarray, next_obs, rewards, terminated, truncated,
                infos) -> dict[int, dict]:
        """Record one ``VecEnv.step`` of the ``active`` envs without resetting any (evaluation):
        their history, return and length. Returns ``{env: episode}`` for the envs whose episode
        ended at this step (``return``, ``length``, ``terminated`` and the scalar ``info``)."""
        ended = {}
        for i in np.flatnonzero(active):
            self._frames[i] = self._frames[i][1:] + [next_obs[i]]
            self.episode_returns[i] += rewards[i]
            self.episode_lengths[i] += 1
            if terminated[i] or truncated[i]:
                ended[i] = {"return": float(self.episode_returns[i]),
                            "length": int(self.episode_lengths[i]),
                            "terminated": bool(terminated[i]), **_scalar_info(infos[i])}
        return ended

    def step_chunks(self, chunks: np.ndarray) -> dict[str, np.ndarray]:
        chunks = np.asarray(chunks)
        E, H, _ = chunks.shape
        steps = min(self.act_steps, H)
        alive = np.ones(E, bool)
        out = {k: [] for k in ("observations", "actions", "rewards", "terminals", "truncations",
                               "next_observations", "valid")}
        for j in range(steps):
            obs_before = self.raw_observations()
            next_obs, rew, term, trunc, infos = self.vec_env.step(chunks[:, j], active=alive)
            out["observations"].append(obs_before)
            out["actions"].append(chunks[:, j])
            out["rewards"].append(rew)
            out["terminals"].append(term)
            out["truncations"].append(trunc)
            out["valid"].append(alive.copy())
            nxt = [observation_at(obs_before, i) for i in range(E)]
            for i in range(E):
                if not alive[i]:
                    continue
                nxt[i] = next_obs[i]
                self._frames[i] = self._frames[i][1:] + [next_obs[i]]
                self.episode_returns[i] += rew[i]
                self.episode_lengths[i] += 1
                if term[i] or trunc[i]:
                    self.finished.append({"return": float(self.episode_returns[i]),
                                          "length": int(self.episode_lengths[i]),
                                          "env": i, **_scalar_info(infos[i])})
                    first = self.vec_env.reset_one(i)
                    self._frames[i] = [first] * self.obs_history
                    self.episode_returns[i] = 0.0
                    self.episode_lengths[i] = 0
                    alive[i] = False
            out["next_observations"].append(stack_observations(nxt))
        return {k: stack_observations(v) for k, v in out.items()}


def _scalar_info(info: dict) -> dict:
    return {k: v for k, v in info.items()
            if isinstance(v, (bool, int, float, str, np.bool_, np.floating, np.integer))}


def normalized_score(returns: np.ndarray | float, ref_min: float | None,
                     ref_max: float | None) -> float:
    """D4RL-style normalized score: 100 * (R - ref_min) / (ref_max - ref_min)."""
    if ref_min is None or ref_max is None:
        return float("nan")
    return float(100.0 * (np.mean(returns) - ref_min) / (ref_max - ref_min))


def episode_statistics(episodes: list[dict], score: str, ref_min: float | None,
                       ref_max: float | None) -> dict:
    """Return mean/std, mean length, success rate (where episodes report one) and the normalized
    score (``score='success'``: 100 x success rate; else D4RL-normalized return) of finished
    episodes ``[{'return', 'length', ('success')}, ...]``."""
    returns = np.array([e["return"] for e in episodes])
    result = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
              "length_mean": float(np.mean([e["length"] for e in episodes]))}
    if all("success" in e for e in episodes):
        result["success_rate"] = float(np.mean([bool(e["success"]) for e in episodes]))
    if score == "success":
        result["normalized_score"] = 100.0 * result.get("success_rate", float("nan"))
    else:
        result["normalized_score"] = normalized_score(returns, ref_min, ref_max)
    return result


def evaluate(
    policy_fn: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    num_episodes: int,
    act_steps: int,
    *,
    seed: int = 0,
    obs_history: int = 1,
    normalize: Callable[[np.ndarray], np.ndarray] = lambda o: o,
    env_kwargs: dict | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    score: str = "normalized_return",
    return_episodes: bool = False,
    max_envs: int | None = None,
) -> dict:
    """Run ``num_episodes`` episodes, in parallel on at most ``max_envs`` envs (default: one env
    per episode), and summarize them.

    Episodes run in waves of ``E = min(max_envs, num_episodes)`` envs; episode ``k`` is seeded
    ``seed + k`` however many waves there are. ``policy_fn(obs [E, (K,) O]) -> chunks [E, H, A]``
    is called on all E envs at once (finished and unused envs included, so its input shape never
    changes and a jitted policy compiles once). Fewer envs hold less memory (an OGBench
    manipulation env holds about 160 MB) at the cost of more, smaller policy calls.

    Returns ``return_mean``, ``return_std`` (undiscounted return per episode), ``length_mean``
    (env steps), ``normalized_score`` (D4RL-style, or 100 x success rate when ``score='success'``),
    ``success_rate`` when the env reports ``info['success']``, and ``wall_s``.
    """
    start = time.perf_counter()
    E = num_episodes if not max_envs else min(max_envs, num_episodes)
    vec = VecEnv(env_id, E, seed=seed, env_kwargs=env_kwargs)
    ex = ChunkExecutor(vec, act_steps=act_steps, obs_history=obs_history, normalize=normalize)
    episodes: list[dict | None] = [None] * num_episodes
    trajectories: list[list[np.ndarray]] = [[] for _ in range(num_episodes)]
    for first in range(0, num_episodes, E):
        ex.reset()                     # this wave's env i runs episode first + i (seed + first + i)
        done = np.arange(E) >= num_episodes - first   # a last, smaller wave leaves envs unused
        for i in np.flatnonzero(~done):
            trajectories[first + i].append(observation_at(ex.raw_observations(), i))
        while not done.all():
            chunks = np.asarray(policy_fn(ex.policy_observations()))
            for j in range(min(act_steps, chunks.shape[1])):
                active = ~done
                if not active.any():
                    break
                next_obs, rew, term, trunc, infos = vec.step(chunks[:, j], active=active)
                for i in np.flatnonzero(active):
                    trajectories[first + i].append(next_obs[i])
                for i, episode in ex.advance(active, next_obs, rew, term, trunc, infos).items():
                    done[i], episodes[first + i] = True, episode
    result = episode_statistics(episodes, score, ref_min_score, ref_max_score)
    result["wall_s"] = time.perf_counter() - start
    if return_episodes:
        result["episodes"] = episodes
        result["trajectories"] = [stack_observations(t) for t in trajectories]
    return result


# ---------------------------------------------------------------------------------------------
# Env state, for an online phase that resumes where it stopped
# ---------------------------------------------------------------------------------------------
# Envs whose whole state can be saved as JSON and set again: dprl's toy envs (their state is
# plain attributes: positions, counters) and gymnasium's MuJoCo envs (the simulator's integration
# state: time, qpos, qvel, activations, warm start, controls). Others (OGBench's manipulation
# envs, which keep task state beside the simulator) restart on resume.
_PLAIN_ENV_MODULES = ("dprl.envs.pole.", "dprl.envs.chain.",   # every attribute plain data
                      "dprl.envs.pixels.")
_MUJOCO_ENV_MODULES = ("gymnasium.envs.mujoco.",)
_SKIPPED_ATTRS = {"spec", "metadata", "render_mode", "observation_space", "action_space",
                  "_np_random", "np_random"}


def _innermost(env: gym.Env):
    """``(wrappers outermost first, the unwrapped env)``."""
    wrappers = []
    while isinstance(env, gym.Wrapper):
        wrappers.append(env)
        env = env.env
    return wrappers, env


def _plain(v):
    """``v`` as JSON (``{'a': list, 'dtype'}`` for arrays), or ``...`` when it is not plain data."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
        return {"a": v.tolist(), "dtype": str(v.dtype)}
    return ...


def _unplain(v):
    return np.asarray(v["a"], dtype=v["dtype"]) if isinstance(v, dict) else v


def _plain_observation(o):
    """An observation as JSON: a flat array as ``_plain``; a pixel one (a dict of named parts)
    as ``{'parts': {name: _plain(part)}}``, its images keeping their uint8 dtype."""
    if isinstance(o, dict):
        return {"parts": {k: _plain(np.asarray(v)) for k, v in o.items()}}
    return _plain(np.asarray(o))


def _unplain_observation(v):
    if isinstance(v, dict) and "parts" in v:
        return {k: _unplain(p) for k, p in v["parts"].items()}
    return _unplain(v)


def saveable(env: gym.Env) -> bool:
    """Whether ``single_env_state`` can save ``env`` whole."""
    module = type(_innermost(env)[1]).__module__ + "."
    return module.startswith(_PLAIN_ENV_MODULES + _MUJOCO_ENV_MODULES)


def single_env_state(env: gym.Env) -> dict | None:
    """One env's state as JSON: its wrappers' counters (time limit), its RNG and its own state
    (plain attributes, or MuJoCo's integration state); None when it cannot be saved."""
    if not saveable(env):
        return None
    wrappers, inner = _innermost(env)
    state = {"wrappers": [{k: v for k, v in vars(w).items()
                           if k in ("_elapsed_steps", "_has_reset") and _plain(v) is not ...}
                          for w in wrappers],
             "rng": inner.np_random.bit_generator.state,
             "rng_seed": _plain(getattr(inner, "_np_random_seed", None))}
    if type(inner).__module__.startswith(_MUJOCO_ENV_MODULES):
        import mujoco
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(inner.model, spec))
        mujoco.mj_getState(inner.model, inner.data, physics, spec)
        state["mujoco"] = physics.tolist()
    else:
        state["attrs"] = {k: p for k, v in vars(inner).items()
                          if k not in _SKIPPED_ATTRS and (p := _plain(v)) is not ...}
    return state


def set_single_env_state(env: gym.Env, state: dict) -> None:
    """Set what ``single_env_state`` saved into ``env`` (the same env id, already reset)."""
    wrappers, inner = _innermost(env)
    for w, saved in zip(wrappers, state["wrappers"]):
        for k, v in saved.items():
            setattr(w, k, v)
    inner.np_random.bit_generator.state = state["rng"]
    if state.get("rng_seed") is not None:
        inner._np_random_seed = state["rng_seed"]
    if "mujoco" in state:
        import mujoco
        mujoco.mj_setState(inner.model, inner.data, np.asarray(state["mujoco"]),
                           mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(inner.model, inner.data)
    else:
        for k, v in state["attrs"].items():
            setattr(inner, k, _unplain(v))


def env_state(vec: VecEnv) -> dict | None:
    """A ``VecEnv``'s state as JSON (every env's, and the seed of the next episode); None when an
    env cannot be saved (``saveable``)."""
    envs = [single_env_state(e) for e in vec.envs]
    if any(s is None for s in envs):
        return None
    return {"seed": vec._seed, "episodes_started": vec._episodes_started, "envs": envs}


def set_env_state(vec: VecEnv, state: dict) -> None:
    vec._seed, vec._episodes_started = state["seed"], state["episodes_started"]
    for env, s in zip(vec.envs, state["envs"]):
        set_single_env_state(env, s)


def executor_state(ex: ChunkExecutor, keep_episodes: int = 100) -> dict | None:
    """A ``ChunkExecutor``'s state as JSON: its envs (``env_state``), the observation history,
    the running episodes' returns and lengths and the last ``keep_episodes`` finished episodes;
    None when its envs cannot be saved."""
    envs = env_state(ex.vec_env)
    if envs is None:
        return None
    return {"envs": envs, "frames": [[_plain_observation(o) for o in f] for f in ex._frames],
            "returns": _plain(ex.episode_returns), "lengths": _plain(ex.episode_lengths),
            "finished": [{k: _plain(v) for k, v in e.items() if _plain(v) is not ...}
                         for e in ex.finished[-keep_episodes:]]}


def set_executor_state(ex: ChunkExecutor, state: dict) -> None:
    set_env_state(ex.vec_env, state["envs"])
    ex._frames = [[_unplain_observation(o) for o in f] for f in state["frames"]]
    ex.episode_returns, ex.episode_lengths = _unplain(state["returns"]), _unplain(state["lengths"])
    ex.finished = list(state["finished"])
