"""Config files and command-line overrides, with errors that name the bad key and the fix;
``validate_config``: every value in its allowed range before a run does any work."""
from __future__ import annotations

import difflib
import importlib.util
import math
import re
from pathlib import Path

import ml_collections

from dprl.data.buffer import MIXES
from dprl.models.actor import GENERATIVE_MODELS
from dprl.models.augment import crop_size
from dprl.models.diffusion import SAMPLERS, SCHEDULES
from dprl.models.nets import ACTIVATIONS, COMPUTE_DTYPES, KERNEL_INITS
from dprl.models.one_step import check_act_with
from dprl.run.sharding import check_data_parallel

# Config keys renamed for one name per idea: old key -> what to use now.
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


def check_layer_sizes(config: ml_collections.ConfigDict, overrides: list[tuple[str, str]],
                      how: str = "--agent.") -> None:
    """Raise ValueError when a key that holds a list of sizes is given one bare number (the
    override parsers would make it one layer, silently): ``overrides`` are ``(key, raw text)``."""
    for key, value in overrides:
        current = config
        for part in key.split("."):
            current = current[part]
        if isinstance(current, (tuple, list)) and re.fullmatch(r"\s*[\d.eE+-]+\s*", value):
            v = value.strip()
            raise ValueError(
                f"{how}{key}={v}: {key} is a list of sizes {tuple(current)}, and one bare number "
                f"would make it one layer ({v},): write every layer, e.g. {how}{key}='({v}, {v})' "
                f"(or '({v},)' for one)")


def overrides_from_argv(argv: list[str], flag: str = "agent"
                        ) -> tuple[str | None, list[str], list[tuple[str, str]]]:
    """The config file path, the override keys given as ``--agent.key[=value]`` in argv, and
    the ``(key, value)`` pairs of those given with ``=``."""
    path, keys, values = None, [], []
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{flag}="):
            path = arg.split("=", 1)[1]
        elif arg == f"--{flag}" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith(f"--{flag}."):
            key, eq, value = arg[len(flag) + 3:].partition("=")
            keys.append(key)
            if eq:
                values.append((key, value))
    return path, keys, values


def run_config(config: ml_collections.ConfigDict, task: dict, on_policy: bool
               ) -> ml_collections.ConfigDict:
    """A private copy of ``config`` with the task's evaluation episodes filled in, checked
    (``validate_config``) before any work is done. The runner sets ``action_dim`` from the data."""
    check_renamed_keys(config)
    config = with_compute_dtype(ml_collections.ConfigDict(config.to_dict()))
    validate_config(config, on_policy)
    if not config.run.eval_episodes:
        config.run.eval_episodes = task["eval_episodes"]
    if not config.run.eval_envs:
        config.run.eval_envs = min(task["eval_envs"] or config.run.eval_episodes,
                                   config.run.eval_episodes)
    if crop_size(task.get("augment", "none")) and "encoder" in config:
        # trained on random crops: the encoder center-crops the frames it acts on
        config.encoder.crop = crop_size(task["augment"])
    return config


