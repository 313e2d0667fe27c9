"""Data sets by name (scikit-learn's generators plus spiral and xor) and the train/val/test split.

The sources that read data from outside (a user's file, OpenML) are in `external.py`; their names are here
(`READERS`) so that the config checks know every allowed `data.name`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# scikit-learn is imported where a data set is built, not here: a job that loads prepared data (every
# study job) then starts 0.6 s sooner in a fresh worker process.


def _skd():
    from sklearn import datasets

    return datasets


def digits(n_samples, noise, rng, **_):
    """The bundled 8x8 handwritten digits (1,797 images, 10 classes); n_samples and noise unused."""
    return _skd().load_digits(return_X_y=True)


def moons(n_samples, noise, rng, **_):
    return _skd().make_moons(n_samples=n_samples, noise=noise, random_state=_seed(rng))


def circles(n_samples, noise, rng, factor=0.5, **_):
    return _skd().make_circles(n_samples=n_samples, noise=noise, factor=factor, random_state=_seed(rng))


def blobs(n_samples, noise, rng, n_classes=3, n_features=2, **_):
    return _skd().make_blobs(
        n_samples=n_samples, centers=n_classes, n_features=n_features, cluster_std=1.0 + noise, random_state=_seed(rng)
    )


def classification(n_samples, noise, rng, n_classes=3, n_features=20, **_):
    """scikit-learn's make_classification; `noise` is the share of flipped labels."""
    return _skd().make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=min(n_features, 10),
        n_classes=n_classes,
        flip_y=noise,
        random_state=_seed(rng),
    )


def spiral(n_samples, noise, rng, n_classes=3, **_):
    """CS231n's interleaved spirals: not linearly separable, a classic small-MLP test."""
    per = n_samples // n_classes
    r = np.tile(np.linspace(0.0, 1.0, per), n_classes)  # (n,)
    k = np.repeat(np.arange(n_classes), per)  # (n,)
    t = k * 4.0 + r * 4.0 + rng.standard_normal(per * n_classes) * (noise + 1e-12) * 4.0
    X = np.c_[r * np.sin(t), r * np.cos(t)]  # (n, 2)
    return X, k


def xor(n_samples, noise, rng, **_):
    """Points in [-1, 1]^2 labelled by the sign of x0 * x1: the problem a linear model cannot solve."""
    X = rng.uniform(-1.0, 1.0, size=(n_samples, 2))  # (n, 2)
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    X += rng.standard_normal(X.shape) * noise
    return X, y


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


# Sequence tasks for the recurrent nets: X is (n, time, features).


def adding(n_samples, noise, rng, seq_len=50, **_):
    """Hochreiter & Schmidhuber's (1997) adding problem, in Le, Jaitly & Hinton's (2015) form.

    Each of `seq_len` steps carries a value drawn from U[0, 1] and a marker; exactly two steps are marked, one
    in each half, and the target is the sum of their two values. A regression task: the best constant
    predictor (the mean, 1) scores MSE = Var = 2/12 = 0.167, the bar a net must beat by remembering.
    """
    if seq_len < 2:
        raise ValueError(f"adding needs seq_len >= 2, got {seq_len}")
    values = rng.random((n_samples, seq_len))  # (n, T)
    half = seq_len // 2
    first = rng.integers(0, half, n_samples)  # (n,) in the first half
    second = rng.integers(half, seq_len, n_samples)  # (n,) in the second half
    markers = np.zeros((n_samples, seq_len))  # (n, T)
    rows = np.arange(n_samples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]  # (n,)
    return np.stack([values, markers], axis=2), y  # (n, T, 2), (n,)


