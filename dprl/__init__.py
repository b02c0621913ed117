"""dprl: offline-to-online RL finetuning of diffusion policies in JAX."""
import warnings

__version__ = "0.1.0"

# mujoco 4 deprecates an API that gymnasium's MuJoCo envs still call; the warning is noise here.
warnings.filterwarnings("ignore", message=".*settotalmass.*")
