"""dprl.tools: on top of runs: grids, reports, after-the-fact distillation, real-time execution."""
