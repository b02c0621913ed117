"""Task presets: a D4RL-style task name -> env, dataset and evaluation settings.

``get_task('hopper-medium')`` returns a dict with:
  env_id, env_kwargs          what ``dprl.envs.vector.make_env`` builds for evaluation and online steps
  dataset_id                  dprl's locally generated stand-in (namespace ``dprl/``)
  official_dataset_id         the official Minari dataset, used instead when it is present locally
  make_command                the command that generates the stand-in
  eval_episodes               episodes per evaluation
  eval_envs                   envs evaluating at once (None: one per episode); heavy envs use fewer
  score                       'normalized_return' (D4RL: 100 * (R - min) / (max - min)) or 'success'
  ref_min_score, ref_max_score  used when the dataset's metadata has none
  success_masks               OGBench: successful steps are terminal (no bootstrapping from them)
  reward_relabel              None, or the function that gives a shared dataset this task's rewards
  data_env_id                 the env the dataset is recorded in, when the task relabels another
                              env's data (default: env_id; checked when a run loads the data;
                              None: the env is built from the dataset itself, no check)
  official_sources            the released datasets, preferred in order over the stand-in
                              (``dprl.data.formats``: ``minari:<id>``, ``ogbench:<name>``,
                              ``robomimic:<task>/<type>``); default: ``official_dataset_id``
  has_recipe                  whether ``python -m dprl.datasets make`` can make ``dataset_id``
  reward_transform            None, 'minus_one' (r - 1) or 'cql_antmaze' ((r - 0.5) * 4), on the
                              dataset's rewards (the env's ``reward_transform`` does the same)
  obs_keys                    robomimic: the low-dim observation keys, in order
  cameras                     robomimic image files: ``{file key: observation key}`` of the
                              cameras read as pixel observations
  augment                     pixel tasks: training batches' augmentation, 'none' | 'shift' |
                              'crop:<size>' (dprl/models/augment.py; a crop is centered when acting)
"""
from __future__ import annotations

import copy

# D4RL reference scores (d4rl infos.py), also written into dprl's generated datasets.
D4RL_REF_SCORES = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}
LOCOMOTION_ENVS = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}
LOCOMOTION_RECIPES = ("random", "medium", "expert", "medium-replay", "medium-expert")
# Minari hosts these D4RL-like MuJoCo datasets (v5 envs); other recipes exist only as stand-ins.
OFFICIAL_MINARI = {"medium": "medium-v0", "expert": "expert-v0", "random": None,
                   "medium-replay": None, "medium-expert": None}

TASKS: dict[str, dict] = {}


def _register(name: str, **preset):
    preset.setdefault("env_kwargs", {})
    preset.setdefault("official_dataset_id", None)
    preset.setdefault("eval_episodes", 10)
    preset.setdefault("eval_envs", None)
    preset.setdefault("score", "normalized_return")
    preset.setdefault("ref_min_score", None)
    preset.setdefault("ref_max_score", None)
    # OGBench convention: no bootstrapping from successful states (masks = 1 - success).
    preset.setdefault("success_masks", False)
    # Tasks that share another task's dataset relabel its rewards at load time
    # ("module:function(data, preset) -> data"); ``dataset_task`` names the task whose
    # ``make`` command makes the shared dataset.
    preset.setdefault("reward_relabel", None)
    preset.setdefault("dataset_task", None)
    # The env a task's data must be recorded in (dprl.data.registry.check_dataset_env).
    preset.setdefault("data_env_id", preset["env_id"])
    # Toy tasks name their generator ("module:function(task_name, seed=, overwrite=)"); with
    # auto_make a run makes the dataset on the spot when it is missing (seconds of work).
    preset.setdefault("generator", None)
    preset.setdefault("auto_make", False)
    preset.setdefault("make_command", f"python -m dprl.datasets make {name}")
    official = preset["official_dataset_id"]
    preset.setdefault("official_sources", [f"minari:{official}"] if official else [])
    preset.setdefault("has_recipe", True)
    preset.setdefault("reward_transform", None)
    # Pixel tasks: how their images come from a state dataset, and how training batches are
    # augmented ('none' | 'shift'); None / 'none' for state tasks.
    preset.setdefault("observation_transform", None)
    preset.setdefault("augment", "none")
    TASKS[name] = preset


