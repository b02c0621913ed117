"""Envs of the papers' other benchmarks: robomimic through robosuite, D4RL AntMaze through the
Minari port's own env (gymnasium-robotics), and the reward conventions the papers train with.

``dprl/robomimic-<task>-v0`` (task: lift, can, square, transport) builds the robosuite env the
way robomimic does: ``robosuite.make(env_name, **env_kwargs)`` with the ``env_args`` stored in the
dataset file (``data.attrs['env_args']``), observations the low-dim keys concatenated in the
order the dataset loader uses, actions in [-1, 1], the episode ends at success (QC's and DPPO's
wrappers: ``reward > 0``) or at the task's horizon, ``info['success']``. ``reward_shift=-1`` gives
QC's ``r - 1``. robosuite is an optional extra (``pip install -e '.[robomimic]'``).

``dprl/antmaze-<maze>-v0`` is the evaluation env the Minari dataset records
(``minari.load_dataset(id).recover_environment(eval_env=True)``), its dict observation flattened
in sorted key order (as ``dprl.data.offline`` flattens the dataset's), ``info['success']``, and an
optional ``reward_transform`` ('minus_one': IQL's and QC's ``r - 1``; 'cql_antmaze':
Diffusion-QL's ``(r - 0.5) * 4``).

From pixels: ``dprl/visual-<env>-singletask[-task<k>]-v0`` is OGBench's visual single-task env
(a 64x64 camera, nothing else) seen as ``{'image', 'state': [0]}``;
``dprl/robomimic-<task>-ph-image-v0`` the robosuite env with robomimic's agentview and
eye-in-hand 84x84 cameras (``{'image_agentview', 'image_wrist', 'state'}``, as robomimic's image
files record them).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np

from dprl.envs.tasks import OGBENCH_VISUAL_ENVS, QC_SPARSE_ENVS, ROBOMIMIC_CAMERAS

ROBOMIMIC_TASKS = {
    # task: (robosuite env name, horizon (QC's and DPPO's max episode steps), two arms)
    "lift": ("Lift", 300, False),
    "can": ("PickPlaceCan", 300, False),
    "square": ("NutAssemblySquare", 400, False),
    "transport": ("TwoArmTransport", 800, True),
}
ROBOMIMIC_INSTALL = "pip install -e '.[robomimic]'"
ANTMAZE_DATASETS = {
    "umaze": "D4RL/antmaze/umaze-v1",
    "umaze-diverse": "D4RL/antmaze/umaze-diverse-v1",
    "medium-play": "D4RL/antmaze/medium-play-v1",
    "medium-diverse": "D4RL/antmaze/medium-diverse-v1",
    "large-play": "D4RL/antmaze/large-play-v1",
    "large-diverse": "D4RL/antmaze/large-diverse-v1",
}
# Low-dim observation keys in the order QC's and DPPO's robomimic wrappers concatenate them.
ROBOMIMIC_OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
ROBOMIMIC_TWO_ARM_OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos",
                              "robot1_eef_pos", "robot1_eef_quat", "robot1_gripper_qpos",
                              "object")
REWARDS = {"minus_one": lambda r: r - 1.0, "cql_antmaze": lambda r: (r - 0.5) * 4.0}
# robomimic's image files: 84x84x3 uint8 frames per camera (the cameras: tasks.ROBOMIMIC_CAMERAS)
ROBOMIMIC_IMAGE_SIZE = 84
# env -> the QC paper's sparse reward (its --sparse on scene and puzzle-3x3)
OGBENCH_VISUAL_SINGLE_TASK_ENVS = {env: env in QC_SPARSE_ENVS for env in OGBENCH_VISUAL_ENVS}


class RewardTransform(gym.Wrapper):
    """Online rewards as the dataset's are transformed (``REWARDS``), so both agree."""

    def __init__(self, env, name: str):
        super().__init__(env)
        if name not in REWARDS:
            raise ValueError(f"Unknown reward transform {name!r}; known: {', '.join(REWARDS)}")
        self._fn = REWARDS[name]

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(self._fn(float(reward))), terminated, truncated, info


class FlattenSorted(gym.ObservationWrapper):
    """A dict observation as one float32 vector, keys in sorted order."""

    def __init__(self, env):
        super().__init__(env)
        spaces = env.observation_space.spaces
        self._keys = sorted(spaces)
        low = np.concatenate([np.broadcast_to(spaces[k].low, spaces[k].shape).ravel()
                              for k in self._keys])
        high = np.concatenate([np.broadcast_to(spaces[k].high, spaces[k].shape).ravel()
                               for k in self._keys])
        self.observation_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32))

    def observation(self, obs):
        return np.concatenate([np.asarray(obs[k], np.float32).ravel() for k in self._keys])


