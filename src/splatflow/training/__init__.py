"""Private helpers of the training stage: scene loading, densification strategies, checkpoints."""
