"""When a loop logs, evaluates, checkpoints and how far one dispatch may go: one Schedule for
every loop of a run.

A loop counts in its own unit (gradient steps in the pretrain and offline phases, env steps
online) and advances by dispatches: a fused run of gradient steps, one chunk of env steps
(off-policy), one rollout (on-policy), the same fused steps for a stack of seeds (multiseed).
Before a dispatch a gradient loop asks ``next_dispatch`` how many steps to fuse, so that it lands
exactly on the next boundary; after it, every loop asks ``due(before, after)`` what the units
just done crossed. Off-policy online collection also asks when the updates are due
(``store_due``), how many are owed (``updates_owed``) and how many one step may run
(``update_slots``). A boundary is crossed when a multiple of its period lies in
``(before, after]``; a loop's last dispatch is due for everything (at every phase end a row is
written, the agent evaluated and the run checkpointed).
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction


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
        """Off-policy online: run the updates owed every ``update_every`` chunks and at the end
        (every chunk goes to the buffer as it comes)."""
        return chunks_pending >= self.update_every or due.end

    def updates_owed(self, env_steps: int) -> int:
        """Off-policy online: the gradient updates owed in all after ``env_steps`` env steps,
        ``floor(utd * (env_steps - start_updates))`` (none before ``start_updates``). Computed
        from the totals in exact arithmetic, so the fractional rest carries over from chunk to
        chunk and UTD holds whatever the chunk lengths (the loop pays the difference to the
        updates it has run)."""
        return math.floor(_exact(self.utd) * max(0, env_steps - self.start_updates))

    def update_slots(self, chunk_steps: int) -> int:
        """Off-policy online: gradient steps one replay step has room for (its fixed scan
        length), ``ceil(utd * chunk_steps * (2 update_every - 1))`` (at least 1): what
        ``update_every`` chunks of at most ``chunk_steps`` env steps can owe, plus what a run
        resumed between two update dispatches still owes for the ``update_every - 1`` chunks
        before its checkpoint, so that the owed count is always paid in full."""
        chunks = 2 * self.update_every - 1
        return max(1, math.ceil(_exact(self.utd) * chunk_steps * chunks))


def _exact(x: float) -> Fraction:
    """``x`` as the decimal it was written as (0.1 is 1/10, not the nearest binary float)."""
    return Fraction(str(x))


def _crossed(before: int, after: int, every: int) -> bool:
    return bool(every) and after // every > before // every
