"""Run logs: metrics.csv always, TensorBoard by default, Weights & Biases when asked; progress bars.

``metrics.csv`` has one row per log step, columns ``phase, step, env_steps, wall_s`` and then
every metric seen so far (a new metric rewrites the header; earlier rows get empty cells).
Every row is there once: a resumed run cuts metrics.csv back to the step it resumed from and
rewrites TensorBoard's events from the rows kept; a run that starts from zero starts both afresh.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dprl.base.files import atomic_write

BASE_COLUMNS = ["phase", "step", "env_steps", "wall_s"]
WANDB_ID_FILE = "wandb_run_id"


def log(msg: str) -> None:
    """A line for the user on stderr, marked ``[dprl]``."""
    print(f"[dprl] {msg}", file=sys.stderr, flush=True)


class TrainingDiverged(FloatingPointError):
    """A loss or metric became NaN or inf."""


def check_finite(info: dict, phase: str, step: int, ckpt) -> None:
    """Stop the run (``TrainingDiverged``) when a metric of ``info`` is NaN or inf, saying
    where and which checkpoint (of ``ckpt``, a ``Checkpointer``) holds the last good state."""
    for k, v in info.items():
        if not math.isfinite(float(v)):
            last = ckpt.latest_step()
            where = (f"the last checkpoint is step {last} in {ckpt.directory}"
                     if last is not None else "no checkpoint was saved yet")
            raise TrainingDiverged(
                f"{k} became {float(v)} in phase {phase!r} at step {step}; {where}. Lower the "
                f"learning rate, clip gradients (grad_clip) or check the data for outliers.")


@contextlib.contextmanager
def timed(timing: dict, field: str):
    """Adds the seconds spent in the ``with`` block to ``timing[field]``."""
    start = time.perf_counter()
    yield
    timing[field] += time.perf_counter() - start


class MetricsLogger:
    """metrics.csv (+ TensorBoard, W&B) of a run. ``resume_step``: the global step a resumed run
    restarts from (rows after it are dropped); None starts a fresh log."""

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True,
                 wandb_project: str | None = None, config: dict | None = None,
                 resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self.columns = list(BASE_COLUMNS)
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or BASE_COLUMNS)
                self.rows = list(reader)
        self.truncate_after(-1 if resume_step is None else resume_step)
        self.tb = None
        if tensorboard:
            self.tb = _tensorboard(Path(run_dir) / "tb", self.rows, self.columns)
        self.wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError(f"wandb_project={wandb_project!r} needs the wandb client: "
                                  f"pip install -e '.[wandb]' (or leave wandb_project empty)"
                                  ) from e
            # One W&B run per run directory: a resumed run continues it (W&B keeps the rows it
            # already has for steps logged again after the checkpoint; metrics.csv and
            # TensorBoard are rewound to the checkpoint).
            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(run_dir),
                                    id=_wandb_run_id(Path(run_dir)), resume="allow")

    def truncate_after(self, global_step: int) -> None:
        """Drop rows logged after a checkpoint (a resumed run logs them again)."""
        self.rows = [r for r in self.rows if _global_step(r) <= global_step]
        self._rewrite()

    def log(self, phase: str, step: int, env_steps: int, wall_s: float, metrics: dict,
            global_step: int) -> None:
        row = {"phase": phase, "step": step, "env_steps": env_steps, "wall_s": round(wall_s, 3),
               "global_step": global_step}
        for k, v in metrics.items():
            v = float(v)
            row[k] = v
            if self.tb is not None and math.isfinite(v):
                self.tb.add_scalar(k, v, global_step)
        if self.wandb is not None:
            self.wandb.log({**metrics, "env_steps": env_steps}, step=global_step)
        new_cols = [k for k in row if k not in self.columns]
        self.rows.append(row)
        if new_cols:
            self.columns += new_cols
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns).writerow(row)

    def _rewrite(self) -> None:
        """metrics.csv from ``self.rows``, atomically."""
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, self.columns)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write(self.path, text.getvalue())

    def latest(self, key: str) -> float | None:
        """The last value logged under ``key`` (None if never)."""
        for row in reversed(self.rows):
            if row.get(key) not in (None, ""):
                return float(row[key])
        return None

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory, made on its first W&B run and kept in it."""
    path = run_dir / WANDB_ID_FILE
    if path.exists():
        return path.read_text().strip()
    import secrets
    run_id = secrets.token_hex(4)    # W&B's own ids are 8 characters of [a-z0-9]
    atomic_write(path, run_id)
    return run_id


def _global_step(row: dict) -> int:
    """A row's global step; a row cut mid-write by a crash (missing cells) sorts after all."""
    try:
        if None in row.values():
            raise ValueError(row)
        return int(float(row.get("global_step") or 0))
    except ValueError:
        return 1 << 62


def _tensorboard(tb_dir: Path, rows: list[dict], columns: list[str]):
    """A TensorBoard writer on fresh event files holding ``rows`` (the metrics.csv rows kept):
    TensorBoard then shows every step once, as metrics.csv does. None without tensorboardX."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    for old in tb_dir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(str(tb_dir))
    for row in rows:
        for k in columns[len(BASE_COLUMNS):]:
            if k != "global_step" and row.get(k) not in (None, "") and \
                    math.isfinite(float(row[k])):
                writer.add_scalar(k, float(row[k]), _global_step(row))
    writer.flush()
    return writer


def progress_bar(desc: str, total: int, initial: int, unit: str, enabled: bool = True) -> tqdm:
    # Redirected to a file (nohup, grids), a line every 10 s instead of ten a second.
    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                dynamic_ncols=True, mininterval=0.1 if interactive else 10.0)


def postfix(info: dict, score: float | None) -> dict:
    """The progress bar's summary: the first two losses and the best evaluation score so far
    (``eval_score``: the normalized score, defined in ``train.py --help``)."""
    out = {}
    for k, v in info.items():
        if "loss" in k:
            out[k.split("/")[-1] if len(out) == 0 else k] = f"{float(v):.3g}"
            if len(out) >= 2:
                break
    if score is not None:
        out["eval_score"] = f"{score:.1f}"    # best normalized score so far (train.py --help)
    return out
