"""Grids of runs: agent x task x seed (x any extra overrides), one run directory per cell.

A cell is one command of the run contract (``train_script``, the entry point that trains one
run: ``experiments/train.py``) run in its own subprocess, so a run never depends on which backend
launched it:

    python <train_script> --agent=<config_file> --task=<task> --seed=<k>
        --run_dir=OUT/<agent>/<task>/seed<k> --agent.<key>=<value> ...

The grid knows no agent, config directory or script by name: ``experiments/grid.py`` builds the
cells with this checkout's (``configs/<agent>.py``, ``experiments/train.py``, the agent registry).

Backends: ``local`` (a pool of ``workers`` subprocesses on this machine) and ``ray`` (one Ray task
per cell, ``num_cpus`` each, on the cluster at ``ray_address`` or a local instance).

A cell is a run with an identity (``dprl.run.rundir``): every cell is launched, and its train
script compares the command with the run directory's config.json. The same identity finished
is ``skipped`` (summary.json untouched), longer phases or an interrupted run ``resumed``, a new run
``done``; a different identity is ``refused`` with the differing fields (the old results stay),
or, with ``restart_changed``, started over with the old contents moved aside (``restarted``).
The first SIGINT / SIGTERM stops the grid: it is passed to the running cells, which checkpoint
and stop (``interrupted``), no new cell starts, and the same command resumes. A failed cell writes its exit code,
command, the exception it died of and the tail of its log to ``<run_dir>/error.txt`` and does not
stop the others. The exception is the train script's last words: a line ``error (Type): message``
and, for an unexpected one, the frames in this repository's code (``error_block``); the grid
reports them (``error_summary``), not the last log line (JAX ends its tracebacks with a note about
filtered frames). The grid writes ``OUT/grid_status.json`` (every cell's state) after every change
and holds ``OUT/run.lock`` while it runs: a second grid on the same OUT is refused, and a status
left ``running`` by a killed grid is read as interrupted (``dprl.tools.report.unfinished``).

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

from dprl.base.files import atomic_write, read_record
from dprl.run import rundir

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
        """Every seed's summary.json is there and readable (written whole)."""
        return all(_summary(d) is not None for d in self.seed_dirs())


def _summary(run_dir: Path) -> dict | None:
    """A run directory's summary.json, or None when it is missing or unreadable."""
    return read_record(Path(run_dir) / "summary.json")[0]


# ---------------------------------------------------------------------------------------------
# Building cells
# ---------------------------------------------------------------------------------------------
def parse_sets(sets: Sequence[str], agents: Sequence[str], known_agents: Sequence[str] = ()
               ) -> dict[str, list[tuple[str, str]]]:
    """``['run.offline_steps=100', 'dql.eta=2']`` -> per-agent ``[(key, value), ...]``.

    A key whose first component is an agent name (``agents`` or ``known_agents``, the registered
    ones) applies to that agent only (and is dropped when the agent is not in the grid); an agent
    of the grid may be a preset, ``<agent>:<preset>`` (``qc:qc-fql``), which takes both
    ``qc.key=value`` and ``qc:qc-fql.key=value``; later values override earlier ones;
    agent-specific values come after the shared ones.
    """
    shared, specific = [], {a: [] for a in agents}
    bases = {a.split(":")[0] for a in agents}
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value (e.g. run.offline_steps=100)")
        key, value = item.split("=", 1)
        head, _, rest = key.partition(".")
        if (head in specific or head in bases or head.split(":")[0] in known_agents) and rest:
            for a in agents:   # a registered agent that is not in this grid: ignored
                if head in (a, a.split(":")[0]):
                    specific[a].append((rest, value))
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
    """Raise ValueError, naming the fix, if the cell's config lacks one of its override keys, or
    a key that holds a list of sizes is given one bare number (it would become one layer)."""
    from dprl.run.config import check_layer_sizes, check_override_keys, load_config_file

    config = load_config_file(cell.config_file)
    try:
        check_override_keys(config, [k for k, _ in cell.overrides], cell.config_file)
    except ValueError as e:
        raise ValueError(f"{e}\n(--set key=value applies to every agent; use --set "
                         f"{cell.agent}.key=value for keys only some agents have.)") from None
    check_layer_sizes(config, list(cell.overrides), how="--set ")


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
_CELLS: dict[int, subprocess.Popen] = {}   # the cell processes this process runs, by PID


