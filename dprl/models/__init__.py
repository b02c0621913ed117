"""dprl.models: networks, generative actors (diffusion, flow), samplers, training primitives, one-step actors."""
