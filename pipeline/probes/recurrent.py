"""Recurrent probes: the gradient through time (from the last backward pass of a recurrent net), the spectral
radius of W_hh, Pascanu et al.'s per-step factor, and the LSTM's forget gate and cell state."""

from __future__ import annotations

import math

import numpy as np

from pipeline.engine import RecurrentNet, spectral_radius
from pipeline.engine.recurrent import LSTMCell, RNNCell
from pipeline.probes.base import Probe, ProbeContext

LSTM_GATES = ("i", "f", "o", "g")  # W_hh's blocks, in the engine's order


def cell_of(net) -> RNNCell | LSTMCell:
    """The recurrent layer of a net the probe applies to."""
    assert isinstance(net, RecurrentNet)
    return net.cell


def lstm_of(net) -> LSTMCell:
    cell = cell_of(net)
    assert isinstance(cell, LSTMCell)
    return cell


def is_recurrent(net) -> bool:
    return isinstance(net, RecurrentNet)


def is_lstm(net) -> bool:
    return is_recurrent(net) and net.cell.gates == 4


def is_rnn(net) -> bool:
    return is_recurrent(net) and net.cell.gates == 1


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

    def __init__(self) -> None:
        # every measurement's ||dL/dh_t|| (time,), in order: the run's time x step heat map (harness/through_time.py)
        self.trace: list[np.ndarray] = []

    def applies(self, net) -> bool:
        return is_recurrent(net)

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        net = ctx.net
        assert isinstance(net, RecurrentNet)  # applies
        if ctx.probe_x is not None and ctx.probe_y is not None and ctx.trainer is not None:
            _, dlogits = ctx.trainer.loss(net.forward(ctx.probe_x, train=True), ctx.probe_y)
            net.backward(dlogits)
        norms = net.cell.dh_norms  # (time,), from the last backward
        if len(norms) == 0:  # no backward yet (before training, without the probe batch's labels)
            return {}
        self.trace.append(norms.copy())
        out = {"grad_time_factor": per_step_factor(norms)}
        if net.bptt is None and norms[-1] > 0:
            out["grad_time_ratio"] = float(norms[0] / norms[-1])
        return out


class SpectralRadius(Probe):
    """spectral_radius/W_hh: the largest |eigenvalue| of W_hh (the RNN's), the quantity of Pascanu et al.'s rho < 1
    / rho > 1 condition; for the LSTM one per gate block (spectral_radius/W_hh_i, _f, _o, _g) and their largest."""

    name = "spectral_radius"

    def applies(self, net) -> bool:
        return is_recurrent(net)

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        w_hh = cell_of(ctx.net).params["W_hh"]  # (H, G*H)
        if not np.all(np.isfinite(w_hh)):
            return {"spectral_radius/W_hh": math.nan}
        if not is_lstm(ctx.net):
            return {"spectral_radius/W_hh": spectral_radius(w_hh)}
        out = {f"spectral_radius/W_hh_{g}": spectral_radius(w_hh, k) for k, g in enumerate(LSTM_GATES)}
        out["spectral_radius/W_hh"] = max(out.values())
        return out


class PerStepTheory(Probe):
    """grad_time_theory = sigma_max(W_hh) x rms f'(z): Pascanu et al.'s per-step factor of a vanilla RNN's gradient.

    dL/dh_{t-1} = (dL/dh_t * f'(z_t)) W_hh^T: each step back multiplies by W_hh^T (at most sigma_max, exactly it
    for a scaled orthogonal W_hh) after the activation's derivative (which shrinks a vector by its rms over the
    units when the two are unrelated). Read from the activations only, so it predicts what grad_time_factor
    measures through the gradients (the studies' theory line). RNN cells only (the LSTM has no single f).
    """

    name = "grad_time_theory"
    needs_activations = True

    def applies(self, net) -> bool:
        return is_rnn(net)

    def why_not(self, net) -> str | None:
        return (
            "the LSTM has no single cell activation f (its gradient runs through the forget gates)"
            if is_lstm(net)
            else None
        )

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        z, a = ctx.activations()[0]  # (batch*time, H): every step of every example
        w_hh = cell_of(ctx.net).params["W_hh"].astype(np.float64)  # (H, H)
        if not (np.all(np.isfinite(w_hh)) and np.all(np.isfinite(a))):
            return {"grad_time_theory": math.nan}
        sigma = float(np.linalg.norm(w_hh, 2))
        deriv = ctx.net.activation.grad(z, a).astype(np.float64)  # (batch*time, H)
        return {"grad_time_theory": sigma * math.sqrt(float(np.mean(deriv * deriv)))}


class ForgetGate(Probe):
    """forget_gate/mean: the LSTM's forget gate f_t over examples, steps and units (near 1: the cell keeps its
    state, and its gradient, from step to step; sigmoid(forget_bias) at init: 0.73 for the default bias 1)."""

    name = "forget_gate"
    needs_activations = True

    def applies(self, net) -> bool:
        return is_lstm(net)

    def why_not(self, net) -> str | None:
        return "a vanilla RNN has no forget gate (model=lstm has)" if is_rnn(net) else None

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        ctx.activations()  # the measured batch's forward (the probe batch's, or the step's own)
        return {"forget_gate/mean": float(np.mean(lstm_of(ctx.net).forget_gates(), dtype=np.float64))}


class CellState(Probe):
    """cell_state/norm: the LSTM's cell state ||c_t|| per example, averaged over examples and steps."""

    name = "cell_state"
    needs_activations = True

    def applies(self, net) -> bool:
        return is_lstm(net)

    def why_not(self, net) -> str | None:
        return "a vanilla RNN has no cell state (model=lstm has)" if is_rnn(net) else None

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        ctx.activations()
        c = lstm_of(ctx.net).cell_states().astype(np.float64)  # (batch, time, H)
        return {"cell_state/norm": float(np.mean(np.sqrt(np.sum(c * c, axis=2))))}
