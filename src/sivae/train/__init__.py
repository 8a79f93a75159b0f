"""Training: the Trainer, one class per training mode, settings, checkpoints, CPU numerics."""
