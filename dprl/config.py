"""Config files and command-line overrides, with errors that name the bad key and the fix."""
from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import ml_collections


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
