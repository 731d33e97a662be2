"""Training: sequence sampling, the learning-rate schedule, the training loop."""
