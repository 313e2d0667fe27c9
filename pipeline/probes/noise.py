"""Gradient noise: how far a mini-batch gradient scatters around the full-batch one."""

from __future__ import annotations

import numpy as np

from pipeline.probes.base import Probe, ProbeContext


class GradientNoise(Probe):
    """grad_noise/relative = E||g_B - g||^2 / ||g||^2 over `samples` random batches of the run's size.

    g is the full-batch gradient at the current weights, g_B a mini-batch one at the same weights:
    the noise that makes small batches wander (its inverse times B is McCandlish et al.'s noise scale).
    Measured last: it reuses the network's gradient buffers and caches, and puts batch norm's running
    statistics back, so training goes on unchanged.
    """

    name = "gradient_noise"

    needs_step = True

    def __init__(
        self, x: np.ndarray, y: np.ndarray, batch_size: int | None, rng: np.random.Generator, samples: int = 4
    ):
        self.x, self.y, self.batch_size, self.rng, self.samples = x, y, batch_size, rng, samples

    def applies(self, net) -> bool:
        return self.batch_size is not None and self.batch_size < len(self.x)

    def _gradient(self, ctx: ProbeContext, idx) -> np.ndarray:
        assert ctx.trainer is not None  # needs_step: measured only after a training step
        net, loss = ctx.net, ctx.trainer.loss
        _, dlogits = loss(net.forward(self.x[idx], train=True), self.y[idx])
        net.backward(dlogits)
        return np.concatenate([g.ravel().astype(np.float64) for g in net.grads.values()])

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        norms = [n for n in (getattr(layer, "norm", None) for layer in ctx.net.layers) if n is not None]
        saved = [(n.running_mean.copy(), n.running_var.copy()) for n in norms]
        full = self._gradient(ctx, slice(None))
        spread = [
            np.sum((self._gradient(ctx, self.rng.choice(len(self.x), self.batch_size, replace=False)) - full) ** 2)
            for _ in range(self.samples)
        ]
        for n, (mean, var) in zip(norms, saved):
            n.running_mean[:], n.running_var[:] = mean, var
        full_sq = float(np.dot(full, full))
        return {"grad_noise/relative": float(np.mean(spread)) / full_sq if full_sq > 0 else float("nan")}
