"""DPPO (Ren et al. 2024): PPO finetuning of the last denoising steps of a diffusion BC actor.

Paper values are from the reference code's gym setup (irom-lab/dppo,
cfg/gym/finetune/hopper-v2/ft_ppo_diffusion_mlp.yaml and
cfg/gym/pretrain/hopper-medium-v2/pre_diffusion_mlp.yaml). The ``run`` defaults are scaled down
for a 2-core CPU (paper: 40 envs x 500 chunk-steps = 80k env steps per iteration, 1000
iterations); see docs/results/dppo_results.md.

``python experiments/train.py --agent=configs/dppo.py --task=hopper-medium``
"""
from configs.common import add_critic, add_ema, base_config


def get_config():
    config = add_critic(add_ema(base_config("dppo")), ensemble=False)
    config.horizon = 4                 # paper: horizon_steps 4
    config.act_steps = 4               # paper: act_steps 4 (the whole chunk is executed)

    # Diffusion actor (paper: 20 DDPM steps, 512x512x3 residual ReLU MLP, time_dim 16,
    # denoised (x0) clip 1.0, cosine beta schedule). Our MLP is not residual.
    config.actor.schedule = "cosine"   # paper: cosine beta schedule
    config.actor.diffusion_steps = 20  # paper: denoising_steps 20
    config.actor.hidden_dims = (512, 512, 512)  # paper: mlp_dims [512, 512, 512]
    config.actor.activation = "relu"   # paper: ReLU
    config.actor.time_dim = 16         # paper: 16
    config.actor.sampler = "ddpm"      # paper: DDPM for gym; 'ddim' with actor.ddim_eta also works
    config.actor.clip_x0 = 1.0         # paper: denoised_clip_value 1.0

    # BC pretraining (the runner's pretrain phase). Shared defaults: EMA decay 0.995 (paper
    # pretrain: ema decay 0.995), EMA a copy for the first 1000 steps (paper: epoch 10), no
    # gradient clipping (paper: max_grad_norm unset).
    config.actor_lr = 1e-3             # paper pretrain: learning_rate 1e-3 (cosine to 1e-4; ours constant)

    # DPPO sampling and likelihoods
    config.ft_denoising_steps = 10     # paper: ft_denoising_steps 10 (of 20)
    config.min_sampling_std = 0.1      # paper: min_sampling_denoising_std 0.1 (exploration)
    config.min_logprob_std = 0.1       # paper: min_logprob_denoising_std 0.1
    config.noise_clip = 3.0            # paper: randn_clip_value 3
    config.logprob_min = -5.0          # paper code: per-element log-prob clamp [-5, 2]
    config.logprob_max = 2.0           # the clamp's upper end (paper code: 2)

    # PPO. The value net V(s) is the shared 3x256 Mish critic (paper: mlp_dims [256, 256, 256],
    # residual, Mish); discount 0.99 (paper: gamma 0.99).
    config.ft_actor_lr = 1e-4          # paper: actor_lr 1e-4 for the finetuned copy (cosine, min 1e-4)
    config.critic_lr = 1e-3            # paper: critic_lr 1e-3
    config.gae_lambda = 0.95           # paper: 0.95
    config.gamma_denoising = 0.99      # paper: 0.99
    config.clip_max = 0.01             # paper: clip_ploss_coef 0.01 (the action-emitting step)
    config.clip_base = 0.01            # paper: clip_ploss_coef_base 0.01 (hopper; 1e-3 default)
    config.clip_rate = 3.0             # paper: clip_ploss_coef_rate 3
    config.update_epochs = 5           # paper: update_epochs 5
    # paper: batch_size 5000 env steps (each with all K steps) of 20,000 = 4 minibatches per
    # epoch; with our 500-sample rollouts, 125 keeps the paper's 4 minibatches per epoch.
    config.ppo_batch_size = 125        # PPO minibatch (samples): the paper's 4 per epoch, above
    config.vf_coef = 0.5               # paper: vf_coef 0.5
    config.target_kl = 1.0             # paper: target_kl 1
    config.normalize_advantages = True  # paper: norm_adv True (per minibatch)
    config.reward_scale_running = True  # paper: reward_scale_running True
    config.reward_scale_const = 1.0    # paper: reward_scale_const 1.0
    config.bc_coef = 0.0               # paper: use_bc_loss False (optional BC regularization)

    # Runner. Paper: 40 envs x 500 chunk-steps per iteration. Here 10 x 50 (2,000 env steps per
    # update) so an iteration takes seconds on 2 CPU cores.
    config.run.num_envs = 10
    config.run.rollout_steps = 50
    config.run.pretrain_steps = 30000
    config.run.online_steps = 500_000
    config.run.online_eval_every = 10_000
    config.run.save_every = 20_000
    config.run.eval_every = 10_000
    return config
