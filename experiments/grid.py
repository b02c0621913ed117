"""Run agent x task x seed, one run directory per cell (``OUT/<agent>/<task>/seed<k>``).

    python experiments/grid.py --agents=dql,guided,dppo,qc --tasks=hopper-medium,cube-double \
        --seeds=0,1,2 --out runs/grid [--set run.offline_steps=100000 --set dql.eta=2 ...] \
        [--backend=local|ray] [--workers=2] [--ray-address=auto] [--cpus-per-cell=1] [--dry-run]
        [--gpus-per-cell=0.25]   # 4 cells per GPU (docs/gpu.md)

Each cell is ``experiments/train.py`` in a subprocess (the run contract), which compares the
cell's command with its run directory: the same run finished is skipped, longer phases or an
unfinished run resume, another identity (other settings) is refused per cell with the differing
fields (``--restart-changed``: start those over, the old contents moved to
``<run_dir>.replaced-<time>``). Ctrl-C / SIGTERM stops the grid: running cells checkpoint and stop,
no new cell starts, and the same command resumes (exit 130 / 143). Failed cells leave
``<run_dir>/error.txt`` and do not stop the others; ``OUT/grid_status.json`` holds every cell's
state. ``--set key=value`` applies to every agent, ``--set <agent>.key=value`` to one. Then:
``python experiments/report.py OUT``.
"""
import argparse
import os
import sys
from pathlib import Path

from agents import REGISTRY
from configs import config_file
from dprl.tools import grid
from dprl.run.rundir import RunDirBusy

TRAIN_SCRIPT = str(Path(__file__).with_name("train.py"))


def agent_config_file(agent: str) -> str:
    """configs/<agent>.py, or configs/<agent>.py:<preset> for ``<agent>:<preset>`` (qc:qc-fql)."""
    name, sep, preset = agent.partition(":")
    return config_file(name) + (f":{preset}" if sep else "")


def make_cells(agents, tasks, seeds, out, sets=()) -> list[grid.Cell]:
    """``dprl.tools.grid.make_cells`` for this checkout: configs/<agent>.py (an agent may name a
    preset: ``qc:qc-fql``), trained by train.py."""
    return grid.make_cells(agents, tasks, seeds, out, sets, config_file=agent_config_file,
                           train_script=TRAIN_SCRIPT, known_agents=list(REGISTRY))


def _list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", required=True,
                   help="comma-separated, configs/<agent>.py each; <agent>:<preset> for a preset "
                        "(qc:qc-fql)")
    p.add_argument("--tasks", required=True, help="comma-separated task presets")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--out", required=True, help="grid directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every agent, or <agent>.key=value for one")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=int, default=1,
                   help="cells run at once (local processes; ray: in flight, 0 = no cap)")
    p.add_argument("--ray-address", "--ray_address", default=None,
                   help="Ray cluster address ('auto' = the running cluster); default: local Ray")
    p.add_argument("--cpus-per-cell", "--cpus_per_cell", type=float, default=1.0,
                   help="Ray resources per cell")
    p.add_argument("--gpus-per-cell", "--gpus_per_cell", type=float, default=0.0,
                   help="GPUs per cell: a fraction packs cells on one GPU (Ray's num_gpus; the "
                        "local backend sets CUDA_VISIBLE_DEVICES round robin and each cell's "
                        "XLA_PYTHON_CLIENT_MEM_FRACTION); 0 = CPU")
    p.add_argument("--restart-changed", "--restart_changed", action="store_true",
                   help="start over the cells whose run directory holds other settings (the old "
                        "contents move to <run_dir>.replaced-<time>); without it they are refused")
    p.add_argument("--dry-run", "--dry_run", action="store_true", help="list the cells and exit")
    args = p.parse_args(argv)

    try:
        cells = make_cells(_list(args.agents), _list(args.tasks),
                           [int(s) for s in _list(args.seeds)], args.out, args.set)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for c in cells:
            state = "finished" if c.finished() else "todo"
            print(f"{c.label:40s} {state:8s} {' '.join(c.command()[1:])}")
        print(f"{len(cells)} cells, {sum(c.finished() for c in cells)} finished")
        return 0
    try:
        status = grid.run_grid(cells, args.out, backend=args.backend, workers=args.workers,
                               ray_address=args.ray_address, cpus_per_cell=args.cpus_per_cell,
                               restart_changed=args.restart_changed,
                               gpus_per_cell=args.gpus_per_cell)
    except (ValueError, RunDirBusy) as e:   # e.g. no GPU for --gpus-per-cell, or OUT in use
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = status["counts"]
    print(f"grid {args.out}: {n['done']} done, {n.get('resumed', 0)} resumed, {n['skipped']} "
          f"skipped (same settings, finished), {n.get('restarted', 0)} restarted, "
          f"{n.get('refused', 0)} refused, {n['failed']} failed "
          f"(status: {os.path.join(args.out, 'grid_status.json')})")
    for label, c in status["cells"].items():
        if c["state"] == "failed":
            print(f"  FAILED {label}: {c.get('error')} (see {c['run_dir']}/error.txt)")
        elif c["state"] == "refused":
            print(f"  REFUSED {label}: {c.get('error')}")
    if n.get("refused"):
        print(f"{n['refused']} refused: their run directories hold other settings (above); use "
              f"another --out, or pass --restart-changed to start them over (the old contents "
              f"move to <run_dir>.replaced-<time>)")
    signum = grid.stopped_by()
    if signum is not None:
        print(f"grid interrupted ({status['interrupted']}): {n.get('interrupted', 0)} running "
              f"cells checkpointed and stopped, {n['pending']} not started; run the same "
              f"command to resume", file=sys.stderr)
        return 128 + signum
    return 1 if n["failed"] or n.get("refused") else 0


if __name__ == "__main__":
    sys.exit(main())
