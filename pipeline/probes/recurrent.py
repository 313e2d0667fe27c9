"""Recurrent probes: the gradient through time, read from the last backward pass of a recurrent net."""

from __future__ import annotations

import math

import numpy as np

from pipeline.engine import RecurrentNet
from pipeline.probes.base import Probe, ProbeContext


def per_step_factor(norms: np.ndarray) -> float:
    """r of ||dL/dh_t|| ~ C * r^(T - t): least squares of log ||dL/dh_t|| against t, r = exp(-slope).

    Over the steps backward reached with a positive norm (a truncated backward reaches only the last k); NaN
    with fewer than two. r < 1: the gradient shrinks by that factor per step back in time (vanishing);
    r > 1: it grows (exploding). Bengio et al. (1994), Pascanu et al. (2013).
    """
    t = np.flatnonzero(norms > 0)
    if len(t) < 2 or not np.all(np.isfinite(norms[t])):
        return math.nan
    slope = np.polyfit(t.astype(np.float64), np.log(norms[t]), 1)[0]
    return float(math.exp(-slope))


class GradientThroughTime(Probe):
    """grad_time_ratio = ||dL/dh_1|| / ||dL/dh_T|| and grad_time_factor (the fitted per-step factor).

    dL/dh_t is the gradient of the mean loss reaching the hidden state after step t (through every later step):
    on the fixed probe batch when its labels are given (one forward and backward of it, from step 0 on, so the
    measurements compare across training; it reuses the gradient buffers, hence it runs after the other
    gradient probes), else on the last training step's batch. With truncated BPTT (`model.bptt`) dL/dh_1 is
    cut off by construction: the ratio is then not logged, the factor is fitted over the truncation window.
    """

    name = "grad_time"

    def applies(self, net) -> bool:
        return hasattr(net, "cell")

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        net = ctx.net
        assert isinstance(net, RecurrentNet)  # applies
        if ctx.probe_x is not None and ctx.probe_y is not None and ctx.trainer is not None:
            _, dlogits = ctx.trainer.loss(net.forward(ctx.probe_x, train=True), ctx.probe_y)
            net.backward(dlogits)
        norms = net.cell.dh_norms  # (time,), from the last backward
        if len(norms) == 0:  # no backward yet (before training, without the probe batch's labels)
            return {}
        out = {"grad_time_factor": per_step_factor(norms)}
        if net.bptt is None and norms[-1] > 0:
            out["grad_time_ratio"] = float(norms[0] / norms[-1])
        return out