for _robot, _env_id in LOCOMOTION_ENVS.items():
    for _recipe in LOCOMOTION_RECIPES:
        _official = OFFICIAL_MINARI[_recipe]
        _register(
            f"{_robot}-{_recipe}",
            env_id=_env_id,
            dataset_id=f"dprl/{_robot}/{_recipe}-v0",
            official_dataset_id=f"mujoco/{_robot}/{_official}" if _official else None,
            ref_min_score=D4RL_REF_SCORES[_robot][0],
            ref_max_score=D4RL_REF_SCORES[_robot][1],
        )

# The multimodality proof (dprl/envs/pole.py): score = 100 * success rate.
_POLE_GENERATOR = dict(generator="dprl.datasets.pole:make_pole_dataset", auto_make=True)
_register("pole", env_id="dprl/Pole-v0", dataset_id="dprl/pole/demos-v0", eval_episodes=50,
          ref_min_score=0.0, ref_max_score=1.0, **_POLE_GENERATOR)
# The same demonstrations, but only passing on the right is rewarded (RL must pick a mode).
_register("pole-right", env_id="dprl/PoleRight-v0", dataset_id="dprl/pole-right/demos-v0",
          eval_episodes=50, ref_min_score=0.0, ref_max_score=1.0, **_POLE_GENERATOR)
# QC's long-horizon sparse-reward toy (dprl/envs/chain.py): visit 3 waypoints in order; random-order
# play data, mostly unsuccessful. Score: 100 x success rate.
_register("chain", env_id="dprl/WaypointChain-v0", dataset_id="dprl/chain/play-v0", score="success",
          eval_episodes=50, ref_min_score=0.0, ref_max_score=1.0,
          generator="dprl.datasets.chain:make_chain_dataset", auto_make=True)

# The toy tasks from pixels (dprl/envs/pixels.py): the same envs seen through a 32 x 32 camera
# (image + a state without the position), trained on the state tasks' own datasets rendered
# through the same camera at load time (``observation_transform``: "module:function(obs,
# next_obs, dones) -> frames"). ``augment``: the image augmentation of training batches
# (dprl/models/augment.py; 'shift' = DrQ's and FQL's pad-4 random shift; evaluation has none).
_register("pixel-pole", env_id="dprl/PixelPole-v0", dataset_id="dprl/pole/demos-v0",
          data_env_id="dprl/Pole-v0", dataset_task="pole", eval_episodes=50,
          ref_min_score=0.0, ref_max_score=1.0, observation_transform="dprl.envs.pixels:pole_pixels",
          augment="shift", **_POLE_GENERATOR)
_register("pixel-chain", env_id="dprl/PixelWaypointChain-v0", dataset_id="dprl/chain/play-v0",
          data_env_id="dprl/WaypointChain-v0", dataset_task="chain", score="success",
          eval_episodes=50, ref_min_score=0.0, ref_max_score=1.0,
          observation_transform="dprl.envs.pixels:chain_pixels", augment="shift",
          generator="dprl.datasets.chain:make_chain_dataset", auto_make=True)

# OGBench manipulation (dprl/datasets/ogbench_recipes.py): play data from ogbench's scripted plan
# oracles, relabeled with the single-task reward QC and FQL evaluate on (the default task of
# <env>-singletask-v0; reward = #satisfied sub-goals - #sub-goals at s_t, 0 = success; OGBench's
# masks are 1 - success). Score: 100 x success rate (info['success']). No official Minari copy.
# ``play_dataset_id`` is the same play data with the goal-conditioned collection env's reward.
# An OGBench manipulation env holds about 160 MB (its compiled MuJoCo model): 50 evaluation envs
# at once would hold 8 GB per seed, so evaluation runs 10 at a time.
OGBENCH_EVAL_ENVS = 10

