import numpy as np
import pytest

from pipeline.engine.activations import ACTIVATIONS, make_activation

NAMES = list(ACTIVATIONS)


@pytest.mark.parametrize("name", NAMES)
def test_grad_matches_finite_difference_away_from_zero(name):
    act = make_activation(name, slope=0.1, alpha=0.7)
    z = np.linspace(-4, 4, 81)
    z = z[np.abs(z) > 1e-3]
    h = 1e-6
    numeric = (act.fn(z + h) - act.fn(z - h)) / (2 * h)
    np.testing.assert_allclose(act.grad(z), numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(act.grad(z, act.fn(z)), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_max_grad_bounds_the_derivative(name):
    act = make_activation(name, slope=0.1, alpha=0.7)
    z = np.linspace(-10, 10, 2001)
    assert act.grad(z).max() <= act.max_grad + 1e-12
    assert act.grad(z).max() >= act.max_grad - 1e-3


def test_sigmoid_constants_behind_the_vanishing_gradient_lesson():
    s = make_activation("sigmoid")
    assert s.grad(np.array([0.0]))[0] == 0.25 == s.grad_at_zero == s.max_grad
    assert s.grad_at_zero**10 == pytest.approx(9.5367e-7, rel=1e-4)  # the 0.25^10 of a 10-layer chain


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name):
    act = make_activation(name)
    z = np.linspace(-3, 3, 7, dtype=np.float32)
    a = act.fn(z)
    assert a.dtype == np.float32
    assert act.grad(z, a).dtype == np.float32
    assert act.backprop(np.ones_like(z), z, a).dtype == np.float32


def test_extreme_inputs_do_not_overflow():
    z = np.array([-1e4, -800.0, 0.0, 800.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for name in NAMES:
            act = make_activation(name)
            assert np.all(np.isfinite(act.fn(z)))
            assert np.all(np.isfinite(act.grad(z)))


def test_relu_family_and_kinks():
    assert make_activation("relu").relu_family and make_activation("leaky_relu").relu_family
    assert not make_activation("elu").relu_family
    assert make_activation("elu", alpha=1.0).kink_at_zero is False
    assert make_activation("elu", alpha=0.5).kink_at_zero is True
    assert make_activation("leaky_relu", slope=0.2).negative_slope == 0.2


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*sigmoid.*relu"):
        make_activation("swish")
