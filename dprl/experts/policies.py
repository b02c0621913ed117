"""MLP Gaussian policies stored as plain ``.npz`` files (numpy only, no pickle).

The format (numpy arrays; 2x64 tanh experts with a state-independent log std load as they are):

    obs_mean [O], obs_std [O]   observation standardizer (optional: zeros / ones)
    W0 [O, H0], b0 [H0], W1 [H0, H1], b1 [H1], ...   hidden layers, applied in index order
    W_out [H, A], b_out [A]     mean head
    log_std [A]                 state-independent log std            (expert files), or
    W_log_std [H, A], b_log_std [A]   state-dependent log-std head   (SAC snapshots)
    activation                  'tanh' | 'relu' (hidden layers)
    squash                      'clip' (default): action = clip(mean [+ std * eps], -1, 1)
                                'tanh' (SAC):     action = tanh(mean [+ std * eps])
    log_std_min, log_std_max    clip bounds of a state-dependent log std (optional)
    meta                        optional JSON string: where the policy came from, its return, ...

The forward pass:

    h = (obs - obs_mean) / (obs_std + 1e-6)
    h = act(h @ W_i + b_i) for each hidden layer i
    mean = h @ W_out + b_out

Actions are in [-1, 1] (the normalized action box; locomotion envs use [-1, 1] natively).
Everything here is numpy and batch-friendly: ``obs`` may be ``[O]`` or ``[B, O]``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dprl.base.files import atomic_write

_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}


@dataclass(frozen=True)
class MLPGaussianPolicy:
    """A loaded policy. ``hidden`` is a list of ``(W, b)``; see the module docstring."""

    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]
    W_out: np.ndarray
    b_out: np.ndarray
    obs_mean: np.ndarray
    obs_std: np.ndarray
    log_std: np.ndarray | None = None          # [A], state-independent
    W_log_std: np.ndarray | None = None        # [H, A], state-dependent head
    b_log_std: np.ndarray | None = None
    activation: str = "tanh"
    squash: str = "clip"
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        return int(self.hidden[0][0].shape[0] if self.hidden else self.W_out.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.W_out.shape[1])

    def _features(self, obs: np.ndarray) -> np.ndarray:
        act = _ACTIVATIONS[self.activation]
        h = (np.asarray(obs, np.float32) - self.obs_mean) / (self.obs_std + 1e-6)
        for W, b in self.hidden:
            h = act(h @ W + b)
        return h

    def distribution(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pre-squash Gaussian ``(mean, std)``, each ``[..., A]``."""
        h = self._features(obs)
        mean = h @ self.W_out + self.b_out
        if self.W_log_std is not None:
            log_std = np.clip(h @ self.W_log_std + self.b_log_std,
                              self.log_std_min, self.log_std_max)
        else:
            log_std = np.broadcast_to(self.log_std, mean.shape)
        return mean, np.exp(log_std)

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None, *,
            deterministic: bool = False, extra_noise_std: float = 0.0) -> np.ndarray:
        """Actions in [-1, 1], ``[..., A]``.

        ``deterministic`` uses the mean; otherwise the policy's own Gaussian is sampled with
        ``rng``. ``extra_noise_std`` adds N(0, s^2) to the final action (then clipped): the
        Gaussian action noise D4RL-style recipes use to lower a policy's level.
        """
        mean, std = self.distribution(obs)
        if deterministic:
            pre = mean
        else:
            if rng is None:
                raise ValueError("act(..., deterministic=False) needs an rng")
            pre = mean + std * rng.standard_normal(mean.shape).astype(np.float32)
        action = np.tanh(pre) if self.squash == "tanh" else pre
        if extra_noise_std > 0.0:
            if rng is None:
                raise ValueError("extra_noise_std > 0 needs an rng")
            action = action + extra_noise_std * rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def save_policy(path: str | os.PathLike, *, hidden, W_out, b_out, obs_mean=None, obs_std=None,
                log_std=None, W_log_std=None, b_log_std=None, activation="tanh", squash="clip",
                log_std_min=-20.0, log_std_max=2.0, meta: dict | None = None,
                dtype=np.float32) -> Path:
    """Write a policy in the ``.npz`` format above (atomically: temp file + rename). Weights are
    stored as ``dtype`` (float16 halves a shipped file; loading always gives float32)."""
    path = Path(path)
    hidden = [(np.asarray(W, dtype), np.asarray(b, dtype)) for W, b in hidden]
    obs_dim = hidden[0][0].shape[0] if hidden else np.asarray(W_out).shape[0]
    arrays: dict[str, np.ndarray] = {
        "obs_mean": np.zeros(obs_dim, np.float32) if obs_mean is None
        else np.asarray(obs_mean, np.float32),
        "obs_std": np.ones(obs_dim, np.float32) if obs_std is None
        else np.asarray(obs_std, np.float32),
        "W_out": np.asarray(W_out, dtype), "b_out": np.asarray(b_out, dtype),
        "activation": np.array(activation), "squash": np.array(squash),
        "log_std_min": np.array(log_std_min, np.float32),
        "log_std_max": np.array(log_std_max, np.float32),
        "meta": np.array(json.dumps(meta or {}, default=str)),
    }
    for i, (W, b) in enumerate(hidden):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    if log_std is not None:
        arrays["log_std"] = np.asarray(log_std, np.float32)
    if W_log_std is not None:
        arrays["W_log_std"] = np.asarray(W_log_std, dtype)
        arrays["b_log_std"] = np.asarray(b_log_std, dtype)
    if "log_std" not in arrays and "W_log_std" not in arrays:
        raise ValueError("a policy needs log_std or W_log_std/b_log_std")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _float32_or_none(x):
    return None if x is None else x.astype(np.float32)


