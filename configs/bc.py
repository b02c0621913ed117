"""Behaviour cloning: diffusion (default), flow, or Gaussian (MSE) on the same MLP backbone.

``python experiments/train.py --agent=configs/bc.py --task=pole --agent.policy=gaussian``
"""
from configs.common import base_config


def get_config():
    config = base_config("bc")
    config.policy = "diffusion"   # 'diffusion' | 'flow' (the generative actor) | 'gaussian' (MSE)
    config.lr = 3e-4              # Diffusion-QL / QC actor learning rate
    config.grad_clip = 0.0        # global-norm clip (0 = off)
    config.ema_decay = 0.995      # Diffusion-QL's EMA actor; sampling uses the EMA weights
    config.ema_start = 1000       # gradient steps before the EMA starts tracking (Diffusion-QL)
    config.actor.schedule = "cosine"   # DPPO's choice; DDPM's linear schedule assumes ~1000 steps
    config.actor.diffusion_steps = 20
    config.run.pretrain_steps = 20000
    config.run.eval_every = 5000
    config.run.save_every = 5000
    return config
