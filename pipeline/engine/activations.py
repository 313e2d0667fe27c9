"""Activation functions: stateless objects with the value, derivative and constants probes need."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit


class Activation:
    """Base class: `fn(z)`, `grad(z)` and the constants the probes read."""

    name: str = ""
    grad_at_zero: float = 0.0  # f'(0): 0.25 for sigmoid, the factor of the vanishing-gradient lesson
    max_grad: float = 1.0  # sup f'(z): the reference for the saturation probe
    kink_at_zero: bool = False  # f' is discontinuous at 0 (finite differences must avoid it)
    relu_family: bool = False  # outputs exactly 0 for z < 0: units can die
    saturates: bool = False  # f' -> 0 for large |z| (sigmoid, tanh) or z -> -inf (elu)
    negative_slope: float = 0.0  # slope for z < 0, for He's gain as PyTorch defines it
    params: tuple[str, ...] = ()  # constructor keywords this activation accepts

    def fn(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def grad(self, z: np.ndarray, a: np.ndarray | None = None) -> np.ndarray:
        """f'(z); `a = fn(z)` when the caller has it cached, so backward never recomputes it."""
        raise NotImplementedError

    def backprop(self, dy: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """dL/dz from dL/da, using the cached forward values."""
        return dy * self.grad(z, a)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(Activation):
    name = "identity"
    grad_at_zero = 1.0

    def fn(self, z):
        return z

    def grad(self, z, a=None):
        return np.ones_like(z)

    def backprop(self, dy, z, a):
        return dy


class Sigmoid(Activation):
    name = "sigmoid"
    saturates = True
    grad_at_zero = 0.25
    max_grad = 0.25

    def fn(self, z):
        return expit(z)  # stable for large |z|, keeps float32

    def grad(self, z, a=None):
        s = expit(z) if a is None else a
        return s * (1.0 - s)


class Tanh(Activation):
    name = "tanh"
    saturates = True
    grad_at_zero = 1.0

    def fn(self, z):
        return np.tanh(z)

    def grad(self, z, a=None):
        t = np.tanh(z) if a is None else a
        return 1.0 - t * t


class ReLU(Activation):
    name = "relu"
    grad_at_zero = 0.0  # PyTorch's convention: the subgradient at the kink is 0
    kink_at_zero = True
    relu_family = True

    def fn(self, z):
        return np.maximum(z, 0.0)

    def grad(self, z, a=None):
        return (z > 0).astype(z.dtype)

    def backprop(self, dy, z, a):
        return np.where(z > 0, dy, 0.0)  # one pass, no float mask


class LeakyReLU(Activation):
    name = "leaky_relu"
    kink_at_zero = True
    relu_family = True

    params = ("slope",)

    def __init__(self, slope: float = 0.01):
        if slope < 0:
            raise ValueError(f"leaky_relu slope must be >= 0, got {slope}")
        self.negative_slope = float(slope)
        self.grad_at_zero = float(slope)
        self.max_grad = max(1.0, float(slope))

    def fn(self, z):
        return np.where(z > 0, z, z * self.negative_slope)

    def grad(self, z, a=None):
        return np.where(z > 0, 1.0, self.negative_slope).astype(z.dtype)

    def __repr__(self):
        return f"LeakyReLU(slope={self.negative_slope})"


class ELU(Activation):
    name = "elu"
    saturates = True
    relu_family = False  # never exactly 0 for z < 0: ELU units saturate instead of dying

    params = ("alpha",)

    def __init__(self, alpha: float = 1.0):
        if alpha <= 0:
            raise ValueError(f"elu alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)
        self.grad_at_zero = min(1.0, self.alpha)  # one-sided: alpha from the left, 1 from the right
        self.max_grad = max(1.0, self.alpha)
        self.kink_at_zero = not math.isclose(self.alpha, 1.0)

    def fn(self, z):
        # expm1 on min(z, 0) so the positive branch never overflows exp
        return np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0.0)))

    def grad(self, z, a=None):
        a = self.fn(z) if a is None else a
        return np.where(z > 0, 1.0, a + self.alpha).astype(z.dtype)

    def __repr__(self):
        return f"ELU(alpha={self.alpha})"


ACTIVATIONS: dict[str, type[Activation]] = {cls.name: cls for cls in (Sigmoid, Tanh, ReLU, LeakyReLU, ELU, Identity)}


def make_activation(name: str, **params: float) -> Activation:
    """Build an activation by name, passing it the parameters it takes (slope, alpha)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    cls = ACTIVATIONS[name]
    return cls(**{k: float(v) for k, v in params.items() if k in cls.params and v is not None})
