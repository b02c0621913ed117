"""Pixel versions of the toy tasks: the same dynamics, seen through a camera rendered in numpy.

``dprl/PixelPole-v0`` (the multimodality proof from pixels) and ``dprl/PixelWaypointChain-v0``
(QC's long-horizon task from pixels) step exactly as ``dprl/Pole-v0`` and
``dprl/WaypointChain-v0``; only the observation differs. It is a dict

  image  uint8 [S, S, 3]  a top-down camera (S = ``size``, 32 by default): the agent as a soft
                          blob (so that its sub-pixel position is visible) in channel 0, the scene
                          (pole / waypoints) in channel 1, the goal (goal line / next waypoint)
                          in channel 2
  state  float [D]        what a robot would sense besides the camera: pole: its velocity
                          (the last displacement over the top speed, 0 after a reset); chain: the
                          one-hot of the next waypoint (the task's memory of its progress)

so the agent's position is known only from the image. A frame takes about 10 microseconds.

Their datasets are the state tasks' (same demonstrations, same play data), seen through the same
camera: ``pole_pixels`` / ``chain_pixels`` turn state observations into frames, stored once per
episode step (``frames [N + episodes, S, S, 3]``; a transition's observation and next observation
are indices into them).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from dprl.envs import chain, pole

IMAGE_SIZE = 32
BLOB_SIGMA = 0.035        # world units: about one pixel at 32 x 32
POLE_WINDOW = (-0.6, 0.6, -0.25, 0.95)      # x_min, x_max, y_min, y_max
CHAIN_WINDOW = (-1.1, 1.1, -1.1, 1.1)


def _pixel_centres(window, size: int) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates ``(xs, ys)`` of the pixel centres, ``[size, size]`` each; row 0 is the
    top of the image (largest y)."""
    x0, x1, y0, y1 = window
    xs = x0 + (np.arange(size) + 0.5) * (x1 - x0) / size
    ys = y1 - (np.arange(size) + 0.5) * (y1 - y0) / size
    return np.meshgrid(xs, ys, indexing="xy")


