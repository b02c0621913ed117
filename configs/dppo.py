"""DPPO (Ren et al. 2024): PPO finetuning of the last denoising steps of a diffusion BC actor.

Presets (``configs/dppo.py:<preset>``):

``paper``: the reference code's Gym configuration, value for value, from
irom-princeton/dppo ``cfg/gym/finetune/hopper-v2/ft_ppo_diffusion_mlp.yaml`` (finetuning) and
``cfg/gym/pretrain/hopper-medium-v2/pre_diffusion_mlp.yaml`` (BC pretraining). One PPO iteration
collects 40 envs x 500 chunk-steps x 4 actions = 80,000 env steps; 1000 iterations are 80M env
steps. Each value says the paper's or why it departs.

``cpu-small``: the paper's method and networks for smoke runs on this 2-core CPU. Its departures
from ``paper``, all in the runner's sizes: 10 envs x 50 chunk-steps per iteration (2,000 env
steps, not 80,000), PPO minibatches of 125 samples (x 10 finetuned steps = 1,250 pairs, not
5,000 x 10 = 50,000; the paper's 4 minibatches per epoch kept), 500k online env steps (not 80M),
evaluation every 10k env steps (not every 10 iterations = 800k).

``plain-mlp-cpu`` (the default, ``configs/dppo.py``): dprl's earlier configuration, kept as the
default because tests across the repository build DPPO from it with 2-layer tiny networks (a
residual MLP needs an odd number of equal layers), and pinned by the recorded reference run
(tests/test_reference_runs.py). ``cpu-small``'s sizes with a plain (not residual) MLP actor and
critic, the time embedding's sinusoid over ``/half`` with the actor's ReLU, batch 256 for BC, and
evaluation with the exploration std floor on: not the paper's networks.

``python experiments/train.py --agent=configs/dppo.py:paper --task=hopper-medium``
``python experiments/train.py --agent=configs/dppo.py:cpu-small --task=hopper-medium``
"""
from configs.common import add_critic, add_ema, base_config

PRESETS = ("paper", "cpu-small", "plain-mlp-cpu")


