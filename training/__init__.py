"""adgen training: dataset, networks, losses, loop, checkpoints and evaluation (torch)."""
