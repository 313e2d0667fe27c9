"""Activation probes on the fixed probe batch: scale, saturation and dead units per layer."""

from __future__ import annotations

import numpy as np

from pipeline.probes.base import Probe, ProbeContext, per_layer

SATURATION_SHARE = 0.1  # f'(z) below 10% of its maximum counts as saturated


class ActivationStats(Probe):
    """act_mean/layer_XX and act_std/layer_XX of f(z) over probe examples and units (output: logits)."""

    needs_activations = True

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        acts = [a for _, a in ctx.activations()]
        return {**per_layer("act_mean", (a.mean(dtype=np.float64) for a in acts)),
                **per_layer("act_std", (a.std(dtype=np.float64) for a in acts))}


class Saturation(Probe):
    """saturation/layer_XX = share of unit activations with f'(z) < 0.1 * max f' (sigmoid, tanh, elu)."""

    needs_activations = True

    def applies(self, net) -> bool:
        return net.activation.saturates and len(net.hidden) > 0

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        act = ctx.net.activation
        threshold = SATURATION_SHARE * act.max_grad
        hidden = ctx.activations()[:-1]
        return per_layer("saturation", (np.mean(act.grad(z, a) < threshold) for z, a in hidden))


class DeadUnits(Probe):
    """dead_relu/layer_XX = share of units with z <= 0 (ReLU output 0) on every probe example; and the total."""

    needs_activations = True

    def applies(self, net) -> bool:
        return net.activation.relu_family and len(net.hidden) > 0

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        hidden = ctx.activations()[:-1]
        dead = [np.all(z <= 0, axis=0) for z, _ in hidden]  # (width,) per layer
        out = per_layer("dead_relu", (d.mean() for d in dead))
        out["dead_relu/total"] = float(sum(int(d.sum()) for d in dead) / sum(d.size for d in dead))
        return out
