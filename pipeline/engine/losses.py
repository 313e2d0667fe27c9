"""Losses over logits and integer labels: each returns the mean batch loss and dL/dlogits."""

from __future__ import annotations

import numpy as np


class Loss:
    """`loss(logits, y) -> (value, dlogits)` with the value averaged over the batch."""

    name = ""
    regression = False  # targets are real numbers (y float, one output), not class labels

    def __call__(self, logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def value(self, logits: np.ndarray, y: np.ndarray) -> float:
        return self(logits, y)[0]

    def kink_distance(self, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per example, how far the logits are from a point where the loss is not differentiable."""
        return np.full(logits.shape[0], np.inf)


class SoftmaxCrossEntropy(Loss):
    """-log softmax(logits)[y], through log-sum-exp so large logits do not overflow."""

    name = "cross_entropy"

    def __call__(self, logits, y):
        n = logits.shape[0]
        rows = np.arange(n)
        shifted = logits - logits.max(axis=1, keepdims=True)  # (batch, classes), max 0
        e = np.exp(shifted)
        total = e.sum(axis=1, keepdims=True)  # (batch, 1), >= 1
        value = float(np.log(total[:, 0]).sum() - shifted[rows, y].sum()) / n
        dlogits = e / total  # softmax
        dlogits[rows, y] -= 1.0
        dlogits *= 1.0 / n
        return value, dlogits


class MeanSquaredError(Loss):
    """Half least-mean-squares on one-hot targets: 1/(2n) * sum ||logits - onehot(y)||^2."""

    name = "mse"

    def __call__(self, logits, y):
        n = logits.shape[0]
        diff = logits.copy()  # (batch, classes)
        diff[np.arange(n), y] -= 1.0
        value = 0.5 * float(np.vdot(diff, diff)) / n
        diff *= 1.0 / n
        return value, diff


class MulticlassHinge(Loss):
    """The multiclass SVM loss of Weston & Watkins (CS231n): sum over j != y of max(0, s_j - s_y + 1)."""

    name = "hinge"
    margin = 1.0

    def _margins(self, logits, y):
        rows = np.arange(logits.shape[0])
        m = logits - logits[rows, y][:, None] + self.margin  # (batch, classes)
        m[rows, y] = 0.0
        return m

    def __call__(self, logits, y):
        n = logits.shape[0]
        m = self._margins(logits, y)
        active = m > 0  # (batch, classes)
        value = float(np.maximum(m, 0.0).sum()) / n
        dlogits = active.astype(logits.dtype)
        dlogits[np.arange(n), y] = -active.sum(axis=1)
        dlogits *= 1.0 / n
        return value, dlogits

    def kink_distance(self, logits, y):
        m = self._margins(logits, y)
        m[np.arange(len(y)), y] = np.inf
        return np.abs(m).min(axis=1)


class SquaredError(Loss):
    """Regression: the plain mean squared error 1/n * sum (output - y)^2 of one output and real targets y.

    Not halved, so it reads as the MSE of the literature (the adding problem's constant predictor: 1/6).
    """

    name = "mse"
    regression = True

    def __call__(self, logits, y):
        n = logits.shape[0]
        diff = logits - y.reshape(n, -1).astype(logits.dtype, copy=False)  # (batch, 1)
        value = float(np.vdot(diff, diff)) / n
        diff *= 2.0 / n
        return value, diff


LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (SoftmaxCrossEntropy, MeanSquaredError, MulticlassHinge)}
REGRESSION_LOSSES: dict[str, type[Loss]] = {SquaredError.name: SquaredError}


def make_loss(name: str, regression: bool = False) -> Loss:
    """The named loss; with `regression`, the one for real targets (only mse has one)."""
    table = REGRESSION_LOSSES if regression else LOSSES
    if name not in table:
        what = "regression loss" if regression else "loss"
        raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(table)}")
    return table[name]()
