"""Atomic orbax checkpoints of a run: the agent, buffers, normalizer and the runner's counters.

Orbax writes each step into a temporary directory and renames it when complete (and marks it
with ``commit_success.txt``), so a run killed mid-save keeps its previous checkpoint. Restoring
needs a target pytree of the same structure: the runner builds a fresh state the same way and
restores into it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

logging.getLogger("absl").setLevel(logging.WARNING)


class Checkpointer:
    """Saves ``{'state': pytree, 'meta': json dict}`` per step under ``run_dir/checkpoints``."""

    def __init__(self, run_dir: str | os.PathLike, max_to_keep: int = 2):
        self.directory = Path(run_dir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        if step in self.manager.all_steps():
            # Same step saved again (e.g. end-of-phase scores added): replace it; the previous
            # checkpoint (max_to_keep >= 2) stays on disk meanwhile.
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore(self, target_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore into the structure of ``target_state``; raises FileNotFoundError if none."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"No checkpoint in {self.directory}. Train first (experiments/train.py with this "
                f"--run_dir), or point --run_dir at a run that has checkpoints/.")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target_state), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.close()
