"""The layers are true (dprl/ imports no agents, configs or experiments; agents and configs do
not import each other) and every registered agent follows the interface ``dprl.run.agent.Agent``."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.qc import PRESETS as QC_PRESETS
from configs.rlpd import PRESETS as RLPD_PRESETS
from conftest import ROOT

# package -> the top-level packages it must never import (the layers: dprl < agents, configs <
# experiments; tests may import anything).
FORBIDDEN = {"dprl": {"agents", "configs", "experiments"},
             "agents": {"configs", "experiments"},
             "configs": {"agents", "experiments"}}

# dprl's own floors, bottom to top: a sub-package imports only the sub-packages below it (and
# itself). Modules directly in dprl/ (the package's __init__) belong to the ground floor.
DPRL_FLOORS = [
    {"base"},                                  # atomic files, logs, progress bars
    {"envs", "models"},                        # environments and task presets | networks, actors
    {"data"},                                  # offline datasets, loaders, buffers
    {"run"},                                   # agent interface, acting, configs, checkpoints, runner
    {"tools"},                                 # grids, reports, distillation, real-time execution
    {"experts"},                               # SAC and the expert policies it makes
    {"datasets", "sac"},                       # making datasets (python -m dprl.datasets), SAC's CLI
]
FLOOR = {package: level for level, floor in enumerate(DPRL_FLOORS) for package in floor}


def imported_modules(path: Path) -> set[str]:
    """Dotted modules a module imports (``from a.b import c`` -> ``a.b`` and ``a.b.c``),
    wherever the import statement sits."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, wherever the import statement sits."""
    return {name.split(".")[0] for name in imported_modules(path)}


def dprl_subpackage(module: str) -> str | None:
    """``dprl.run.runner`` -> ``run``; ``dprl`` itself -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "dprl" and len(parts) > 1 else None


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_higher_layer(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    wrong = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package])
             for f in files}
    assert not {f: w for f, w in wrong.items() if w}


def test_every_dprl_subpackage_has_a_floor():
    found = {p.name for p in (ROOT / "dprl").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    found |= {p.stem for p in (ROOT / "dprl").glob("*.py") if p.stem != "__init__"}
    assert found == set(FLOOR), "add the new sub-package to DPRL_FLOORS (or remove the stale one)"


def test_no_dprl_module_imports_a_higher_floor():
    wrong = {}
    for f in sorted((ROOT / "dprl").rglob("*.py")):
        rel = f.relative_to(ROOT / "dprl")
        own = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else None
        level = FLOOR[own] if own else 0
        for module in imported_modules(f):
            other = dprl_subpackage(module)
            if other is None or other == own or other not in FLOOR:
                continue  # dprl itself, its own sub-package, or a name imported from dprl
            if FLOOR[other] >= level:
                wrong.setdefault(str(f.relative_to(ROOT)), []).append(module)
    assert not wrong, f"imports from the same or a higher floor: {wrong}"


def test_the_import_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from agents import get_agent\n"
                      "    from dprl.run import runner\n")
    assert imported_packages(module) == {"os", "agents", "dprl"}
    assert {"dprl.run", "dprl.run.runner"} <= imported_modules(module)


# ---- the agent interface --------------------------------------------------------------------
def _tiny_config(name: str):
    """``name``: an agent, or ``agent:preset`` for a preset of its config file."""
    from configs import config_file
    from dprl.run.config import load_config_file

    agent, sep, preset = name.partition(":")
    config = load_config_file(config_file(agent) + sep + preset)
    config.action_dim = 2
    config.actor.hidden_dims = (8, 8)
    config.actor.diffusion_steps = 3
    config.actor.flow_steps = 2
    if config.actor.get("sampling_steps"):   # DDIM over fewer steps than diffusion_steps
        config.actor.sampling_steps = 2
    for key in list(config):
        if key.endswith("hidden_dims"):
            config[key] = (8, 8)
    if config.actor.get("residual"):   # a residual MLP: one input layer and blocks of two
        config.actor.hidden_dims = (8, 8, 8)
    for key, value in (("num_samples", 2), ("max_q_samples", 2), ("ft_denoising_steps", 2),
                       ("support_actions", 2), ("contrastive_states", 4)):
        if key in config:
            config[key] = value
    config.run.num_envs = 2 if config.run.num_envs > 1 else 1
    return config


def _signature(fn) -> list:
    """Parameter kinds (names may differ: DPPO's update takes a ``rollout``)."""
    return [p.kind for name, p in inspect.signature(fn).parameters.items()
            if name not in ("self", "cls")]


@pytest.mark.parametrize("name", ["bc", "dql", "guided", "dppo"] +
                         [f"qc:{preset}" for preset in QC_PRESETS] +
                         [f"rlpd:{preset}" for preset in RLPD_PRESETS] +
                         ["dsrl:dsrl-na"])  # dsrl-sac's batches carry its acting noise: its
                                            # steps are checked in tests/test_dsrl.py
def test_registered_agent_follows_the_interface(name, pole_datasets):
    """Method signatures of the protocol's shape; created, it is an ``Agent``; it acts in chunks
    and its steps return flat finite scalars, on batches or (on-policy) on a collected Rollout.
    Every preset of qc's config (the QC paper's six methods) is checked."""
    from agents import REGISTRY, get_agent
    from dprl.run.agent import Agent
    from dprl.data.buffer import Buffer
    from dprl.run.collect import Rollout, collect_rollout, make_executor
    from dprl.data.offline import Normalizer, load_dataset
    from dprl.envs.tasks import get_task

    assert set(REGISTRY) == {"bc", "dql", "guided", "dppo", "qc", "rlpd", "dsrl"}
    cls = get_agent(name.partition(":")[0])
    assert isinstance(cls.on_policy, bool)
    for method in ("create", "pretrain", "update", "sample_actions"):
        assert _signature(getattr(cls, method)) == _signature(getattr(Agent, method)), method

    config = _tiny_config(name)
    data = load_dataset(pole_datasets["pole"])
    normalizer = Normalizer.fit(data.observations)
    buffer = Buffer.from_offline(data, normalizer)
    batch = buffer.sample(jax.random.PRNGKey(0), 8, config.horizon, config.obs_history)
    agent = cls.create(0, jax.device_get(batch), config)
    assert isinstance(agent, Agent)

    chunks, aux = agent.sample_actions(batch["observations"], jax.random.PRNGKey(1))
    length = config.horizon if config.get("action_chunking", True) else 1
    assert chunks.shape == (8, length, 2) and config.act_steps <= length
    assert float(jnp.abs(chunks).max()) <= 1.0
    assert isinstance(aux, dict)
    agent, info = agent.pretrain(batch)
    if cls.on_policy:
        executor = make_executor(get_task("pole"), agent.config, normalizer,
                                 config.run.num_envs, seed=0)
        rollout, _ = collect_rollout(agent, executor, 2, jax.random.PRNGKey(2))
        assert set(rollout) == set(Rollout.__annotations__)
        agent, update_info = agent.update(rollout)
    else:
        agent, update_info = agent.update(batch)
    for scalars in (info, update_info):
        assert scalars and all(np.ndim(v) == 0 and np.isfinite(float(v))
                               for v in jax.device_get(scalars).values())
