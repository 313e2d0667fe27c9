import numpy as np
import pytest

from pipeline.data.sources import load, split_standardize
from pipeline.engine import (
    MLP,
    GradientClipper,
    Trainer,
    global_norm,
    make_activation,
    make_initializer,
    make_loss,
    make_optimizer,
    make_regularizer,
    minibatches,
)
from pipeline.harness.seeding import rng_for


def make_net(
    seed=0, activation="relu", init="he_normal", depth=2, width=16, in_dim=8, out_dim=3, dtype=np.float32, **kw
):
    return MLP(
        in_dim,
        out_dim,
        depth,
        width,
        make_activation(activation),
        make_initializer(init),
        rng_for(seed, "init"),
        dtype,
        **kw,
    )


def make_trainer(net, optimizer="sgd", regularizer=None, clipper=None, **opt):
    return Trainer(
        net,
        make_loss("cross_entropy"),
        make_optimizer(optimizer, decay_keys=net.weight_keys, **opt),
        regularizer,
        clipper or GradientClipper(),
    )


def toy_batch(n=32, in_dim=8, classes=3, dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, in_dim)).astype(dtype), rng.integers(0, classes, n)


def test_zero_init_relu_gives_exactly_zero_weight_gradients():
    net = make_net(init="zeros")
    x, y = toy_batch()
    _, d = make_loss("cross_entropy")(net.forward(x), y)
    net.backward(d)
    assert all(not net.grads[k].any() for k in net.weight_keys)
    assert net.grads["layer_03.b"].any()  # the output bias still learns the class prior


def test_same_seed_gives_bit_identical_weights_after_10_steps():
    def train(seed):
        net = make_net(seed, batch_norm=True)
        trainer = make_trainer(net, "adam", lr=0.01)
        x, y = toy_batch(64)
        batches = rng_for(seed, "batches")
        for _ in range(5):  # 2 batches of 32 per epoch: 10 steps
            for idx in minibatches(len(x), 32, batches):
                trainer.step(x[idx], y[idx])
        return {k: v.copy() for k, v in net.params.items()}

    a, b, c = train(0), train(0), train(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_sgd_l2_equals_sgd_weight_decay_exactly():
    lam = 0.05
    x, y = toy_batch()
    n1, n2 = make_net(), make_net()
    t1 = make_trainer(n1, "sgd", lr=0.1, regularizer=make_regularizer("l2", lam))
    t2 = make_trainer(n2, "sgd", lr=0.1, weight_decay=lam)
    for _ in range(10):
        t1.step(x, y), t2.step(x, y)
    assert all(np.array_equal(n1.params[k], n2.params[k]) for k in n1.params)
    assert not np.array_equal(n1.params["layer_01.W"], make_net().params["layer_01.W"])


def test_adam_l2_differs_from_adamw():
    lam = 0.05
    x, y = toy_batch()
    n1, n2, n3 = make_net(), make_net(), make_net()
    adam_l2 = make_trainer(n1, "adam", lr=0.01, regularizer=make_regularizer("l2", lam))
    adamw = make_trainer(n2, "adamw", lr=0.01, weight_decay=lam)
    adam_coupled = make_trainer(n3, "adam", lr=0.01, weight_decay=lam)
    for _ in range(10):
        adam_l2.step(x, y), adamw.step(x, y), adam_coupled.step(x, y)
    w1, w2, w3 = (n.params["layer_01.W"] for n in (n1, n2, n3))
    assert np.abs(w1 - w2).max() > 1e-3  # L2 inside Adam is rescaled by 1/sqrt(v); decoupled decay is not
    assert np.array_equal(w1, w3)  # Adam's own weight_decay is the coupled (l2) kind


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_float32_throughout_a_step(optimizer):
    net = make_net(batch_norm=True)
    trainer = make_trainer(
        net,
        optimizer,
        regularizer=make_regularizer("elastic", 0.01),
        clipper=GradientClipper(max_norm=1.0, max_value=0.5),
    )
    x, y = toy_batch()
    trainer.step(x, y)
    for layer in net.layers:
        assert layer.cache["z"].dtype == layer.cache["a"].dtype == layer.dz.dtype == np.float32
    assert all(v.dtype == np.float32 for v in [*net.params.values(), *net.grads.values()])
    assert all(s.dtype == np.float32 for st in trainer.optimizer.state.values() for s in st.values())


def test_norm_clipping_scales_to_max_norm_and_keeps_the_raw_gradient():
    net = make_net()
    trainer = make_trainer(net, "sgd", lr=0.0, clipper=GradientClipper(max_norm=1e-3))
    x, y = toy_batch()
    trainer.step(x, y)
    raw = global_norm(trainer.preclip_grads.values())
    assert trainer.last_grad_norm == pytest.approx(raw, rel=1e-6)
    assert raw > 1e-3
    assert global_norm(net.grads.values()) == pytest.approx(1e-3, rel=1e-4)
    k = "layer_01.W"  # clipping is a uniform rescale: directions are kept
    np.testing.assert_allclose(net.grads[k] * (raw / 1e-3), trainer.preclip_grads[k], rtol=1e-3, atol=1e-9)


def test_value_clipping_bounds_every_entry_and_never_raises_a_norm():
    grads = {"a": np.array([3.0, -0.2, -7.0]), "b": np.array([[0.5, 2.0]])}
    before = global_norm(grads.values())
    assert GradientClipper(max_value=1.0)(grads) == pytest.approx(before)
    assert max(np.abs(g).max() for g in grads.values()) <= 1.0
    assert global_norm(grads.values()) <= before


def test_small_gradients_are_left_alone_by_norm_clipping():
    grads = {"a": np.array([0.3, 0.4])}
    GradientClipper(max_norm=1.0)(grads)
    np.testing.assert_array_equal(grads["a"], [0.3, 0.4])


def test_clipper_refuses_non_positive_thresholds():
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        GradientClipper(max_norm=0.0)


def test_minibatches_cover_every_example_once():
    batches = list(minibatches(10, 3, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(np.concatenate(batches)) == list(range(10))
    assert [len(b) for b in minibatches(10, None, np.random.default_rng(0))] == [10]


def test_digits_reaches_95_percent_within_30_epochs():
    """2x128 ReLU + Adam on digits, stratified 80/20, standardized (MLPClassifier: about 0.97-0.98)."""
    X, y = load("digits")
    data = split_standardize(X, y, test_size=0.2, val_size=0.0, seed=0)
    net = MLP(64, 10, 2, 128, make_activation("relu"), make_initializer("he_normal"), rng_for(0, "init"))
    trainer = make_trainer(net, "adam", lr=1e-3)
    batches = rng_for(0, "batches")
    for _ in range(30):
        for idx in minibatches(len(data.y_train), 64, batches):
            trainer.step(data.x_train[idx], data.y_train[idx])
    _, acc = trainer.evaluate(data.x_test, data.y_test)
    assert acc >= 0.95
