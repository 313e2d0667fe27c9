"""One training step (forward, loss, backward, penalty, clipping, update) and batch iteration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from pipeline.engine.clipping import GradientClipper
from pipeline.engine.losses import Loss
from pipeline.engine.model import Network
from pipeline.engine.optimizers import Optimizer
from pipeline.engine.regularizers import Regularizer


def minibatches(n: int, batch_size: int | None, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Index arrays of one epoch, reshuffled from `rng`; batch_size None means the full batch."""
    if batch_size is None or batch_size >= n:
        yield np.arange(n)
        return
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@dataclass
class Trainer:
    """Owns the step; after `step` the network exposes grads (post-clip) and `preclip_grads`."""

    net: Network
    loss: Loss
    optimizer: Optimizer
    regularizer: Regularizer | None = None
    clipper: GradientClipper = field(default_factory=GradientClipper)
    preclip_grads: dict[str, np.ndarray] = field(init=False)
    last_grad_norm: float = field(init=False, default=float("nan"))
    updates: dict[str, np.ndarray] = field(init=False, default_factory=dict)  # W_after - W_before per weight

    def __post_init__(self):
        # with clipping on, a copy of the raw gradients; otherwise the gradients themselves (no copy)
        self.preclip_grads = (
            {k: np.empty_like(g) for k, g in self.net.grads.items()} if self.clipper.active else self.net.grads
        )

    def step(self, x: np.ndarray, y: np.ndarray, track_updates: bool = False) -> float:
        """One update on the batch (x, y); returns the batch loss including the penalty.

        With `track_updates`, `updates` holds each weight's change W_after - W_before (for update ratios).
        """
        net = self.net
        logits = net.forward(x, train=True)  # (batch, classes)
        value, dlogits = self.loss(logits, y)
        net.backward(dlogits)
        if self.regularizer is not None:
            weights = [net.params[k] for k in net.weight_keys]
            value += self.regularizer.penalty(weights)
            for k in net.weight_keys:
                net.grads[k] += self.regularizer.grad(net.params[k])
        if self.clipper.active:
            for k, g in net.grads.items():
                np.copyto(self.preclip_grads[k], g)
            self.last_grad_norm = self.clipper(net.grads)
        if track_updates:
            for k in net.weight_keys:  # the weights before the update, in buffers reused across steps
                buf = self.updates.get(k)
                if buf is None:
                    self.updates[k] = net.params[k].copy()
                else:
                    np.copyto(buf, net.params[k])
        self.optimizer.step(net.params, net.grads)
        if track_updates:
            for k in net.weight_keys:  # in place: the buffer becomes W_after - W_before
                np.subtract(net.params[k], self.updates[k], out=self.updates[k])
        return value

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 4096) -> tuple[float, float]:
        """Mean loss (without penalty) and accuracy in eval mode, in chunks to bound memory.

        A regression loss has no accuracy: NaN.
        """
        total_loss, correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = self.net.forward(xb, train=False)
            total_loss += self.loss.value(logits, yb) * len(xb)
            if not self.loss.regression:
                correct += int((logits.argmax(axis=1) == yb).sum())
        return total_loss / len(x), (float("nan") if self.loss.regression else correct / len(x))
