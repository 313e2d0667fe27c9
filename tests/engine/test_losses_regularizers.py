import numpy as np
import pytest

from pipeline.engine.losses import make_loss
from pipeline.engine.regularizers import make_regularizer


def test_cross_entropy_matches_the_definition():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    y = np.array([1, 0])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    value, d = make_loss("cross_entropy")(logits, y)
    assert value == pytest.approx(-np.log(p[[0, 1], y]).mean(), rel=1e-12)
    onehot = np.eye(3)[y]
    np.testing.assert_allclose(d, (p - onehot) / 2, rtol=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is harmless
        value, d = make_loss("cross_entropy")(logits, np.array([1]))
    assert value == pytest.approx(1e4, rel=1e-6)
    assert np.all(np.isfinite(d)) and d.dtype == np.float32


def test_mse_is_half_lms_on_one_hot():
    logits = np.array([[0.5, 0.2], [1.5, -1.0]])
    y = np.array([0, 1])
    value, d = make_loss("mse")(logits, y)
    diff = logits - np.eye(2)[y]
    assert value == pytest.approx(0.5 * (diff**2).sum() / 2)
    np.testing.assert_allclose(d, diff / 2)


def test_hinge_cs231n_example():
    # CS231n's example: scores (3.2, 5.1, -1.7), correct class 0 -> max(0, 2.9) + max(0, -3.9) = 2.9
    value, d = make_loss("hinge")(np.array([[3.2, 5.1, -1.7]]), np.array([0]))
    assert value == pytest.approx(2.9)
    np.testing.assert_allclose(d, [[-1.0, 1.0, 0.0]])


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'nll'.*cross_entropy"):
        make_loss("nll")


W = np.array([[0.5, -2.0], [0.0, 1.0]])


@pytest.mark.parametrize(
    "name,penalty,grad",
    [
        ("l1", 0.1 * 3.5, 0.1 * np.sign(W)),
        ("l2", 0.05 * 5.25, 0.1 * W),
        ("elastic", 0.1 * (0.5 * 3.5 + 0.25 * 5.25), 0.1 * (0.5 * np.sign(W) + 0.5 * W)),
    ],
)
def test_penalties_and_gradients(name, penalty, grad):
    reg = make_regularizer(name, 0.1)
    assert reg.penalty([W]) == pytest.approx(penalty)
    np.testing.assert_allclose(reg.grad(W), grad)


def test_none_and_zero_strength_compute_nothing():
    assert make_regularizer("none") is None
    assert make_regularizer("l2", 0.0) is None


def test_negative_strength_is_refused():
    with pytest.raises(ValueError, match="strength must be >= 0"):
        make_regularizer("l1", -1.0)
