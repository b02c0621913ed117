"""The waypoint chain: a small long-horizon, sparse-reward task for Q-chunking (QC).

A 2D point mass starts at the centre of a triangle of three waypoints and must visit them in a
fixed order (A, then B, then C). Reward is 1 only when C is reached after A and B (the episode
then terminates); it is 0 everywhere else, so value must travel back ~75 steps. Touching a
waypoint out of order resets the progress (touching A restarts it at "A visited").

The play demonstrations (``play_action``) wander from waypoint to waypoint in random order, so
most demonstrated episodes fail; a policy must stitch the right legs together. Plain numpy:
tens of thousands of steps per second.

Observation [5]: position (x, y) and a one-hot of the next waypoint to visit (3).
Action [2] in [-1, 1]: velocity, scaled by ``MAX_SPEED`` per step.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

WAYPOINTS = np.array([[0.0, 0.8], [0.7, -0.4], [-0.7, -0.4]])  # A, B, C
REACH_RADIUS = 0.12
MAX_SPEED = 0.05
MAX_STEPS = 150   # the shortest successful path takes ~70 steps
START_NOISE = 0.05


class WaypointChainEnv(gym.Env):
    """Visit waypoints A -> B -> C in order; reward 1 (and termination) on completing the chain.

    ``info``: ``success`` (the chain was completed), ``progress`` (waypoints visited in order so
    far, 0-3) and ``visited`` (the index of the waypoint touched on this step, or -1).
    """

    metadata = {"render_modes": []}

    def __init__(self, max_steps: int = MAX_STEPS):
        self.max_steps = int(max_steps)
        self.observation_space = gym.spaces.Box(-2.0, 2.0, shape=(5,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2)
        self._progress = 0
        self._last = -1
        self._t = 0

    def _obs(self) -> np.ndarray:
        onehot = np.zeros(3)
        onehot[min(self._progress, 2)] = 1.0
        return np.concatenate([self._pos, onehot]).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-START_NOISE, START_NOISE, 2)
        self._progress, self._last, self._t = 0, -1, 0
        return self._obs(), {"success": False, "progress": 0, "visited": -1}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        self._pos = np.clip(self._pos + MAX_SPEED * action, -1.5, 1.5)
        self._t += 1
        dist = np.linalg.norm(WAYPOINTS - self._pos, axis=1)
        touched = int(np.argmin(dist)) if dist.min() < REACH_RADIUS else -1
        visited = -1
        if touched >= 0 and touched != self._last:   # a new visit (staying on one counts once)
            visited = touched
            if touched == self._progress:
                self._progress += 1
            else:
                self._progress = 1 if touched == 0 else 0
        self._last = touched if touched >= 0 else self._last
        success = self._progress == 3
        terminated = bool(success)
        truncated = (not terminated) and self._t >= self.max_steps
        info = {"success": bool(success), "progress": int(self._progress), "visited": visited}
        return self._obs(), float(success), terminated, truncated, info


def play_action(pos: np.ndarray, target: int, rng: np.random.Generator,
                noise: float = 0.3) -> np.ndarray:
    """The play demonstrator: head for waypoint ``target`` with Gaussian steering noise."""
    direction = WAYPOINTS[target] - pos
    action = direction / max(np.linalg.norm(direction), 1e-6)
    return np.clip(action + noise * rng.standard_normal(2), -1.0, 1.0).astype(np.float32)


def next_play_target(last: int, rng: np.random.Generator) -> int:
    """A random waypoint other than the one just visited (uniform over the other two)."""
    choices = [i for i in range(len(WAYPOINTS)) if i != last]
    return int(rng.choice(choices))
