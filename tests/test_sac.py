"""dprl's SAC (the expert trainer): a killed run resumes from its checkpoint bit for bit."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest


def _curve(out):
    rows = list(csv.DictReader(open(out / "curve.csv")))
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_sac_killed_run_resumes_bit_exactly(tmp_path):
    from dprl.experts.sac import SACConfig, train
    from dprl.run.checkpoint import Checkpointer
    kw = dict(start_steps=100, fuse=25, eval_every=150, eval_episodes=1, snapshot_every=150,
              checkpoint_every=100, expert_return=1e9,
              config=SACConfig(hidden=(8, 8), batch_size=16), progress=False)
    whole = train("Hopper-v5", 450, tmp_path / "whole", **kw)
    with pytest.raises(KeyboardInterrupt):
        train("Hopper-v5", 450, tmp_path / "cut", _interrupt_at=330, **kw)
    assert Checkpointer(tmp_path / "cut").latest_step() is not None
    resumed = train("Hopper-v5", 450, tmp_path / "cut", **kw)
    assert resumed["updates"] == whole["updates"]
    assert _curve(tmp_path / "cut") == _curve(tmp_path / "whole")
    for name in ("final.npz", "replay.npz"):
        a, b = np.load(tmp_path / "whole" / name), np.load(tmp_path / "cut" / name)
        for k in a.files:
            if k != "meta":
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")


def test_sac_resume_refuses_fewer_steps_than_checkpointed(tmp_path):
    from dprl.experts.sac import SACConfig, train
    kw = dict(start_steps=50, fuse=25, eval_every=1000, eval_episodes=1, checkpoint_every=50,
              config=SACConfig(hidden=(8, 8), batch_size=16), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train("Hopper-v5", 400, tmp_path, _interrupt_at=300, **kw)
    with pytest.raises(ValueError, match="--steps"):
        train("Hopper-v5", 60, tmp_path, **kw)


@pytest.fixture(scope="module")
def exported_experts(tmp_path_factory, monkeypatch_module):
    """A tiny SAC run exported the way dprl's shipped experts are, and made the shipped set."""
    import dprl.experts as experts
    from dprl.experts.sac import SACConfig, train
    run = tmp_path_factory.mktemp("sac-run")
    # Eval returns climb past a tiny medium target early; 'expert' is the best snapshot.
    train("Hopper-v5", 900, run, start_steps=200, fuse=50, eval_every=150, eval_episodes=2,
          snapshot_every=150, expert_return=30.0,
          config=SACConfig(hidden=(16, 16), batch_size=32), progress=False)
    shipped = tmp_path_factory.mktemp("shipped")
    monkeypatch_module.setattr(experts, "SHIPPED_DIR", shipped)
    monkeypatch_module.setattr(experts, "MANIFEST", shipped / "manifest.json")
    monkeypatch_module.setattr(experts, "MEDIUM_FRACTION", 10.0 / 3234.3)
    entry = experts.export(run, "hopper", out_dir=shipped, eval_episodes=2)
    return run, shipped, entry


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_export_picks_best_expert_nearest_medium_and_earlier_replay_snapshots(exported_experts):
    from dprl.experts.policies import load_policy
    run, shipped, entry = exported_experts
    levels, rerun = entry["levels"], {int(k): v for k, v in entry["candidates"].items()}
    # Expert: the best re-evaluated of the candidates; medium: of the snapshots up to the first
    # that reached the target (10), the re-evaluated one nearest to it.
    assert levels["expert"]["env_steps"] == entry["best_step"] == max(rerun, key=rerun.get)
    med = levels["medium"]["env_steps"]
    curve = list(csv.DictReader(open(run / "curve.csv")))
    first = next(int(r["step"]) for r in curve if float(r["eval_return_mean"]) >= 10.0)
    ascent = [r for r in curve if int(r["step"]) <= first]
    nearest = sorted(ascent, key=lambda r: abs(float(r["eval_return_mean"]) - 10.0))[:3]
    assert med == min((int(r["step"]) for r in nearest), key=lambda st: abs(rerun[st] - 10.0))
    assert levels["medium"]["eval_return_mean"] == rerun[med]
    replay = levels["replay"]
    assert replay[0]["file"] is None and replay[0]["start"] == 0.0 and replay[-1]["end"] == 1.0
    assert all(a["end"] == b["start"] for a, b in zip(replay, replay[1:]))
    assert all(r["env_steps"] < med for r in replay[1:-1])
    pol = load_policy(shipped / "hopper-expert.npz")
    assert pol.hidden[0][0].dtype == np.float32          # stored float16, loaded float32
    assert np.load(shipped / "hopper-expert.npz")["W0"].dtype == np.float16
    assert pol.meta["level"] == "expert" and "python -m dprl.sac" in pol.meta["command"]


def test_recipes_with_no_flags_use_the_shipped_policies(exported_experts):
    from dprl.datasets.locomotion import make_locomotion_episodes
    _, shipped, entry = exported_experts
    episodes, prov = make_locomotion_episodes("hopper", "medium-replay", 600, num_envs=4)
    assert sum(len(e["actions"]) for e in episodes) >= 600
    files = [s["file"] for s in prov["policy"]["schedule"]]
    assert files[0] is None and files[-1] == "hopper-medium.npz"
    _, prov = make_locomotion_episodes("hopper", "medium", 300, num_envs=4)
    assert prov["medium_policy"]["path"] == str(shipped / "hopper-medium.npz")


def test_a_level_never_reached_says_so_with_the_return_reached(exported_experts, monkeypatch):
    import dprl.experts as experts
    from dprl.datasets.locomotion import make_locomotion_episodes
    run, shipped, entry = exported_experts
    manifest = json.loads((shipped / "manifest.json").read_text())
    del manifest["hopper"]["levels"]["medium"]
    (shipped / "manifest.json").write_text(json.dumps(manifest))
    try:
        with pytest.raises(FileNotFoundError, match="never reached the medium level: its best"):
            make_locomotion_episodes("hopper", "medium", 300, num_envs=2)
    finally:
        experts.export(run, "hopper", out_dir=shipped, eval_episodes=2)
    (run / "medium.npz").rename(run / "medium.npz.bak")
    try:
        with pytest.raises(FileNotFoundError, match="best evaluation return was"):
            make_locomotion_episodes("hopper", "medium", 300, sac_run=run, num_envs=2)
    finally:
        (run / "medium.npz.bak").rename(run / "medium.npz")


def test_replay_file_cuts_back_into_the_episodes_that_were_run(exported_experts):
    """replay.npz (the core buffer written out): each episode's reset seed gives its first
    observation, and every episode but the unfinished last ends where the env ended it."""
    from dprl.envs.vector import make_env
    from dprl.experts.sac import replay_to_episodes
    run, _, _ = exported_experts
    d = np.load(run / "replay.npz")
    assert len(d["actions"]) == 900 and d["episode_id"][0] == 0
    assert np.all(np.diff(d["episode_id"]) >= 0)
    episodes = replay_to_episodes(run / "replay.npz")
    assert len(episodes) >= 2 and sum(len(e["actions"]) for e in episodes) <= 900
    env = make_env("Hopper-v5")
    for e in episodes[:3]:
        np.testing.assert_allclose(env.reset(seed=e["seed"])[0], e["observations"][0], rtol=1e-6)
        assert e["terminations"][-1] or e["truncations"][-1]
        assert not (e["terminations"][:-1] | e["truncations"][:-1]).any()
