"""The command line a newcomer meets first: help that lists every setting with what it means."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AGENT_CONFIGS = ["bc", "dql", "guided", "dppo", "qc"]


@pytest.mark.parametrize("name", AGENT_CONFIGS)
def test_every_agent_setting_has_a_comment(name):
    """describe_config finds, for every key, the comment on the line that sets it."""
    from dprl.run.config import describe_config
    rows = describe_config(str(ROOT / "configs" / f"{name}.py"))
    assert len(rows) > 30
    assert [k for k, _, comment in rows if not comment] == []


def test_train_help_lists_every_agent_key_with_default_and_comment():
    from dprl.run.config import config_keys, load_config_file
    out = subprocess.run([sys.executable, "experiments/train.py", "--help",
                          "--agent=configs/dql.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for key in config_keys(load_config_file(str(ROOT / "configs/dql.py"))):
        assert f"--agent.{key}=" in text, key
    assert "--agent.eta=1.0\n      Diffusion-QL: 1.0" in text
    assert "--agent.run.batch_size=256" in text and "eval_score" in text
    assert "--task" in text and "--run_dir" in text


def test_train_help_without_an_agent_says_how_to_list_its_keys():
    out = subprocess.run([sys.executable, "experiments/train.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--agent=configs/<agent>.py" in out.stdout


def test_grid_starts_ray_without_jax_fork_warnings(tmp_path):
    """A driver that has used JAX (a notebook, this test process) starts Ray with no
    'os.fork() ... JAX is multithreaded' warning: Ray's daemons are fork + exec launches."""
    import warnings

    import jax.numpy as jnp
    pytest.importorskip("ray", reason="the [ray] extra")

    from dprl.tools.grid import Progress, _run_ray
    jnp.ones(3).block_until_ready()        # JAX initialized: its fork hook is armed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run_ray([], Progress([], str(tmp_path), 1, "ray", echo=lambda s: None), workers=1, env={}, address=None,
                 cpus_per_cell=1)
    assert [str(w.message) for w in caught if "fork" in str(w.message)] == []
