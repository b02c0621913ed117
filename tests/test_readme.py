"""The README is a guide that works: every shell command in it runs as written, and every link
in it and in docs/ resolves.

The default suite runs each command's program with ``--help`` (the program, its sub-command and
its imports exist); the slow test runs the commands in the README's order, as written, with only
a tiny budget appended where a flag allows it (later flags win), in a temporary directory.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"

# Appended to a command to make it tiny (a later flag overrides the README's value). A program
# not listed here runs with --help in the slow test too.
TINY = {
    "experiments/multimodal.py": ["--steps", "30", "--episodes", "4", "--no-progress"],
    "dprl.datasets make": ["--steps", "3000"],
    "experiments/train.py": ["--pretrain_steps=4", "--offline_steps=4", "--online_steps=10",
                             "--agent.run.eval_episodes=1", "--agent.run.batch_size=16",
                             "--agent.run.log_every=2", "--agent.run.eval_every=4",
                             "--agent.run.save_every=4"],
    "dprl.datasets list": [],
    "dprl.datasets verify": [],
    "experiments/grid.py": ["--set", "run.pretrain_steps=4", "--set", "run.offline_steps=4",
                            "--set", "run.eval_episodes=1", "--set", "run.batch_size=16",
                            "--set", "run.log_every=2", "--set", "run.eval_every=4",
                            "--set", "run.save_every=4", "--set", "run.tensorboard=False"],
    "experiments/report.py": [],
}


# Commands that need hardware or a service this machine may not have (GPUs, a running Ray
# cluster) run with --help in the slow test too.
NEEDS_HARDWARE = ("--gpus-per-cell", "--ray-address")


def shell_commands(text: str) -> list[list[str]]:
    """Every command of the text's ```bash blocks, as argv lists (continuation lines joined,
    comments dropped, ``a && b`` split)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:end])
                words = words[end + 1:]
    return commands


def program(argv: list[str]) -> str:
    """``python experiments/x.py ...`` -> ``experiments/x.py``; ``python -m m sub ...`` -> ``m sub``."""
    if argv[1] == "-m":
        sub = argv[3] if len(argv) > 3 and not argv[3].startswith("-") else ""
        return f"{argv[2]} {sub}".strip()
    return argv[1]


def links(path: Path) -> list[str]:
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text())
            if not re.match(r"[a-z]+://|mailto:|#", target)]


COMMANDS = shell_commands(README.read_text())


def test_the_readme_is_a_guide_of_at_most_300_lines():
    assert len(README.read_text().splitlines()) <= 300
    assert not re.search(r"\bissue \d+|\bsession \d+", README.read_text(), re.I)


def test_the_parser_sees_the_readme_commands():
    programs = {program(c) for c in COMMANDS if c[0] == "python"}
    assert {"experiments/train.py", "dprl.datasets make", "experiments/grid.py"} <= programs
    assert shell_commands("```bash\na x \\\n  y && b # c\n```\n") == [["a", "x", "y"], ["b"]]


@pytest.mark.parametrize("doc", [README] + sorted((ROOT / "docs").rglob("*.md")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(doc):
    missing = [t for t in links(doc) if not (doc.parent / t.split("#")[0]).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def test_the_install_commands_name_existing_extras():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"])
    for argv in COMMANDS:
        if argv[:2] == ["pip", "install"]:
            for target in argv[2:]:
                named = re.findall(r"\[([\w,]+)\]", target)
                assert all(e in extras for n in named for e in n.split(",")), target


def _check_test_command(argv):
    for arg in argv[3:]:
        if not arg.startswith("-") and "/" in arg:
            assert (ROOT / arg).exists(), arg


@pytest.mark.parametrize("argv", [c for c in COMMANDS if c[0] == "python"], ids=shlex.join)
def test_every_readme_command_starts(argv):
    if argv[1:3] == ["-m", "pytest"]:
        return _check_test_command(argv)
    done = subprocess.run([sys.executable, *argv[1:], "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_every_readme_command_runs_as_written_with_a_tiny_budget(tmp_path):
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp_path / "minari"), MPLBACKEND="Agg",
               DPRL_NO_PROGRESS="1")
    for argv in COMMANDS:
        if argv[0] != "python" or argv[1:3] == ["-m", "pytest"]:
            continue
        args = [a.replace("runs/", f"{tmp_path}/runs/") if a.startswith(("runs/", "--out=runs/",
                "--run_dir=runs/")) else a for a in argv[1:]]
        key = program(argv)
        tiny = TINY.get(key)
        if any(a.startswith(NEEDS_HARDWARE) for a in argv):
            tiny = None
        extra = ["--help"] if tiny is None else tiny
        done = subprocess.run([sys.executable, *args, *extra], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
