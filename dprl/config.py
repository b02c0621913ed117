"""Config files and command-line overrides, with errors that name the bad key and the fix."""
from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import ml_collections

# Config keys renamed for one name per idea (issue 14): old key -> what to use now.
RENAMED = {
    "grad_norm": "grad_clip (the global-norm gradient clip, in every agent)",
    "gamma": "discount (the RL discount, in every agent)",
    "num_action_samples": "num_samples (best-of-N candidates, in every agent)",
    "lr": "actor_lr (and critic_lr for the critic: QC used lr for both)",
    "pretrain_lr": "actor_lr (DPPO: the BC actor's learning rate; PPO's is ft_actor_lr)",
    "policy": "actor.model ('diffusion', 'flow' or 'mse', which was 'gaussian')",
}


def renamed_message(key: str, flag: str = "--agent.") -> str | None:
    """What to use instead of a renamed key (``None`` if ``key`` was not renamed)."""
    if key not in RENAMED:
        return None
    return f"{flag}{key} was renamed: use {flag}{RENAMED[key]}."


def check_renamed_keys(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError when a config (e.g. an older config file) still holds a renamed key."""
    for key in config_keys(config):
        message = renamed_message(key, "")
        if message:
            raise ValueError(f"The agent config has the key {message}")


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file such as ``configs/dql.py``; ``configs/qc.py:bfn`` calls
    ``get_config('bfn')`` (ml_collections' ``config_flags`` convention for presets)."""
    path, sep, arg = path.partition(":")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Config file {path!r} does not exist; agent configs live in "
                                f"configs/ (e.g. configs/dql.py).")
    spec = importlib.util.spec_from_file_location(f"_dprl_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if sep else module.get_config()


def config_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf key as a dotted path."""
    keys = []
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
            keys += config_keys(v, name + ".")
        else:
            keys.append(name)
    return keys


def check_override_keys(config: ml_collections.ConfigDict, keys: list[str],
                        config_path: str = "the agent config") -> None:
    """Raise ValueError for override keys that the config does not have."""
    known = config_keys(config)
    for key in keys:
        if key not in known and renamed_message(key):
            raise ValueError(f"{renamed_message(key)} (Renamed keys: README, Configs.)")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join('--agent.' + c for c in close)}?" if close else ""
            raise ValueError(f"Unknown config key --agent.{key} for {config_path}.{hint} "
                             f"Its keys are: {', '.join(known)}.")


def overrides_from_argv(argv: list[str], flag: str = "agent") -> tuple[str | None, list[str]]:
    """The config file path and the override keys given as ``--agent.key=value`` in argv."""
    path, keys = None, []
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{flag}="):
            path = arg.split("=", 1)[1]
        elif arg == f"--{flag}" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith(f"--{flag}."):
            keys.append(arg[len(flag) + 3:].split("=", 1)[0])
    return path, keys


def run_config(config: ml_collections.ConfigDict, action_dim: int, task: dict, on_policy: bool
               ) -> ml_collections.ConfigDict:
    """A private copy of ``config`` with what the run fills in (``action_dim``, the task's
    evaluation episodes), checked before any work is done."""
    check_renamed_keys(config)
    config = ml_collections.ConfigDict(config.to_dict())
    config.action_dim = int(action_dim)
    if config.act_steps > config.horizon:
        raise ValueError(f"act_steps ({config.act_steps}) must be <= horizon ({config.horizon})")
    if not config.run.eval_episodes:
        config.run.eval_episodes = task["eval_episodes"]
    if config.run.online_steps and not on_policy and config.run.num_envs != 1:
        raise ValueError("Off-policy online finetuning collects with one env "
                         "(run.num_envs=1); on-policy agents use many.")
    if config.run.online_steps and on_policy and config.run.rollout_steps <= 0:
        raise ValueError("On-policy agents need run.rollout_steps > 0 (chunk-steps per env "
                         "and update)")
    return config
