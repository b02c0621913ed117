"""Value-guided sampling (agents/guided.py): a frozen diffusion BC actor steered by J(s, a^k, k).

Two presets, each a different method:

``configs/guided.py`` = ``configs/guided.py:mse-guidance`` (the default): QGPO's MSE baseline
energy (J regressed on beta Q of dataset actions) with Diffuser-style 'mean' guidance in a
stochastic 5-step DDPM sampler, on an IQL critic, with Q normalized by its running |Q|. It is not
QGPO; it is sized for this 2-core CPU (5 denoiser calls + 5 J gradients per chunk, 20k BC steps,
20k critic/guide steps, batch 256; online 20k env steps at UTD 1).

``configs/guided.py:qgpo`` (locomotion) and ``configs/guided.py:qgpo-antmaze``: QGPO (Lu et al.
2023) as its code runs it (ChenDRAG/CEP-energy-guided-diffusion, Offline_RL_2D: train_behavior.py,
train_critic.py, diffusion_SDE/model.py); each value says QGPO's or why it departs.

``python experiments/guidance_sweep.py --agent=configs/guided.py:qgpo --task=hopper-medium \
    --run_dir=runs/qgpo-hopper`` trains, fills in the reward scale from the dataset, and
evaluates the scale grid (``guidance_scales``), reporting the best scale as QGPO does.
"""
from configs.common import add_critic, add_ema, base_config


PRESETS = ("mse-guidance", "qgpo", "qgpo-antmaze")


def get_config(preset: str = "mse-guidance"):
    if preset not in PRESETS:
        raise KeyError(f"configs/guided.py has no preset {preset!r}; known: {', '.join(PRESETS)}")
    # Shared defaults (configs/common.py): the EMA actor (Diffusion-QL's, sampling uses it), twin
    # 3x256 Mish critics with Polyak targets (tau 0.005, as IQL / TD3), discount 0.99, actor and
    # critic lr 3e-4 (Diffusion-QL / Diffuser / IQL), no gradient clipping.
    config = add_critic(add_ema(base_config("guided")))
    config.preset = preset             # which of the presets (summary.json: agent:preset)
    # ---- the frozen BC actor (pretrain) ----
    config.actor.schedule = "vp"          # Diffusion-QL's VP schedule (Diffuser/QGPO use 100+ steps:
    config.actor.diffusion_steps = 5      # too slow for a CPU guided sampler); Diffusion-QL N = 5
    # ---- critic Q(s, a): twin critics with target networks ----
    config.critic_mode = "iql"            # 'iql' (expectile V, no sampling in the update) | 'td'
                                          # (next chunk from the guided sampler)
    config.expectile = 0.7                # IQL's locomotion expectile
    # ---- guide J(s, a^k, k) on noisy actions ----
    config.guide_loss = "regression"      # 'regression' (J ~ beta Q(s, a^0), Diffuser's value) |
                                          # 'contrastive' (QGPO's CEP: J -> log E[exp(beta Q)])
    config.guide_hidden_dims = (256, 256, 256)  # 3x256 (QGPO's energy net: 4x256, see 'qgpo')
    config.guide_activation = ""          # '' = the critics' activation (QGPO: SiLU)
    config.guide_time_embedding = "mlp"   # 'mlp' (Diffusion-QL's time MLP, actor.time_dim) |
                                          # 'fourier' (QGPO's Fourier features, guide_time_dim)
    config.guide_time_dim = 32            # the 'fourier' embedding's size (QGPO: 32)
    config.guide_lr = 3e-4                # QGPO / Diffuser value learning rate
    config.beta = 1.0                     # inverse temperature of Q in J (QGPO sweeps beta; ~3
                                          # on locomotion); regression: J's target is beta * Q
    config.normalize_q = True             # ours: J sees Q / EMA(mean |Q|) (scale-free guidance);
                                          # False: raw Q as in Diffuser / QGPO
    config.q_scale_decay = 0.995          # EMA decay of that running |Q| scale
    config.support_actions = 16           # contrastive / softmax: actor samples per state
                                          # (QGPO: 16; 32 on AntMaze)
    config.contrastive_states = 64        # contrastive: states of each batch used (CPU budget;
                                          # 0 = the whole batch, as QGPO)
    config.precompute_support = False     # True: the support set drawn once after BC at every
                                          # dataset state (QGPO's fake actions); False: drawn
                                          # afresh in every update
    config.q_alpha = 1.0                  # 'softmax' critic: inverse temperature of the backup
                                          # (QGPO's --q_alpha 1)
    config.critic_freeze_steps = 0        # critic updates after which Q stops (0 = never;
                                          # QGPO: half of its critic steps)
    config.reward_scale = 1.0             # the backup's reward: reward_scale * r + reward_bias
    config.reward_bias = 0.0              # (QGPO: 1000 / return range on locomotion; r - 1 AntMaze)
    # ---- guided sampling ----
    config.guidance_scale = 100.0         # step mean += scale * std^2 * grad J. J is in units of
                                          # |Q| (normalize_q), so scales are large: Diffuser's 0.1
                                          # was for returns-scale values. Measured on
                                          # hopper-medium-replay: 0 -> 14.6, 10 -> 15.8, 30 -> 17.7,
                                          # 100 -> 25.1, 300 -> 26.1 (docs/results/guided_results.md);
                                          # sweep it per task (experiments/guidance_sweep.py)
    config.guidance_mode = "mean"         # 'mean' (Diffuser: std^2-scaled) | 'score' (QGPO; its
                                          # shift goes through x0_hat, which actor.clip_x0 clips at
                                          # the noisiest steps: raise clip_x0 to keep it there)
    config.guidance_min_step = 0          # no guidance at steps k < this (Diffuser: t_stopgrad)
    config.guidance_scales = (0.0, 10.0, 30.0, 100.0, 300.0)  # the scales that
                                          # experiments/guidance_sweep.py evaluates
    config.num_samples = 1                # best-of-N by min Q on top of guidance (1 = off)
    # ---- online ----
    config.finetune_actor = False         # online: also BC the actor on chunks with advantage > 0
    # ---- runner (2-core CPU budget) ----
    config.run.pretrain_steps = 20000
    config.run.offline_steps = 20000
    config.run.online_steps = 20000
    config.run.eval_every = 10000
    config.run.online_eval_every = 5000
    config.run.save_every = 5000
    if preset.startswith("qgpo"):
        qgpo(config, antmaze=preset == "qgpo-antmaze")
    return config


