"""dprl.envs: environments: gymnasium and dprl's toy envs, vector envs, chunk execution, task presets."""
