"""Training: the TR2M losses (`losses`); the trainer and CLI build on them."""
