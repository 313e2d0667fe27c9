"""Recurrent probes: the gradient through time, read from the last backward pass of a recurrent net."""

from __future__ import annotations

import math

import numpy as np

from pipeline.probes.base import Probe, ProbeContext


def per_step_factor(norms: np.ndarray) -> float:
    """gamma of ||dL/dh_t|| ~ C * gamma^(T - t): least squares of log ||dL/dh_t|| against t, gamma = exp(-slope).

    Over the steps backward reached with a positive norm (a truncated backward reaches only the last k); NaN
    with fewer than two. gamma < 1: the gradient shrinks by that factor per step back in time (vanishing);
    gamma > 1: it grows (exploding). Bengio et al. (1994), Pascanu et al. (2013).
    """
    t = np.flatnonzero(norms > 0)
    if len(t) < 2 or not np.all(np.isfinite(norms[t])):
        return math.nan
    slope = np.polyfit(t.astype(np.float64), np.log(norms[t]), 1)[0]
    return float(math.exp(-slope))


class GradientThroughTime(Probe):
    """grad_time_ratio = ||dL/dh_1|| / ||dL/dh_T|| and grad_time_factor (the fitted per-step factor).

    dL/dh_t is the gradient of the step's mean batch loss reaching the hidden state after step t (through every
    later step), over the training batch of the last step. With truncated BPTT (`model.bptt`) dL/dh_1 is cut
    off by construction: the ratio is then not logged, the factor is fitted over the truncation window.
    """

    name = "grad_time"

    needs_step = True

    def applies(self, net) -> bool:
        return hasattr(net, "cell")

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        norms = ctx.net.cell.dh_norms  # type: ignore[union-attr]  # applies: a recurrent net
        if len(norms) == 0:
            return {}
        out = {"grad_time_factor": per_step_factor(norms)}
        if ctx.net.bptt is None and norms[-1] > 0:  # type: ignore[union-attr]
            out["grad_time_ratio"] = float(norms[0] / norms[-1])
        return out
