"""Agent configs (ml_collections), one file per agent; ``config_file(agent)`` finds one."""
from pathlib import Path


def config_file(agent: str) -> str:
    """The config file of a registered agent: ``configs/<agent>.py``."""
    return str(Path(__file__).with_name(f"{agent}.py"))
