"""A run directory is one run's record: one process at a time, one identity, every process counted.

- **Lock** (``owned``): a run holds an exclusive ``flock`` on ``run_dir/run.lock`` (its PID
  written inside) while it runs. The kernel drops it when the process dies, so a killed run leaves
  no stale lock; a second process on the same directory is refused at once (``RunDirBusy``).
- **Identity** (``check_identity``): config.json records what makes the run this run (``IDENTITY``:
  the agent config without the phase lengths and ``NOT_IDENTITY``, task, dataset id and
  fingerprint, seed, num_seeds; docs/run_contract.md lists them), and every checkpoint holds a copy
  (``checkpoint_record``), so a deleted config.json is restored from it, never replaced by
  another run's. A command that differs is refused (``RunMismatch``) with the fields, old vs new,
  unless it asks to start over (``restart``: the old contents move to
  ``<run_dir>.replaced-<time>``). Extending a phase is the same run. A run that saved no
  checkpoint and no summary holds no identity: another command starts over (its leftovers moved
  aside). config.json is written only when it is new or a phase length changed
  (``write_record``): a refused or finished run never rewrites it.
- **Processes** (``ProcessLog``): ``processes.json`` lists every process that worked on the run
  and its wall time (updated at every metrics row and checkpoint), so summary.json's ``wall_s``
  counts them all, killed ones up to their last row.
- **Stops** (``stop_signals``): SIGINT / SIGTERM ask the loops to checkpoint at the current step
  and raise ``Interrupted`` (entry points exit 128 + signal number); a second signal stops at once
  (the same signal again within ``DUPLICATE_S`` is one request delivered twice: a terminal's
  Ctrl-C reaches a grid's cells directly and through the grid).
- **Write failures** (``owned``): a full disk or an unwritable directory becomes one line naming
  the path and the cause (``RunDirError``), whatever layer (orbax, tensorstore, csv) hit it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

from dprl.base.files import atomic_write

LOCK_FILE = "run.lock"
PROBE_GRACE_S = 0.5   # how long ``lock`` retries a lock that may be held only by a ``held`` probe
PROCESSES_FILE = "processes.json"
REPLACED = ".replaced-"   # <run_dir>.replaced-<time>: a run moved aside by --restart
IDENTITY = ("agent", "task", "dataset_id", "dataset_fingerprint", "seed", "num_seeds")
PHASE_LENGTHS = ("pretrain_steps", "offline_steps", "online_steps")
# Run keys that change no result (docs/run_contract.md): how many envs evaluate at once (episode k
# is seeded the same way whatever it is), where metrics go (TensorBoard, W&B), how often online
# rows are written (an online dispatch is one chunk whatever the row interval). The gradient
# phases' log_every / eval_every / save_every are identity: a dispatch ends at each boundary and
# draws its own key, so they change the random stream.
NOT_IDENTITY = ("eval_envs", "tensorboard", "wandb_project", "online_log_every")
# Filled in from the dataset after the identity check (the fingerprint covers it).
RESOLVED_LATER = ("action_dim",)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to do."""


class RunDirBusy(RunDirError):
    """Another process holds the run directory."""


class RunMismatch(RunDirError):
    """The run directory holds another run than the one this command describes."""


