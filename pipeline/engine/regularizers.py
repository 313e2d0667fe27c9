"""Weight penalties added to the mean batch loss: l1, l2, elastic (weights only, never biases or BN)."""

from __future__ import annotations

import numpy as np


class Regularizer:
    """`penalty(weights) -> float` and `grad(w) -> dpenalty/dw` for one weight matrix."""

    name = ""
    kink_at_zero = False  # |w| is not differentiable at 0: finite differences must avoid it

    def __init__(self, strength: float):
        if not strength >= 0:
            raise ValueError(f"regularizer strength must be >= 0, got {strength}")
        self.strength = float(strength)

    def penalty(self, weights) -> float:
        return sum(self._penalty(w) for w in weights)

    def _penalty(self, w: np.ndarray) -> float:
        raise NotImplementedError

    def grad(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(strength={self.strength})"


class L1(Regularizer):
    """strength * sum |w|: pushes weights to exactly zero (sparsity)."""

    name = "l1"
    kink_at_zero = True

    def _penalty(self, w):
        return self.strength * float(np.abs(w).sum())

    def grad(self, w):
        return self.strength * np.sign(w)


class L2(Regularizer):
    """strength / 2 * sum w^2: with plain SGD the same step as weight_decay = strength."""

    name = "l2"

    def _penalty(self, w):
        return 0.5 * self.strength * float(np.vdot(w, w))

    def grad(self, w):
        return self.strength * w


class Elastic(Regularizer):
    """strength * (l1_ratio * sum |w| + (1 - l1_ratio) / 2 * sum w^2), as scikit-learn's ElasticNet."""

    name = "elastic"
    kink_at_zero = True

    def __init__(self, strength: float, l1_ratio: float = 0.5):
        super().__init__(strength)
        if not 0.0 <= l1_ratio <= 1.0:
            raise ValueError(f"elastic l1_ratio must be in [0, 1], got {l1_ratio}")
        self.l1_ratio = float(l1_ratio)

    def _penalty(self, w):
        r = self.l1_ratio
        return self.strength * (r * float(np.abs(w).sum()) + 0.5 * (1.0 - r) * float(np.vdot(w, w)))

    def grad(self, w):
        r = self.l1_ratio
        return (self.strength * r) * np.sign(w) + (self.strength * (1.0 - r)) * w


REGULARIZERS: dict[str, type[Regularizer]] = {cls.name: cls for cls in (L1, L2, Elastic)}


def make_regularizer(name: str, strength: float = 0.0, **params) -> Regularizer | None:
    """The named regularizer, or None for "none" or a zero strength (nothing to compute)."""
    if name == "none":
        return None
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; allowed: none, {', '.join(REGULARIZERS)}")
    cls = REGULARIZERS[name]
    kwargs = {k: float(v) for k, v in params.items() if k == "l1_ratio" and v is not None and cls is Elastic}
    reg = cls(strength, **kwargs)
    return reg if reg.strength > 0 else None
