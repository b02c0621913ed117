"""Behaviour cloning: diffusion (default), flow, or a deterministic MSE regressor on the same MLP.

``python experiments/train.py --agent=configs/bc.py --task=pole --agent.actor.model=mse``
"""
from configs.common import add_ema, base_config


def get_config():
    config = add_ema(base_config("bc"))
    # actor.model: 'diffusion' | 'flow' (the generative actor) | 'mse' (the unimodal baseline).
    # actor_lr 3e-4 (Diffusion-QL / QC), grad_clip off and the EMA actor are the shared defaults.
    config.actor.schedule = "cosine"   # DPPO's choice; DDPM's linear schedule assumes ~1000 steps
    config.actor.diffusion_steps = 20
    config.run.pretrain_steps = 20000
    config.run.eval_every = 5000
    config.run.save_every = 5000
    return config
