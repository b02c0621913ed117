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
    """``get_config()`` of a config file such as ``configs/dql.py``."""
    p = Path(path.split(":")[0])
    if not p.is_file():
        raise FileNotFoundError(f"Config file {path!r} does not exist; agent configs live in "
                                f"configs/ (e.g. configs/dql.py).")
    spec = importlib.util.spec_from_file_location(f"_dprl_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


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
    root = Path(__file__).resolve().parents[1]
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
