"""What agent configs share: chunking, the BC-stage actor, the EMA, critics, the runner.

An agent config file calls ``base_config('<agent>')``, then ``add_ema`` / ``add_critic`` if it
has an EMA actor / a value network, and adds its own hyperparameters; it overrides a shared
default only where its paper differs. Keys of ``config.run`` are the runner's (phases, batch,
evaluation, logging); ``--offline_steps`` etc. on the command line are shortcuts for
``--agent.run.offline_steps``.
"""
from __future__ import annotations

import ml_collections

from dprl.models.actor import default_actor_config
from dprl.models.encoders import default_encoder_config


def run_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        pretrain_steps=0,        # BC gradient steps before RL (the shared first stage)
        offline_steps=0,         # offline RL gradient steps
        online_steps=0,          # online env steps (transitions, not chunks)
        batch_size=256,          # Diffusion-QL, QC, RLPD: 256
        steps_per_dispatch=100,  # gradient steps fused into one jit call (lax.scan)
        log_every=1000,          # gradient steps (pretrain/offline) between log rows
        eval_every=10000,        # gradient steps (pretrain/offline) between evaluations
        online_eval_every=10000,  # env steps between online evaluations
        online_log_every=1000,   # env steps between online log rows
        save_every=10000,        # gradient steps / env steps between checkpoints
        eval_episodes=0,         # 0 = the task preset's number
        eval_envs=0,             # envs evaluating at once (episodes run in waves of this many);
                                 # 0 = the task preset's number (OGBench: 10; else one per episode)
        eval_seed=1000,          # eval envs are seeded eval_seed, eval_seed + 1, ...
        utd=1.0,                 # online: gradient updates per env step (RLPD uses more; a float,
                                 # so that --agent.run.utd=0.5 is accepted)
        offline_ratio=0.5,       # online: share of each batch from the offline data (RLPD: 0.5)
        offline_mix="ratio",     # online: 'ratio' = offline_ratio of every batch (RLPD); 'uniform'
                                 # = one buffer sampled uniformly, offline share n_off / (n_off +
                                 # n_on), falling as data arrive (QC's main.py; offline_ratio unused)
        update_every=1,          # online: env chunk-steps between update dispatches
        start_online_updates=0,  # online: env steps collected before the first update
        num_envs=1,              # online envs (off-policy agents need 1; DPPO uses many)
        rollout_steps=0,         # on-policy: chunk-steps per env per update (DPPO)
        normalize_obs=True,      # standardize observations with the dataset's statistics
        data_parallel=False,     # split each batch over all local devices (params replicated,
                                 # gradients averaged by XLA); batch_size a multiple of them
        compute_dtype="float32",  # the networks' matmuls: 'float32' or 'bfloat16' (mixed
                                 # precision: bf16 matmuls, fp32 params, optimizer and losses)
        init_from="",            # 'RUN_DIR' or 'RUN_DIR:STEP': start from that run's checkpoint
                                 # (agent and normalizer), e.g. online variants of one offline run
        tensorboard=True,        # TensorBoard event files in run_dir/tb
        wandb_project="",        # set to log to Weights & Biases too
    ))


def base_config(agent_name: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.agent_name = agent_name  # the registered agent this config builds (agents/)
    config.horizon = 1           # H: action chunk length (1 = one-step control)
    config.act_steps = 1         # actions executed per chunk (receding horizon), <= horizon
    config.obs_history = 1       # K: frames of observation history (1 = none)
    config.action_dim = 0        # A: filled in by the runner from the dataset
    config.actor = default_actor_config()
    # Pixel observations (dprl/models/encoders.py): the image encoder every network builds for
    # itself (FQL/QC: one per module); unused by flat-state tasks. The actor's networks read it
    # as config.actor.encoder, the same object (one setting: --agent.encoder.name=resnet18).
    config.encoder = default_encoder_config()
    config.actor.encoder = config.encoder
    config.act_with = "multi_step"  # the acting policy (evaluation and online acting):
                                 # 'multi_step' = the actor's own sampler; 'one_step' = mu(s, z)
                                 # distilled from it as it trains (FQL's noise-conditioned
                                 # distillation: dprl/run/one_step.py wraps the agent);
                                 # off-policy agents only
    config.actor_lr = 3e-4       # the actor's Adam learning rate (Diffusion-QL, QC: 3e-4)
    config.grad_clip = 0.0       # global-norm gradient clip of every network (0 = off)
    config.run = run_config()
    return config


def add_ema(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The EMA of the actor's weights, which acts and (DQL) picks next actions (Diffusion-QL)."""
    config.ema_decay = 0.995     # Diffusion-QL: 0.995
    config.ema_start = 1000      # gradient steps during which the EMA is a copy of the actor
                                 # (Diffusion-QL: step_start_ema 1000; see configs/dql.py)
    config.ema_every = 1         # gradient steps between EMA updates (Diffusion-QL: 5)
    return config


def add_critic(config: ml_collections.ConfigDict, ensemble: bool = True
               ) -> ml_collections.ConfigDict:
    """The value network(s): Diffusion-QL's 3x256 Mish critics; with ``ensemble`` a Q ensemble
    with Polyak-averaged targets, else one V(s) (DPPO)."""
    config.critic_hidden_dims = (256, 256, 256)  # Diffusion-QL: 3x256
    config.critic_activation = "mish"  # Diffusion-QL: Mish
    config.critic_layer_norm = False   # Diffusion-QL: none
    config.critic_kernel_init = "lecun_normal"  # Dense kernels: flax's default (QC:
                                       # 'fan_avg_uniform', variance scaling)
    config.critic_lr = 3e-4            # Diffusion-QL, IQL, QC: 3e-4
    config.discount = 0.99             # gamma (Diffusion-QL, QC, DPPO: 0.99)
    if ensemble:
        config.num_critics = 2         # twin critics (clipped double Q; QC: 2)
        config.tau = 0.005             # Polyak rate of the target critics (Diffusion-QL, QC)
    return config
