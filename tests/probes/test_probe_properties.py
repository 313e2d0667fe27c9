"""Property-based checks of the probes and clipping over random networks (hypothesis)."""

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pipeline.engine import (
    MLP,
    GradientClipper,
    Trainer,
    global_norm,
    make_activation,
    make_initializer,
    make_loss,
    make_optimizer,
)
from pipeline.probes import ProbeSet

nets = dict(
    activation=st.sampled_from(["sigmoid", "tanh", "relu", "leaky_relu", "elu"]),
    depth=st.integers(1, 4),
    width=st.integers(1, 9),
    batch_norm=st.booleans(),
    init=st.sampled_from(["he_normal", "xavier_uniform", "normal", "zeros", "constant"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 1000),
)


@given(**nets, lr=st.sampled_from([1e-3, 0.1, 10.0]))
def test_shares_are_shares_and_every_layer_is_reported(activation, depth, width, batch_norm, init, dtype, seed, lr):
    rng = np.random.default_rng(seed)
    net = MLP(
        4, 3, depth, width, make_activation(activation), make_initializer(init), rng, dtype, batch_norm=batch_norm
    )
    trainer = Trainer(net, make_loss("cross_entropy"), make_optimizer("sgd", lr=lr))
    x = rng.standard_normal((16, 4)).astype(dtype)
    with np.errstate(all="ignore"):
        trainer.step(x, rng.integers(0, 3, 16), track_updates=True)
        m = ProbeSet(net, trainer, x).measure()
    shares = {k: v for k, v in m.items() if k.startswith(("dead_relu/", "saturation/", "sparsity/"))}
    assert all(0.0 <= v <= 1.0 for v in shares.values() if not math.isnan(v))
    n = depth + 1
    for prefix in ("grad_norm", "weight_norm", "act_std", "update_ratio"):
        assert sorted(k for k in m if k.startswith(prefix + "/layer_")) == [
            f"{prefix}/layer_{i:02d}" for i in range(1, n + 1)
        ]
    assert all(isinstance(v, float) for v in m.values())
    assert all(
        v >= 0
        for k, v in m.items()
        if k.startswith(("grad_norm", "weight_norm", "act_std", "spectral_norm")) and not math.isnan(v)
    )


@given(
    shapes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=4),
    scale=st.floats(1e-3, 1e3),
    max_norm=st.one_of(st.none(), st.floats(1e-3, 10.0)),
    max_value=st.one_of(st.none(), st.floats(1e-3, 10.0)),
    seed=st.integers(0, 1000),
)
def test_clipping_never_increases_a_norm(shapes, scale, max_norm, max_value, seed):
    rng = np.random.default_rng(seed)
    grads = {f"g{i}": rng.standard_normal(s) * scale for i, s in enumerate(shapes)}
    before = {k: np.linalg.norm(g) for k, g in grads.items()}
    total = global_norm(grads.values())
    reported = GradientClipper(max_norm=max_norm, max_value=max_value)(grads)
    assert reported == total
    for k, g in grads.items():
        assert np.linalg.norm(g) <= before[k] * (1 + 1e-12)
    if max_norm is not None:
        assert global_norm(grads.values()) <= max_norm * (1 + 1e-9)
    if max_value is not None:
        assert max(np.abs(g).max() for g in grads.values()) <= max_value