OGBENCH_MANIPULATION_ENVS = ("cube-single", "cube-double", "cube-triple", "cube-quadruple",
                             "scene", "puzzle-3x3", "puzzle-4x4")
for _task, _single_env in ((e, f"{e}-singletask-v0") for e in OGBENCH_MANIPULATION_ENVS):
    _register(_task, env_id=_single_env, dataset_id=f"dprl/{_task}/play-singletask-v0",
              play_dataset_id=f"dprl/{_task}/play-v0", score="success", eval_episodes=50,
              eval_envs=OGBENCH_EVAL_ENVS, ref_min_score=0.0, ref_max_score=1.0,
              success_masks=True)


# ---- OGBench single-task ids, relabeled from one play dataset per env ----------------
# ``<env>-task{k}`` (k = 1..5) evaluates on ``<env>-singletask-task{k}-v0`` and trains on the env's
# play data ``dprl/<env>/play-v0`` (made once by ``python -m dprl.datasets make <env>``, or by
# ``make <env>-task{k}``: ``dataset_task`` names the preset whose dataset it shares), whose
# rewards and masks are relabeled at load time for task k (``reward_relabel``): the rewards the
# task-k env gives at s_t, and terminals = success (OGBench's masks = 1 - success). scene and
# puzzle-3x3 use the QC paper's sparse reward (its --sparse: -1 until solved, 0 then), in the
# data and in the env (``dprl/<env>-singletask-task{k}-sparse-v0``); cube-* keep OGBench's
# ``#satisfied - #sub-goals``. Score: 100 x success rate over 50 episodes (QC: eval_episodes 50).
# The released data come first when on disk: OGBench's <env>-play-v0.npz (ogbench's
# download_datasets; 1M transitions), relabeled by the same code. cube-quadruple-100m-task{k}
# trains on the 100M-transition shard directory the QC paper uses for cube-quadruple (no stand-in:
# 100M transitions are ~2 h of collection per 1M on one core).
OGBENCH_SINGLE_TASK_ENVS = OGBENCH_MANIPULATION_ENVS
QC_SPARSE_ENVS = ("scene", "puzzle-3x3")   # QC README: --sparse=True for scene and puzzle-3x3


def _register_ogbench_single_tasks() -> None:
    for env in OGBENCH_SINGLE_TASK_ENVS:
        sparse = env in QC_SPARSE_ENVS
        for k in range(1, 6):
            singletask_id = f"{env}-singletask-task{k}-v0"
            common = dict(
                env_id=(f"dprl/{env}-singletask-task{k}-sparse-v0" if sparse else singletask_id),
                singletask_env_id=singletask_id,
                data_env_id=f"{env}-v0",          # the play data's collection env
                sparse_reward=sparse,
                reward_relabel="dprl.datasets.ogbench_recipes:relabel_singletask",
                score="success", eval_episodes=50, eval_envs=OGBENCH_EVAL_ENVS,
                ref_min_score=0.0, ref_max_score=1.0, success_masks=True)
            _register(f"{env}-task{k}", dataset_id=f"dprl/{env}/play-v0",
                      official_sources=[f"ogbench:{env}-play-v0"],
                      dataset_task=env,  # `make <env>-task{k}` makes <env>'s data
                      **common)
            if env == "cube-quadruple":
                _register(f"{env}-100m-task{k}", dataset_id=None, has_recipe=False,
                          official_sources=[f"ogbench:{env}-play-100m-v0"],
                          make_command="(no stand-in: download the 100M shards)", **common)


_register_ogbench_single_tasks()


