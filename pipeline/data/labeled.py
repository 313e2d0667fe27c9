"""Few labels: a run trains on the first `data.n_labeled` examples of a stratified ordering of the training split.

The ordering is drawn from `data.seed` (its own stream: the split's shuffles use the seed itself), so the
labeled part is part of the data set, the same for every run seed, and nested: the first 100 hold the first
50. Every class comes once at the head (in a random class order); after that each class keeps its share of
every prefix to within one example (systematic sampling within classes). The prepared set is the same
whatever n: `pretrain` reads every training input, `train` and `init` only the labeled part.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.data.sources import Split
from pipeline.harness.validate import ConfigError

STREAM = 17  # spawn key of the ordering's stream of data.seed


def order(y: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the training indices whose every prefix is stratified (random for real targets)."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(STREAM,)))
    if y.dtype.kind == "f":
        return rng.permutation(len(y))
    keys = np.empty(len(y))  # (n,) each example's place in the ordering, in [-1, 1)
    classes = np.unique(y)
    heads = rng.permutation(len(classes))
    for c, head in zip(classes, heads):
        members = rng.permutation(np.flatnonzero(y == c))
        # member j of a class of n_c at (j + offset) / n_c: any prefix holds n * n_c / n_total of them, +-1
        keys[members] = (np.arange(len(members)) + rng.random()) / len(members)
        keys[members[0]] = -1.0 + head / len(classes)  # one of each class first
    return np.argsort(keys, kind="stable")


def check(n: int | None, y_train: np.ndarray) -> None:
    """n_labeled must fit the training split: at most its size, at least one example per class."""
    if n is None:
        return
    least = 1 if y_train.dtype.kind == "f" else len(np.unique(y_train))
    if not least <= n <= len(y_train):
        raise ConfigError(
            f"data.n_labeled: got {n}; allowed: null (every training example) or {least}..{len(y_train)} "
            f"(the training split holds {len(y_train)} examples" + (f" of {least} classes)" if least > 1 else ")")
        )


def labeled(split: Split, n: int | None, seed: int) -> Split:
    """The split with its training part cut to the first n of `order` (in the split's own order); as is for None."""
    check(n, split.y_train)
    if n is None:
        return split
    keep = np.sort(order(split.y_train, seed)[:n])  # (n,) in the split's own order: batches shuffle anyway
    return dataclasses.replace(split, x_train=split.x_train[keep], y_train=split.y_train[keep])


def n_train(data_cfg, split: Split) -> int:
    """How many training examples a run on `data_cfg` trains on (checked)."""
    n = data_cfg.get("n_labeled")
    check(n, split.y_train)
    return len(split.y_train) if n is None else int(n)