class Interrupted(Exception):
    """SIGINT / SIGTERM: the run checkpointed at ``step`` and stopped."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        super().__init__(f"interrupted at step {step}; run the same command to resume")


# ---------------------------------------------------------------------------------------------
# Lock
# ---------------------------------------------------------------------------------------------
_HELD: dict[str, int] = {}   # resolved run dir -> the open lock file (this process holds it)


def lock(run_dir: str | os.PathLike) -> None:
    """Hold ``run_dir``'s lock (re-entrant within a process); ``RunDirBusy`` if another has it."""
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _HELD:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:     # a ``held`` probe holds it for microseconds
                time.sleep(0.01)
                continue
            holder = os.read(fd, 32).decode(errors="replace").strip() or "(PID not yet written)"
            os.close(fd)
            raise RunDirBusy(f"run directory {run_dir} is in use by process {holder} (it holds "
                             f"{path}): wait for that run to end or stop it, or use another "
                             f"--run_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = fd


def held(run_dir: str | os.PathLike) -> bool:
    """Whether a live process (this one included) holds ``run_dir``'s lock: how a status file
    that says ``running`` is told from one left by a killed process. The probe takes a shared
    lock for microseconds; ``lock`` waits ``PROBE_GRACE_S`` before it calls a directory busy."""
    run_dir = Path(run_dir)
    if str(run_dir.resolve()) in _HELD:
        return True
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)                      # closing the file releases the probe's lock


def unlock(run_dir: str | os.PathLike) -> None:
    fd = _HELD.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        os.close(fd)   # closing the file releases the flock


@contextlib.contextmanager
def owned(*run_dirs: str | os.PathLike):
    """Create and lock every run directory for the ``with`` block (several: a multiseed run);
    a write failure inside becomes a one-line ``RunDirError``."""
    taken = []   # released at the end; a lock this process held already stays held
    created = [Path(d) for d in run_dirs if not Path(d).exists()]
    try:
        for d in run_dirs:
            if str(Path(d).resolve()) not in _HELD:
                lock(d)
                taken.append(d)
        yield
    except BaseException as e:  # noqa: BLE001  any layer may carry the OS error; others re-raised
        cause = write_failure(e, Path(run_dirs[0])) if isinstance(e, Exception) else None
        if cause is None:
            raise
        raise RunDirError(cause) from e
    finally:
        for d in taken:
            unlock(d)
        for d in created:   # refused before any work: leave no empty directory behind
            try:
                if [p.name for p in d.iterdir()] in ([LOCK_FILE], []):
                    (d / LOCK_FILE).unlink(missing_ok=True)
                    d.rmdir()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# Write failures
# ---------------------------------------------------------------------------------------------
WRITE_ERRORS = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
                errno.EROFS: "Read-only file system", errno.EACCES: "Permission denied",
                errno.EPERM: "Operation not permitted", errno.ENOTDIR: "Not a directory"}


def write_failure(e: BaseException, run_dir: Path) -> str | None:
    """One line naming the path and the cause when ``e`` (or what it wraps) is a failed write to
    the file system; None for any other error. orbax / tensorstore report ENOSPC as a ValueError
    whose text holds the OS message and the path, hence the text search."""
    for exc in _chain(e):
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
            path = exc.filename or run_dir
            return _write_message(path, exc.errno)
    text = "\n".join(str(exc) for exc in _chain(e))
    for code, message in WRITE_ERRORS.items():
        if message in text or f"os_error_code='{code}'" in text:
            paths = re.findall(r'"(/[^"]+)"', text)
            inside = [p for p in paths if p.startswith(str(run_dir.absolute()))]
            return _write_message((inside or paths or [run_dir])[-1], code)
    return None


def _write_message(path, code: int) -> str:
    # A failed checkpoint write names orbax's temporary directory, gone by now: name its parent.
    path = re.sub(r"/[^/]*\.orbax-checkpoint-tmp.*$", "", str(path))
    fix = ("free space there, then run the same command to resume"
           if code in (errno.ENOSPC, errno.EDQUOT) else
           "make it a writable directory (or use another --run_dir), then run the same command")
    return f"cannot write {path}: {WRITE_ERRORS[code]} ({errno.errorcode[code]}); {fix}"


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