# ---- robomimic (DPPO's main benchmark; QC's lift/can/square mh) -------------------------------
# robomimic-<task>-<ph|mh>: the low-dim file ~/.robomimic/<task>/<type>/low_dim_v15.hdf5
# (ROBOMIMIC_DATASET_ROOT), the robosuite env built from its env_args (dprl/envs/benchmarks.py,
# extra [robomimic]); observation keys and horizons as QC's and DPPO's wrappers (lift 300, can
# 300, square 400, transport 800 steps); the episode ends at success; reward = success, r - 1 as
# QC trains (its robomimic penalty, in the data and online); masks = 1 - dones. Score: 100 x
# success rate over 50 episodes (QC: eval_episodes 50). No stand-in.
ROBOMIMIC_HORIZON = {"lift": 300, "can": 300, "square": 400, "transport": 800}
ROBOMIMIC_ENV_NAMES = {"lift": "Lift", "can": "PickPlaceCan", "square": "NutAssemblySquare",
                       "transport": "TwoArmTransport"}
for _task, _horizon in ROBOMIMIC_HORIZON.items():
    for _kind in ("ph", "mh"):
        _keys = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
        if _task == "transport":
            _keys += ["robot1_eef_pos", "robot1_eef_quat", "robot1_gripper_qpos"]
        _register(f"robomimic-{_task}-{_kind}", env_id=f"dprl/robomimic-{_task}-{_kind}-v0",
                  env_kwargs={"reward_shift": -1.0}, dataset_id=None, has_recipe=False,
                  official_sources=[f"robomimic:{_task}/{_kind}"],
                  data_env_id=ROBOMIMIC_ENV_NAMES[_task], obs_keys=_keys + ["object"],
                  max_episode_steps=_horizon, reward_transform="minus_one", score="success",
                  eval_episodes=50, ref_min_score=0.0, ref_max_score=1.0,
                  make_command="(no stand-in: download the robomimic file)")


# ---- From pixels: OGBench's visual-* single tasks and robomimic's image files -----------------
# visual-<env>[-task{k}]: OGBench's visual-<env>-singletask[-task{k}]-v0 (a 64x64 camera, no state
# vector; dprl/envs/benchmarks.py: dprl/visual-...) trained on the released visual-<env>-play-v0
# (uint8 frames, stored once), relabeled as the state tasks are (the same single-task rewards and
# success masks, judged on the file's qpos / button_states; QC's sparse reward on scene and
# puzzle-3x3). No stand-in (rendering 1M frames on this CPU is out of reach).
# ``augment``: 'shift' (DrQ / FQL's pad-and-crop, evaluation unchanged).
OGBENCH_VISUAL_ENVS = OGBENCH_MANIPULATION_ENVS


def _register_ogbench_visual_tasks() -> None:
    for env in OGBENCH_VISUAL_ENVS:
        for suffix in ("", "-task1", "-task2", "-task3", "-task4", "-task5"):
            _register(f"visual-{env}{suffix}", env_id=f"dprl/visual-{env}-singletask{suffix}-v0",
                      singletask_env_id=f"{env}-singletask{suffix}-v0",
                      data_env_id=f"visual-{env}-v0", sparse_reward=env in QC_SPARSE_ENVS,
                      reward_relabel="dprl.datasets.ogbench_recipes:relabel_singletask",
                      dataset_id=None, has_recipe=False,
                      official_sources=[f"ogbench:visual-{env}-play-v0"],
                      make_command="(no stand-in: download the visual dataset)",
                      score="success", eval_episodes=50, eval_envs=OGBENCH_EVAL_ENVS,
                      ref_min_score=0.0, ref_max_score=1.0, success_masks=True, augment="shift")


_register_ogbench_visual_tasks()

