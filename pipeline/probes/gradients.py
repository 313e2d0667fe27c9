"""Gradient probes: what backprop delivers to each layer (the vanishing / exploding picture)."""

from __future__ import annotations

import math

import numpy as np

from pipeline.engine import layer_name
from pipeline.probes.base import Probe, ProbeContext, mean_std, per_layer, sq_norm, weight_names


class GradNorm(Probe):
    """grad_norm/layer_XX = ||dL/dW|| before clipping; grad_norm/total over every parameter.

    A recurrent layer's W is W_xh and W_hh together; each also has its own key: grad_norm/W_xh, grad_norm/W_hh.
    """

    name = "grad_norm"

    needs_step = True

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        squares = {key: sq_norm(g) for key, g in ctx.preclip_grads.items()}  # one pass per tensor
        out: dict[str, float] = {}
        for i, layer in enumerate(ctx.net.layers, 1):
            names = weight_names(layer)
            out[f"grad_norm/{layer_name(i)}"] = math.sqrt(sum(squares[f"{layer_name(i)}.{n}"] for n in names))
            if len(names) > 1:
                out.update({f"grad_norm/{n}": math.sqrt(squares[f"{layer_name(i)}.{n}"]) for n in names})
        out["grad_norm/total"] = math.sqrt(sum(squares.values()))
        return out


class GradStd(Probe):
    """grad_std/layer_XX = std of dL/dz, the back-propagated signal, over the step's batch."""

    name = "grad_std"

    needs_step = True

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        return per_layer(
            "grad_std", (mean_std(layer.dz)[1] if layer.dz is not None else float("nan") for layer in ctx.net.layers)
        )


class UpdateRatio(Probe):
    """update_ratio/layer_XX = ||W_after - W_before|| / ||W_before|| of the last step (healthy near 1e-3).

    From the trainer's update buffers and three dot products: ||W_before||^2 = ||W||^2 - 2 W.dW + ||dW||^2,
    never small next to its terms, so no cancellation and no copy of W.
    """

    name = "update_ratio"

    needs_step = True

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        updates = ctx.trainer.updates if ctx.trainer is not None else {}
        if not updates:
            return {}
        out = {}
        for i, layer in enumerate(ctx.net.layers, 1):
            names = weight_names(layer)
            parts = {n: self._squares(layer.params[n], updates[f"{layer_name(i)}.{n}"]) for n in names}
            out[f"update_ratio/{layer_name(i)}"] = _ratio(
                sum(d for d, _ in parts.values()), sum(b for _, b in parts.values())
            )
            if len(names) > 1:  # a recurrent layer: W_xh and W_hh each
                out.update({f"update_ratio/{n}": _ratio(d, b) for n, (d, b) in parts.items()})
        return out

    @staticmethod
    def _squares(w: np.ndarray, dw: np.ndarray) -> tuple[float, float]:
        """||dW||^2 and ||W_before||^2 from W (after) and its update dW."""
        w, dw = w.reshape(-1), dw.reshape(-1)
        delta_sq = float(np.dot(dw, dw))
        return delta_sq, float(np.dot(w, w)) - 2.0 * float(np.dot(w, dw)) + delta_sq


def _ratio(delta_sq: float, before_sq: float) -> float:
    delta, norm0 = math.sqrt(delta_sq), math.sqrt(max(before_sq, 0.0))
    return delta / norm0 if norm0 > 0 else (0.0 if delta == 0 else math.inf)