def _blob(xs, ys, positions: np.ndarray) -> np.ndarray:
    """The agent's soft blob for ``positions [M, 2]`` -> float ``[M, S, S]`` in [0, 1]."""
    d2 = ((xs[None] - positions[:, 0, None, None]) ** 2
          + (ys[None] - positions[:, 1, None, None]) ** 2)
    return np.exp(-d2 / (2 * BLOB_SIGMA ** 2))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def render_pole(positions: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Frames of the pole scene for agent ``positions [M, 2]`` -> uint8 ``[M, size, size, 3]``."""
    positions = np.asarray(positions, np.float64).reshape(-1, 2)
    xs, ys = _pixel_centres(POLE_WINDOW, size)
    pole_mask = np.hypot(xs - pole.POLE_XY[0], ys - pole.POLE_XY[1]) < pole.POLE_RADIUS
    goal_mask = ys >= pole.GOAL_Y
    frames = np.empty((len(positions), size, size, 3), np.uint8)
    for s in range(0, len(positions), 4096):
        p = positions[s:s + 4096]
        frames[s:s + 4096, ..., 0] = _to_uint8(_blob(xs, ys, p))
    frames[..., 1] = _to_uint8(pole_mask)[None]
    frames[..., 2] = _to_uint8(0.5 * goal_mask)[None]
    return frames


def render_chain(positions: np.ndarray, targets: np.ndarray, size: int = IMAGE_SIZE
                 ) -> np.ndarray:
    """Frames of the waypoint scene: agent ``positions [M, 2]``, next waypoint ``targets [M]``
    (0-2) -> uint8 ``[M, size, size, 3]``."""
    positions = np.asarray(positions, np.float64).reshape(-1, 2)
    targets = np.asarray(targets, np.int64).reshape(-1)
    xs, ys = _pixel_centres(CHAIN_WINDOW, size)
    discs = np.stack([np.hypot(xs - wx, ys - wy) < chain.REACH_RADIUS
                      for wx, wy in chain.WAYPOINTS])                     # [3, S, S]
    shades = np.array([1.0, 0.7, 0.4])                                     # A, B, C told apart
    scene = _to_uint8((discs * shades[:, None, None]).max(0))
    goal = _to_uint8(discs.astype(np.float64))                            # [3, S, S]
    frames = np.empty((len(positions), size, size, 3), np.uint8)
    for s in range(0, len(positions), 4096):
        frames[s:s + 4096, ..., 0] = _to_uint8(_blob(xs, ys, positions[s:s + 4096]))
    frames[..., 1] = scene[None]
    frames[..., 2] = goal[targets]
    return frames


def _image_space(size: int) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, shape=(size, size, 3), dtype=np.uint8)


class PixelPoleEnv(pole.PoleEnv):
    """``PoleEnv`` observed as ``{'image': uint8 [S, S, 3], 'state': velocity [2]}``."""

    def __init__(self, rewarded_side: str | None = None, start_noise: float = 0.02,
                 size: int = IMAGE_SIZE):
        super().__init__(rewarded_side, start_noise)
        self.size = int(size)
        self.observation_space = gym.spaces.Dict({
            "image": _image_space(self.size),
            "state": gym.spaces.Box(-1.5, 1.5, shape=(2,), dtype=np.float32)})
        self._prev = None

    def reset(self, *, seed=None, options=None):
        self._prev = None
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self._prev = self._pos.copy()
        return super().step(action)

    def _obs(self) -> dict:
        velocity = (np.zeros(2) if self._prev is None
                    else (self._pos - self._prev) / pole.MAX_SPEED)
        return {"image": render_pole(self._pos[None], self.size)[0],
                "state": velocity.astype(np.float32)}


class PixelWaypointChainEnv(chain.WaypointChainEnv):
    """``WaypointChainEnv`` observed as ``{'image': uint8 [S, S, 3], 'state': one-hot [3]}``."""

    def __init__(self, max_steps: int = chain.MAX_STEPS, size: int = IMAGE_SIZE):
        super().__init__(max_steps)
        self.size = int(size)
        self.observation_space = gym.spaces.Dict({
            "image": _image_space(self.size),
            "state": gym.spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32)})

    def _obs(self) -> dict:
        target = min(self._progress, 2)
        state = np.zeros(3, np.float32)
        state[target] = 1.0
        return {"image": render_chain(self._pos[None], np.array([target]), self.size)[0],
                "state": state}


# ---- the state datasets seen through the camera --------------------------------------------------
def frame_layout(dones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each transition's frames lie when every episode's ``T + 1`` observations are stored
    once, in order: ``(obs_frame [N], ends [E])`` with ``obs_frame[i] = i + (episodes ended
    before i)``; the next observation of transition ``i`` is frame ``obs_frame[i] + 1``;
    ``ends`` are the transitions that end an episode (their next frame is the episode's last)."""
    dones = np.asarray(dones, bool)
    ended_before = np.concatenate([[0], np.cumsum(dones)[:-1]]).astype(np.int64)
    return (np.arange(len(dones)) + ended_before).astype(np.int32), np.flatnonzero(dones)


def _frames_from_states(obs: np.ndarray, next_obs: np.ndarray, dones: np.ndarray, render
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``render(state_rows [M, O]) -> uint8 [M, S, S, C]`` applied once per stored frame:
    ``(frames [N + E, S, S, C], obs_frame [N])``."""
    obs_frame, ends = frame_layout(dones)
    order = np.empty(len(obs) + len(ends), np.int64)           # frame -> (source row)
    source = np.concatenate([obs, next_obs[ends]])
    order[obs_frame] = np.arange(len(obs))
    order[obs_frame[ends] + 1] = len(obs) + np.arange(len(ends))
    return render(source[order]), obs_frame


def pole_pixels(observations: np.ndarray, next_observations: np.ndarray, dones: np.ndarray,
                size: int = IMAGE_SIZE) -> dict:
    """Pole state transitions ``[N, 4]`` (episode order; ``dones [N]``) -> the pixel task's:
    ``frames`` uint8 ``[N + E, S, S, 3]``, ``obs_frame`` ``[N]`` (next: ``+ 1``), ``state`` and
    ``next_state`` ``[N, 2]`` (velocity over the top speed; 0 at an episode's first step)."""
    pos, next_pos = observations[:, :2].astype(np.float64), next_observations[:, :2]
    starts = np.concatenate([[True], np.asarray(dones, bool)[:-1]])
    prev = np.where(starts[:, None], pos, np.roll(pos, 1, axis=0))
    frames, obs_frame = _frames_from_states(pos, next_pos, dones,
                                            lambda p: render_pole(p, size))
    return {"frames": frames, "obs_frame": obs_frame,
            "state": ((pos - prev) / pole.MAX_SPEED).astype(np.float32),
            "next_state": ((next_pos - pos) / pole.MAX_SPEED).astype(np.float32)}


def chain_pixels(observations: np.ndarray, next_observations: np.ndarray, dones: np.ndarray,
                 size: int = IMAGE_SIZE) -> dict:
    """Chain state transitions ``[N, 5]`` -> the pixel task's (as ``pole_pixels``; ``state``
    is the one-hot of the next waypoint, ``[N, 3]``)."""
    render = lambda o: render_chain(o[:, :2], np.argmax(o[:, 2:5], axis=1), size)  # noqa: E731
    frames, obs_frame = _frames_from_states(observations, next_observations, dones, render)
    return {"frames": frames, "obs_frame": obs_frame,
            "state": observations[:, 2:5].astype(np.float32),
            "next_state": next_observations[:, 2:5].astype(np.float32)}
