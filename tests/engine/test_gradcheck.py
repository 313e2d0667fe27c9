"""Backprop against central finite differences over random architectures (float64)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.engine import MLP, make_activation, make_initializer, make_loss, make_regularizer
from pipeline.engine.activations import ACTIVATIONS, Tanh
from pipeline.engine.gradcheck import away_from_kinks, check_gradients, nudge_from_zero

TOL = 1e-6


def worst_error(
    activation="tanh",
    loss="cross_entropy",
    regularizer="none",
    strength=0.05,
    depth=3,
    width=6,
    in_dim=4,
    n_classes=3,
    batch=12,
    batch_norm=False,
    residual=False,
    seed=0,
    init="xavier_normal",
    bias=0.1,
):
    rng = np.random.default_rng(seed)
    net = MLP(
        in_dim,
        n_classes,
        depth,
        width,
        make_activation(activation, slope=0.1, alpha=0.6),
        make_initializer(init),
        rng,
        np.float64,
        batch_norm=batch_norm,
        residual=residual,
        bias_value=bias,
    )
    x = rng.standard_normal((batch, in_dim))
    y = rng.integers(0, n_classes, batch)
    lossf, reg = make_loss(loss), make_regularizer(regularizer, strength)
    nudge_from_zero(net, reg, 1e-2)
    x, y = away_from_kinks(net, lossf, x, y, 1e-2)
    return max(c.rel_error for c in check_gradients(net, lossf, reg, x, y))


architectures = dict(
    depth=st.integers(0, 4),
    width=st.integers(2, 7),
    in_dim=st.integers(1, 5),
    n_classes=st.integers(2, 4),
    batch=st.integers(6, 14),
    seed=st.integers(0, 2**16),
)


@given(activation=st.sampled_from(list(ACTIVATIONS)), **architectures)
def test_every_activation(activation, **shape):
    assert worst_error(activation=activation, **shape) < TOL


@given(loss=st.sampled_from(["cross_entropy", "mse", "hinge"]), **architectures)
def test_every_loss(loss, **shape):
    assert worst_error(loss=loss, **shape) < TOL


@given(regularizer=st.sampled_from(["l1", "l2", "elastic"]), strength=st.floats(1e-3, 1.0), **architectures)
def test_every_regularizer(regularizer, strength, **shape):
    assert worst_error(regularizer=regularizer, strength=strength, **shape) < TOL


# Batch norm over rank-deficient features (fewer inputs than units, as a near-linear layer makes them)
# divides by tiny variances: its higher derivatives explode and finite differences lose the 1e-6 precision
# although backprop stays exact. Random shapes for batch norm therefore keep in_dim >= width >= 3.
bn_architectures = dict(architectures, width=st.integers(3, 6), in_dim=st.integers(6, 8))


@given(
    activation=st.sampled_from(list(ACTIVATIONS)),
    regularizer=st.sampled_from(["none", "l1", "l2", "elastic"]),
    loss=st.sampled_from(["cross_entropy", "mse", "hinge"]),
    **bn_architectures,
)
def test_batch_norm_in_train_mode(activation, regularizer, loss, **shape):
    assert worst_error(activation=activation, regularizer=regularizer, loss=loss, batch_norm=True, **shape) < TOL


@given(activation=st.sampled_from(list(ACTIVATIONS)), **architectures)
def test_residual_blocks(activation, **shape):
    assert worst_error(activation=activation, residual=True, **shape) < TOL


@given(activation=st.sampled_from(list(ACTIVATIONS)), **bn_architectures)
def test_residual_blocks_with_batch_norm(activation, **shape):
    assert worst_error(activation=activation, residual=True, batch_norm=True, **shape) < TOL


def test_the_check_fails_on_a_wrong_derivative(monkeypatch):
    assert worst_error("tanh") < TOL
    monkeypatch.setattr(Tanh, "grad", lambda self, z, a=None: 1.0 - 0.9 * a * a)  # 10% off in the saturation term
    assert worst_error("tanh") > 1e-3


def test_the_check_fails_on_a_missing_penalty_gradient(monkeypatch):
    from pipeline.engine.regularizers import L2

    monkeypatch.setattr(L2, "grad", lambda self, w: 0.0 * w)
    assert worst_error(regularizer="l2", strength=0.5) > 1e-3


def test_zero_gradients_pass_only_when_both_sides_are_zero():
    # identity + batch norm: a shift before the next batch norm cancels, so beta's gradient is exactly 0
    assert worst_error("identity", batch_norm=True) < TOL


def test_kinks_are_avoided_not_ignored():
    rng = np.random.default_rng(0)
    net = MLP(3, 2, 2, 5, make_activation("relu"), make_initializer("zeros"), rng, np.float64)
    x, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    with pytest.raises(ValueError, match="kink"):
        away_from_kinks(net, make_loss("cross_entropy"), x, y, 1e-4)


def test_float32_networks_are_refused():
    rng = np.random.default_rng(0)
    net = MLP(3, 2, 1, 4, make_activation("tanh"), make_initializer("xavier_normal"), rng, np.float32)
    with pytest.raises(ValueError, match="float64"):
        check_gradients(net, make_loss("mse"), None, rng.standard_normal((4, 3)), np.zeros(4, dtype=int))