def remember(n_samples, noise, rng, seq_len=50, n_classes=4, cue_steps=1, **_):
    """Remember the first symbol: the label is shown (one-hot) in the first `cue_steps` steps, then
    `seq_len - cue_steps` steps of Gaussian noise of std `noise` carry nothing; chance is 1 / n_classes.

    The symbol's own steps carry it without noise; the net must hold it through the noise to the read-out.
    """
    if not 1 <= cue_steps <= seq_len:
        raise ValueError(f"remember needs 1 <= cue_steps <= seq_len, got {cue_steps} and {seq_len}")
    y = rng.permutation(np.arange(n_samples) % n_classes)  # (n,) balanced
    X = rng.standard_normal((n_samples, seq_len, n_classes)) * noise  # (n, T, K)
    X[:, :cue_steps] = 0.0
    X[np.arange(n_samples), :cue_steps, y] = 1.0
    return X, y


def seq_digits(n_samples, noise, rng, read="rows", **_):
    """scikit-learn's 8x8 digits read as a sequence: `rows` (8 steps of 8 pixels) or `pixels` (64 steps of 1),
    the small cousin of sequential MNIST. 1,797 images, 10 classes; n_samples and noise unused.
    """
    if read not in READS:
        raise ValueError(f"seq_digits read must be one of {', '.join(READS)}, got {read!r}")
    X, y = _skd().load_digits(return_X_y=True)  # (1797, 64)
    return X.reshape(len(X), *READS[read]), y  # (n, 8, 8) or (n, 64, 1)


READS = {"rows": (8, 8), "pixels": (64, 1)}

SOURCES = {
    f.__name__: f for f in (digits, moons, circles, blobs, classification, spiral, xor, adding, remember, seq_digits)
}
READERS = ("file", "openml")  # data=file (a CSV or .npz) and data=openml (by name): pipeline/data/external.py
SEQUENCES = ("adding", "remember", "seq_digits")  # X is (n, time, features): for model=rnn and model=lstm
REGRESSION = ("adding",)  # real-valued targets (one output, MSE), not class labels


@dataclass
class Split:
    """Standardized features (fitted on train only) and integer labels (real targets for regression) per split.

    Features are (n, features), or (n, time, features) for a sequence task.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return self.x_train.shape[-1]

    @property
    def seq_len(self) -> int | None:
        """Steps per sequence; None for flat features."""
        return self.x_train.shape[1] if self.x_train.ndim == 3 else None

    @property
    def regression(self) -> bool:
        return self.y_train.dtype.kind == "f"

    @property
    def n_classes(self) -> int:
        """Classes (0 for regression)."""
        if self.regression:
            return 0
        return int(max(self.y_train.max(), self.y_val.max(initial=0), self.y_test.max()) + 1)

    @property
    def out_dim(self) -> int:
        """The network's outputs: one per class, one for regression."""
        return 1 if self.regression else self.n_classes


def load(name: str, n_samples: int = 1000, noise: float = 0.1, seed: int = 0, **params):
    """Raw (X, y) of the named source."""
    if name not in SOURCES:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(SOURCES)}")
    X, y = SOURCES[name](n_samples, noise, np.random.default_rng(seed), **params)
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64 if name in REGRESSION else np.int64)


def split_standardize(
    X: np.ndarray, y: np.ndarray, test_size: float, val_size: float, seed: int, dtype=np.float32
) -> Split:
    """Stratified train/val/test split (sizes are shares of all examples), then standardize on train.

    Real targets (regression) are split at random and left as they are. Sequences (n, time, features) are
    standardized per feature over every step of every training sequence: one scale per input channel, the
    same at every step, as the recurrent weights are.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    classes = y.dtype.kind != "f"
    x_rest, x_test, y_rest, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y if classes else None, random_state=seed
    )
    if val_size > 0:
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest,
            y_rest,
            test_size=val_size / (1.0 - test_size),
            stratify=y_rest if classes else None,
            random_state=seed,
        )
    else:
        x_train, y_train = x_rest, y_rest
        x_val, y_val = x_rest[:0], y_rest[:0]
    features = X.shape[-1]
    scaler = StandardScaler().fit(x_train.reshape(-1, features))  # (n * time, features) for sequences

    def scale(a: np.ndarray) -> np.ndarray:
        return (scaler.transform(a.reshape(-1, features)).reshape(a.shape) if len(a) else a).astype(dtype)

    return Split(scale(x_train), y_train, scale(x_val), y_val, scale(x_test), y_test)
