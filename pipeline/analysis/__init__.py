"""What the numbers mean: a run's labels (vanishing, exploding, ..., not learning) and the theory lines."""