class _ProcessLock:
    """A lock that pickles as a new lock: Ray ships this module by value (``_run_ray``), and a
    ``threading.Lock`` cannot be pickled."""

    def __init__(self):
        self._lock = threading.Lock()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)

    def __reduce__(self):
        return (_ProcessLock, ())


_CELLS_LOCK = _ProcessLock()
_STOP: list[int] = []                      # the signal that stopped the grid (at most one)
INTERRUPTED_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}


def run_cell(cell: Cell, env: dict | None = None, python: str = sys.executable,
             restart_changed: bool = False) -> dict:
    """Run one cell in a subprocess; log to ``<run_dir>/log.txt``.

    Returns ``{'label', 'state', 'returncode', 'wall_s', 'error'}``, ``state``: ``done`` (run to
    its end, new or unfinished), ``resumed`` (a finished run extended: longer phases), ``skipped``
    (the same run, finished:
    its summary.json untouched), ``refused`` (the run directory holds another identity; the
    error names the differing fields), ``restarted`` (``restart_changed``: that other run moved
    aside, this one run), ``interrupted`` (SIGINT / SIGTERM: checkpointed and stopped) or
    ``failed`` (which also writes ``<run_dir>/error.txt``). Never raises for a failing run.
    """
    before = [_summary(d) for d in cell.seed_dirs()]
    result = _attempt(cell, env, python)
    if result["state"] == "refused" and restart_changed:
        from dprl.run.rundir import move_aside   # as train.py's --restart does
        for d in cell.seed_dirs():
            if d.is_dir():
                move_aside(d)
        result = _attempt(cell, env, python)
        if result["state"] == "done":
            result["state"] = "restarted"
    elif result["state"] == "done" and all(b is not None for b in before):
        after = [_summary(d) for d in cell.seed_dirs()]
        result["state"] = "skipped" if after == before else "resumed"
    return result


def _attempt(cell: Cell, env: dict | None, python: str) -> dict:
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
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})})
        except OSError as e:  # the interpreter itself could not start
            rc, log_err = -1, str(e)
        else:
            log_err = ""
            rc = _wait(proc)
    wall = time.perf_counter() - start
    output = log_err or _read_from(run_dir / LOG_FILE, offset)
    if rc == 0 and cell.finished():
        return {"label": cell.label, "state": "done", "returncode": 0, "wall_s": wall,
                "error": None}
    tail = "\n".join(output.splitlines()[-40:])
    headline, block = error_summary(output)
    if rc in INTERRUPTED_CODES:
        return {"label": cell.label, "state": "interrupted", "returncode": rc, "wall_s": wall,
                "error": "interrupted (checkpointed and stopped)"}
    if headline and headline.startswith("RunMismatch:"):
        return {"label": cell.label, "state": "refused", "returncode": rc, "wall_s": wall,
                "error": headline}
    reason = (f"exit code {rc}" if rc > 0 else f"killed by {_signal_name(-rc)}" if rc < -1
              else "could not start" if rc == -1 else "exit code 0 but no summary.json")
    error = (f"{reason}\ncommand: {' '.join(cmd)}\n{block or '(no error line in the log)'}\n"
             f"--- last lines of {LOG_FILE} ---\n{tail}")
    atomic_write(run_dir / ERROR_FILE, error)
    last = [line for line in tail.splitlines() if line.strip()]
    return {"label": cell.label, "state": "failed", "returncode": rc, "wall_s": wall,
            "error": headline or (last[-1] if last else reason)}


