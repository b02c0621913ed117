"""Grids of runs: agent x task x seed (x any extra overrides), one run directory per cell.

A cell is one command of the run contract (``train_script``, the entry point that trains one
run: ``experiments/train.py``) run in its own subprocess, so a run never depends on which backend
launched it:

    python <train_script> --agent=<config_file> --task=<task> --seed=<k>
        --run_dir=OUT/<agent>/<task>/seed<k> --agent.<key>=<value> ...

The grid knows no agent, config directory or script by name: ``experiments/grid.py`` builds the
cells with this checkout's (``configs/<agent>.py``, ``experiments/train.py``, the agent registry).

Backends: ``local`` (a pool of ``workers`` subprocesses on this machine) and ``ray`` (one Ray task
per cell, ``num_cpus`` each, on the cluster at ``ray_address`` or a local instance). Cells whose run
directory holds ``summary.json`` are skipped, so re-running a killed grid finishes only the missing
cells (an interrupted cell resumes from its last checkpoint). A failed cell writes its exit code,
command, the exception it died of and the tail of its log to ``<run_dir>/error.txt`` and does not
stop the others. The exception is the train script's last words: a line ``error (Type): message``
and, for an unexpected one, the frames in this repository's code (``error_block``); the grid
reports them (``error_summary``), not the last log line (JAX ends its tracebacks with a note about
filtered frames). The grid writes ``OUT/grid_status.json`` (every cell's state) after every change.

``--set`` overrides (``parse_sets``): ``key=value`` applies to every agent
(``run.offline_steps=100`` becomes ``--agent.run.offline_steps=100``); ``<agent>.key=value`` to
that agent only (``dql.eta=2``).
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

from dprl.base.files import atomic_write

STATUS_FILE = "grid_status.json"
LOG_FILE = "log.txt"
ERROR_FILE = "error.txt"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run: an agent config file, a task, a seed, ``--agent.*`` overrides and its directory,
    trained by ``train_script``."""

    agent: str
    task: str
    seed: int
    run_dir: str
    config_file: str                              # the agent's config, e.g. configs/dql.py
                                                  # (configs/qc.py:bfn names a preset)
    train_script: str                             # the run contract's entry point
    overrides: tuple[tuple[str, str], ...] = ()   # (key, value) -> --agent.key=value
    name: str = ""                                # default <agent>/<task>/seed<k>
    num_seeds: int = 1                            # > 1: seeds seed..seed+S-1 vmapped in one
                                                  # program, in run_dir/seed<k> (train.py)

    @property
    def label(self) -> str:
        return self.name or f"{self.agent}/{self.task}/seed{self.seed}"

    def command(self, python: str = sys.executable) -> list[str]:
        seeds = [f"--num_seeds={self.num_seeds}"] if self.num_seeds > 1 else []
        return [python, self.train_script, f"--agent={self.config_file}", f"--task={self.task}",
                f"--seed={self.seed}", f"--run_dir={self.run_dir}", *seeds, "--noprogress",
                *[f"--agent.{k}={v}" for k, v in self.overrides]]

    def seed_dirs(self) -> list[Path]:
        """The run directory of every seed of this cell."""
        if self.num_seeds == 1:
            return [Path(self.run_dir)]
        return [Path(self.run_dir) / f"seed{self.seed + i}" for i in range(self.num_seeds)]

    def finished(self) -> bool:
        return all((d / "summary.json").exists() for d in self.seed_dirs())


# ---------------------------------------------------------------------------------------------
# Building cells
# ---------------------------------------------------------------------------------------------
def parse_sets(sets: Sequence[str], agents: Sequence[str], known_agents: Sequence[str] = ()
               ) -> dict[str, list[tuple[str, str]]]:
    """``['run.offline_steps=100', 'dql.eta=2']`` -> per-agent ``[(key, value), ...]``.

    A key whose first component is an agent name (``agents`` or ``known_agents``, the registered
    ones) applies to that agent only (and is dropped when the agent is not in the grid); later
    values override earlier ones; agent-specific values come after the shared ones.
    """
    shared, specific = [], {a: [] for a in agents}
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value (e.g. run.offline_steps=100)")
        key, value = item.split("=", 1)
        head, _, rest = key.partition(".")
        if (head in specific or head in known_agents) and rest:
            if head in specific:  # a registered agent that is not in this grid: ignored
                specific[head].append((rest, value))
        else:
            shared.append((key, value))
    return {a: _dedupe(shared + specific[a]) for a in agents}


