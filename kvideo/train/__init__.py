"""Fine-tuning the temporal layers: data, caches, objectives, distributed trainer and checkpoints."""