def _wait(proc: subprocess.Popen) -> int:
    """Wait for a cell process; it is registered meanwhile so that a stopping grid can pass it
    its signal. A KeyboardInterrupt here (a Ray task cancelled) is passed on as SIGINT."""
    with _CELLS_LOCK:
        _CELLS[proc.pid] = proc
        stopped = list(_STOP)
    try:
        if stopped:   # the grid stopped while this cell was starting
            proc.send_signal(stopped[0])
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
    finally:
        with _CELLS_LOCK:
            _CELLS.pop(proc.pid, None)


def _forward(signum: int) -> None:
    with _CELLS_LOCK:
        for proc in _CELLS.values():
            try:
                proc.send_signal(signum)
            except OSError:
                pass


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
        """Cells per state: pending, running, done, failed, skipped always; resumed, restarted,
        refused and interrupted when any."""
        states = [c["state"] for c in self.cells.values()]
        counts = {s: states.count(s) for s in ("pending", "running", "done", "failed", "skipped")}
        counts.update({s: states.count(s) for s in ("resumed", "restarted", "refused",
                                                     "interrupted") if s in states})
        return counts

    def eta_s(self) -> float | None:
        n = self.counts()
        left = n["pending"] + n["running"]
        if not self.walls:
            return None
        return sum(self.walls) / len(self.walls) * left / min(self.workers, max(left, 1))

    def set(self, label: str, state: str, **extra) -> None:
        with self.lock:
            self.cells[label].update(state=state, **extra)
            if state in ("done", "resumed", "restarted", "failed") and "wall_s" in extra:
                self.walls.append(extra["wall_s"])
            self._write()
            if state != "running" or extra.get("announce", True):
                self.echo(self.line(label, state))

    def line(self, label: str, state: str) -> str:
        n = self.counts()
        total = len(self.cells)
        eta = self.eta_s()
        eta_s = "?" if eta is None else _hms(eta)
        ended = sum(n.get(s, 0) for s in ("done", "skipped", "resumed", "restarted"))
        other = "".join(f", {n[s]} {s}" for s in ("refused", "interrupted") if n.get(s))
        return (f"[grid] {ended}/{total} done ({n['skipped']} skipped), "
                f"{n['running']} running, {n['failed']} failed{other}, elapsed "
                f"{_hms(time.perf_counter() - self.t0)}, ETA {eta_s} | {label}: {state}")

    def _write(self) -> None:
        status = {"backend": self.backend, "workers": self.workers,
                  "interrupted": _signal_name(_STOP[0]) if _STOP else None,
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
             compile_cache: bool = True, prepare_datasets: bool = True,
             restart_changed: bool = False, gpus_per_cell: float = 0.0) -> dict:
    """Run every cell (``run_cell``: a finished one with the same identity is skipped, one with
    another is refused, or restarted with ``restart_changed``); return the grid status (also in
    ``out/grid_status.json``). The first SIGINT / SIGTERM (main thread only) is passed to the
    running cells, no new cell starts, and the status says ``interrupted`` (the signal's name).

    ``env``: extra environment variables for the cells (MINARI_DATASETS_PATH travels anyway).
    ``compile_cache``: share a persistent JAX compilation cache ``out/.jax_cache`` between cells
    (unless JAX_COMPILATION_CACHE_DIR is set already); it changes no result, only compile time.
    ``prepare_datasets``: make the tasks' auto-made datasets (toy tasks) here first, so that cells
    running at once do not write the same dataset concurrently.
    ``gpus_per_cell``: GPUs each cell runs on (``GpuSlots``, ``gpu_env``; 0 = the CPU).
    """
    labels = [c.label for c in cells]
    if len(set(labels)) != len(labels):
        raise ValueError("two cells share a label; give them distinct names")
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', not {backend!r}")
    slots = GpuSlots.local(gpus_per_cell) if gpus_per_cell and backend == "local" else None
    with _grid_lock(out):
        progress = Progress(cells, out, workers, backend, echo)
        if prepare_datasets:
            _prepare_datasets({c.task for c in cells if not c.finished()}, progress.echo)
        todo = list(cells)
        cell_env = {k: os.environ[k] for k in ("MINARI_DATASETS_PATH",) if k in os.environ}
        if compile_cache and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
            # Cells of a grid compile the same programs (same shapes across seeds and tasks): a
            # shared persistent XLA cache turns most of each cell's compile time into a disk read.
            cell_env.update(JAX_COMPILATION_CACHE_DIR=str(Path(out).resolve() / ".jax_cache"),
                            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
        cell_env.update(gpu_env(gpus_per_cell), **(env or {}))
        with _stop_signals(progress.echo):
            if todo and backend == "local":
                _run_local(todo, progress, workers, cell_env, restart_changed, slots)
            elif todo:
                _run_ray(todo, progress, workers, cell_env, ray_address, cpus_per_cell,
                         restart_changed, gpus_per_cell)
            progress._write()
        return json.loads((Path(out) / STATUS_FILE).read_text())


@contextmanager
def _grid_lock(out: str):
    """Hold ``out``'s lock for the ``with`` block: one grid per directory, and ``report`` tells a
    dead grid's stale status by it (``rundir.held``)."""
    try:
        rundir.lock(out)
    except rundir.RunDirBusy:
        holder = (Path(out) / rundir.LOCK_FILE).read_text().strip()
        raise rundir.RunDirBusy(f"grid directory {out} is in use by another grid (process "
                                f"{holder}): wait for it to end or stop it, or use another "
                                "--out") from None
    try:
        yield
    finally:
        rundir.unlock(out)


@contextmanager
def _stop_signals(echo):
    """SIGINT / SIGTERM stop the grid for the ``with`` block: the first is passed to the running
    cells (which checkpoint and stop) and no new cell starts; a second is passed on too (the
    cells then stop at once). Only the main thread can install handlers (elsewhere: no-op)."""
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if not _STOP:
            _STOP.append(signum)
            echo(f"[grid] {_signal_name(signum)}: the running cells checkpoint and stop; no "
                 f"new cell starts (again to stop them at once)")
        _forward(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stopped_by() -> int | None:
    """The signal that stopped the last ``run_grid`` of this process (None: it ran to the end)."""
    return _STOP[0] if _STOP else None


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


def _run_local(cells, progress: Progress, workers: int, env: dict,
               restart_changed: bool = False, slots: "GpuSlots | None" = None) -> None:
    def one(cell):
        if _STOP:   # the grid is stopping: no new cell
            return
        progress.set(cell.label, "running")
        with (slots.held() if slots else _no_gpus()) as gpus:
            result = run_cell(cell, {**env, **gpus}, restart_changed=restart_changed)
        progress.set(cell.label, result["state"], wall_s=round(result["wall_s"], 1),
                     error=result["error"])

    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for f in cf.as_completed([pool.submit(one, c) for c in cells]):
            f.result()


def _run_ray(cells, progress: Progress, workers: int, env: dict, address: str | None,
             cpus_per_cell: float, restart_changed: bool = False,
             gpus_per_cell: float = 0.0) -> None:
    """One Ray task per cell. ``workers`` caps the cells in flight (0 = the cluster decides).
    ``gpus_per_cell``: Ray's ``num_gpus`` (fractions pack cells on a GPU; Ray sets each task's
    CUDA_VISIBLE_DEVICES, which its train.py inherits)."""
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
        check_gpus_per_cell(gpus_per_cell, ray.cluster_resources().get("GPU", 0.0),
                            "the Ray cluster has no GPU resource")
        remote = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell,
                            max_retries=0)(run_cell)
        pending = list(cells)
        in_flight: dict = {}
        limit = workers if workers > 0 else len(cells)
        cancelled = False
        while (pending and not _STOP) or in_flight:
            while pending and len(in_flight) < limit and not _STOP:
                cell = pending.pop(0)
                in_flight[remote.remote(cell, env, sys.executable, restart_changed)] = cell
                progress.set(cell.label, "running")
            if _STOP and not cancelled:   # each cell's run_cell passes SIGINT to its process
                for ref in in_flight:
                    ray.cancel(ref, force=False)
                cancelled = True
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                cell = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # the Ray task itself died (node lost, ...)
                    result = {"state": "failed", "wall_s": 0.0, "error": f"ray: {e}"}
                    if _STOP:   # cancelled: the cell checkpointed and stopped
                        result = {"state": "interrupted", "wall_s": 0.0,
                                  "error": "interrupted (checkpointed and stopped)"}
                    Path(cell.run_dir).mkdir(parents=True, exist_ok=True)
                    if result["state"] == "failed":
                        atomic_write(Path(cell.run_dir) / ERROR_FILE, f"ray task failed: {e!r}")
                progress.set(cell.label, result["state"], wall_s=round(result["wall_s"], 1),
                             error=result["error"])
    finally:
        if started_here:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------
# GPUs
# ---------------------------------------------------------------------------------------------
def local_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES ids: that variable's list when it is set (empty
    or -1: none), else the indices ``nvidia-smi`` lists (none without a driver)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        ids = [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",")]
        return [] if "-1" in ids else [g for g in ids if g]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [x.strip() for x in out.stdout.splitlines() if x.strip().isdigit()] \
        if out.returncode == 0 else []


