"""Weight probes: size, stretch and sparsity of each layer's matrix."""

from __future__ import annotations

import math

import numpy as np

from pipeline.probes.base import Probe, ProbeContext, per_layer, sq_norm, weight_names

SPARSE_BELOW = 1e-3


class WeightNorm(Probe):
    """weight_norm/layer_XX = Frobenius norm of W (a recurrent layer: of W_xh and W_hh together)."""

    name = "weight_norm"

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        return per_layer(
            "weight_norm",
            (math.sqrt(sum(sq_norm(layer.params[n]) for n in weight_names(layer))) for layer in ctx.net.layers),
        )


class SpectralNorm(Probe):
    """spectral_norm/layer_XX = largest singular value of W: how much the layer can stretch a signal.

    A recurrent layer's W here is its input matrix W_xh (`layer.W`); W_hh's spectral radius, what decides
    the gradient through time, is a recurrent probe of its own.

    Exact (an SVD) when `exact`; otherwise power iteration warm-started from the previous measurement,
    which tracks the slowly moving top singular vector for a few matrix-vector products per layer
    (`iterations`: 1 is enough when measured at every step, the weights barely move in between).
    """

    name = "spectral_norm"

    def __init__(self, exact: bool = False, iterations: int = 4):
        self.exact = exact
        self.iterations = iterations
        self._vectors: dict[int, np.ndarray] = {}

    def _power(self, i: int, w: np.ndarray) -> float:
        """||W v|| for the unit vector v of the previous measurement, then v moves one step towards the top.

        Two matrix-vector products per iteration; the value is read off the first of each pair, so it lags
        the vector by half an iteration, which the warm start makes negligible.
        """
        v = self._vectors.get(i)
        if v is None:
            v = np.random.default_rng(i).standard_normal(size=(w.shape[1],)).astype(w.dtype)  # (fan_out,)
            v /= np.linalg.norm(v)
            iterations = 20  # cold start: converge once, then a few steps keep up
        else:
            iterations = self.iterations
        sigma = 0.0
        for _ in range(iterations):
            u = w @ v  # (fan_in,)
            sigma = float(np.linalg.norm(u))
            v = w.T @ u  # (fan_out,): W^T W v
            norm_v = float(np.linalg.norm(v))
            if norm_v == 0.0 or not np.isfinite(norm_v):  # zero or diverged weights: start afresh next time
                self._vectors.pop(i, None)
                return 0.0 if norm_v == 0.0 else float("nan")
            v /= norm_v
        self._vectors[i] = v
        return sigma

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        if self.exact:
            return per_layer(
                "spectral_norm", (np.linalg.norm(layer.W.astype(np.float64), 2) for layer in ctx.net.layers)
            )
        return per_layer("spectral_norm", (self._power(i, layer.W) for i, layer in enumerate(ctx.net.layers, 1)))


class Sparsity(Probe):
    """sparsity/total = share of weights with |w| < 1e-3 (what L1 is for)."""

    name = "sparsity"

    def __init__(self):
        # |W| and |W| < 1e-3 per layer, reused: no allocation per measurement
        self._scratch: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        small, total = 0, 0
        tensors = [layer.params[n] for layer in ctx.net.layers for n in weight_names(layer)]
        for i, w in enumerate(tensors):
            scratch, flags = self._scratch.get(i, (None, None))
            if scratch is None or scratch.shape != w.shape:
                scratch, flags = self._scratch[i] = np.empty_like(w), np.empty(w.shape, dtype=bool)
            np.abs(w, out=scratch)
            small += int(np.count_nonzero(np.less(scratch, SPARSE_BELOW, out=flags)))
            total += w.size
        return {"sparsity/total": small / total}