class SuccessInfo(gym.Wrapper):
    """``info['success']`` from the env's own success flag (gymnasium-robotics: ``success``)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["success"] = bool(info.get("success", info.get("is_success", False)))
        return obs, reward, terminated, truncated, info


def make_antmaze_env(dataset_id: str, reward_transform: str | None = None) -> gym.Env:
    """The evaluation env of a Minari AntMaze dataset (see the module docstring)."""
    try:
        import gymnasium_robotics  # noqa: F401  registers AntMaze_*
        import minari
    except ImportError as e:
        raise gym.error.DependencyNotInstalled(
            f"AntMaze needs gymnasium-robotics: pip install -e '.[antmaze]' ({e})") from e
    try:
        dataset = minari.load_dataset(dataset_id)
    except Exception as e:  # noqa: BLE001  FileNotFoundError, ValueError, ...
        raise gym.error.Error(f"The AntMaze env is the one Minari dataset {dataset_id!r} records, "
                              f"which is not stored here ({e}). Run: minari download "
                              f"{dataset_id}") from e
    env = dataset.recover_environment(eval_env=True)
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = FlattenSorted(env)
    env = SuccessInfo(env)
    return RewardTransform(env, reward_transform) if reward_transform else env


def robomimic_file(task: str, dataset_type: str = "ph", name: str = "low_dim_v15.hdf5") -> Path:
    root = Path(os.environ.get("ROBOMIMIC_DATASET_ROOT") or "~/.robomimic").expanduser()
    return root / task / dataset_type / name


class RobomimicLowDim(gym.Env):
    """A robosuite env seen as robomimic's low-dim wrappers see it (module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, env, obs_keys, horizon: int, reward_shift: float = 0.0):
        self._env, self._keys, self._horizon = env, tuple(obs_keys), int(horizon)
        self._shift, self._t = float(reward_shift), 0
        low, high = env.action_spec
        self.action_space = gym.spaces.Box(np.asarray(low, np.float32),
                                           np.asarray(high, np.float32))
        dim = len(self._flat(env.reset()))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    def _flat(self, obs) -> np.ndarray:
        return np.concatenate([np.asarray(obs[k], np.float32).ravel() for k in self._keys])

    def _observe(self, obs):
        """What the agent sees of robosuite's observation dict (here: the low-dim vector)."""
        return self._flat(obs)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            np.random.seed(seed)   # robosuite draws its initial placements from numpy's RNG
        self._t = 0
        return self._observe(self._env.reset()), {}

    def step(self, action):
        obs, reward, _, info = self._env.step(np.asarray(action, np.float64))
        self._t += 1
        success = bool(self._env._check_success())
        info = dict(info, success=success)
        truncated = self._t >= self._horizon and not success
        return self._observe(obs), float(reward) + self._shift, success, truncated, info

    def close(self):
        self._env.close()


def make_robomimic_env(task: str, dataset_type: str = "ph", reward_shift: float = 0.0,
                       obs_keys=None, hdf5_path: str | None = None,
                       cameras: bool = False) -> gym.Env:
    """``dprl/robomimic-<task>-v0``: robosuite's env with the dataset file's ``env_args``;
    ``cameras``: with robomimic's two 84x84 cameras (``RobomimicImage``)."""
    import h5py

    if task not in ROBOMIMIC_TASKS:
        raise gym.error.Error(f"Unknown robomimic task {task!r}; known: {', '.join(ROBOMIMIC_TASKS)}")
    env_name, horizon, two_arm = ROBOMIMIC_TASKS[task]
    try:
        import robosuite
    except ImportError as e:
        raise gym.error.DependencyNotInstalled(
            f"robomimic's {task} env needs robosuite: {ROBOMIMIC_INSTALL} ({e})") from e
    path = Path(hdf5_path) if hdf5_path else robomimic_file(task, dataset_type)
    if not path.is_file():
        raise gym.error.Error(f"robomimic's {task} env is built from its dataset's env_args, and "
                              f"{path} is not on disk; download it (python -m dprl.datasets list "
                              f"shows the command)")
    with h5py.File(path, "r") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
    kwargs = dict(env_args.get("env_kwargs", {}))
    kwargs.update(has_renderer=False, has_offscreen_renderer=cameras, use_camera_obs=cameras,
                  use_object_obs=True, reward_shaping=False, ignore_done=True)
    if cameras:
        kwargs.update(camera_names=[k[:-len("_image")] for k in ROBOMIMIC_CAMERAS],
                      camera_heights=ROBOMIMIC_IMAGE_SIZE, camera_widths=ROBOMIMIC_IMAGE_SIZE)
    env = robosuite.make(env_args.get("env_name", env_name), **kwargs)
    keys = obs_keys or (ROBOMIMIC_TWO_ARM_OBS_KEYS if two_arm else ROBOMIMIC_OBS_KEYS)
    if cameras:
        return RobomimicImage(env, keys, horizon, reward_shift)
    return RobomimicLowDim(env, keys, horizon, reward_shift)


