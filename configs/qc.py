"""Q-chunking (QC) and the QC paper's baselines as named presets; the paper's values.

``python experiments/train.py --agent=configs/qc.py:<preset> --task=scene-task2 --run_dir=DIR``

  preset   extraction  critic over                horizon  N    acts      paper's name
  qc       best_of_n   chunks of 5 (h-step)       5        32   chunks    QC (the default)
  bfn      best_of_n   single actions (1-step)    1        4    1 step    BFN
  bfn-n    best_of_n   single actions (5-step)    5        4    1 step    BFN-n
  qc-fql   one_step    chunks of 5 (h-step)       5        -    chunks    QC-FQL
  fql      one_step    single actions (1-step)    1        -    1 step    FQL
  fql-n    one_step    single actions (5-step)    5        -    1 step    FQL-n

Source of every value: the QC reference code, github.com/ColinQiyangLi/qc at 48283b4
(``agents/acfql.py`` get_config, ``main.py`` flags, the README's reproduction commands). The
n-step variants (``--agent.action_chunking=False``) sample 5-step sequences for the return but
their policy outputs, and the evaluation executes, one action per step.

The networks are the paper's (4x512 GELU; QC runs at about 1 update/s on the 2-core CPU); for toy
tasks shrink them, e.g. ``--agent.actor.hidden_dims='(128,128)' --agent.critic_hidden_dims=
'(128,128)' --agent.num_samples=8`` (what docs/results/qc_results.md uses).
"""
from configs.common import add_critic, base_config

# preset -> (policy_extraction, horizon, action_chunking, num_samples): the README's commands.
PRESETS = {
    "qc": ("best_of_n", 5, True, 32),
    "bfn": ("best_of_n", 1, True, 4),
    "bfn-n": ("best_of_n", 5, False, 4),
    "qc-fql": ("one_step", 5, True, 32),
    "fql": ("one_step", 1, True, 32),
    "fql-n": ("one_step", 5, False, 32),
}


def get_config(preset: str = "qc"):
    """The config of one of ``PRESETS`` (``configs/qc.py:<preset>`` on the command line)."""
    preset = preset or "qc"
    if preset not in PRESETS:
        raise ValueError(f"configs/qc.py has no preset {preset!r}; choose one of "
                         f"{', '.join(PRESETS)} (e.g. --agent=configs/qc.py:qc-fql)")
    extraction, horizon, chunking, num_samples = PRESETS[preset]
    # common's values are QC's: discount 0.99, tau 0.005, 2 critics, actor_lr = critic_lr = 3e-4
    # (QC: one lr for every network; the one-step policy uses actor_lr), no grad_clip.
    config = add_critic(base_config("qc"))
    config.preset = preset             # which of the paper's methods this config is
    config.policy_extraction = extraction  # how the acting policy comes from the BC flow and Q
                                       # (QC code: actor_type): 'best_of_n' (QC, BFN, BFN-n) or
                                       # 'one_step' (FQL's distilled policy: the FQL variants)
    config.action_chunking = chunking  # True: policy + critic over h-step chunks; False: over
                                       # single actions with an n-step return (n = horizon)
    config.horizon = horizon           # h (or n): QC 5; BFN/FQL 1; the -n variants 5
    config.act_steps = horizon if chunking else 1  # chunks run open-loop; single actions 1 step
    config.act_with = "one_step" if extraction == "one_step" else "multi_step"  # FQL's own mu
                                       # acts (one step); best_of_n + 'one_step' picks among
                                       # draws of a distilled mu (dprl/run/one_step.py)
    config.num_samples = num_samples   # N of best-of-N (QC: 32; BFN, BFN-n: 4); unused by one_step
    config.alpha = 100.0               # one_step: distillation weight (QC README: 100 for QC-FQL,
                                       # FQL, FQL-n; FQL paper tuned 300-1000 per env)
    config.normalize_q_loss = False    # one_step: divide the Q term by mean|Q| (QC, FQL: off)
    config.q_agg = "mean"              # ensemble aggregation for target and best-of-N (QC: mean;
                                       # the one-step policy's Q term always uses the mean)
    config.critic_hidden_dims = (512, 512, 512, 512)  # QC: value_hidden_dims 4x512
    config.critic_activation = "gelu"  # QC: GELU
    config.critic_layer_norm = True    # QC: layer_norm=True in the critic
    config.critic_kernel_init = "fan_avg_uniform"  # QC: default_init, variance scaling fan_avg
    config.bc_in_update = True         # QC trains the BC flow on every RL batch (joint loss)
    # The behaviour policy: flow matching (QC), 10 Euler steps; 'diffusion' is selectable for
    # best_of_n. The one-step policy has the same hidden_dims and activation (QC, FQL).
    config.actor.model = "flow"
    config.actor.hidden_dims = (512, 512, 512, 512)  # QC: actor_hidden_dims 4x512, no LayerNorm
    config.actor.activation = "gelu"   # QC: GELU
    config.actor.flow_steps = 10       # QC: flow_steps 10
    config.actor.time_dim = 0          # QC: the flow time t itself is concatenated (no embedding)
    config.actor.kernel_init = "fan_avg_uniform"  # QC: default_init (also mu's)
    config.actor.schedule = "vp"       # used only with actor.model='diffusion'
    # Runner: QC trains offline then online with the buffer holding all offline data.
    config.run.batch_size = 256        # QC: 256
    config.run.pretrain_steps = 0      # QC trains BC and critic together from the start
    config.run.offline_steps = 1_000_000  # QC: 1M offline steps
    config.run.online_steps = 1_000_000   # QC: 1M online env steps
    config.run.normalize_obs = False   # QC feeds raw observations (no dataset standardization)
    config.run.utd = 1                 # QC: utd_ratio 1
    config.run.start_online_updates = 5000  # QC: start_training 5000 env steps
    config.run.offline_ratio = 0.5     # offline share of online batches (QC samples offline+online
                                       # data uniformly, so its offline share decays; fixed here)
    config.run.eval_every = 100_000    # QC: eval_interval 100k (50 episodes: the task preset)
    config.run.online_eval_every = 100_000
    config.run.save_every = 100_000
    return config
