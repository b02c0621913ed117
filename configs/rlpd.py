"""RLPD and the QC paper's chunked variants as named presets; the QC reference code's values.

``python experiments/train.py --agent=configs/rlpd.py:<preset> --task=cube-double --run_dir=DIR``

  preset    chunk  bc_alpha  paper's name
  rlpd      1      0         RLPD (the default)
  rlpd-ac   5      0         RLPD-AC (action chunking)
  qc-rlpd   5      0.01      QC-RLPD (chunking + the BC term)

Source of every value: github.com/ColinQiyangLi/qc at 48283b4, ``agents/acrlpd.py`` get_config,
``main_online.py`` flags and the README's commands (``--horizon_length=1`` / ``5``,
``--agent.bc_alpha=0.01``). The runs are online from the start, every batch half offline data and
half online transitions (``main_online.py``). The RLPD paper's own code (ikostrikov/rlpd) differs
in two switches offered here: ``--agent.q_agg=pair_min`` (the min of a random pair of the 10
target values) and ``--agent.backup_entropy=True``. UTD is ``--agent.run.utd`` (QC: 1; the RLPD
paper: 20 on locomotion).

The networks are the QC paper's (4x512). The RLPD paper's are 2x256 (ikostrikov/rlpd
``configs/td_config.py``: hidden_dims (256, 256)), about 11x fewer multiply-adds per update:
``--agent.actor.hidden_dims='(256,256)' --agent.critic_hidden_dims='(256,256)'``; for toy tasks
shrink them further, e.g. ``'(128,128)'``.
"""
import ml_collections

from configs.common import add_critic, base_config

# preset -> (horizon, bc_alpha): the QC README's commands.
PRESETS = {
    "rlpd": (1, 0.0),
    "rlpd-ac": (5, 0.0),
    "qc-rlpd": (5, 0.01),
}


def get_config(preset: str = "rlpd"):
    """The config of one of ``PRESETS`` (``configs/rlpd.py:<preset>`` on the command line)."""
    preset = preset or "rlpd"
    if preset not in PRESETS:
        raise ValueError(f"configs/rlpd.py has no preset {preset!r}; choose one of "
                         f"{', '.join(PRESETS)} (e.g. --agent=configs/rlpd.py:rlpd-ac)")
    horizon, bc_alpha = PRESETS[preset]
    config = add_critic(base_config("rlpd"))
    config.preset = preset            # which of the paper's methods this config is
    config.horizon = horizon          # QC main_online: horizon_length 1 (RLPD) or 5 (-AC, QC-)
    config.act_steps = horizon        # QC: the chunk is executed fully, open-loop
    config.bc_alpha = bc_alpha        # weight of -log pi(data chunk) in the actor loss
                                      # (QC code: 0.0; QC-RLPD: 0.01)
    config.q_agg = "mean"             # target over the ensemble: 'mean' (QC code: q_agg='mean'),
                                      # 'pair_min' (RLPD paper: min of 2 random of 10), 'min'
    config.backup_entropy = False     # subtract alpha log pi(a'|s') in the target (QC code: no;
                                      # RLPD's code: backup_entropy=True)
    config.num_critics = 10           # QC code: num_qs 10 (RLPD: 10)
    config.critic_hidden_dims = (512, 512, 512, 512)  # QC code: value_hidden_dims 4x512
    config.critic_activation = "relu"  # RLPD's MLP: nn.relu
    config.critic_layer_norm = True   # QC code: layer_norm True (LayerNorm before each ReLU)
    config.critic_kernel_init = "fan_avg_uniform"  # RLPD's default_init: xavier_uniform
    config.critic_lr = 3e-4           # QC code: lr 3e-4 (one Adam for every network)
    config.discount = 0.99            # QC main_online: discount 0.99
    config.tau = 0.005                # QC code: tau 0.005
    config.actor_lr = 3e-4            # QC code: lr 3e-4
    config.temperature_lr = 3e-4      # QC code: lr 3e-4 (the temperature is in the same Adam)
    config.init_temperature = 1.0     # QC code: init_temp 1.0
    config.target_entropy = ml_collections.config_dict.placeholder(float)  # None: automatic,
                                      # -multiplier * horizon * action_dim (QC code: None)
    config.target_entropy_multiplier = 0.5  # QC code: target_entropy_multiplier 0.5
    # The tanh-Gaussian actor (SAC's squashed Gaussian, RLPD's TanhNormal; not a generative
    # model, so config.actor holds only its network and no actor.model).
    config.actor = ml_collections.ConfigDict(dict(
        hidden_dims=(512, 512, 512, 512),  # QC code: actor_hidden_dims 4x512
        activation="relu",            # RLPD's MLP: nn.relu
        layer_norm=False,             # QC code: actor_layer_norm False
        kernel_init="fan_avg_uniform",  # RLPD's default_init: xavier_uniform
    ))
    config.act_with = "multi_step"    # acting is the Gaussian's draw (one network pass)
    # Runner: online from the start, with the offline data in every batch.
    config.run.batch_size = 256       # QC code: batch_size 256
    config.run.pretrain_steps = 0     # RLPD has no BC stage
    config.run.offline_steps = 0      # ... and no offline RL phase (main_online.py)
    config.run.online_steps = 1_000_000  # QC main_online: online_steps 1M
    config.run.utd = 1                # QC main_online: utd_ratio 1 (RLPD paper: 20)
    config.run.offline_ratio = 0.5    # QC main_online / RLPD: batch_size // 2 from each
    config.run.offline_mix = "ratio"  # the fixed split (RLPD's symmetric sampling)
    config.run.start_online_updates = 5000  # QC main_online: start_training 5000
    config.run.normalize_obs = False  # QC feeds raw observations
    config.run.eval_every = 100_000   # QC main_online: eval_interval 100k
    config.run.online_eval_every = 100_000
    config.run.save_every = 100_000
    return config
