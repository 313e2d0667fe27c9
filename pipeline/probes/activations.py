"""Activation probes: scale, saturation and dead units per layer, on the probe batch or the step's batch."""

from __future__ import annotations

import numpy as np

from pipeline.probes.base import Probe, ProbeContext, mean_std, per_layer

SATURATION_SHARE = 0.1  # f'(z) below 10% of its maximum counts as saturated


class ActivationStats(Probe):
    """act_mean/layer_XX and act_std/layer_XX of f(z) over examples and units (output: logits)."""

    name = "act_stats"

    needs_activations = True

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        stats = [mean_std(a) for _, a in ctx.activations()]
        return {**per_layer("act_mean", (m for m, _ in stats)), **per_layer("act_std", (s for _, s in stats))}


class Saturation(Probe):
    """saturation/layer_XX = share of unit activations with f'(z) < 0.1 * max f' (sigmoid, tanh, elu)."""

    name = "saturation"

    needs_activations = True

    def applies(self, net) -> bool:
        return net.activation.saturates and len(net.hidden) > 0

    def why_not(self, net) -> str | None:
        if getattr(getattr(net, "cell", None), "gates", 1) > 1:
            return "the LSTM has no single cell activation (its sigmoid gates and tanh candidate saturate apart)"
        return None

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        act = ctx.net.activation
        threshold = SATURATION_SHARE * act.max_grad
        hidden = ctx.activations()[:-1]
        return per_layer("saturation", (np.count_nonzero(act.grad(z, a) < threshold) / z.size for z, a in hidden))


class DeadUnits(Probe):
    """dead_relu/layer_XX = share of units with z <= 0 (ReLU output 0) on every example; and the total.

    On the probe batch: every example of it. On the training batches (`window` set): every example of the
    last `window` or more training examples the probe has seen, so a small batch does not pass for a
    whole data set (a unit silent on one example of pure SGD is not dead).
    """

    name = "dead_units"

    needs_activations = True

    def __init__(self, window: int | None = None):
        self.window = window
        self._silent: list[np.ndarray] = []  # per layer: examples since each unit was last active

    def applies(self, net) -> bool:
        return net.activation.relu_family and len(net.hidden) > 0

    def _dead(self, ctx: ProbeContext) -> list[np.ndarray]:
        hidden = ctx.activations()[:-1]
        # not (z <= 0 everywhere): a NaN (diverged) unit is not counted as dead
        active = [~np.all(z <= 0, axis=0) for z, _ in hidden]  # (width,) per layer
        if ctx.source != "train_batch" or self.window is None:
            dead = [~a for a in active]
            if self.window is not None:  # the probe batch (step 0) seeds the window: silent there = silent long
                self._silent = [np.where(d, self.window, 0).astype(np.int64) for d in dead]
            return dead
        if not self._silent:
            self._silent = [np.zeros(a.shape, dtype=np.int64) for a in active]
        seen = len(hidden[0][0])
        for silent, a in zip(self._silent, active):
            silent += seen
            silent[a] = 0
        return [silent >= self.window for silent in self._silent]

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        dead = self._dead(ctx)
        out = per_layer("dead_relu", (np.count_nonzero(d) / d.size for d in dead))
        out["dead_relu/total"] = float(sum(int(np.count_nonzero(d)) for d in dead) / sum(d.size for d in dead))
        return out
