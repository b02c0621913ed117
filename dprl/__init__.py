"""dprl: offline-to-online RL finetuning of diffusion policies in JAX."""
import warnings

__version__ = "0.1.0"

# mujoco 4 deprecates an API that gymnasium's MuJoCo envs still call; the warning is noise here.
warnings.filterwarnings("ignore", message=".*settotalmass.*")
# OGBench's envs declare float64 Box bounds that gymnasium casts to float32 (exact for their
# values), and importing them probes an X display that headless runs never use (rendering goes
# through EGL/OSMesa when asked for): both warnings are noise here.
warnings.filterwarnings("ignore", message=r".*Box (low|high)'s precision lowered")
warnings.filterwarnings("ignore", message=r".*The DISPLAY environment variable is missing")