# robomimic-<task>-ph-image: robomimic's image file (~/.robomimic/<task>/ph/image_v15.hdf5), its
# agentview and eye-in-hand 84x84 cameras as 'image_agentview' / 'image_wrist' (``cameras``:
# file key -> observation key) beside the low-dim state; the env adds the two cameras to the
# robosuite env (dprl/envs/benchmarks.py). ``augment='crop:76'``: diffusion_policy's random 76x76
# crop of its 84x84 robomimic images in training, the center crop when acting.
ROBOMIMIC_CAMERAS = {"agentview_image": "image_agentview",
                     "robot0_eye_in_hand_image": "image_wrist"}
for _task in ("lift", "can", "square"):
    _base = TASKS[f"robomimic-{_task}-ph"]
    _register(f"robomimic-{_task}-ph-image",
              **{**_base, "env_id": f"dprl/robomimic-{_task}-ph-image-v0",
                 "official_sources": [f"robomimic:{_task}/ph/image"],
                 "cameras": dict(ROBOMIMIC_CAMERAS), "augment": "crop:76"})


# ---- D4RL AntMaze, from Minari's ports (DQL's and IQL's AntMaze tasks) -------------------------
# antmaze-<maze>: D4RL/antmaze/<maze>-v1, evaluated in the env the dataset records
# (gymnasium-robotics, extra [antmaze]). D4RL's reference scores are 0 and 1 (normalized score
# = 100 x return, i.e. the success rate); the papers' reward conventions as an option: the
# default is IQL's and QC's r - 1 ('minus_one'); Diffusion-QL trains with (r - 0.5) * 4
# (--task.reward_transform=cql_antmaze is not a flag: register a preset, or edit this one).
ANTMAZE_MAZES = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play",
                 "large-diverse")
for _maze in ANTMAZE_MAZES:
    _register(f"antmaze-{_maze}", env_id=f"dprl/antmaze-{_maze}-v0",
              env_kwargs={"reward_transform": "minus_one"}, dataset_id=None, has_recipe=False,
              official_sources=[f"minari:D4RL/antmaze/{_maze}-v1"], data_env_id=None,
              reward_transform="minus_one", score="success", eval_episodes=100,
              ref_min_score=0.0, ref_max_score=1.0,
              make_command="(no stand-in: minari download the dataset)")


class Task(dict):
    """A task preset resolved once, at the entry, and handed down (runner, data, registry): its
    name and read-only fields (the keys of the module docstring; ``task["env_id"]`` and the
    typed properties below read the same values). It is a dict so config.json records it as is.
    """

    def __init__(self, name: str, preset: dict):
        super().__init__(copy.deepcopy(preset))
        self.name = name

    def _read_only(self, *args, **kwargs):
        raise TypeError(f"Task {self.name!r} is read-only: build a new preset with "
                        f"dict(task, key=value) instead")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _read_only

    def __reduce__(self):
        return Task, (self.name, dict(self))

    def __deepcopy__(self, memo):
        return Task(self.name, dict(self))

    # -- env: what evaluation and online steps run in
    @property
    def env_id(self) -> str:
        return self["env_id"]

    @property
    def env_kwargs(self) -> dict:
        return self["env_kwargs"]

    # -- data: where the offline data come from, and how they are relabeled
    @property
    def official_sources(self) -> list[str]:
        return list(self["official_sources"])

    @property
    def stand_in_id(self) -> str | None:
        return self["dataset_id"]

    @property
    def data_env_id(self) -> str | None:
        return self["data_env_id"]

    @property
    def reward_relabel(self) -> str | None:
        return self["reward_relabel"]

    # -- evaluation
    @property
    def eval_episodes(self) -> int:
        return int(self["eval_episodes"])

    @property
    def score(self) -> str:
        return self["score"]


def get_task(name: "str | Task") -> Task:
    """The preset for ``name`` as a ``Task`` (a ``Task`` is returned as it is); a clear error
    lists the known tasks otherwise."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        import difflib
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown task {name!r}.{hint} Known tasks: {', '.join(sorted(TASKS))}. "
                       f"Add presets in dprl/envs/tasks.py.")
    return Task(name, TASKS[name])
