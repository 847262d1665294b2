"""The BTLM trainer: token-shard loader, schedule, loop, checkpoints, evaluation and muP diagnostics."""
