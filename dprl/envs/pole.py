"""The pole task: a 2D point mass that must pass a pole on its way to a goal line.

The multimodality proof. The agent starts just below a pole (two steps away) and must reach the line ``y >= GOAL_Y``;
touching the pole ends the episode. Demonstrations pass on the left or on the right, half each,
so a policy that averages modes (Gaussian BC) drives straight into the pole while a generative
policy (diffusion BC) keeps both modes. Plain numpy: thousands of steps per second.

Observation [4]: position (x, y) and the displacement (x, y) to the pole. Action [2] in [-1, 1]:
velocity, scaled by ``max_speed`` per step.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

POLE_XY = np.array([0.0, 0.3])
POLE_RADIUS = 0.18
GOAL_Y = 0.7
START_XY = np.array([0.0, 0.0])
MAX_SPEED = 0.1
MAX_STEPS = 40
SIDES = ("left", "right")


class PoleEnv(gym.Env):
    """Reach ``y >= GOAL_Y`` (0.7) without touching the pole at (0, 0.3).

    Reward: +1 on reaching the goal line (only when passing on ``rewarded_side``, if given), 0
    otherwise. ``info`` carries ``success``, ``collision`` and ``side`` ('left', 'right' or None:
    the side of the pole that the agent was on when it passed the pole's height).
    """

    metadata = {"render_modes": []}

    def __init__(self, rewarded_side: str | None = None, start_noise: float = 0.02):
        if rewarded_side not in (None, *SIDES):
            raise ValueError(f"rewarded_side must be None, 'left' or 'right', not {rewarded_side!r}")
        self.rewarded_side = rewarded_side
        self.start_noise = start_noise
        self.observation_space = gym.spaces.Box(-2.0, 2.0, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = START_XY.copy()
        self._t = 0
        self._side = None

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, POLE_XY - self._pos]).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = START_XY + self.np_random.uniform(-self.start_noise, self.start_noise, 2)
        self._t = 0
        self._side = None
        return self._obs(), {"success": False, "collision": False, "side": None}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        prev = self._pos.copy()
        self._pos = np.clip(self._pos + MAX_SPEED * action, -2.0, 2.0)
        self._t += 1
        if prev[1] < POLE_XY[1] <= self._pos[1] and self._side is None:
            self._side = "left" if self._pos[0] < POLE_XY[0] else "right"
        collision = _segment_hits_pole(prev, self._pos)
        success = (not collision) and self._pos[1] >= GOAL_Y
        if success and self._side is None:  # crossed both heights in one step
            self._side = "left" if self._pos[0] < POLE_XY[0] else "right"
        rewarded = self.rewarded_side is None or self._side == self.rewarded_side
        reward = 1.0 if (success and rewarded) else 0.0
        terminated = bool(collision or success)
        truncated = (not terminated) and self._t >= MAX_STEPS
        info = {"success": bool(success), "collision": bool(collision), "side": self._side}
        return self._obs(), reward, terminated, truncated, info


def _segment_hits_pole(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the segment a->b passes within POLE_RADIUS of the pole's centre."""
    ab = b - a
    denom = float(ab @ ab)
    u = 0.0 if denom == 0.0 else float(np.clip((POLE_XY - a) @ ab / denom, 0.0, 1.0))
    closest = a + u * ab
    return bool(np.linalg.norm(POLE_XY - closest) < POLE_RADIUS)


def demo_action(pos: np.ndarray, side: str, rng: np.random.Generator, noise: float = 0.1):
    """The scripted demonstrator: steer around the pole on ``side``, then to the goal line."""
    sign = -1.0 if side == "left" else 1.0
    waypoint = np.array([sign * 0.33, POLE_XY[1]])
    target = waypoint if pos[1] < POLE_XY[1] - 0.05 else np.array([sign * 0.1, GOAL_Y + 0.2])
    direction = target - pos
    action = direction / max(np.linalg.norm(direction), 1e-6)
    return np.clip(action + noise * rng.standard_normal(2), -1.0, 1.0).astype(np.float32)