def load_policy(path: str | os.PathLike) -> MLPGaussianPolicy:
    """Load a policy ``.npz``; a clear error says what is wrong with a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Policy file {path} does not exist. `python -m dprl.experts list` shows dprl's "
            f"shipped experts; train your own with `python -m dprl.sac --env <EnvId> --out DIR`.")
    try:
        d = np.load(path, allow_pickle=False)
        arrays = {k: d[k] for k in d.files}
    except Exception as e:  # noqa: BLE001  any read failure means the same thing to the user
        raise ValueError(f"Policy file {path} is not a readable .npz: {e}") from e
    missing = [k for k in ("W_out", "b_out") if k not in arrays]
    if missing or not ("log_std" in arrays or "W_log_std" in arrays):
        raise ValueError(f"Policy file {path} lacks {missing or ['log_std']}; see the format "
                         f"in dprl/experts/policies.py")
    n_hidden = len([k for k in arrays if re.fullmatch(r"W\d+", k)])
    hidden = tuple((arrays[f"W{i}"].astype(np.float32), arrays[f"b{i}"].astype(np.float32))
                   for i in range(n_hidden))
    obs_dim = hidden[0][0].shape[0] if hidden else arrays["W_out"].shape[0]
    meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    return MLPGaussianPolicy(
        hidden=hidden,
        W_out=arrays["W_out"].astype(np.float32), b_out=arrays["b_out"].astype(np.float32),
        obs_mean=arrays.get("obs_mean", np.zeros(obs_dim)).astype(np.float32),
        obs_std=arrays.get("obs_std", np.ones(obs_dim)).astype(np.float32),
        log_std=arrays["log_std"].astype(np.float32) if "log_std" in arrays else None,
        W_log_std=_float32_or_none(arrays.get("W_log_std")),
        b_log_std=_float32_or_none(arrays.get("b_log_std")),
        activation=str(arrays.get("activation", "tanh")),
        squash=str(arrays.get("squash", "clip")),
        log_std_min=float(arrays.get("log_std_min", -20.0)),
        log_std_max=float(arrays.get("log_std_max", 2.0)),
        meta=meta,
    )


def default_experts_dir() -> Path | None:
    """``$DPRL_EXPERTS_DIR`` (a folder of ``<robot>.npz`` experts of your own), if set."""
    env = os.environ.get("DPRL_EXPERTS_DIR")
    return Path(env) if env else None


def find_expert(robot: str) -> Path | None:
    """Your expert file for ``robot`` (``hopper``, ...) in ``$DPRL_EXPERTS_DIR``, if any (dprl's
    shipped experts are in ``dprl.experts``)."""
    d = default_experts_dir()
    if d is None:
        return None
    p = d / f"{robot}.npz"
    return p if p.is_file() else None
