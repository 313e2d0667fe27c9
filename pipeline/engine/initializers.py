"""Weight initializers: `(fan_in, fan_out, rng, dtype) -> W` of shape (fan_in, fan_out), by name."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np


class Initializer(Protocol):
    def __call__(self, fan_in: int, fan_out: int, rng: np.random.Generator, dtype) -> np.ndarray: ...


def _normal(shape, std: float, rng, dtype, mean: float = 0.0) -> np.ndarray:
    w = rng.standard_normal(shape, dtype=dtype)
    w *= std  # std is a Python float: stays in dtype (NEP 50)
    if mean:
        w += mean
    return w


def _uniform(shape, limit: float, rng, dtype) -> np.ndarray:
    w = rng.random(shape, dtype=dtype)  # U[0, 1)
    w *= 2.0 * limit
    w -= limit
    return w


def _he_gain(gain: float | None, negative_slope: float) -> float:
    # PyTorch's calculate_gain('leaky_relu', a): sqrt(2 / (1 + a^2)); a = 0 is ReLU's sqrt(2)
    return math.sqrt(2.0 / (1.0 + negative_slope**2)) if gain is None else gain


def zeros(fan_in, fan_out, rng, dtype):
    return np.zeros((fan_in, fan_out), dtype=dtype)


def constant(fan_in, fan_out, rng, dtype, value: float = 0.1):
    return np.full((fan_in, fan_out), value, dtype=dtype)


def normal(fan_in, fan_out, rng, dtype, std: float = 0.01, mean: float = 0.0):
    return _normal((fan_in, fan_out), std, rng, dtype, mean)


def uniform(fan_in, fan_out, rng, dtype, limit: float = 0.05):
    return _uniform((fan_in, fan_out), limit, rng, dtype)


def standard(fan_in, fan_out, rng, dtype, gain: float = 1.0):
    """The 'standard' heuristic Glorot & Bengio criticise: U[-1/sqrt(fan_in), 1/sqrt(fan_in)]."""
    return _uniform((fan_in, fan_out), gain / math.sqrt(fan_in), rng, dtype)


def xavier_uniform(fan_in, fan_out, rng, dtype, gain: float = 1.0):
    return _uniform((fan_in, fan_out), gain * math.sqrt(6.0 / (fan_in + fan_out)), rng, dtype)


def xavier_normal(fan_in, fan_out, rng, dtype, gain: float = 1.0):
    return _normal((fan_in, fan_out), gain * math.sqrt(2.0 / (fan_in + fan_out)), rng, dtype)


def he_uniform(fan_in, fan_out, rng, dtype, gain: float | None = None, negative_slope: float = 0.0):
    limit = _he_gain(gain, negative_slope) * math.sqrt(3.0 / fan_in)
    return _uniform((fan_in, fan_out), limit, rng, dtype)


def he_normal(fan_in, fan_out, rng, dtype, gain: float | None = None, negative_slope: float = 0.0):
    return _normal((fan_in, fan_out), _he_gain(gain, negative_slope) / math.sqrt(fan_in), rng, dtype)


def lecun_normal(fan_in, fan_out, rng, dtype, gain: float = 1.0):
    return _normal((fan_in, fan_out), gain / math.sqrt(fan_in), rng, dtype)


def orthogonal(fan_in, fan_out, rng, dtype, gain: float = 1.0):
    """Saxe et al.: a (semi-)orthogonal matrix scaled by gain, sign-fixed as PyTorch does."""
    rows, cols = max(fan_in, fan_out), min(fan_in, fan_out)
    a = rng.standard_normal((rows, cols))  # float64 for a clean QR, cast once below
    q, r = np.linalg.qr(a)  # (rows, cols), (cols, cols)
    q *= np.sign(np.diag(r))  # unique decomposition: the distribution is then Haar
    w = q if fan_in >= fan_out else q.T  # (fan_in, fan_out)
    return (gain * w).astype(dtype)


INITIALIZERS: dict[str, Callable[..., np.ndarray]] = {
    f.__name__: f
    for f in (
        zeros,
        constant,
        normal,
        uniform,
        standard,
        xavier_uniform,
        xavier_normal,
        he_uniform,
        he_normal,
        lecun_normal,
        orthogonal,
    )
}


def initializer_params(name: str) -> tuple[str, ...]:
    """The keyword parameters an initializer accepts (std, value, limit, gain, ...)."""
    sig = inspect.signature(INITIALIZERS[name])
    return tuple(sig.parameters)[4:]


def make_initializer(name: str, **params) -> Initializer:
    """Bind an initializer's parameters; parameters it does not take (None or absent) are ignored."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown init {name!r}; allowed: {', '.join(INITIALIZERS)}")
    accepted = initializer_params(name)
    bound = {k: v for k, v in params.items() if k in accepted and v is not None}
    return functools.partial(INITIALIZERS[name], **bound)


# Var[W_ij] each formula implies, from the scheme's parameters (defaults filled in); None for the
# deterministic schemes. Orthogonal: a unit-norm column of a (fan_in >= fan_out) orthonormal matrix
# gives the same Var[z] as 1/fan_in per entry, 1/fan_out otherwise.
VARIANCES: dict[str, Callable[..., float | None]] = {
    "zeros": lambda fi, fo, p: None,
    "constant": lambda fi, fo, p: None,
    "normal": lambda fi, fo, p: p["std"] ** 2,
    "uniform": lambda fi, fo, p: p["limit"] ** 2 / 3.0,
    "standard": lambda fi, fo, p: p["gain"] ** 2 / (3.0 * fi),
    "xavier_uniform": lambda fi, fo, p: p["gain"] ** 2 * 2.0 / (fi + fo),
    "xavier_normal": lambda fi, fo, p: p["gain"] ** 2 * 2.0 / (fi + fo),
    "he_uniform": lambda fi, fo, p: _he_gain(p["gain"], p["negative_slope"]) ** 2 / fi,
    "he_normal": lambda fi, fo, p: _he_gain(p["gain"], p["negative_slope"]) ** 2 / fi,
    "lecun_normal": lambda fi, fo, p: p["gain"] ** 2 / fi,
    "orthogonal": lambda fi, fo, p: p["gain"] ** 2 / max(fi, fo),
}


def weight_variance(name: str, fan_in: int, fan_out: int, **params) -> float | None:
    """Var[W_ij] that the scheme's formula implies for this layer (None for zeros and constant)."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown init {name!r}; allowed: {', '.join(INITIALIZERS)}")
    sig = inspect.signature(INITIALIZERS[name]).parameters
    bound = {k: sig[k].default for k in initializer_params(name)}
    bound.update({k: v for k, v in params.items() if k in bound and v is not None})
    return VARIANCES[name](fan_in, fan_out, bound)
