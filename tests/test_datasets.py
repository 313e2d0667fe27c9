import numpy as np
import pytest

from pipeline.data.sources import SOURCES, load, split_standardize


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_source_splits_stratified_and_standardized(name):
    X, y = load(name, n_samples=300, noise=0.1, seed=0)
    s = split_standardize(X, y, test_size=0.2, val_size=0.1, seed=0)
    n = len(X)
    assert len(s.x_train) + len(s.x_val) + len(s.x_test) == n
    assert abs(len(s.x_test) - 0.2 * n) <= 1 and abs(len(s.x_val) - 0.1 * n) <= 2
    # per feature (for sequences over every step of every sequence)
    np.testing.assert_allclose(s.x_train.reshape(-1, X.shape[-1]).mean(axis=0), 0.0, atol=1e-5)
    if y.dtype.kind == "f":  # regression (adding): real targets, split at random and not standardized
        assert s.regression and s.out_dim == 1 and s.x_train.dtype == np.float32
        return
    # stratified: every split keeps the class shares within one example of the whole
    shares = np.bincount(y) / n
    for ys in (s.y_train, s.y_test):
        assert np.all(np.abs(np.bincount(ys, minlength=len(shares)) - shares * len(ys)) <= 1.5)
    assert s.x_train.dtype == np.float32 and s.n_classes == len(shares)


def test_same_seed_same_data():
    a, b = load("spiral", 150, 0.2, seed=3), load("spiral", 150, 0.2, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], load("spiral", 150, 0.2, seed=4)[0])


def test_unknown_data_set():
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*digits"):
        load("mnist")
