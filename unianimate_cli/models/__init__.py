"""Network definitions whose attribute names follow the official checkpoints' keys."""
