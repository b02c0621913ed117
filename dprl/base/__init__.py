"""dprl.base: atomic files, logs, progress bars."""