def check_gpus_per_cell(gpus_per_cell: float, available: float, none_why: str) -> None:
    """One line (ValueError) when ``gpus_per_cell`` cannot be had: not a fraction in (0, 1] or a
    whole number, no GPU at all (``none_why``), or more than there are."""
    f = gpus_per_cell
    if not f:
        return
    if f < 0 or (f > 1 and f != int(f)):
        raise ValueError(f"--gpus-per-cell={f:g}: must be in (0, 1] (cells sharing one GPU) or a "
                         f"whole number of GPUs")
    if not available:
        raise ValueError(f"--gpus-per-cell={f:g}: no GPU here ({none_why}); leave it out to run "
                         f"the cells on the CPU")
    if f > available:
        raise ValueError(f"--gpus-per-cell={f:g}: more than the {available:g} GPUs there are")


def gpu_env(gpus_per_cell: float) -> dict:
    """Each cell's JAX memory share: a cell on a fraction F < 1 of a GPU may take 0.9 F of its
    memory (JAX preallocates 75 % by default, which would leave no room for a second cell)."""
    if 0 < gpus_per_cell < 1:
        return {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 * gpus_per_cell:.3f}"}
    return {}


@contextmanager
def _no_gpus():
    yield {}


class GpuSlots:
    """The local backend's GPUs: each starting cell gets ``CUDA_VISIBLE_DEVICES`` = the least-used
    GPU (round robin over them as cells start; a fraction F packs 1 / F cells on one), or for
    F >= 2 the least-used group of F GPUs. ``workers`` still caps the cells running at once."""

    def __init__(self, gpus: Sequence[str], gpus_per_cell: float):
        check_gpus_per_cell(gpus_per_cell, len(gpus), "nvidia-smi lists none and "
                            "CUDA_VISIBLE_DEVICES names none")
        self.per_cell = float(gpus_per_cell)
        n = max(1, int(self.per_cell))
        self.groups = [tuple(gpus[i:i + n]) for i in range(0, len(gpus) - n + 1, n)]
        self.load = {g: 0.0 for g in self.groups}
        self.lock = threading.Lock()

    @classmethod
    def local(cls, gpus_per_cell: float) -> "GpuSlots":
        return cls(local_gpus(), gpus_per_cell)

    @contextmanager
    def held(self):
        """``{'CUDA_VISIBLE_DEVICES': ...}`` for one cell while it runs."""
        with self.lock:
            group = min(self.groups, key=lambda g: (self.load[g], self.groups.index(g)))
            self.load[group] += min(self.per_cell, 1.0)
        try:
            yield {"CUDA_VISIBLE_DEVICES": ",".join(group)}
        finally:
            with self.lock:
                self.load[group] -= min(self.per_cell, 1.0)
