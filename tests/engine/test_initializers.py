import math

import numpy as np
import pytest

from pipeline.engine.initializers import INITIALIZERS, make_initializer


def draw(name, fan_in=1000, fan_out=1000, dtype=np.float64, **params):
    return make_initializer(name, **params)(fan_in, fan_out, np.random.default_rng(0), dtype)


@pytest.mark.parametrize(
    "name,expected_std",
    [
        ("he_normal", math.sqrt(2 / 1000)),
        ("he_uniform", math.sqrt(2 / 1000)),
        ("xavier_normal", math.sqrt(2 / 2000)),
        ("xavier_uniform", math.sqrt(2 / 2000)),
        ("lecun_normal", math.sqrt(1 / 1000)),
        ("standard", math.sqrt(1 / 3000)),  # U[-a, a] has variance a^2 / 3, a = 1/sqrt(fan_in)
        ("orthogonal", math.sqrt(1 / 1000)),
    ],
)
def test_std_within_3_percent_of_the_formula(name, expected_std):
    w = draw(name)
    assert w.shape == (1000, 1000)
    assert abs(w.std() / expected_std - 1) < 0.03
    assert abs(w.mean()) < 0.03 * expected_std * 10


def test_normal_and_uniform_take_their_parameters():
    assert abs(draw("normal", std=0.5).std() / 0.5 - 1) < 0.03
    u = draw("uniform", limit=0.2)
    assert u.min() >= -0.2 and u.max() < 0.2 and abs(u.std() / (0.2 / math.sqrt(3)) - 1) < 0.03


def test_standard_bounds():
    w = draw("standard", fan_in=400, fan_out=30)
    assert np.abs(w).max() <= 1 / math.sqrt(400)


def test_he_gain_follows_leaky_slope_as_pytorch():
    slope = 0.2
    w = draw("he_normal", negative_slope=slope)
    assert abs(w.std() / (math.sqrt(2 / (1 + slope**2)) / math.sqrt(1000)) - 1) < 0.03
    assert abs(draw("he_normal", gain=1.0).std() / math.sqrt(1 / 1000) - 1) < 0.03


@pytest.mark.parametrize("fan_in,fan_out", [(50, 20), (20, 50), (30, 30)])
def test_orthogonal_is_orthogonal_times_gain(fan_in, fan_out):
    w = draw("orthogonal", fan_in, fan_out, gain=2.0)
    small = min(fan_in, fan_out)
    gram = w.T @ w if fan_in >= fan_out else w @ w.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-10)


def test_zeros_and_constant():
    assert not draw("zeros", 3, 4).any()
    assert np.all(draw("constant", 3, 4, value=0.3) == 0.3)


@pytest.mark.parametrize("name", list(INITIALIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_and_shape(name, dtype):
    w = draw(name, 7, 5, dtype=dtype)
    assert w.dtype == dtype and w.shape == (7, 5)


@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_same_seed_same_weights(name):
    np.testing.assert_array_equal(draw(name, 9, 4), draw(name, 9, 4))


def test_unknown_init_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown init 'glorot'.*he_normal"):
        make_initializer("glorot")
