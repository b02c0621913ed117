"""Grids on GPUs and on a Ray cluster: ``--gpus-per-cell`` (refused without a GPU; the local
backend's CUDA_VISIBLE_DEVICES round robin and memory share), and a grid on a two-node local Ray
cluster that ``experiments/report.py`` reads."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for train.py: records the GPU environment it was given and the time it ran, then
# writes the summary.json that marks a cell finished.
FAKE_TRAIN = r"""
import json, os, sys, time
run_dir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--run_dir="))
start = time.time()
time.sleep(1.0)
os.makedirs(run_dir, exist_ok=True)
json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "mem": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
           "start": start, "end": time.time()}, open(os.path.join(run_dir, "summary.json"), "w"))
"""


def fake_cells(tmp_path, n: int):
    from dprl.tools import grid
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return grid.make_cells(["bc"], ["pole"], list(range(n)), tmp_path / "out", (),
                           config_file=lambda a: f"configs/{a}.py", train_script=str(script),
                           check=False)


def test_gpus_per_cell_refused_without_a_gpu(tmp_path):
    """No GPU (CUDA_VISIBLE_DEVICES empty, whatever nvidia-smi says): one line, exit 2, nothing
    written."""
    out = tmp_path / "grid"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "grid.py"), "--agents=bc",
                           "--tasks=pole", f"--out={out}", "--gpus-per-cell=0.5"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --gpus-per-cell=0.5: no GPU here (nvidia-smi lists none and CUDA_VISIBLE_DEVICES "
        "names none); leave it out to run the cells on the CPU"]
    assert not out.exists()


def test_gpus_per_cell_values():
    from dprl.tools.grid import GpuSlots, check_gpus_per_cell, gpu_env

    with pytest.raises(ValueError, match=r"--gpus-per-cell=1.5: must be in \(0, 1\]"):
        check_gpus_per_cell(1.5, 4, "")
    with pytest.raises(ValueError, match="more than the 2 GPUs"):
        check_gpus_per_cell(4, 2, "")
    assert gpu_env(0.25) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.225"}
    assert gpu_env(1) == gpu_env(0) == {}
    pairs = GpuSlots(["0", "1", "2", "3"], 2)      # whole GPUs: groups of two
    with pairs.held() as a, pairs.held() as b:
        assert (a, b) == ({"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"})


def test_local_backend_packs_cells_round_robin(tmp_path, monkeypatch):
    """Two GPUs named by CUDA_VISIBLE_DEVICES, half a GPU per cell, four cells at once: each GPU
    runs two cells at the same time, each with 45 % of its memory."""
    from dprl.tools import grid

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    cells = fake_cells(tmp_path, 4)
    status = grid.run_grid(cells, str(tmp_path / "out"), workers=4, gpus_per_cell=0.5,
                           compile_cache=False, prepare_datasets=False, echo=lambda s: None)
    assert status["counts"]["done"] == 4, status
    runs = [json.loads((Path(c.run_dir) / "summary.json").read_text()) for c in cells]
    assert sorted(r["cuda"] for r in runs) == ["0", "0", "1", "1"]
    assert {r["mem"] for r in runs} == {"0.450"}
    latest_start = max(r["start"] for r in runs)
    assert all(r["end"] > latest_start for r in runs)   # all four ran at once


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _wait_for(ready, what: str, limit_s: float = 240) -> None:
    end = time.monotonic() + limit_s
    while not ready():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not come up within {limit_s:.0f} s (its log is in "
                                 f"the test's tmp_path)")
        time.sleep(2)


def _stop(proc: subprocess.Popen) -> None:
    """End a ``ray start --block`` and everything it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # daemons left in the group
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_grid_on_a_two_node_ray_cluster(tmp_path, pole_datasets):
    """A head and a second node (``ray start --address``) on this machine, one CPU and one
    (declared, accounting-only) GPU each; a grid of two BC cells at one CPU and half a GPU each:
    both finish, side by side (neither node could hold both at once), and report.py reads them."""
    import ray._private.services as services

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    port, ip = _free_port(), services.get_node_ip_address()
    common = ["--num-cpus=1", "--num-gpus=1", "--block", "--disable-usage-stats"]
    # Ray's Unix sockets live under --temp-dir: a short path (pytest's tmp_path is too long).
    temp = tempfile.mkdtemp(prefix="dprl-ray-", dir="/tmp")
    logs = [open(tmp_path / "head.log", "w"), open(tmp_path / "node.log", "w")]
    head = subprocess.Popen(["ray", "start", "--head", f"--port={port}", f"--temp-dir={temp}",
                             "--include-dashboard=false",
                             f"--ray-client-server-port={_free_port()}", *common],
                            stdout=logs[0], stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    nodes = [head]
    try:
        address = f"{ip}:{port}"
        _wait_for(lambda: subprocess.run(["ray", "status", f"--address={address}"],
                                         capture_output=True, env=env, timeout=60).returncode == 0,
                  "the head node")
        nodes.append(subprocess.Popen(["ray", "start", f"--address={address}", *common],
                                      stdout=logs[1], stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True))
        probe = ("import ray, time\nray.init(address=%r, log_to_driver=False)\n"
                 "for _ in range(120):\n"
                 "    if len([n for n in ray.nodes() if n['Alive']]) == 2: break\n"
                 "    time.sleep(1)\n"
                 "print(len([n for n in ray.nodes() if n['Alive']]))\n" % address)
        alive = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                               env=env, timeout=300)
        assert alive.stdout.strip().endswith("2"), alive.stdout + alive.stderr[-2000:]
        out = tmp_path / "grid"
        grid_cmd = [sys.executable, str(ROOT / "experiments" / "grid.py"), "--agents=bc",
                    "--tasks=pole", "--seeds=0,1", f"--out={out}", "--backend=ray",
                    f"--ray-address={address}", "--workers=0", "--cpus-per-cell=1",
                    "--gpus-per-cell=0.5", "--set", "run.pretrain_steps=20",
                    "--set", "run.steps_per_dispatch=10", "--set", "run.log_every=10",
                    "--set", "run.eval_episodes=2", "--set", "run.batch_size=32",
                    "--set", "run.tensorboard=False", "--set", "actor.hidden_dims=(16,16)"]
        proc = subprocess.run(grid_cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        status = json.loads((out / "grid_status.json").read_text())
        assert status["counts"]["done"] == 2, status
        dirs = [out / "bc" / "pole" / f"seed{s}" for s in (0, 1)]
        spans = [((d / "config.json").stat().st_mtime, (d / "summary.json").stat().st_mtime)
                 for d in dirs]
        assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans  # side by side
        report = subprocess.run([sys.executable, str(ROOT / "experiments" / "report.py"),
                                 str(out)], capture_output=True, text=True, cwd=ROOT, env=env,
                                timeout=300)
        assert report.returncode == 0, report.stderr[-3000:]
        assert "| bc |" in report.stdout and "| pole |" in report.stdout
        assert "(n=2)" in report.stdout   # both seeds' runs
    finally:
        for node in reversed(nodes):
            _stop(node)
        for f in logs:
            f.close()
        shutil.rmtree(temp, ignore_errors=True)
