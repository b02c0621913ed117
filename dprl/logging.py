"""Run logs: metrics.csv always, TensorBoard by default, Weights & Biases when asked; progress.

``metrics.csv`` has one row per log step, columns ``phase, step, env_steps, wall_s`` and then
every metric seen so far (a new metric rewrites the header; earlier rows get empty cells).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

BASE_COLUMNS = ["phase", "step", "env_steps", "wall_s"]


class MetricsLogger:
    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True,
                 wandb_project: str | None = None, config: dict | None = None):
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self.columns = list(BASE_COLUMNS)
        if self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or BASE_COLUMNS)
                self.rows = list(reader)
        self.tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:
                self.tb = None
        self.wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError(f"wandb_project={wandb_project!r} needs the wandb client: "
                                  f"pip install -e '.[wandb]' (or leave wandb_project empty)"
                                  ) from e
            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(run_dir),
                                    resume="allow")

    def truncate_after(self, global_step: int) -> None:
        """Drop rows logged after a checkpoint (a resumed run logs them again)."""
        def g(row):
            try:
                return int(float(row.get("global_step") or 0))
            except ValueError:
                return 0
        self.rows = [r for r in self.rows if g(r) <= global_step]
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
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, self.columns)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