class ImageAndState(gym.ObservationWrapper):
    """An image-only env as dprl's pixel observation ``{'image': uint8 [H, W, C], 'state':
    float32 [0]}`` (OGBench's visual envs observe the camera only: the state is empty)."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({
            "image": env.observation_space,
            "state": gym.spaces.Box(-np.inf, np.inf, (0,), np.float32)})

    def observation(self, obs):
        return {"image": np.asarray(obs, np.uint8), "state": np.zeros(0, np.float32)}


def make_ogbench_visual_env(env_id: str, sparse: bool = False) -> gym.Env:
    """``dprl/visual-<env>-singletask[-task<k>]-v0``: OGBench's ``visual-<env>-singletask...``
    (64x64 frames rendered by MuJoCo, its own time limit) as ``ImageAndState``; ``sparse``: the
    QC paper's -1 / 0 reward (scene, puzzle-3x3). Rendering needs a MuJoCo GL backend
    (``MUJOCO_GL=egl`` or ``osmesa``)."""
    try:
        import ogbench  # noqa: F401  registers the visual envs
    except ImportError as e:
        raise gym.error.DependencyNotInstalled(
            f"{env_id} is an OGBench env: pip install -e '.[ogbench]' ({e})") from e
    env = ImageAndState(gym.make(env_id))
    if sparse:
        from dprl.envs.vector import SparseReward
        env = SparseReward(env)
    return env


class RobomimicImage(RobomimicLowDim):
    """A robosuite env with cameras as robomimic's image files record it: ``{'image_agentview',
    'image_wrist': uint8 [84, 84, 3] (flipped in height, as robomimic flips robosuite's
    frames), 'state': the low-dim keys concatenated}``."""

    def __init__(self, env, obs_keys, horizon: int, reward_shift: float = 0.0, cameras=None):
        super().__init__(env, obs_keys, horizon, reward_shift)
        self._cameras = dict(cameras or ROBOMIMIC_CAMERAS)
        first = self._observe(env.reset())
        spaces = {k: gym.spaces.Box(0, 255, first[k].shape, np.uint8)
                  for k in self._cameras.values()}
        spaces["state"] = gym.spaces.Box(-np.inf, np.inf, first["state"].shape, np.float32)
        self.observation_space = gym.spaces.Dict(spaces)

    def _observe(self, obs) -> dict:
        out = {dst: np.ascontiguousarray(np.asarray(obs[src])[::-1]).astype(np.uint8)
               for src, dst in self._cameras.items()}
        out["state"] = self._flat(obs)
        return out


def make_robomimic_image_env(task: str, dataset_type: str = "ph", reward_shift: float = 0.0,
                             obs_keys=None, hdf5_path: str | None = None) -> gym.Env:
    """``dprl/robomimic-<task>-<type>-image-v0``: the robosuite env with robomimic's two 84x84
    cameras (``RobomimicImage``), built from the image file's ``env_args``."""
    path = Path(hdf5_path) if hdf5_path else robomimic_file(task, dataset_type, "image_v15.hdf5")
    return make_robomimic_env(task, dataset_type, reward_shift, obs_keys, str(path), cameras=True)


def register_benchmark_envs() -> None:
    """Register the ids above with gymnasium (idempotent)."""
    ids = set(gym.registry)
    for task in ROBOMIMIC_TASKS:
        for dtype in ("ph", "mh"):
            env_id = f"dprl/robomimic-{task}-{dtype}-v0"
            if env_id not in ids:
                gym.register(env_id, entry_point="dprl.envs.benchmarks:make_robomimic_env",
                             kwargs={"task": task, "dataset_type": dtype})
    for task in ("lift", "can", "square"):
        env_id = f"dprl/robomimic-{task}-ph-image-v0"
        if env_id not in ids:
            gym.register(env_id, entry_point="dprl.envs.benchmarks:make_robomimic_image_env",
                         kwargs={"task": task, "dataset_type": "ph"})
    for env, sparse in OGBENCH_VISUAL_SINGLE_TASK_ENVS.items():
        for suffix in ("", "-task1", "-task2", "-task3", "-task4", "-task5"):
            ogbench_id = f"visual-{env}-singletask{suffix}-v0"
            if f"dprl/{ogbench_id}" not in ids:
                gym.register(f"dprl/{ogbench_id}",
                             entry_point="dprl.envs.benchmarks:make_ogbench_visual_env",
                             kwargs={"env_id": ogbench_id, "sparse": sparse})
    for maze, dataset_id in ANTMAZE_DATASETS.items():
        env_id = f"dprl/antmaze-{maze}-v0"
        if env_id not in ids:
            gym.register(env_id, entry_point="dprl.envs.benchmarks:make_antmaze_env",
                         kwargs={"dataset_id": dataset_id})
