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
from orbax.checkpoint import checkpoint_managers

logging.getLogger("absl").setLevel(logging.WARNING)


class Checkpointer:
    """Saves ``{'state': pytree, 'meta': json dict}`` per step under ``run_dir/checkpoints``.

    The latest ``max_to_keep`` checkpoints are kept, and also every step in ``keep_steps`` (the
    runner passes the phase ends, so the BC actor and the offline-RL agent of a run that went on
    online stay loadable with ``load_run(run_dir, step)``).
    """

    def __init__(self, run_dir: str | os.PathLike, max_to_keep: int = 2,
                 keep_steps: tuple[int, ...] = ()):
        self.directory = Path(run_dir).absolute() / "checkpoints"
        policies = [checkpoint_managers.LatestN(max_to_keep)]
        if keep_steps:
            policies.append(checkpoint_managers.CustomSteps(sorted(set(keep_steps))))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                create=True, enable_async_checkpointing=False,
                preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies)))

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