# ---------------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------------
def identity(record: dict) -> dict:
    """The fields of a config.json record that make a run this run, flattened to dotted keys
    (``agent.actor_lr``); the phase lengths may change (a run can be extended)."""
    plain = json.loads(json.dumps({k: record.get(k) for k in IDENTITY}, default=str))
    for k in PHASE_LENGTHS + NOT_IDENTITY:
        (plain.get("agent") or {}).get("run", {}).pop(k, None)
    for k in RESOLVED_LATER:
        (plain.get("agent") or {}).pop(k, None)
    return _flatten(plain)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(old: dict, new: dict, where: str = "config.json") -> list[str]:
    """``'key: old (config.json) vs new (this command)'`` for each differing identity field. A
    field that ``old`` lacks (a run recorded before it existed, also a config key added to dprl
    since: the run ran without it) or ``new`` lacks (not resolved yet: the dataset, before it is
    looked up) is not compared."""
    a, b = identity(old), identity(new)
    recorded = {k for k in IDENTITY if k in old and k in new}
    if a.get("dataset_id") != b.get("dataset_id"):
        recorded.discard("dataset_fingerprint")   # another dataset: its fingerprint differs too
    return [f"{k}: {_show(a.get(k))} ({where}) vs {_show(b.get(k))} (this command)"
            for k in sorted(set(a) | set(b))
            if k.split(".")[0] in recorded and a.get(k) != b.get(k)
            and not (k.startswith("agent.") and k not in a)]


def _show(v) -> str:
    return "(absent)" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def checkpoint_steps(run_dir: Path) -> list[int]:
    """The steps of ``run_dir``'s saved checkpoints (finished ones: orbax renames a step's
    directory to its number when it is complete), newest first."""
    d = Path(run_dir) / "checkpoints"
    return sorted((int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir()),
                  reverse=True) if d.is_dir() else []


