"""Test fixtures: an isolated Minari dataset root per test session, tiny agent configs."""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Subprocesses (experiments/*.py) import this checkout's packages too, installed or not.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

# Most of the suite's time is XLA compilation, and many tests (and the train.py subprocesses they
# start, which inherit the environment) compile identical programs: share compiled programs through
# JAX's persistent cache. Keyed by the program and the jax version, so it is never stale.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path.home() / ".cache" / "dprl" / "jax-compilation-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """Free every compiled XLA program after each test module.

    On the CPU each compiled program keeps its machine code in its own memory mappings until it is
    freed, and jit caches keep every program alive: one pytest process of the whole suite passed
    Linux's default limit of 65,530 mappings per process (vm.max_map_count) and LLVM failed with
    "Cannot allocate memory". Clearing per module keeps the count to one module's programs; the
    persistent cache above makes the rare recompilation across modules cheap.
    """
    yield
    import jax  # imported here: jax reads the cache settings above when first imported
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session", autouse=True)
def minari_root(tmp_path_factory):
    """Every test writes and reads datasets under a fresh MINARI_DATASETS_PATH."""
    root = tmp_path_factory.mktemp("minari")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


@pytest.fixture(scope="session")
def pole_datasets(minari_root):
    """The pole task's demonstrations (both reward variants), made once per session."""
    from dprl.datasets.pole import make_pole_dataset
    return {name: make_pole_dataset(name) for name in ("pole", "pole-right")}


def tiny(config, **run):
    """Shrink an agent config for fast tests: (32, 32) MLPs, small batches, quiet logs."""
    config.actor.hidden_dims = (32, 32)
    config.run.batch_size = 32
    config.run.steps_per_dispatch = 25
    config.run.log_every = 25
    config.run.eval_every = 10_000
    config.run.save_every = 10_000
    config.run.eval_episodes = 4
    config.run.tensorboard = False
    for k, v in run.items():
        config.run[k] = v
    return config


def random_batch(B: int, H: int, O: int, A: int, seed: int = 0) -> dict:
    """A batch in dprl.data.buffer's schema (numpy): observations [B, O], actions [B, H, A], ..."""
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(B, O)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(B, H, A)).astype(np.float32),
        "valid": np.ones((B, H), np.float32),
        "rewards": rng.normal(size=(B, H)).astype(np.float32),
        "terminals": np.zeros((B, H), np.float32),
        "next_observations": rng.normal(size=(B, O)).astype(np.float32),
        "masks": np.ones((B,), np.float32),
    }


def python_chunk_target(rewards, valid, terminals, next_q, gamma):
    """The h-step target as a plain loop (what scanned/vectorized targets are checked against):
    discounted rewards up to the first invalid step; bootstrap ``next_q`` unless a step
    terminated."""
    out = []
    for r, v, d, q in zip(rewards, valid, terminals, next_q):
        total, n, ended = 0.0, 0, False
        for i in range(len(r)):
            if not v[i]:
                break
            total += gamma ** i * r[i]
            n += 1
            if d[i]:
                ended = True
                break
        out.append(total if ended else total + gamma ** n * q)
    return np.array(out)


def render_in_fresh_process(code: str, what: str) -> str:
    """Run ``code`` in a fresh Python with ``MUJOCO_GL`` (default egl: it only takes effect in a
    new process) and return its stdout; skip, naming ``what`` and the cause, where it fails."""
    import subprocess

    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=600)
    if proc.returncode != 0:
        cause = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"{what} cannot be built or rendered here (MUJOCO_GL={env['MUJOCO_GL']}): "
                    f"{cause}")
    return proc.stdout
