"""Weight probes: size, stretch and sparsity of each layer's matrix."""

from __future__ import annotations

import numpy as np

from pipeline.probes.base import Probe, ProbeContext, per_layer

SPARSE_BELOW = 1e-3


class WeightNorm(Probe):
    """weight_norm/layer_XX = Frobenius norm of W."""

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        return per_layer("weight_norm", (np.linalg.norm(layer.params["W"]) for layer in ctx.net.layers))


class SpectralNorm(Probe):
    """spectral_norm/layer_XX = largest singular value of W: how much the layer can stretch a signal.

    Exact (an SVD) when `exact`; otherwise power iteration warm-started from the previous measurement,
    which tracks the slowly moving top singular vector for a few matrix-vector products per layer.
    """

    def __init__(self, exact: bool = False, iterations: int = 4):
        self.exact = exact
        self.iterations = iterations
        self._vectors: dict[int, np.ndarray] = {}

    def _power(self, i: int, w: np.ndarray) -> float:
        v = self._vectors.get(i)
        if v is None:
            v = np.random.default_rng(i).standard_normal(w.shape[1]).astype(w.dtype)  # (fan_out,)
            iterations = 20  # cold start: converge once, then a few steps keep up
        else:
            iterations = self.iterations
        for _ in range(iterations):
            v = w.T @ (w @ v)  # (fan_out,): one step of power iteration on W^T W
            norm_v = float(np.linalg.norm(v))
            if norm_v == 0.0 or not np.isfinite(norm_v):  # zero or diverged weights: start afresh next time
                self._vectors.pop(i, None)
                return 0.0 if norm_v == 0.0 else float("nan")
            v = v / norm_v
        self._vectors[i] = v
        return float(np.linalg.norm(w @ v))

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        if self.exact:
            return per_layer("spectral_norm", (np.linalg.norm(layer.params["W"].astype(np.float64), 2)
                                               for layer in ctx.net.layers))
        return per_layer("spectral_norm", (self._power(i, layer.params["W"])
                                           for i, layer in enumerate(ctx.net.layers, 1)))


class Sparsity(Probe):
    """sparsity/total = share of weights with |w| < 1e-3 (what L1 is for)."""

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        weights = [layer.params["W"] for layer in ctx.net.layers]
        small = sum(int(np.count_nonzero(np.abs(w) < SPARSE_BELOW)) for w in weights)
        return {"sparsity/total": small / sum(w.size for w in weights)}
