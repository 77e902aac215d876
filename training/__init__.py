"""Training the detectors: the papers' recipes and losses, the resumable loop, checkpoints."""
