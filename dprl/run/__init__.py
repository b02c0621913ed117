"""dprl.run: the run machinery: agent interface, acting, schedules, fused updates, configs, checkpoints, run directories, the runner."""
