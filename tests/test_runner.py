"""The run contract end to end: train.py's outputs, resume after a kill, and clear failures."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from agents import get_agent
from dprl.run.checkpoint import load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--agent.actor.hidden_dims=(32, 32)", "--agent.run.batch_size=32",
        "--agent.run.steps_per_dispatch=20", "--agent.run.tensorboard=False",
        "--agent.run.eval_episodes=4", "--noprogress"]


def train_cmd(run_dir, *extra, agent="configs/bc.py", task="pole"):
    return [sys.executable, str(ROOT / "experiments/train.py"), f"--agent={agent}",
            f"--task={task}", f"--run_dir={run_dir}", *TINY, *extra]


def run(cmd, check=True):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc


def test_train_writes_the_run_contract(tmp_path, pole_datasets):
    run_dir = tmp_path / "run"
    run(train_cmd(run_dir, "--pretrain_steps=60", "--online_steps=40",
                  "--agent.run.eval_every=30", "--agent.run.log_every=20",
                  "--agent.run.online_eval_every=20", "--agent.run.online_log_every=10",
                  "--agent.run.save_every=10"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent"]["agent_name"] == "bc" and config["dataset_id"] == "dprl/pole/demos-v0"
    assert config["dataset_source"] == "dprl-generated" and "git_commit" in config
    assert config["dprl_version"]
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("agent", "task", "seed", "offline_steps", "online_steps", "offline_score",
                "online_score", "best_score", "updates_per_s", "env_steps_per_s", "wall_s"):
        assert key in summary, key
    assert summary["online_score"] is not None and summary["updates_per_s"] > 0
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert list(rows[0])[:4] == ["phase", "step", "env_steps", "wall_s"]
    assert {r["phase"] for r in rows} == {"pretrain", "online"}
    evals = [r for r in rows if r.get("eval/normalized_score")]
    assert len(evals) >= 3 and all(r["eval/return_mean"] for r in evals)
    online = [r for r in rows if r["phase"] == "online"]
    assert int(online[-1]["env_steps"]) == 40
    # The rolling window keeps the last two checkpoints; the end of pretraining (step 60) is kept
    # too, so the BC actor of a run that went online stays loadable.
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [60, 90, 100], steps


def _params(run_dir):
    agent, normalizer, _ = load_run(run_dir, get_agent)
    return jax.tree.leaves(agent.actor.params), normalizer


def test_killed_run_resumes_to_the_same_parameters(tmp_path, pole_datasets):
    args = ["--pretrain_steps=400", "--agent.run.save_every=100", "--agent.run.eval_every=1000",
            "--agent.run.log_every=100"]
    straight = tmp_path / "straight"
    run(train_cmd(straight, *args))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(killed, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoints" / "200").exists():
        time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    resumed = run(train_cmd(killed, *args))
    assert "resuming from checkpoint" in resumed.stderr

    a, norm_a = _params(straight)
    b, norm_b = _params(killed)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(norm_a.mean), np.asarray(norm_b.mean))
    steps = [int(r["step"]) for r in csv.DictReader(open(killed / "metrics.csv"))]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    # A finished run is not trained again.
    again = run(train_cmd(killed, *args))
    assert "already finished" in again.stderr


@pytest.mark.parametrize("extra,message", [
    (["--dataset=dprl/nowhere/demos-v0"], "python -m dprl.datasets"),
    (["--task=hopper-medium", "--dataset=dprl/pole/demos-v0"], "was recorded in env"),
    # Allowed another env's data, the shapes must still match.
    (["--task=hopper-medium", "--dataset=dprl/pole/demos-v0", "--allow_env_mismatch"],
     "does not match env"),
    (["--agent.run.batch_sise=3"], "Did you mean --agent.run.batch_size"),
    (["--task=pole-lft"], "Did you mean pole-right"),
])
def test_bad_input_fails_with_a_clear_message(tmp_path, pole_datasets, extra, message):
    cmd = train_cmd(tmp_path / "bad", "--pretrain_steps=10")
    cmd = [c for c in cmd if not (c.startswith("--task=") and any(e.startswith("--task=")
                                                                  for e in extra))]
    proc = run(cmd + extra, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_run(tmp_path, get_agent)


def test_diverging_loss_stops_the_run_and_names_the_step(tmp_path, pole_datasets):
    proc = run(train_cmd(tmp_path / "nan", "--pretrain_steps=200", "--agent.actor_lr=1e9"),
               check=False)
    assert proc.returncode != 0
    assert "TrainingDiverged" in proc.stderr and "in phase 'pretrain' at step" in proc.stderr


def test_init_from_starts_a_new_run_from_another_runs_checkpoint(tmp_path, pole_datasets):
    """Online variants of one offline run: the new run starts from its phase-end agent."""
    source = tmp_path / "offline"
    run(train_cmd(source, "--pretrain_steps=40", "--online_steps=20",
                  "--agent.run.save_every=10"))
    child = tmp_path / "online"
    run(train_cmd(child, "--pretrain_steps=0", "--online_steps=0",
                  f"--agent.run.init_from={source}:40"))
    config = json.loads((child / "config.json").read_text())
    assert config["init_from"]["step"] == 40
    summary = json.loads((child / "summary.json").read_text())
    assert summary["offline_score"] is not None        # the starting agent was evaluated
    started, _, _ = load_run(child, get_agent)
    at_40, _, _ = load_run(source, get_agent, 40)
    for a, b in zip(jax.tree.leaves(started.actor.params), jax.tree.leaves(at_40.actor.params)):
        np.testing.assert_array_equal(a, b)
    # A different network cannot take those parameters: a clear error, not a shape crash.
    proc = run(train_cmd(tmp_path / "bad", "--pretrain_steps=0", "--online_steps=0",
                         f"--agent.run.init_from={source}", "--agent.actor.hidden_dims=(16, 16)"),
               check=False)
    assert proc.returncode != 0 and "differ in shape" in proc.stderr


@pytest.mark.slow
def test_init_from_another_agents_run_takes_its_bc_stage(tmp_path, pole_datasets):
    """DQL online from a DPPO run's BC actor: the actor's weights, EMA and step are DPPO's, the
    critics and the actor's optimizer are DQL's own fresh ones; a different actor is refused
    with the differing key named."""
    from configs.dppo import get_config as dppo_config
    from configs.dql import get_config as dql_config
    import ml_collections

    from dprl.run.checkpoint import initial_state
    from dprl.run.runner import train
    from tests.conftest import tiny

    def chunked(config, **actor):
        config.horizon = config.act_steps = 2
        config.actor.update(dict(schedule="cosine", diffusion_steps=6, residual=False,
                                 activation="relu", time_activation="", time_freqs="half") | actor)
        return config

    dppo = chunked(tiny(dppo_config(), pretrain_steps=30, online_steps=0, save_every=30))
    dppo.critic_hidden_dims, dppo.ft_denoising_steps = (16, 16), 3
    train(dppo, "pole-right", str(tmp_path / "bc"), get_agent, progress=False)

    def dql(**actor):
        config = chunked(tiny(dql_config(), pretrain_steps=0, offline_steps=0, online_steps=0,
                              init_from=str(tmp_path / "bc")), **actor)
        config.critic_hidden_dims = (16, 16)
        return config

    train(dql(), "pole-right", str(tmp_path / "dql"), get_agent, progress=False)
    theirs, their_norm, _ = load_run(tmp_path / "bc", get_agent)
    ours, our_norm, _ = load_run(tmp_path / "dql", get_agent)
    for mine, dppos in ((ours.actor.params, theirs.bc.params),
                        (ours.actor.ema_params, theirs.bc.ema_params)):
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(dppos)):
            np.testing.assert_array_equal(a, b)
    assert int(ours.actor.step) == int(theirs.bc.step) == 30
    np.testing.assert_array_equal(our_norm.mean, their_norm.mean)
    config = json.loads((tmp_path / "dql" / "config.json").read_text())
    assert config["init_from"]["taken"].startswith("the BC stage")
    fresh = initial_state(get_agent("dql"), ml_collections.ConfigDict(config["agent"]),
                          our_norm.dim, 0)["agent"]
    for a, b in zip(jax.tree.leaves(ours.critic.params), jax.tree.leaves(fresh.critic.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(ours.actor.opt_state), jax.tree.leaves(fresh.actor.opt_state)):
        np.testing.assert_array_equal(a, b)     # DQL's own optimizer, its moments at zero
    with pytest.raises(ValueError, match="diffusion_steps: 6 there, 8 here"):
        train(dql(diffusion_steps=8), "pole-right", str(tmp_path / "bad"), get_agent,
              progress=False)


def test_evaluation_acts_with_eval_actions_where_an_agent_has_them():
    """An agent that evaluates differently from how it acts (DPPO without its exploration floor)
    is evaluated with ``eval_actions``; others with ``sample_actions``."""
    import jax.numpy as jnp
    import ml_collections

    from dprl.envs.tasks import get_task
    from dprl.run.collect import evaluate_agent

    calls = []

    class Acting:
        def sample_actions(self, observations, key):
            calls.append("sample")
            return jnp.zeros((observations.shape[0], 1, 2)), {}

    class Evaluating(Acting):
        def eval_actions(self, observations, key):
            calls.append("eval")
            return jnp.zeros((observations.shape[0], 1, 2)), {}

    config = ml_collections.ConfigDict({"act_steps": 1, "obs_history": 1, "run": {
        "eval_episodes": 1, "eval_seed": 0, "eval_envs": 1}})
    task = get_task("pole")
    for agent, expected in ((Acting(), "sample"), (Evaluating(), "eval")):
        calls.clear()
        evaluate_agent(agent, jax.random.PRNGKey(0), task, config, lambda o: o, 0.0, 1.0)
        assert calls and set(calls) == {expected}
