"""Gradient clipping, applied between backward and the optimizer step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def global_norm(grads) -> float:
    """L2 norm over all gradient arrays together."""
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads))


@dataclass
class GradientClipper:
    """Clip by global norm (PyTorch's clip_grad_norm_) and/or by value (clip_grad_value_), in place."""

    max_norm: float | None = None
    max_value: float | None = None

    def __post_init__(self):
        for key in ("max_norm", "max_value"):
            v = getattr(self, key)
            if v is not None and not v > 0:
                raise ValueError(f"clip {key} must be > 0 or null, got {v}")

    @property
    def active(self) -> bool:
        return self.max_norm is not None or self.max_value is not None

    def __call__(self, grads: dict[str, np.ndarray]) -> float:
        """Clip `grads` in place; return the global norm before clipping."""
        norm = global_norm(grads.values())
        if self.max_value is not None:
            for g in grads.values():
                np.clip(g, -self.max_value, self.max_value, out=g)
        if self.max_norm is not None:
            clip_norm = norm if self.max_value is None else global_norm(grads.values())
            scale = self.max_norm / (clip_norm + 1e-6)  # PyTorch's epsilon
            if scale < 1.0:
                for g in grads.values():
                    g *= scale
        return norm
