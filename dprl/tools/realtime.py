"""Asynchronous chunk execution under an inference delay, and three ways to join chunks.

A chunked policy on a robot does not stop the world while it thinks: the next chunk is computed
while the current one executes. ``run_async`` simulates that with a delay of ``d`` env steps.

Schedule (times are env steps of an episode; the E envs run in lock-step, one episode each):
  * chunk k is requested at ``r_k = k s`` and computed from the observation at that time;
  * chunk 0 is available at once (the robot waits for its first chunk); chunk k >= 1 arrives
    ``d`` steps after its request, at ``r_k + d``; until then the chunks that arrived before keep
    executing. A chunk's action for time t is ``chunk[t - r_k]``, so the first ``d`` actions of a
    new chunk refer to steps that have already been executed;
  * ``s`` (``exec_horizon``) defaults to ``H - d``: every chunk runs until it runs out, and the
    next is requested ``d`` steps before it does. With ``d = 0`` this is synchronous execution of
    whole chunks (``dprl.envs.vector.evaluate`` with ``act_steps = H``), whatever the join.
  * valid settings: ``0 <= d < H`` and ``1 <= s <= H - d`` (the chunk in use covers the delay);
    'rtc' also needs ``d <= s`` (one request in flight, so the actions to be executed during the
    delay are known when the next chunk is requested; with the default s this is ``d <= H / 2``).

Joins (what is executed at time t):
  * 'naive': the newest chunk that has arrived (a switch, dropping its first d actions);
  * 'ensemble': temporal ensembling (ACT; Zhao et al. 2023): the weighted average of every
    arrived chunk's prediction for t, with weights ``w_i = exp(-m i)``, i = 0 for the oldest
    prediction (ACT's convention, m = ``ENSEMBLE_DECAY`` = 0.01, ACT's value). With the default
    ``s = H - d`` two chunks never both predict a step still to come, so it executes as 'naive'
    does; with ``s < H - d`` (e.g. ACT's s = 1) the predictions overlap and are averaged;
  * 'rtc': real-time chunking (Black, Galliker, Levine 2025): the new chunk is sampled with its
    first d actions inpainted to the ones committed for the delay, and the rest of the overlap
    with the previous chunk guided towards its plan with RTC's soft mask
    (``dprl.models.inpaint``), then it is switched to as in 'naive'. Needs a generative actor that samples
    through ``dprl.models.training.BCStage.sample`` (bc with diffusion/flow, dql, guided, qc best-of-N,
    dppo); a policy that ignores the constraint (qc's one-step policy, bc's MSE regressor) is
    refused with a clear error before any episode runs.

Smoothness: ``mean_squared_jerk`` of each episode's executed actions (the third finite
difference, as in experiments/ablate_chunk.py), averaged over episodes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dprl.envs.vector import ChunkExecutor, VecEnv, episode_statistics
from dprl.models.inpaint import MAX_GUIDANCE, Inpaint
from dprl.models.training import BCStage, InpaintingBCStage

JOINS = ("naive", "ensemble", "rtc")
ENSEMBLE_DECAY = 0.01  # ACT's m in w_i = exp(-m i) (i = 0: the oldest prediction)

# act(observations [E, (K,) O], key, inpaint or None) -> chunks [E, H, A] (numpy, in [-1, 1])
ActFn = Callable[[np.ndarray, jax.Array, "Inpaint | None"], np.ndarray]


def check_schedule(join: str, horizon: int, delay: int, exec_horizon: int | None = None) -> int:
    """Raise ValueError for a bad join or schedule; return the execution horizon ``s``."""
    if join not in JOINS:
        raise ValueError(f"Unknown join {join!r}; use one of {', '.join(JOINS)}")
    H, d = int(horizon), int(delay)
    if H < 1:
        raise ValueError(f"horizon must be >= 1, got {H}")
    if not 0 <= d < H:
        raise ValueError(f"delay d = {d} must be in [0, H - 1] = [0, {H - 1}]: with d >= H "
                         f"(the chunk length) the chunk in use runs out before the next one "
                         f"arrives. Use a longer chunk or a shorter delay.")
    s = H - d if exec_horizon is None else int(exec_horizon)
    if not 1 <= s <= H - d:
        raise ValueError(f"exec_horizon s = {s} must be in [1, H - d] = [1, {H - d}] so that the "
                         f"chunk in use covers the delay of {d} steps (or leave it unset: H - d)")
    if join == "rtc" and d > s:
        raise ValueError(f"rtc needs d <= s (one request in flight: the {d} actions executed "
                         f"during the delay must be known when the next chunk is requested), "
                         f"got d = {d}, s = {s}; with s = H - d this means d <= H / 2 = {H / 2:g}")
    return s


def mean_squared_jerk(actions) -> float:
    """Mean over time of ``||a[t+3] - 3 a[t+2] + 3 a[t+1] - a[t]||^2`` (third finite difference,
    unit time step) of one episode's executed actions ``[T, A]``; NaN when T < 4."""
    a = np.asarray(actions, dtype=np.float64)
    if len(a) < 4:
        return float("nan")
    jerk = a[3:] - 3 * a[2:-1] + 3 * a[1:-2] - a[:-3]
    return float((jerk ** 2).sum(-1).mean())