def checkpoint_record(run_dir: Path) -> tuple[int, dict] | None:
    """``(step, record)``: the config.json record kept in the newest checkpoint whose meta can be
    read (``meta['record']``); None when no checkpoint holds one."""
    for step in checkpoint_steps(run_dir):
        try:
            meta = json.loads((Path(run_dir) / "checkpoints" / str(step) / "meta" /
                               "metadata").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and isinstance(meta.get("record"), dict):
            return step, meta["record"]
    return None


def check_identity(run_dir: Path, record: dict, restart: bool = False) -> dict | None:
    """Refuse (``RunMismatch``) a command whose identity differs from ``run_dir``'s config.json
    (or, when config.json is missing, from the record in its newest checkpoint); with
    ``restart``, move the old run aside instead. A run that saved neither a checkpoint nor a
    summary does not bind: a command that differs moves its leftovers aside and starts over.
    ``record`` may lack the dataset fields (checked again once the dataset is resolved). Returns
    the recorded config.json (None when there is none, after a restart, or when it is restored
    from a checkpoint: the caller then writes it)."""
    path = run_dir / "config.json"
    if restart:
        moved = move_aside(run_dir)
        if moved is not None:
            _log(f"--restart: the previous contents of {run_dir} are now in {moved}")
        return None
    old, where = _read_json(path), "config.json"
    if old is None:
        kept = checkpoint_record(run_dir)
        if kept is None:
            if checkpoint_steps(run_dir):
                raise RunMismatch(
                    f"{run_dir} has checkpoints but no config.json, and no checkpoint records "
                    f"which run it is: restore its config.json, use another --run_dir, or pass "
                    f"--restart to start over here (its contents move to "
                    f"{run_dir.name}{REPLACED}<time>).")
            return None
        step, old = kept
        where = f"checkpoint {step}"
    diffs = differences(old, record, where)
    if diffs and where == "config.json" and not checkpoint_steps(run_dir) and \
            not (run_dir / "summary.json").exists():
        moved = move_aside(run_dir)
        _log(f"{run_dir} held a run that stopped before its first checkpoint "
             f"({diffs[0]}{', ...' if len(diffs) > 1 else ''}); it does not bind this command: "
             f"its leftovers are now in {moved}")
        return None
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        missing = "" if where == "config.json" else "config.json is missing and "
        raise RunMismatch(
            f"{run_dir} holds another run than this command describes: {missing}{shown}. Use "
            f"another --run_dir for this one, or pass --restart to start over in this directory "
            f"(its contents move to {run_dir.name}{REPLACED}<time>).")
    if where != "config.json":
        if "dataset_id" in record:   # the full check: config.json is written after it
            _log(f"config.json of {run_dir} was missing: the run's identity in {where} matches "
                 f"this command; config.json is written again")
        return None
    return old


def move_aside(run_dir: Path) -> Path | None:
    """Move everything in ``run_dir`` but its lock to a new sibling ``<name>.replaced-<time>``."""
    entries = [p for p in run_dir.iterdir() if p.name != LOCK_FILE]
    if not entries:
        return None
    target = run_dir.with_name(f"{run_dir.name}{REPLACED}{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        target, n = target.with_name(f"{target.name.split('~')[0]}~{n}"), n + 1
    target.mkdir()
    for p in entries:
        shutil.move(str(p), str(target / p.name))
    return target


def write_record(run_dir: Path, record: dict, recorded: dict | None) -> None:
    """Write config.json when it is new or a phase length changed (an extended run); a re-run of
    the same command leaves the recorded file untouched."""
    def lengths(r):
        return [(r.get("agent") or {}).get("run", {}).get(k) for k in PHASE_LENGTHS]

    if recorded is None or lengths(recorded) != lengths(record) or \
            recorded.get("init_from") != record.get("init_from"):
        atomic_write(run_dir / "config.json", json.dumps(record, indent=2, default=str))


# ---------------------------------------------------------------------------------------------
# Processes and wall time
# ---------------------------------------------------------------------------------------------
class ProcessLog:
    """``processes.json``: every process that worked on the run, with its wall time so far."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / PROCESSES_FILE
        try:
            self.entries = _read_json(self.path) or []
        except RunDirError:   # bookkeeping only: an unreadable record starts a new one
            self.entries = []
        self.t0 = time.perf_counter()
        self.entries.append({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": 0.0})

    def wall_s(self) -> float:
        """The run's wall time: earlier processes plus this one so far; recorded on disk."""
        self.entries[-1]["wall_s"] = round(time.perf_counter() - self.t0, 3)
        atomic_write(self.path, json.dumps(self.entries, indent=1))
        return sum(e["wall_s"] for e in self.entries)


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------
_STOP: list[int] = []   # the signal asked for (at most one)
# A grid forwards its signal to its cells, which may have had it from the terminal too: the same
# signal again within this many seconds is that copy, not a second request.
DUPLICATE_S = 1.0


def stop_requested() -> int | None:
    """The signal number of a pending SIGINT / SIGTERM (the loops stop at the next boundary)."""
    return _STOP[0] if _STOP else None


def raise_if_stopped(step: int) -> None:
    """``Interrupted`` at ``step`` if a stop was asked for (the caller checkpointed first)."""
    if _STOP:
        raise Interrupted(_STOP[0], step)


@contextlib.contextmanager
def stop_signals():
    """SIGINT / SIGTERM set ``stop_requested`` for the ``with`` block; a second one raises
    KeyboardInterrupt at once. Only the main thread can install handlers (elsewhere: no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    first = []   # when the first signal came

    def handler(signum, frame):
        if _STOP and signum == _STOP[0] and time.monotonic() - first[0] < DUPLICATE_S:
            return   # the same signal twice at once: a terminal's and a grid's forwarded copy
        if _STOP:
            raise KeyboardInterrupt
        _STOP.append(signum)
        first.append(time.monotonic())
        _log(f"{signal.Signals(signum).name}: checkpointing at the end of this dispatch "
             f"(again to stop at once)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        _STOP.clear()
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------------
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path} is unreadable ({type(e).__name__}: {e}); it is not a run "
                          f"this version of dprl wrote whole: use another --run_dir, or "
                          f"--restart to start over here") from e


def _log(msg: str) -> None:
    from dprl.base.logging import log
    log(msg)
