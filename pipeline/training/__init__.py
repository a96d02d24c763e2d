"""The train step: training methods, losses, FANoise, hard-negative mining, sampling, checkpoints, distributed helpers."""