def get_config(preset: str = "plain-mlp-cpu"):
    if preset not in PRESETS:
        raise KeyError(f"configs/dppo.py has no preset {preset!r}; known: {', '.join(PRESETS)}")
    config = add_critic(add_ema(base_config("dppo")), ensemble=False)
    config.preset = preset             # which of the presets (summary.json: agent:preset)
    config.horizon = 4                 # paper: horizon_steps 4
    config.act_steps = 4               # paper: act_steps 4 (the whole chunk is executed)

    # ---- the diffusion actor ----
    config.actor.schedule = "cosine"   # paper: cosine beta schedule
    config.actor.diffusion_steps = 20  # paper: denoising_steps 20
    config.actor.hidden_dims = (512, 512, 512)  # paper: mlp_dims [512, 512, 512]
    config.actor.residual = True       # paper: residual_style True (one pre-activation block)
    config.actor.activation = "relu"   # paper: activation_type ReLU
    config.actor.time_dim = 16         # paper: time_dim 16
    config.actor.time_activation = "mish"  # paper: the time MLP is Linear, Mish, Linear
    config.actor.time_freqs = "half-1"  # paper: SinusoidalPosEmb, log(10000) / (half_dim - 1)
    config.actor.sampler = "ddpm"      # paper: DDPM for gym (use_ddim False)
    config.actor.clip_x0 = 1.0         # paper: denoised_clip_value 1.0

    # ---- BC pretraining (the runner's pretrain phase) ----
    # Shared defaults: EMA decay 0.995 (paper: ema decay 0.995), EMA a copy for the first 1000
    # steps (paper: epoch 10), no gradient clipping (paper: max_grad_norm unset).
    config.actor_lr = 1e-3             # paper pretrain: learning_rate 1e-3 (its cosine decay to
                                       # 1e-4 and weight decay 1e-6 are not implemented: constant)
    config.run.batch_size = 128        # paper pretrain: batch_size 128
    config.run.pretrain_steps = 30000  # departs: the paper finetunes from its pretraining's
                                       # epoch-3000 checkpoint (3000 passes over the data at
                                       # batch 128); 30k steps is what this CPU affords

    # ---- DPPO sampling and likelihoods ----
    config.ft_denoising_steps = 10     # paper: ft_denoising_steps 10 (of 20)
    config.min_sampling_std = 0.1      # paper: min_sampling_denoising_std 0.1 (while collecting)
    config.min_logprob_std = 0.1       # paper: min_logprob_denoising_std 0.1
    config.noise_clip = 3.0            # paper: randn_clip_value 3
    config.logprob_min = -5.0          # paper code: per-element log-prob clamp [-5, 2]
    config.logprob_max = 2.0           # the clamp's upper end (paper code: 2)
    config.deterministic_eval = True   # paper: evaluation iterations sample with
                                       # deterministic=True (no exploration floor)
    config.eval_min_std = 1e-3         # paper code, deterministic DDPM: std floored at 1e-3 (the
                                       # last step's DDPM std is 0; here it gets the floor too)

    # ---- PPO: V(s) is a residual 3x256 Mish MLP ----
    config.critic_hidden_dims = (256, 256, 256)  # paper critic: mlp_dims [256, 256, 256]
    config.critic_activation = "mish"  # paper critic: activation_type Mish
    config.critic_residual = True      # paper critic: residual_style True
    config.discount = 0.99             # paper: gamma 0.99
    config.ft_actor_lr = 1e-4          # paper: actor_lr 1e-4 (10 warmup iterations, then
                                       # constant: its cosine has min_lr = lr; ours constant)
    config.critic_lr = 1e-3            # paper: critic_lr 1e-3 (same schedule: constant)
    config.gae_lambda = 0.95           # paper: 0.95
    config.gamma_denoising = 0.99      # paper: 0.99
    config.clip_max = 0.01             # paper: clip_ploss_coef 0.01 (the action-emitting step)
    config.clip_base = 0.01            # paper: clip_ploss_coef_base 0.01 (hopper; 1e-3 default)
    config.clip_rate = 3.0             # paper: clip_ploss_coef_rate 3
    config.update_epochs = 5           # paper: update_epochs 5
    config.ppo_batch_size = 5000       # paper: batch_size 50,000 (sample, denoising step) pairs
                                       # = 5,000 samples x 10 finetuned steps: 4 minibatches of
                                       # the 20,000 samples per epoch
    config.vf_coef = 0.5               # paper: vf_coef 0.5
    config.target_kl = 1.0             # paper: target_kl 1
    config.normalize_advantages = True  # paper: norm_adv True (per minibatch)
    config.reward_scale_running = True  # paper: reward_scale_running True
    config.reward_scale_const = 1.0    # paper: reward_scale_const 1.0
    config.bc_coef = 0.0               # paper: use_bc_loss False (optional BC regularization)

    # ---- runner ----
    config.run.num_envs = 40           # paper: env.n_envs 40
    config.run.rollout_steps = 500     # paper: train.n_steps 500 chunk-steps per env per iteration
    config.run.online_steps = 80_000_000  # paper: n_train_itr 1000 x 40 x 500 x 4 env steps
    config.run.online_eval_every = 800_000  # paper: val_freq 10 iterations
    config.run.save_every = 8_000_000  # paper: save_model_freq 100 iterations
    config.run.eval_every = 10_000     # BC-phase evaluations (the paper evaluates after it)

    if preset in ("cpu-small", "plain-mlp-cpu"):
        config.run.num_envs = 10       # cpu-small: 10 envs (paper 40)
        config.run.rollout_steps = 50  # cpu-small: 50 chunk-steps (paper 500)
        config.ppo_batch_size = 125    # cpu-small: the paper's 4 minibatches of 500 samples
        config.run.online_steps = 500_000    # cpu-small: 500k env steps (paper 80M)
        config.run.online_eval_every = 10_000  # cpu-small: every 5 iterations
        config.run.save_every = 20_000
    if preset == "plain-mlp-cpu":
        config.actor.residual = False  # plain-mlp-cpu: a plain MLP actor
        config.actor.time_activation = ""  # plain-mlp-cpu: the time MLP uses ReLU
        config.actor.time_freqs = "half"   # plain-mlp-cpu: sinusoid over /half
        config.critic_residual = False     # plain-mlp-cpu: a plain MLP critic
        config.deterministic_eval = False  # plain-mlp-cpu: evaluation with the 0.1 floor on
        config.run.batch_size = 256        # plain-mlp-cpu: BC batch 256
    return config
