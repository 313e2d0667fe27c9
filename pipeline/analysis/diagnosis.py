"""A run's verdict (the labels on its `verdict` tag): healthy, or one or more of diverged, not_learning,
vanishing, exploding, dead, saturated, symmetric."""

from __future__ import annotations

import math

import numpy as np

from pipeline.engine import Network, layer_name

# thresholds, documented in the README's "Verdicts" table
# first-layer / last-layer gradient norm (or last / first hidden activation std); through time, grad_time_ratio =
# ||dL/dh_1|| / ||dL/dh_T|| of a recurrent net
VANISHING_RATIO = 1e-3
EXPLODING_RATIO = 1e3
DEAD_SHARE = 0.5  # dead_relu/total
SATURATED_SHARE = 0.5  # mean saturation over hidden layers
SYMMETRY_TOL = 1e-6
# not_learning: the training loss ended within this share of a constant predictor's (data/chance_loss), either
# way: the net outputs what a constant would ...
CONSTANT_LOSS_TOL = 0.01
# ... or the accuracy got less than this share of the way from chance (majority class) to 1
ABOVE_CHANCE = 0.25
# the rule in words, for reports' notes
NOT_LEARNING_RULE = (
    "A run is `not_learning` when its test accuracy stays within "
    f"{ABOVE_CHANCE:g} of the way from chance to 1, or its final training loss is within {CONSTANT_LOSS_TOL:.0%} "
    "of a constant predictor's (the labels' entropy for cross-entropy): its output is a constant's "
    '(README, "Verdicts").'
)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def is_symmetric(net: Network) -> bool:
    """Some hidden layer (width > 1) whose units all have the same incoming weights and bias within 1e-6."""
    for layer in net.hidden:
        w = layer.W  # (fan_in, width); a recurrent layer: its input weights W_xh
        if w.shape[1] < 2:
            continue
        cols = [w] + ([layer.params["b"][None, :]] if "b" in layer.params else [])
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged net's inf weights: not symmetric, no warning
            if all(np.abs(c - c[:, :1]).max() <= SYMMETRY_TOL for c in cols):
                return True
    return False


def learned(latest: dict[str, float], regression: bool = False) -> bool:
    """False when a trained run ended no better than a constant predictor (True without the numbers).

    Accuracy: test/acc (else val/acc) <= chance + ABOVE_CHANCE x (1 - chance), chance = data/chance_acc.
    Loss: train/final_loss (whole training set, eval mode) within CONSTANT_LOSS_TOL of data/chance_loss, the
    loss of the best constant predictor: near-uniform outputs whose argmax is right by luck a little more
    often than chance. Not the initial loss, which a bad init inflates (a sigmoid net relaxing to the
    uniform output would look as if it learned); and not "above the constant's loss", which an overconfident
    net that did learn (70% accuracy, huge logits) also is.

    A regression (real targets, no accuracy) is judged by its MSE against the constant predictor's (the
    targets' variance), the accuracy rule's analogue: the test (else validation) MSE must get more than
    ABOVE_CHANCE of the way from the constant's to 0, and the final training MSE at least CONSTANT_LOSS_TOL
    below the constant's (no overconfidence excuses a loss above it).
    """
    end, constant = latest.get("train/final_loss"), latest.get("data/chance_loss")
    if regression:
        if constant is None:
            return True
        held_out = latest.get("test/loss", latest.get("val/loss"))
        if held_out is not None and held_out >= (1.0 - ABOVE_CHANCE) * constant:
            return False
        return not (end is not None and end >= (1.0 - CONSTANT_LOSS_TOL) * constant)
    acc = latest.get("test/acc", latest.get("val/acc"))
    chance = latest.get("data/chance_acc")
    if acc is not None and chance is not None and acc <= chance + ABOVE_CHANCE * (1.0 - chance):
        return False
    return not (
        end is not None and constant is not None and constant > 0 and abs(end / constant - 1.0) <= CONSTANT_LOSS_TOL
    )


def diagnose(
    latest: dict[str, float], net: Network | None = None, diverged: bool = False, regression: bool = False
) -> list[str]:
    """Labels from the last measured value of each metric (and the network for symmetry); `regression`: real
    targets, judged by the loss alone (see `learned`)."""
    labels = []
    if diverged:
        labels.append("diverged")
    elif not learned(latest, regression):
        labels.append("not_learning")
    ratios = []
    n = net and len(net.layers)
    if n:
        grad_ratio = _ratio(latest.get(f"grad_norm/{layer_name(1)}"), latest.get(f"grad_norm/{layer_name(n)}"))
        act_ratio = (
            _ratio(latest.get(f"act_std/{layer_name(n - 1)}"), latest.get(f"act_std/{layer_name(1)}"))
            if n > 2
            else None
        )
        ratios += [r for r in (grad_ratio, act_ratio) if r is not None]
    # through time: a recurrent net's gradient reaching step 1 over the one at the read-out step T
    time_ratio = latest.get("grad_time_ratio")
    if time_ratio is not None and math.isfinite(time_ratio):
        ratios.append(time_ratio)
    if any(r < VANISHING_RATIO for r in ratios):
        labels.append("vanishing")
    if any(r > EXPLODING_RATIO for r in ratios):
        labels.append("exploding")
    if latest.get("dead_relu/total", 0.0) > DEAD_SHARE:
        labels.append("dead")
    saturation = [v for k, v in latest.items() if k.startswith("saturation/") and math.isfinite(v)]
    if saturation and float(np.mean(saturation)) > SATURATED_SHARE:
        labels.append("saturated")
    if net is not None and is_symmetric(net):
        labels.append("symmetric")
    return labels or ["healthy"]
