"""dprl.data: offline datasets (Minari, loaders), normalization, device buffers and batch sampling."""
