"""One network layer as the probes see it: dense -> [batch norm] -> activation [+ identity skip]."""

from __future__ import annotations

import numpy as np

from pipeline.engine.activations import Activation
from pipeline.engine.batchnorm import BatchNorm
from pipeline.engine.dense import Dense
from pipeline.engine.initializers import Initializer


class Layer:
    """A dense+activation block; caches z (activation input), a = f(z) and, after backward, dz = dL/dz.

    With `residual=True` (input width == width) the output is x + f(z): the identity skip of He et al.
    (2016) that lets gradients bypass the block. Batch norm sits between the affine map and the
    activation, as in Ioffe & Szegedy, and replaces the dense bias (which it would cancel).
    """

    def __init__(
        self,
        fan_in: int,
        width: int,
        activation: Activation,
        init: Initializer,
        rng: np.random.Generator,
        dtype=np.float32,
        batch_norm: bool = False,
        residual: bool = False,
        bias_value: float = 0.0,
    ):
        if residual and fan_in != width:
            raise ValueError(f"a residual layer needs equal input and output width, got {fan_in} -> {width}")
        self.activation = activation
        self.residual = residual
        self.dense = Dense(fan_in, width, init, rng, dtype, bias=not batch_norm, bias_value=bias_value)
        self.norm = BatchNorm(width, dtype) if batch_norm else None
        parts = [self.dense] + ([self.norm] if self.norm else [])
        # the same array objects as the parts hold: updating one updates the other
        self.params = {k: v for p in parts for k, v in p.params.items()}
        self.grads = {k: v for p in parts for k, v in p.grads.items()}
        self.cache: dict[str, np.ndarray] = {}
        self.dz: np.ndarray | None = None

    @property
    def W(self) -> np.ndarray:
        return self.params["W"]

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        z = self.dense.forward(x, train)  # (batch, width)
        if self.norm is not None:
            z = self.norm.forward(z, train)
        a = self.activation.fn(z)  # (batch, width)
        self.cache["z"], self.cache["a"] = z, a
        return x + a if self.residual else a

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        dz = self.activation.backprop(dy, self.cache["z"], self.cache["a"])  # (batch, width)
        self.dz = dz
        dnorm = self.norm.backward(dz) if self.norm is not None else dz
        dx = self.dense.backward(dnorm)  # (batch, fan_in) or None for the first layer
        if self.residual and dx is not None:
            dx += dy  # dx is a fresh array; dy is left untouched for the probes
        return dx
