"""Value-guided sampling (agents/guided.py): a frozen diffusion BC actor steered by J(s, a^k, k).

``python experiments/train.py --agent=configs/guided.py --task=hopper-medium --run_dir=runs/g \
    --agent.guidance_scale=30 --agent.guide_loss=contrastive --agent.guidance_mode=score``

Run defaults are sized for this 2-core CPU: the actor is Diffusion-QL's 3x256 Mish MLP over the VP
schedule with N = 5 steps (cheap guided sampling: 5 denoiser calls + 5 J gradients per chunk),
20k BC steps then 20k critic/guide steps, batch 256; online 20k env steps at UTD 1.
"""
from configs.common import add_critic, add_ema, base_config


def get_config():
    # Shared defaults (configs/common.py): the EMA actor (Diffusion-QL's, sampling uses it), twin
    # 3x256 Mish critics with Polyak targets (tau 0.005, as IQL / TD3), discount 0.99, actor and
    # critic lr 3e-4 (Diffusion-QL / Diffuser / IQL), no gradient clipping.
    config = add_critic(add_ema(base_config("guided")))
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
    config.guide_hidden_dims = (256, 256, 256)  # QGPO's energy net is an MLP of this width
    config.guide_lr = 3e-4                # QGPO / Diffuser value learning rate
    config.beta = 1.0                     # inverse temperature of Q in J (QGPO sweeps beta; ~3
                                          # on locomotion); regression: J's target is beta * Q
    config.normalize_q = True             # ours: J sees Q / EMA(mean |Q|) (scale-free guidance);
                                          # False: raw Q as in Diffuser / QGPO
    config.q_scale_decay = 0.995          # EMA decay of that running |Q| scale
    config.support_actions = 16           # contrastive: actor samples per state (QGPO: 16)
    config.contrastive_states = 64        # contrastive: states of each batch used (CPU budget)
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
    return config
