"""Gradient probes: what backprop delivers to each layer (the vanishing / exploding picture)."""

from __future__ import annotations

import math

import numpy as np

from pipeline.engine import layer_name
from pipeline.probes.base import Probe, ProbeContext, per_layer


class GradNorm(Probe):
    """grad_norm/layer_XX = ||dL/dW|| before clipping; grad_norm/total over every parameter."""

    needs_step = True

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        grads = ctx.preclip_grads
        out = per_layer("grad_norm", (np.linalg.norm(grads[f"{layer_name(i)}.W"])
                                      for i in range(1, len(ctx.net.layers) + 1)))
        out["grad_norm/total"] = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        return out


class GradStd(Probe):
    """grad_std/layer_XX = std of dL/dz, the back-propagated signal, over the step's batch."""

    needs_step = True

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        return per_layer("grad_std", (np.std(layer.dz) if layer.dz is not None else float("nan")
                                      for layer in ctx.net.layers))


class UpdateRatio(Probe):
    """update_ratio/layer_XX = ||W_after - W_before|| / ||W_before|| of the last step (healthy near 1e-3)."""

    needs_step = True

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        before = ctx.trainer.previous_weights if ctx.trainer is not None else {}
        if not before:
            return {}
        out = {}
        for i, layer in enumerate(ctx.net.layers, 1):
            key = f"{layer_name(i)}.W"
            w0 = before[key]
            norm0 = float(np.linalg.norm(w0))
            delta = float(np.linalg.norm(layer.params["W"] - w0))
            out[f"update_ratio/{layer_name(i)}"] = delta / norm0 if norm0 > 0 else (0.0 if delta == 0 else math.inf)
        return out
