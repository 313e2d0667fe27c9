import numpy as np
import pytest

from pipeline.engine.batchnorm import BatchNorm


def test_train_mode_normalizes_each_feature(rng):
    x = rng.normal(3.0, 5.0, size=(64, 4))
    y = BatchNorm(4, np.float64).forward(x, train=True)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1.0, rtol=1e-4)


def test_running_statistics_follow_pytorch(rng):
    bn = BatchNorm(3, np.float64, momentum=0.1)
    x = rng.normal(2.0, 3.0, size=(10, 3))
    bn.forward(x, train=True)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1))


def test_eval_mode_uses_running_statistics(rng):
    bn = BatchNorm(2, np.float64)
    bn.running_mean[:] = [1.0, -1.0]
    bn.running_var[:] = [4.0, 9.0]
    bn.params["gamma"][:] = [2.0, 1.0]
    bn.params["beta"][:] = [0.5, 0.0]
    x = np.array([[3.0, 2.0]])
    y = bn.forward(x, train=False)
    np.testing.assert_allclose(y, [[2.0 * 2.0 / np.sqrt(4 + 1e-5) + 0.5, 3.0 / np.sqrt(9 + 1e-5)]])
    with pytest.raises(RuntimeError, match="training mode"):
        bn.backward(np.ones_like(y))


def test_one_example_batches_are_refused():
    with pytest.raises(ValueError, match="at least 2 examples"):
        BatchNorm(3).forward(np.ones((1, 3), dtype=np.float32), train=True)


def test_float32_stays_float32(rng):
    bn = BatchNorm(5)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    y = bn.forward(x)
    dx = bn.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == bn.grads["gamma"].dtype == bn.running_var.dtype == np.float32