def _dedupe(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    for k, v in pairs:
        out.pop(k, None)
        out[k] = v
    return list(out.items())


def check_overrides(cell: Cell) -> None:
    """Raise ValueError, naming the fix, if the cell's config lacks one of its override keys."""
    from dprl.run.config import check_override_keys, load_config_file

    try:
        check_override_keys(load_config_file(cell.config_file), [k for k, _ in cell.overrides],
                            cell.config_file)
    except ValueError as e:
        raise ValueError(f"{e}\n(--set key=value applies to every agent; use --set "
                         f"{cell.agent}.key=value for keys only some agents have.)") from None


def make_cells(agents: Sequence[str], tasks: Sequence[str], seeds: Sequence[int], out: str,
               sets: Sequence[str] = (), *, config_file: Callable[[str], str],
               train_script: str, known_agents: Sequence[str] = (), check: bool = True
               ) -> list[Cell]:
    """The agent x task x seed cells, run directories ``out/<agent>/<task>/seed<k>`` (absolute:
    a cell may run anywhere); ``config_file(agent)`` is the agent's config file."""
    per_agent = parse_sets(sets, agents, known_agents)
    out = Path(out).absolute()
    cells = [Cell(a, t, int(s), str(out / a / t / f"seed{s}"), config_file(a),
                  str(train_script), tuple(per_agent[a]))
             for a in agents for t in tasks for s in seeds]
    if check:
        for a in agents:
            check_overrides(next(c for c in cells if c.agent == a))
    return cells


# ---------------------------------------------------------------------------------------------
# Running cells
# ---------------------------------------------------------------------------------------------
def run_cell(cell: Cell, env: dict | None = None, python: str = sys.executable) -> dict:
    """Run one cell to completion in a subprocess; log to ``<run_dir>/log.txt``.

    Returns ``{'label', 'state': 'done'|'failed', 'returncode', 'wall_s', 'error'}``; a failure also
    writes ``<run_dir>/error.txt``. Never raises for a failing run.
    """
    run_dir = Path(cell.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    cmd = cell.command(python)
    start = time.perf_counter()
    with open(run_dir / LOG_FILE, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        offset = log.tell()   # this attempt's output starts here (the log keeps earlier ones)
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}).returncode
        except OSError as e:  # the interpreter itself could not start
            rc, log_err = -1, str(e)
        else:
            log_err = ""
    wall = time.perf_counter() - start
    if rc == 0 and cell.finished():
        return {"label": cell.label, "state": "done", "returncode": 0, "wall_s": wall,
                "error": None}
    output = log_err or _read_from(run_dir / LOG_FILE, offset)
    tail = "\n".join(output.splitlines()[-40:])
    reason = (f"exit code {rc}" if rc > 0 else f"killed by {_signal_name(-rc)}" if rc < -1
              else "could not start" if rc == -1 else "exit code 0 but no summary.json")
    headline, block = error_summary(output)
    error = (f"{reason}\ncommand: {' '.join(cmd)}\n{block or '(no error line in the log)'}\n"
             f"--- last lines of {LOG_FILE} ---\n{tail}")
    (run_dir / ERROR_FILE).write_text(error)
    last = [line for line in tail.splitlines() if line.strip()]
    return {"label": cell.label, "state": "failed", "returncode": rc, "wall_s": wall,
            "error": headline or (last[-1] if last else reason)}


PROJECT_DIRS = ("dprl", "agents", "configs", "experiments")   # the frames worth reporting


def error_block(e: BaseException) -> str:
    """What a train script prints last for an exception: ``error (Type): message`` and the frames
    in this repository's code (``PROJECT_DIRS``), innermost first, from the exception and what it
    wraps (JAX attaches the traced function's frames as a cause)."""
    root = Path(__file__).resolve().parents[2]
    frames, seen = [], set()
    exc, chain = e, set()
    while exc is not None and id(exc) not in chain:
        chain.add(id(exc))
        for f in reversed(traceback.extract_tb(exc.__traceback__)):
            path = Path(f.filename).resolve()
            if path.is_relative_to(root) and path.relative_to(root).parts[0] in PROJECT_DIRS:
                line = f"  at {path.relative_to(root)}:{f.lineno} in {f.name}"
                if line not in seen:
                    seen.add(line)
                    frames.append(line)
        exc = exc.__cause__ or exc.__context__
    return "\n".join([f"error ({type(e).__name__}): {e}", *frames])


_ERROR_LINE = re.compile(r"^error(?: \(([\w.]+)\))?: (.*)$")


def error_summary(output: str) -> tuple[str | None, str | None]:
    """``(headline, block)`` of a train script's output: from its last ``error (Type): message``
    line to the end (``error_block``); the headline is ``Type: message (at file:line in f)``.
    ``(None, None)`` without such a line (killed, crashed in the interpreter)."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if _ERROR_LINE.match(line)]
    if not starts:
        return None, None
    block = lines[starts[-1]:]
    kind, message = _ERROR_LINE.match(block[0]).groups()
    where = next((line.strip()[3:] for line in block[1:] if line.startswith("  at ")), None)
    headline = f"{kind or 'error'}: {message}" + (f" (at {where})" if where else "")
    return headline, "\n".join(block)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return ""


class Progress:
    """Cells done / running / failed / skipped, an ETA from the mean wall time of finished cells,
    and ``grid_status.json`` rewritten on every change."""

    def __init__(self, cells: Sequence[Cell], out: str, workers: int, backend: str,
                 echo: Callable[[str], None] | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.workers, self.backend = max(1, workers), backend
        self.echo = echo if echo is not None else (lambda s: print(s, file=sys.stderr, flush=True))
        self.t0 = time.perf_counter()
        self.lock = threading.Lock()
        self.cells = {c.label: {"agent": c.agent, "task": c.task, "seed": c.seed,
                                "run_dir": c.run_dir, "state": "pending"} for c in cells}
        self.walls: list[float] = []

    def counts(self) -> dict:
        states = [c["state"] for c in self.cells.values()]
        return {s: states.count(s) for s in ("pending", "running", "done", "failed", "skipped")}

    def eta_s(self) -> float | None:
        n = self.counts()
        left = n["pending"] + n["running"]
        if not self.walls:
            return None
        return sum(self.walls) / len(self.walls) * left / min(self.workers, max(left, 1))

    def set(self, label: str, state: str, **extra) -> None:
        with self.lock:
            self.cells[label].update(state=state, **extra)
            if state in ("done", "failed") and "wall_s" in extra:
                self.walls.append(extra["wall_s"])
            self._write()
            if state != "running" or extra.get("announce", True):
                self.echo(self.line(label, state))

    def line(self, label: str, state: str) -> str:
        n = self.counts()
        total = len(self.cells)
        eta = self.eta_s()
        eta_s = "?" if eta is None else _hms(eta)
        return (f"[grid] {n['done'] + n['skipped']}/{total} done ({n['skipped']} skipped), "
                f"{n['running']} running, {n['failed']} failed, elapsed "
                f"{_hms(time.perf_counter() - self.t0)}, ETA {eta_s} | {label}: {state}")

    def _write(self) -> None:
        status = {"backend": self.backend, "workers": self.workers,
                  "elapsed_s": round(time.perf_counter() - self.t0, 1), "counts": self.counts(),
                  "updated": time.strftime("%Y-%m-%d %H:%M:%S"), "cells": self.cells}
        atomic_write(self.out / STATUS_FILE, json.dumps(status, indent=2))


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s"


def run_grid(cells: Sequence[Cell], out: str, backend: str = "local", workers: int = 1,
             ray_address: str | None = None, cpus_per_cell: float = 1.0,
             env: dict | None = None, echo: Callable[[str], None] | None = None,
             compile_cache: bool = True, prepare_datasets: bool = True) -> dict:
    """Run every unfinished cell; return the grid status (also in ``out/grid_status.json``).

    ``env``: extra environment variables for the cells (MINARI_DATASETS_PATH travels anyway).
    ``compile_cache``: share a persistent JAX compilation cache ``out/.jax_cache`` between cells
    (unless JAX_COMPILATION_CACHE_DIR is set already); it changes no result, only compile time.
    ``prepare_datasets``: make the tasks' auto-made datasets (toy tasks) here first, so that cells
    running at once do not write the same dataset concurrently.
    """
    labels = [c.label for c in cells]
    if len(set(labels)) != len(labels):
        raise ValueError("two cells share a label; give them distinct names")
    progress = Progress(cells, out, workers, backend, echo)
    if prepare_datasets:
        _prepare_datasets({c.task for c in cells if not c.finished()}, progress.echo)
    todo = []
    for c in cells:
        if c.finished():
            progress.set(c.label, "skipped")
        else:
            todo.append(c)
    cell_env = {k: os.environ[k] for k in ("MINARI_DATASETS_PATH",) if k in os.environ}
    if compile_cache and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        # Cells of a grid compile the same programs (same shapes across seeds and tasks): a
        # shared persistent XLA cache turns most of each cell's compile time into a disk read.
        cell_env.update(JAX_COMPILATION_CACHE_DIR=str(Path(out).resolve() / ".jax_cache"),
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    cell_env.update(env or {})
    if todo:
        if backend == "local":
            _run_local(todo, progress, workers, cell_env)
        elif backend == "ray":
            _run_ray(todo, progress, workers, cell_env, ray_address, cpus_per_cell)
        else:
            raise ValueError(f"backend must be 'local' or 'ray', not {backend!r}")
    progress._write()
    return json.loads((Path(out) / STATUS_FILE).read_text())


def _prepare_datasets(tasks, echo) -> None:
    """Resolve (and for the toy tasks, make) each task's dataset once, before the cells start.
    Problems are left to the cells, which report them in their error.txt."""
    from dprl.data.registry import resolve_task_dataset

    for task in sorted(tasks):
        try:
            resolve_task_dataset(task)
        except Exception as e:  # noqa: BLE001 -- the cell will fail with the full message
            echo(f"[grid] dataset for {task!r} not ready here ({type(e).__name__}); its cells "
                 f"will report it")


@contextmanager
def _fork_exec_only():
    """Silence JAX's fork warning for ``subprocess`` launches while Ray starts.

    JAX warns on every fork of a process that has used it, because a forked copy of a
    multithreaded program can deadlock. ``ray.init`` starts its daemons with ``subprocess``,
    whose child replaces itself with a new program (fork + exec): the forked copy never runs
    JAX, so the warning does not apply. A bare ``os.fork()`` elsewhere still warns. (A driver
    that never touched JAX, like ``experiments/grid.py``, gets none; local cells start without.)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                category=RuntimeWarning, module="subprocess")
        yield