def with_inpaint(agent, inpaint: Inpaint | None):
    """A copy of ``agent`` whose BC stages (every ``BCStage`` field) sample with ``inpaint``
    (``dprl.models.training.InpaintingBCStage``)."""
    stages = {f.name: getattr(agent, f.name) for f in dataclasses.fields(agent)
              if isinstance(getattr(agent, f.name), BCStage)}
    if not stages:
        raise ValueError(f"{type(agent).__module__}: the agent has no BCStage (dprl.models.training) to "
                         f"inpaint with; rtc needs a generative actor")
    return agent.replace(**{name: InpaintingBCStage.of(stage, inpaint)
                            for name, stage in stages.items()})


def agent_policy(agent) -> ActFn:
    """The agent's ``sample_actions`` as an ``ActFn`` (with the prefix constraint when given)."""
    def act(observations, key, inpaint=None):
        acting = agent if inpaint is None else with_inpaint(agent, inpaint)
        return np.asarray(acting.sample_actions(jnp.asarray(observations), key)[0])
    return act


def check_inpaint_reaches_sampler(act: ActFn, observations: np.ndarray, key: jax.Array,
                                  horizon: int, action_dim: int) -> None:
    """One probe call: raise ValueError unless ``act`` returns the inpainted first action."""
    E = observations.shape[0]
    target = np.broadcast_to(np.linspace(-0.5, 0.5, horizon * action_dim, dtype=np.float32)
                             .reshape(1, horizon, action_dim), (E, horizon, action_dim))
    chunks = np.asarray(act(observations, key, Inpaint.create(target, 1, 1)))
    if not np.array_equal(chunks[:, 0], target[:, 0]):
        raise ValueError("rtc: this agent's acting policy ignores the prefix constraint (it does "
                         "not sample through a generative actor's BCStage.sample: e.g. qc's "
                         "one-step policy or bc's MSE regressor). Use join='naive' or 'ensemble'.")


@dataclasses.dataclass
class _Chunk:
    request: int      # r_k: the env step whose observation it was computed from
    arrival: int      # the env step from which it may be executed
    actions: np.ndarray  # [E, H, A]


