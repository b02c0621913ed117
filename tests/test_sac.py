"""dprl's SAC (the expert trainer): a killed run resumes from its checkpoint bit for bit."""
from __future__ import annotations

import csv

import numpy as np
import pytest


def _curve(out):
    rows = list(csv.DictReader(open(out / "curve.csv")))
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_sac_killed_run_resumes_bit_exactly(tmp_path):
    from dprl.sac import SACConfig, train
    kw = dict(start_steps=100, fuse=25, eval_every=150, eval_episodes=1, snapshot_every=150,
              checkpoint_every=100, expert_return=1e9,
              config=SACConfig(hidden=(8, 8), batch_size=16), progress=False)
    whole = train("Hopper-v5", 450, tmp_path / "whole", **kw)
    with pytest.raises(KeyboardInterrupt):
        train("Hopper-v5", 450, tmp_path / "cut", _interrupt_at=330, **kw)
    assert (tmp_path / "cut" / "checkpoint" / "progress.json").is_file()
    resumed = train("Hopper-v5", 450, tmp_path / "cut", **kw)
    assert resumed["updates"] == whole["updates"]
    assert _curve(tmp_path / "cut") == _curve(tmp_path / "whole")
    for name in ("final.npz", "replay.npz"):
        a, b = np.load(tmp_path / "whole" / name), np.load(tmp_path / "cut" / name)
        for k in a.files:
            if k != "meta":
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")


def test_sac_resume_refuses_fewer_steps_than_checkpointed(tmp_path):
    from dprl.sac import SACConfig, train
    kw = dict(start_steps=50, fuse=25, eval_every=1000, eval_episodes=1, checkpoint_every=50,
              config=SACConfig(hidden=(8, 8), batch_size=16), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train("Hopper-v5", 400, tmp_path, _interrupt_at=300, **kw)
    with pytest.raises(ValueError, match="--steps"):
        train("Hopper-v5", 60, tmp_path, **kw)