def _run_local(cells, progress: Progress, workers: int, env: dict) -> None:
    def one(cell):
        progress.set(cell.label, "running")
        result = run_cell(cell, env)
        progress.set(cell.label, result["state"], wall_s=round(result["wall_s"], 1),
                     error=result["error"])

    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for f in cf.as_completed([pool.submit(one, c) for c in cells]):
            f.result()


def _run_ray(cells, progress: Progress, workers: int, env: dict, address: str | None,
             cpus_per_cell: float) -> None:
    """One Ray task per cell. ``workers`` caps the cells in flight (0 = the cluster decides)."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("--backend=ray needs Ray: pip install 'ray[default]' "
                          "(or the project's [ray] extra)") from e
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = dict(address=address) if address else dict(num_cpus=max(1, workers))
        with _fork_exec_only():
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        # The cells run this repository's train.py with the driver's interpreter: the cluster's
        # nodes must share the checkout and the environment (a shared file system or an image).
        # Ship this module's code by value: workers need not have dprl on their import path.
        from ray import cloudpickle
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        remote = ray.remote(num_cpus=cpus_per_cell, max_retries=0)(run_cell)
        pending = list(cells)
        in_flight: dict = {}
        limit = workers if workers > 0 else len(cells)
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                cell = pending.pop(0)
                in_flight[remote.remote(cell, env, sys.executable)] = cell
                progress.set(cell.label, "running")
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                cell = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # the Ray task itself died (node lost, ...)
                    result = {"state": "failed", "wall_s": 0.0, "error": f"ray: {e}"}
                    Path(cell.run_dir).mkdir(parents=True, exist_ok=True)
                    (Path(cell.run_dir) / ERROR_FILE).write_text(f"ray task failed: {e!r}")
                progress.set(cell.label, result["state"], wall_s=round(result["wall_s"], 1),
                             error=result["error"])
    finally:
        if started_here:
            ray.shutdown()
