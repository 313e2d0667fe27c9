"""Optimizers with PyTorch's update rules; state per parameter name, updates in place.

Coupled weight decay (sgd, momentum, nesterov, adagrad, rmsprop, adam) adds lambda * w to the
gradient, exactly like an l2 penalty of strength lambda; decoupled decay (adamw) shrinks the weight
directly, w -= lr * lambda * w (Loshchilov & Hutter). Either touches only `decay_keys` (the weights).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


class Optimizer:
    """Base: `step(params, grads)` updates every array of `params` in place."""

    name = ""
    coupled_decay = True  # False where the optimizer applies its own decoupled decay (adamw)

    def __init__(self, lr: float, weight_decay: float = 0.0, decay_keys: Iterable[str] | None = None):
        if not lr >= 0:
            raise ValueError(f"optimizer lr must be >= 0, got {lr}")
        if not weight_decay >= 0:
            raise ValueError(f"optimizer weight_decay must be >= 0, got {weight_decay}")
        self.lr = float(lr)  # Python floats throughout: a NumPy float64 scalar would promote float32 arrays
        self.weight_decay = float(weight_decay)
        self.decay_keys = None if decay_keys is None else frozenset(decay_keys)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.t = 0  # steps taken

    def decays(self, key: str) -> bool:
        return self.weight_decay > 0 and (self.decay_keys is None or key in self.decay_keys)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for key, w in params.items():
            g = grads[key]
            if self.decays(key) and self.coupled_decay:
                g = g + self.weight_decay * w  # a new array: the caller's gradient stays as measured
            self.update(key, w, g, self.state.setdefault(key, {}))

    def update(self, key: str, w: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """w -= lr * g; with momentum mu: buf = mu * buf + (1 - dampening) * g (buf = g at the first step)."""

    name = "sgd"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False, **kw):
        super().__init__(lr, **kw)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"optimizer momentum must be in [0, 1), got {momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        self.momentum, self.dampening, self.nesterov = float(momentum), float(dampening), bool(nesterov)

    def update(self, key, w, g, state):
        mu = self.momentum
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= mu
                buf += (1.0 - self.dampening) * g
            g = g + mu * buf if self.nesterov else buf
        w -= self.lr * g


class Momentum(SGD):
    name = "momentum"

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, **kw):
        super().__init__(lr, momentum=momentum, **kw)


class Nesterov(SGD):
    name = "nesterov"

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, **kw):
        super().__init__(lr, momentum=momentum, nesterov=True, **kw)


class Adagrad(Optimizer):
    """sum += g^2; w -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps)."""

    name = "adagrad"

    def __init__(
        self, lr: float = 0.01, lr_decay: float = 0.0, eps: float = 1e-10, initial_accumulator_value: float = 0.0, **kw
    ):
        super().__init__(lr, **kw)
        self.lr_decay, self.eps, self.initial = float(lr_decay), float(eps), float(initial_accumulator_value)

    def update(self, key, w, g, state):
        if "sum" not in state:
            state["sum"] = np.full_like(w, self.initial)
        acc = state["sum"]
        acc += g * g
        clr = self.lr / (1.0 + (self.t - 1) * self.lr_decay)
        denom = np.sqrt(acc)
        denom += self.eps
        w -= clr * (g / denom)


class RMSprop(Optimizer):
    """sq = alpha * sq + (1 - alpha) * g^2; w -= lr * g / (sqrt(sq) + eps) (optionally centred, with momentum)."""

    name = "rmsprop"

    def __init__(
        self,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        **kw,
    ):
        super().__init__(lr, **kw)
        self.alpha, self.eps, self.momentum, self.centered = float(alpha), float(eps), float(momentum), bool(centered)

    def update(self, key, w, g, state):
        if "square_avg" not in state:
            state["square_avg"] = np.zeros_like(w)
        sq = state["square_avg"]
        sq *= self.alpha
        sq += (1.0 - self.alpha) * (g * g)
        if self.centered:
            if "grad_avg" not in state:
                state["grad_avg"] = np.zeros_like(w)
            ga = state["grad_avg"]
            ga *= self.alpha
            ga += (1.0 - self.alpha) * g
            denom = np.sqrt(sq - ga * ga)
        else:
            denom = np.sqrt(sq)
        denom += self.eps
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = np.zeros_like(w)
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += g / denom
            w -= self.lr * buf
        else:
            w -= self.lr * (g / denom)


class Adam(Optimizer):
    """Kingma & Ba with bias correction; weight_decay here is coupled (an l2 term in the gradient)."""

    name = "adam"

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, **kw):
        super().__init__(lr, **kw)
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"adam betas must be in [0, 1), got ({beta1}, {beta2})")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def update(self, key, w, g, state):
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = np.zeros_like(w), np.zeros_like(w)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        b1, b2 = self.beta1, self.beta2
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        bias1 = 1.0 - b1**self.t
        bias2 = 1.0 - b2**self.t
        denom = np.sqrt(v)
        denom *= 1.0 / math.sqrt(bias2)
        denom += self.eps
        w -= (self.lr / bias1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay: w *= 1 - lr * lambda before the Adam step."""

    name = "adamw"
    coupled_decay = False

    def __init__(self, lr: float = 0.001, weight_decay: float = 0.01, **kw):
        super().__init__(lr, weight_decay=weight_decay, **kw)

    def update(self, key, w, g, state):
        if self.decays(key):
            w *= 1.0 - self.lr * self.weight_decay
        super().update(key, w, g, state)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, Nesterov, Adagrad, RMSprop, Adam, AdamW)
}


def make_optimizer(name: str, decay_keys: Iterable[str] | None = None, **params) -> Optimizer:
    """Build an optimizer by name; None-valued parameters fall back to the optimizer's defaults."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    kwargs = {k: v for k, v in params.items() if v is not None}
    return OPTIMIZERS[name](decay_keys=decay_keys, **kwargs)
