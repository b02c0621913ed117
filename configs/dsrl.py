"""DSRL: SAC in the noise space of a frozen BC policy; DSRL-NA (default) and DSRL-SAC.

``python experiments/train.py --agent=configs/dsrl.py --task=hopper-medium --run_dir=DIR``
(BC stage, then online), or online from a finished run's BC policy:
``--agent.run.pretrain_steps=0 --agent.run.init_from=BC_RUN`` (any agent whose config has the
same ``actor`` and ``horizon``: the BC policy is taken, nothing else).

  preset     critic                              data
  dsrl-na    Q(s, a) + Q^w(s, w) distilled       offline + online (the default)
  dsrl-sac   Q^w(s, w) on the noise that acted   online (the buffer keeps each chunk's noise)

Source of every value: github.com/ajwagen/dsrl at 8d21b9c, ``cfg/gym/dsrl_hopper.yaml`` (the
Gym settings; halfcheetah and walker differ only in layer_size 1024 / 2048 and walker's
action_magnitude 2.5) and ``train_dsrl.py`` (SB3's SAC / the fork's DSRL class). The BC policy is
DPPO's Gym diffusion policy (the reference loads DPPO's hopper checkpoint), sampled by DDIM with
5 steps. ``PER_TASK`` gives the other Gym tasks' values: ``configs/dsrl.py:dsrl-na:walker2d``.
"""

from configs.common import add_critic, add_ema, base_config

PRESETS = ("dsrl-na", "dsrl-sac")
# task -> (hidden width, noise bound): the reference's cfg/gym/dsrl_<task>.yaml.
PER_TASK = {"hopper": (128, 1.5), "halfcheetah": (1024, 1.5), "walker2d": (2048, 2.5)}


def get_config(spec: str = "dsrl-na"):
    """``<preset>`` or ``<preset>:<gym task>`` (``configs/dsrl.py:dsrl-na:walker2d``)."""
    preset, _, task = (spec or "dsrl-na").partition(":")
    if preset not in PRESETS:
        raise ValueError(f"configs/dsrl.py has no preset {preset!r}; choose one of "
                         f"{', '.join(PRESETS)} (e.g. --agent=configs/dsrl.py:dsrl-sac)")
    task = task or "hopper"
    if task not in PER_TASK:
        raise ValueError(f"configs/dsrl.py has no Gym values for {task!r}; known: "
                         f"{', '.join(PER_TASK)}")
    width, bound = PER_TASK[task]
    config = add_critic(add_ema(base_config("dsrl")))
    config.preset = preset             # DSRL-NA or DSRL-SAC
    config.variant = preset.removeprefix("dsrl-")  # 'na' | 'sac' (the reference's algorithm)
    config.noise_bound = bound         # |w| <= bound per coordinate (reference: action_magnitude
                                       # 1.5 hopper/halfcheetah, 2.5 walker)
    config.decode_steps = 0            # sampler steps of pi_dp(s, w) (0 = the actor's own:
                                       # DDIM sampling_steps 5 below, as the reference)
    config.chunk_discount = "chunk"    # 'chunk': the reference's chunk MDP (summed rewards,
                                       # gamma per chunk); 'step': dprl's h-step return
    # SAC in the noise space (SB3 with the reference's policy_kwargs).
    config.noise_policy_hidden_dims = (width,) * 3  # reference: num_layers 3 x layer_size (128)
    config.noise_activation = "tanh"   # reference: activation_fn torch.nn.Tanh (actor and critic)
    config.noise_layer_norm = True     # reference: use_layer_norm (LayerNorm after each Linear)
    config.noise_kernel_init = "fan_avg_uniform"  # SB3 uses torch's default init (not matched)
    config.noise_policy_lr = 3e-4      # reference: actor_lr 3e-4 (SB3: one rate for all)
    config.temperature_lr = 3e-4       # SB3: ent_coef optimizer at the same learning rate
    config.init_temperature = 1.0      # SB3 ent_coef='auto': initial value 1.0
    config.target_entropy = 0.0        # reference: target_ent 0.0 (None: SB3's -dim(w))
    config.num_critics = 2             # reference: n_critics 2
    config.critic_hidden_dims = (width,) * 3  # reference: num_layers 3 x layer_size
    config.critic_activation = "tanh"  # reference: Tanh
    config.critic_layer_norm = True    # reference: use_layer_norm True
    config.critic_kernel_init = "fan_avg_uniform"  # (SB3: torch's default init)
    config.critic_lr = 3e-4            # reference: actor_lr 3e-4 for every network
    config.discount = 0.99             # reference: discount 0.99 (per chunk)
    config.tau = 0.005                 # reference: tau 0.005
    config.noise_critic_ratio = 0.5    # DSRL-NA: noise critic steps per update (reference:
                                       # noise_critic_grad_steps 10 per utd 20)
    # The frozen BC policy: DPPO's Gym diffusion policy, sampled by DDIM (5 steps, eta 0).
    config.horizon = 4                 # reference: act_steps 4 (= horizon_steps)
    config.act_steps = 4               # the whole chunk runs
    config.actor.schedule = "cosine"   # DPPO: cosine
    config.actor.diffusion_steps = 20  # reference model: denoising_steps 20
    config.actor.sampler = "ddim"      # reference model: use_ddim True
    config.actor.sampling_steps = 5    # reference model: ddim_steps 5
    config.actor.ddim_eta = 0.0        # deterministic (DSRL's pi_dp(s, w))
    config.actor.hidden_dims = (512, 512, 512)  # reference model: mlp_dims [512, 512, 512]
    config.actor.activation = "relu"   # reference model: ReLU
    config.actor.residual = True       # reference model: residual_style True
    config.actor.time_dim = 16         # reference model: time_dim 16
    config.actor.time_activation = "mish"  # reference model: the time MLP is Linear, Mish, Linear
    config.actor.time_freqs = "half-1"  # reference model: log(10000) / (half_dim - 1)
    config.actor.clip_x0 = 1.0         # reference model: denoised_clip_value 1.0
    config.actor_lr = 1e-3             # DPPO pretraining: learning_rate 1e-3 (BC stage only)
    config.act_with = "multi_step"     # acting is pi_dp at pi_w's noise
    # Runner. UTD: the reference takes utd 20 gradient steps every train_freq 2 steps of 4 envs,
    # each a chunk of 4 actions: 20 / 32 = 0.625 updates per env step.
    config.run.batch_size = 256        # reference: batch_size 256
    config.run.utd = 0.625             # reference: 20 updates per 32 env steps
    config.run.offline_ratio = 0.0     # the reference's Gym runs use no offline data
                                       # (load_offline_data False); DSRL-NA can (e.g. 0.5)
    config.run.start_online_updates = 32016  # reference: init_rollout_steps 2001 x 4 envs x 4
                                       # actions before training (it rolls out pi_dp at w ~
                                       # N(0, I); here pi_w acts from the start)
    config.run.pretrain_steps = 30000  # the BC stage when not started from a finished run
    config.run.online_steps = 1_000_000
    config.run.eval_every = 10000
    config.run.online_eval_every = 16000  # reference: eval_interval 4000 x 4 actions
    config.run.save_every = 50000
    return config
