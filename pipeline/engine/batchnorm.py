"""Batch normalization (Ioffe & Szegedy 2015) over the batch axis, with train and eval modes."""

from __future__ import annotations

import numpy as np


class BatchNorm:
    """Normalize each feature by batch statistics (train) or running statistics (eval)."""

    def __init__(self, width: int, dtype=np.float32, momentum: float = 0.1, eps: float = 1e-5):
        self.params = {"gamma": np.ones(width, dtype=dtype), "beta": np.zeros(width, dtype=dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.running_mean = np.zeros(width, dtype=dtype)
        self.running_var = np.ones(width, dtype=dtype)
        self.momentum = float(momentum)  # PyTorch's convention: new = (1 - m) * old + m * batch
        self.eps = float(eps)
        self.cache: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        if train:
            n = x.shape[0]
            if n < 2:
                raise ValueError("batch norm needs at least 2 examples per batch in training mode")
            mean = x.mean(axis=0)  # (width,)
            var = x.var(axis=0)  # (width,) biased, as used for normalization
            inv_std = 1.0 / np.sqrt(var + self.eps)  # (width,)
            xhat = (x - mean) * inv_std  # (batch, width)
            m = self.momentum
            self.running_mean *= 1.0 - m
            self.running_mean += m * mean
            self.running_var *= 1.0 - m
            self.running_var += (m * n / (n - 1)) * var  # unbiased, as PyTorch keeps it
            self.cache = {"xhat": xhat, "inv_std": inv_std}
        else:
            inv_std = 1.0 / np.sqrt(self.running_var + self.eps)
            xhat = (x - self.running_mean) * inv_std
            self.cache = {}  # eval mode has no backward
        return xhat * self.params["gamma"] + self.params["beta"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if not self.cache:
            raise RuntimeError("BatchNorm.backward needs a forward pass in training mode")
        xhat, inv_std = self.cache["xhat"], self.cache["inv_std"]  # (batch, width), (width,)
        n = dy.shape[0]
        np.sum(dy, axis=0, out=self.grads["beta"])
        np.sum(dy * xhat, axis=0, out=self.grads["gamma"])
        gamma = self.params["gamma"]
        # dx = inv_std / n * (n * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)), dxhat = dy * gamma
        dxhat = dy * gamma  # (batch, width)
        dx = dxhat * float(n)
        dx -= dxhat.sum(axis=0)
        dx -= xhat * (gamma * self.grads["gamma"])  # sum(dxhat * xhat) = gamma * dgamma
        dx *= inv_std / n
        return dx