def qgpo(config, antmaze: bool = False):
    """QGPO's values (Offline_RL_2D), on top of the defaults above."""
    # ---- the BC actor: VP SDE (beta 0.1 -> 20) read at 1000 steps, sampled by DPM-Solver-2 ----
    config.actor.schedule = "vp_sde"      # QGPO: continuous VP SDE, beta 0.1 -> 20, tau in
    config.actor.diffusion_steps = 1000   # [1e-3, 1]; 1000 steps put tau = (k + 1) / 1000 on it
                                          # (QGPO draws tau uniformly: the same up to the grid)
    config.actor.sampler = "dpm_solver"   # QGPO: DPM-Solver++ singlestep, order 2, time-uniform
    config.actor.sampling_steps = 15      # QGPO: 15 model evaluations (--diffusion_steps 15)
    config.actor.clip_x0 = None           # QGPO: no clipping of the predicted clean action
    config.actor_lr = 1e-4                # QGPO behavior model: Adam 1e-4
    config.ema_decay = 0.0                # QGPO keeps no EMA of the behavior model: EMA = actor
    config.ema_start = 0                  # (with decay 0 the EMA is the actor from step 0)
    # The denoiser stays Diffusion-QL's 3x256 Mish MLP (QGPO: a U-shaped residual SiLU MLP,
    # 512-256-128 with skips, Fourier time features): one actor network for every agent here.
    # ---- critic Q: twin 3x256 ReLU, softmax backup over 16 BC samples, frozen at half ----
    config.critic_activation = "relu"     # QGPO TwinQ: 3x256 ReLU
    config.critic_mode = "softmax"        # QGPO: V(s') = sum softmax(q_alpha Q') Q' over BC samples
    config.q_alpha = 1.0                  # QGPO README: --q_alpha 1
    config.critic_lr = 3e-4               # QGPO: Adam 3e-4 (Q and energy net)
    config.tau = 0.005                    # QGPO: Polyak 0.005
    config.discount = 0.99                # QGPO: 0.99
    config.grad_clip = 0.0                # QGPO: none
    # ---- energy net J: 4x256 SiLU, Fourier time features, CEP over the whole batch ----
    config.guide_loss = "contrastive"     # QGPO: CEP
    config.guide_hidden_dims = (256, 256, 256, 256)  # QGPO GuidanceQt: 4x256
    config.guide_activation = "silu"      # QGPO: SiLU
    config.guide_time_embedding = "fourier"  # QGPO: GaussianFourierProjection(32) + Linear(32, 32)
    config.guide_time_dim = 32            # QGPO: 32
    config.guide_lr = 3e-4                # QGPO: Adam 3e-4
    config.beta = 3.0                     # QGPO: --alpha 3 (the paper's beta)
    config.normalize_q = False            # QGPO: raw (scaled-reward) Q
    config.support_actions = 32 if antmaze else 16  # QGPO: M = 16 (32 on AntMaze)
    config.contrastive_states = 0         # QGPO: the whole batch
    config.precompute_support = True      # QGPO: 16 fake actions per state and next state,
                                          # sampled once by the behavior model before Q / J
    # ---- rewards ----
    config.reward_scale = 1.0 if antmaze else 0.0  # QGPO: 1000 / (max - min episode return)
                                          # on locomotion; 0 = fill in from the dataset
                                          # (experiments/guidance_sweep.py does)
    config.reward_bias = -1.0 if antmaze else 0.0  # QGPO AntMaze: r - 1
    # ---- guidance: score guidance, evaluated over QGPO's scale grid ----
    config.guidance_mode = "score"        # QGPO: eps - s sigma grad J
    config.guidance_scale = 1.0           # QGPO: 1.0 between its evaluations
    config.guidance_scales = ((1.0, 1.5, 2.0, 2.5, 3.0, 4.0) if antmaze else
                              (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0))  # QGPO's --s grid
    config.num_samples = 1                # QGPO: one sample per state
    # ---- steps (QGPO: 600 x 1000 BC steps at batch 4096; 100 x 10000 critic steps at 256) ----
    config.run.pretrain_steps = 600_000   # QGPO: 600k behavior steps (at batch 4096: one batch
                                          # size here, 256, so 16x fewer samples)
    config.run.offline_steps = 1_000_000  # QGPO: 1M energy-net steps
    config.critic_freeze_steps = 500_000  # QGPO: Q updated for the first 50 of 100 epochs
    config.run.online_steps = 0           # QGPO is offline
    config.run.batch_size = 256           # QGPO critic stage: 256
    config.run.eval_every = 40_000        # QGPO: every 4 epochs of 10k steps
    config.run.save_every = 200_000       # QGPO: every 20 epochs
    config.run.eval_episodes = 10         # QGPO: --seed_per_evaluation 10
    return config
