"""When a loop logs, evaluates, checkpoints and how far one dispatch may go: one Schedule for
every loop of a run.

A loop counts in its own unit (gradient steps in the pretrain and offline phases, env steps
online) and advances by dispatches: a fused run of gradient steps, one chunk of env steps
(off-policy), one rollout (on-policy), the same fused steps for a stack of seeds (multiseed).
Before a dispatch a gradient loop asks ``next_dispatch`` how many steps to fuse, so that it lands
exactly on the next boundary; after it, every loop asks ``due(before, after)`` what the units
just done crossed. Off-policy online collection also asks when its stored chunks go to the
buffer and how many updates they are owed (``store_due``, ``updates_owed``). A boundary is crossed when a multiple of its period lies in
``(before, after]``; a loop's last dispatch is due for everything (at every phase end a row is
written, the agent evaluated and the run checkpointed).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Due:
    """What a loop does after a dispatch."""

    log: bool    # write a metrics row with the latest training info
    eval: bool   # evaluate the agent (its metrics join the row)
    save: bool   # checkpoint the run
    end: bool    # the loop reached its total

    @property
    def row(self) -> bool:
        return self.log or self.eval


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Boundaries of one loop in its own unit; a period of 0 never comes due."""

    total: int
    log_every: int
    eval_every: int
    save_every: int
    dispatch: int           # most gradient steps fused into one dispatch
    update_every: int = 1   # off-policy online: chunks collected between update dispatches
    utd: float = 0.0        # off-policy online: gradient updates owed per new env step
    start_updates: int = 0  # off-policy online: env steps collected before the first update

    @classmethod
    def of(cls, run, phase: str) -> "Schedule":
        """The schedule of ``phase`` ('pretrain', 'offline' or 'online') under ``config.run``."""
        if phase == "online":
            return cls(run.online_steps, run.online_log_every, run.online_eval_every,
                       run.save_every, run.steps_per_dispatch, run.update_every, run.utd,
                       run.start_online_updates)
        total = {"pretrain": run.pretrain_steps, "offline": run.offline_steps}[phase]
        return cls(total, run.log_every, run.eval_every, run.save_every, run.steps_per_dispatch)

    def next_dispatch(self, done: int) -> int:
        """Units in the next dispatch: at most ``dispatch``, and never past the next log / eval /
        save boundary or the total, so that boundaries land on exact steps."""
        stops = [self.total] + [(done // every + 1) * every
                                for every in (self.log_every, self.eval_every, self.save_every)
                                if every]
        return min(self.dispatch, min(stops) - done)

    def due(self, before: int, after: int) -> Due:
        """The boundaries crossed by going from ``before`` to ``after`` units."""
        end = after >= self.total
        return Due(log=_crossed(before, after, self.log_every) or end,
                   eval=_crossed(before, after, self.eval_every) or end,
                   save=_crossed(before, after, self.save_every) or end, end=end)


    def store_due(self, chunks_pending: int, due: Due) -> bool:
        """Off-policy online: store the pending chunks (and update) every ``update_every`` chunks
        and at the end."""
        return chunks_pending >= self.update_every or due.end

    def updates_owed(self, new_steps: int, env_steps: int) -> int:
        """Off-policy online: the updates owed for ``new_steps`` new env steps (``utd`` each,
        none before ``start_updates`` env steps)."""
        return int(round(self.utd * new_steps)) if env_steps >= self.start_updates else 0


def _crossed(before: int, after: int, every: int) -> bool:
    return bool(every) and after // every > before // every
