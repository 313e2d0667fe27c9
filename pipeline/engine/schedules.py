"""Learning-rate schedules over epochs: constant, step decay, cosine annealing."""

from __future__ import annotations

import math
from collections.abc import Callable


def constant(base_lr: float, epochs: int, **_) -> Callable[[int], float]:
    return lambda epoch: base_lr


def step(base_lr: float, epochs: int, step_size: int = 10, gamma: float = 0.1, **_) -> Callable[[int], float]:
    """lr * gamma^(epoch // step_size), as PyTorch's StepLR."""
    return lambda epoch: base_lr * gamma ** (epoch // step_size)


def cosine(base_lr: float, epochs: int, min_lr: float = 0.0, **_) -> Callable[[int], float]:
    """From lr at epoch 0 down to min_lr at the last epoch, as PyTorch's CosineAnnealingLR (T_max = epochs - 1)."""
    span = max(epochs - 1, 1)
    return lambda epoch: min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(epoch, span) / span))


SCHEDULES = {f.__name__: f for f in (constant, step, cosine)}


def make_schedule(name: str, base_lr: float, epochs: int, **params) -> Callable[[int], float]:
    """epoch (0-based) -> learning rate."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    return SCHEDULES[name](float(base_lr), int(epochs), **{k: v for k, v in params.items() if v is not None})
