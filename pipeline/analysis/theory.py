"""What the initialization formulas predict: activation variance per layer at init (mean-field).

Glorot & Bengio and He et al. propagate Var[z_l] = fan_in * Var[W] * E[a_{l-1}^2] through the layers,
with E[f(z)^2] worked out for a linear (tanh near 0) or ReLU unit. The same recursion with the Gaussian
expectations taken numerically (Gauss-Hermite quadrature; Poole et al. 2016) covers every activation,
bias value, batch norm (z standardized per unit) and identity skips, so the prediction sits beside the
measurement for any configuration.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.engine import MLP
from pipeline.engine.initializers import weight_variance

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(81)  # for E[g(x)], x ~ N(0, 1)
_WEIGHTS = _WEIGHTS / math.sqrt(2.0 * math.pi)


def gaussian_moments(f, mean: float, var: float) -> tuple[float, float]:
    """(E[f(z)], E[f(z)^2]) for z ~ N(mean, var)."""
    z = mean + math.sqrt(max(var, 0.0)) * _NODES
    fz = f(z)
    return float(_WEIGHTS @ fz), float(_WEIGHTS @ (fz * fz))


def predicted_act_var(
    net: MLP, init_name: str, init_params: dict, bias: float = 0.0, input_second_moment: float = 1.0
) -> list[float] | None:
    """Predicted Var[f(z_l)] per layer (output layer last) at initialization; None for zeros/constant.

    Inputs are standardized, so E[x^2] = 1 per feature. Each layer's output h = f(z) (+ h_prev with a
    skip) feeds the next: E[h^2] carries the signal, and a nonzero mean (sigmoid, ReLU) counts in it.
    """
    mean_h, second_h = 0.0, input_second_moment
    variances = []
    for layer in net.layers:
        fan_in, fan_out = layer.params["W"].shape
        var_w = weight_variance(init_name, fan_in, fan_out, **init_params)
        if var_w is None:
            return None
        if layer.norm is not None:
            z_mean, z_var = 0.0, 1.0  # batch norm: every unit standardized (gamma 1, beta 0 at init)
        else:
            is_output = layer is net.layers[-1]
            z_mean, z_var = (0.0 if is_output else bias), fan_in * var_w * second_h
        m1, m2 = gaussian_moments(layer.activation.fn, z_mean, z_var)
        variances.append(m2 - m1 * m1)
        if layer.residual:  # h = h_prev + a, a independent of h_prev given zero-mean weights
            second_h = second_h + m2 + 2.0 * mean_h * m1
            mean_h = mean_h + m1
        else:
            mean_h, second_h = m1, m2
    return variances