def with_compute_dtype(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` (changed in place) with ``run.compute_dtype`` handed to the actor's networks,
    which see only ``config.actor`` (``actor.compute_dtype``, set only when it is not float32, so
    float32 configs stay as they were); the critics read ``run.compute_dtype`` themselves."""
    dtype = config.run.get("compute_dtype", "float32")
    if dtype != "float32" and "actor" in config:
        with config.unlocked():
            config.actor.compute_dtype = dtype
    return config


# ---------------------------------------------------------------------------------------------
# Allowed values. A rule applies to every key of that name, wherever it sits in the config
# (``hidden_dims`` of the actor, the critic, the guide, ...).
# ---------------------------------------------------------------------------------------------
def _at_least(n):
    return (lambda v: v >= n), f"an integer >= {n}"


def _in(lo, hi, lo_open=False, hi_open=False):
    ok = (lambda v: (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi))
    return ok, f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


_POSITIVE = ((lambda v: math.isfinite(v) and v > 0), "a finite number > 0")
RULES = {
    **{k: _at_least(0) for k in ("contrastive_states", "critic_freeze_steps",
                                 "pretrain_steps", "offline_steps", "online_steps",
                                 "start_online_updates", "rollout_steps", "sampling_steps",
                                 "time_dim", "ema_start", "lr_decay_steps")},
    **{k: _at_least(1) for k in ("batch_size", "log_every", "eval_every", "online_eval_every",
                                 "online_log_every", "save_every", "steps_per_dispatch",
                                 "update_every", "num_envs", "horizon", "act_steps",
                                 "obs_history", "diffusion_steps", "flow_steps", "num_samples",
                                 "max_q_samples", "num_critics", "support_actions",
                                 "update_epochs", "ppo_batch_size",
                                 "ft_denoising_steps", "ema_every", "unet_kernel_size")},
    **{k: ((lambda v: v >= 0), "an integer >= 1 (or 0: the task preset's number)")
       for k in ("eval_episodes", "eval_envs")},
    "utd": _POSITIVE,
    "offline_ratio": _in(0, 1),
    "discount": _in(0, 1, lo_open=True),
    "tau": _in(0, 1, lo_open=True),
    "gamma_denoising": _in(0, 1, lo_open=True),
    "gae_lambda": _in(0, 1),
    "ema_decay": _in(0, 1),
    "q_scale_decay": _in(0, 1),
    "expectile": _in(0, 1, lo_open=True, hi_open=True),
    "grad_clip": ((lambda v: math.isfinite(v) and v >= 0), "a finite number >= 0 (0 = off)"),
}
_SIZES = ((lambda v: all(isinstance(d, int) and d >= 1 for d in v)), "sizes that are each >= 1")
_KERNEL_INIT = ((lambda v: v in KERNEL_INITS), f"one of {', '.join(sorted(KERNEL_INITS))}")
_ACTIVATION = ((lambda v: v in ACTIVATIONS or v == ""),   # '': another network's activation
               f"one of {', '.join(sorted(ACTIVATIONS))}")
# The networks' and samplers' enumerated options, by key name: what the code that reads them
# accepts (read only when a network is built or a sampler traced, after work has begun).
# The agents' own enumerated options are listed here too, by key name, so that a bad one is
# refused before any data are loaded (each agent checks its own again when it is created).
CHOICES = {"sampler": SAMPLERS, "schedule": SCHEDULES, "backbone": ("mlp", "unet"),
           "model": (*GENERATIVE_MODELS, "mse"), "guidance_mode": ("mean", "score"),
           "lr_schedule": ("constant", "cosine"), "offline_mix": MIXES,
           "guide_loss": ("regression", "contrastive"), "guide_time_embedding": ("mlp", "fourier"),
           "action_selection": ("softmax", "argmax"),
           "policy_extraction": ("best_of_n", "one_step"),
           "q_agg": ("mean", "min", "pair_min"), "variant": ("na", "sac"),
           "critic_mode": ("td", "iql", "softmax"), "time_freqs": ("half", "half-1"),
           "compute_dtype": COMPUTE_DTYPES}


def _rule(key: str):
    leaf = key.rsplit(".", 1)[-1]
    if leaf.endswith("hidden_dims") or leaf == "unet_channels":
        return _SIZES
    if leaf.endswith("_lr"):
        return _POSITIVE
    if leaf.endswith("kernel_init"):
        return _KERNEL_INIT
    if leaf.endswith("activation"):
        return _ACTIVATION
    if leaf in CHOICES:
        return (lambda v: v in CHOICES[leaf]), f"one of {', '.join(CHOICES[leaf])}"
    return RULES.get(leaf)


def validate_config(config: ml_collections.ConfigDict, on_policy: bool) -> None:
    """Raise ValueError naming every out-of-range value (key, value, allowed range) and the
    combinations a run cannot do, before any data is loaded or program compiled."""
    problems = []
    for key in config_keys(config):
        value, rule = _get(config, key), _rule(key)
        if rule is None or value is None:
            continue
        ok, allowed = rule
        try:
            good = ok(value) and not isinstance(value, bool)
        except TypeError:
            good = False
        if not good:
            shown = tuple(value) if isinstance(value, (list, tuple)) else value
            problems.append(f"--agent.{key}={shown}: must be {allowed}")
    actor = config.get("actor") or {}
    if actor.get("backbone") == "unet" and actor.get("time_dim") == 0:
        problems.append("--agent.actor.time_dim=0: the U-Net needs a time embedding (>= 1); "
                        "time_dim=0 (t itself) is for the MLP backbone")
    run = config.run
    if config.act_steps > config.horizon:
        problems.append(f"--agent.act_steps={config.act_steps}: must be <= horizon "
                        f"({config.horizon}): a chunk cannot run more actions than it holds")
    if on_policy and run.offline_steps > 0:
        problems.append(f"--agent.run.offline_steps={run.offline_steps}: must be 0 for the "
                        f"on-policy agent {config.agent_name!r}: it has no offline RL phase "
                        f"(its BC stage is run.pretrain_steps)")
    if run.online_steps and not on_policy and run.num_envs != 1:
        problems.append(f"--agent.run.num_envs={run.num_envs}: must be 1: off-policy online "
                        f"finetuning collects with one env (on-policy agents use many)")
    if run.online_steps and on_policy and run.rollout_steps <= 0:
        problems.append(f"--agent.run.rollout_steps={run.rollout_steps}: must be >= 1 for an "
                        f"on-policy agent's online phase (chunk-steps per env and update)")
    if (problem := check_data_parallel(run, config.get("ppo_batch_size"))) is not None:
        problems.append(problem)
    try:
        check_act_with(config, on_policy)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        raise ValueError("; ".join(problems) + " (nothing was run; fix the config or the "
                         "command line)")


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def _imported_files(path: Path, root: Path, seen: set[Path]) -> list[Path]:
    """``path`` and the project files it imports (recursively), config file first."""
    import ast
    if path in seen or not path.is_file():
        return []
    seen.add(path)
    files = [path]
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                 [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            base = root.joinpath(*name.split("."))
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                files += _imported_files(candidate, root, seen)
    return files


def _field_comments(files: list[Path]) -> list[tuple[str, str]]:
    """``(target, comment)`` for every line that assigns a field and ends with a comment
    (``config.x = 1  # ...``, ``x=1,  # ...`` in ``dict(...)``, ``"x": 1,  # ...``); comment-only
    lines indented under a comment continue it."""
    import io
    import re
    import tokenize
    out: list[tuple[str, str]] = []
    for path in files:
        lines = path.read_text().splitlines()
        last, last_col = None, -1
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type != tokenize.COMMENT:
                continue
            row, col = tok.start
            code = lines[row - 1][:col].strip()
            text = tok.string.lstrip("#").strip()
            if not code:
                if last is not None and col >= last_col and row == last + 1:
                    out[-1] = (out[-1][0], f"{out[-1][1]} {text}")
                    last = row
                continue
            m = (re.match(r"^([\w.]+)\s*=(?!=)", code) or re.match(r"^[\"'](\w+)[\"']\s*:", code))
            if m:
                target = m.group(1)
                out.append((target[len("config."):] if target.startswith("config.") else target,
                            text))
                last, last_col = row, col
            else:
                last = None
    return out


def describe_config(path: str) -> list[tuple[str, object, str]]:
    """``(key, default, comment)`` for every leaf of the config file at ``path``: the comment is
    the one on the line that sets the field, in the file or in the project files it imports."""
    config = load_config_file(path)
    root = Path(__file__).resolve().parents[2]
    comments = _field_comments(_imported_files(Path(path.split(":")[0]).resolve(), root, set()))
    rows = []
    for key in config_keys(config):
        leaf = key.split(".")[-1]
        best = next((c for t, c in comments if t == key or t.endswith("." + key)), None)
        if best is None:
            best = next((c for t, c in comments if t.split(".")[-1] == leaf), "")
        value = config
        for part in key.split("."):
            value = value[part]
        rows.append((key, value, best))
    return rows
