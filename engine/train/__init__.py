"""Training: train_imagenet-compatible options, trainers, log parsing, checkpoints."""
