"""The training engine: one loop for detectors and segmenters, checkpoints, distributed runs."""