def run_async(
    act: ActFn,
    env_id: str,
    num_episodes: int,
    horizon: int,
    delay: int,
    join: str,
    key: jax.Array,
    *,
    exec_horizon: int | None = None,
    seed: int = 0,
    obs_history: int = 1,
    normalize: Callable[[np.ndarray], np.ndarray] = lambda o: o,
    env_kwargs: dict | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    score: str = "normalized_return",
    ensemble_decay: float = ENSEMBLE_DECAY,
    max_guidance: float = MAX_GUIDANCE,
    return_episodes: bool = False,
) -> dict:
    """Run ``num_episodes`` episodes (one env each, in lock-step) with chunks of length
    ``horizon`` computed under an inference delay of ``delay`` env steps, joined by ``join``.

    ``act(obs [E, (K,) O], key, inpaint) -> chunks [E, H, A]`` is called at every request with a
    key split off ``key`` (the same sequence as a synchronous evaluation that splits its key per
    call). Returns ``return_mean``, ``return_std``, ``length_mean``, ``normalized_score``,
    ``success_rate`` (when the env reports it), ``jerk`` (mean over episodes of
    ``mean_squared_jerk`` of the executed actions), ``policy_calls``, ``wall_s``; with
    ``return_episodes`` also ``episodes``, ``actions`` (each env's executed actions ``[T, A]``)
    and ``trajectories`` (observations ``[T + 1, O]``).
    """
    s = check_schedule(join, horizon, delay, exec_horizon)
    H, d = int(horizon), int(delay)
    start = time.perf_counter()
    vec = VecEnv(env_id, num_episodes, seed=seed, env_kwargs=env_kwargs)
    ex = ChunkExecutor(vec, act_steps=1, obs_history=obs_history, normalize=normalize)
    ex.reset()
    A = int(np.prod(vec.action_space.shape))
    if join == "rtc":  # before any episode step; the probe's key is not the episodes'
        check_inpaint_reaches_sampler(act, ex.policy_observations(), jax.random.fold_in(key, 7),
                                      H, A)
    E = num_episodes
    done = np.zeros(E, bool)
    episodes: list[dict | None] = [None] * E
    trajectories = [[ex.raw_observations()[i]] for i in range(E)]
    executed: list[list[np.ndarray]] = [[] for _ in range(E)]
    chunks: list[_Chunk] = []
    calls, t = 0, 0
    while not done.all():
        if t % s == 0:  # request the next chunk from the observation now
            key, act_key = jax.random.split(key)
            inpaint = None
            if join == "rtc" and t > 0 and (d > 0 or H - s > 0):
                inpaint = _rtc_constraint(chunks, t, H, d, s, max_guidance)
            new = np.asarray(act(ex.policy_observations(), act_key, inpaint))
            if new.shape[:2] != (E, H):
                raise ValueError(f"the policy returned chunks of shape {new.shape}; expected "
                                 f"({E}, {H}, A): pass the policy's chunk length as horizon")
            calls += 1
            chunks.append(_Chunk(request=t, arrival=t if t == 0 else t + d, actions=new))
        live = [c for c in chunks if c.arrival <= t and t - c.request < H]
        if join == "ensemble" and len(live) > 1:
            w = np.exp(-ensemble_decay * np.arange(len(live)))   # oldest first
            preds = np.stack([c.actions[:, t - c.request] for c in live])  # [n, E, A]
            action = np.tensordot(w / w.sum(), preds, axes=1)
        else:
            newest = live[-1]
            action = newest.actions[:, t - newest.request]
        active = ~done
        next_obs, rew, term, trunc, infos = vec.step(action, active=active)
        for i in np.flatnonzero(active):
            trajectories[i].append(next_obs[i])
            executed[i].append(np.asarray(action[i]))
        for i, episode in ex.advance(active, next_obs, rew, term, trunc, infos).items():
            done[i], episodes[i] = True, episode
        t += 1
        chunks = [c for c in chunks if t - c.request < H]   # drop the run-out ones
    jerks = np.array([mean_squared_jerk(a) for a in executed])
    result = episode_statistics(episodes, score, ref_min_score, ref_max_score)
    result["jerk"] = float(np.nanmean(jerks)) if np.isfinite(jerks).any() else float("nan")
    result["policy_calls"] = calls
    result["wall_s"] = time.perf_counter() - start
    if return_episodes:
        result["episodes"] = episodes
        result["actions"] = [np.stack(a) for a in executed]
        result["trajectories"] = [np.stack(o) for o in trajectories]
    return result


def _rtc_constraint(chunks: list[_Chunk], t: int, H: int, d: int, s: int,
                    max_guidance: float) -> Inpaint:
    """RTC's constraint for the chunk requested at ``t``: the newest arrived chunk's plan for
    steps ``t .. t + H - s - 1`` (its last ``H - s`` actions), the first ``d`` of them committed."""
    prev = [c for c in chunks if c.arrival <= t][-1]
    offset = t - prev.request                      # = s
    target = np.zeros_like(prev.actions)
    target[:, :H - offset] = prev.actions[:, offset:]
    return Inpaint.create(target, num_fixed=d, overlap=H - s, max_guidance=max_guidance)
