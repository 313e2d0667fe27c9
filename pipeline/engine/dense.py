"""Dense (affine) layer: z = x @ W + b, with gradients written into preallocated buffers."""

from __future__ import annotations

import numpy as np

from pipeline.engine.initializers import Initializer


class Dense:
    """Affine map; caches its input for backward."""

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        init: Initializer,
        rng: np.random.Generator,
        dtype=np.float32,
        bias: bool = True,
        bias_value: float = 0.0,
    ):
        self.params: dict[str, np.ndarray] = {"W": init(fan_in, fan_out, rng, dtype)}  # (fan_in, fan_out)
        if bias:
            self.params["b"] = np.full(fan_out, bias_value, dtype=dtype)  # (fan_out,)
        # gradients live in fixed buffers so callers can hold references to them across steps
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.cache: dict[str, np.ndarray] = {}
        self.need_input_grad = True  # the first layer's dx is never used: skip that matmul

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.cache["x"] = x  # (batch, fan_in)
        z = x @ self.params["W"]  # (batch, fan_out)
        if "b" in self.params:
            z += self.params["b"]
        return z

    def backward(self, dz: np.ndarray) -> np.ndarray | None:
        x = self.cache["x"]  # (batch, fan_in)
        np.matmul(x.T, dz, out=self.grads["W"])  # (fan_in, fan_out)
        if "b" in self.params:
            np.sum(dz, axis=0, out=self.grads["b"])  # (fan_out,)
        if not self.need_input_grad:
            return None
        return dz @ self.params["W"].T  # (batch, fan_in)
