"""Q-chunking (QC, best-of-N): a flow BC policy over chunks + a chunked critic; paper defaults.

``python experiments/train.py --agent=configs/qc.py --task=chain --run_dir=/tmp/qc``
``--agent.horizon=1 --agent.act_steps=1`` is the best-of-N baseline without chunking (BFN).

The networks are the paper's (4x512 GELU; about 1 update/s on the 2-core CPU); for toy tasks
shrink them, e.g. ``--agent.actor.hidden_dims='(128,128)' --agent.critic_hidden_dims='(128,128)'
--agent.num_samples=8`` (what experiments/qc_results.md uses).
"""
from configs.common import add_critic, base_config


def get_config():
    config = add_critic(base_config("qc"))  # discount 0.99, tau 0.005, 2 critics, lr 3e-4: QC's
    config.horizon = 5                 # h: chunk length (QC: 5; 1 = BFN, no chunking)
    config.act_steps = 5               # whole chunks run open-loop: must equal horizon
    config.num_samples = 32            # N: best-of-N candidates from the BC policy (QC: 32)
    config.q_agg = "mean"              # ensemble aggregation for target and selection (QC: mean)
    config.critic_hidden_dims = (512, 512, 512, 512)  # QC: 4x512
    config.critic_activation = "gelu"  # QC: GELU
    config.critic_layer_norm = True    # QC: LayerNorm in the critic
    config.bc_in_update = True         # QC keeps training the BC flow on every RL batch
    # The behaviour policy: flow matching (QC), 10 Euler steps; 'diffusion' is selectable.
    config.actor.model = "flow"
    config.actor.hidden_dims = (512, 512, 512, 512)  # QC: 4x512, no LayerNorm
    config.actor.activation = "gelu"   # QC: GELU
    config.actor.flow_steps = 10       # QC: 10
    config.actor.schedule = "vp"       # used only with actor.model='diffusion'
    # Runner: QC trains offline then online with the buffer holding all offline data; with
    # 256-sized batches of 4x512 nets a CPU does ~1 update/s, so these are GPU-scale defaults.
    config.run.batch_size = 256        # QC: 256
    config.run.pretrain_steps = 0      # QC trains BC and critic together from the start
    config.run.offline_steps = 1_000_000  # QC: 1M offline steps
    config.run.online_steps = 1_000_000   # QC: 1M online env steps
    config.run.utd = 1                 # QC: 1 update per env step
    config.run.offline_ratio = 0.5     # offline share of online batches (QC samples offline+online
                                       # data uniformly, so its offline share decays; fixed here)
    config.run.eval_every = 100_000
    config.run.online_eval_every = 100_000
    config.run.save_every = 100_000
    return config
