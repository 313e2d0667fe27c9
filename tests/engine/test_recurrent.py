"""The recurrent engine: BPTT against finite differences, truncation, forget bias, recurrent inits, dtypes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.engine import (
    GradientClipper,
    RecurrentNet,
    Trainer,
    make_activation,
    make_initializer,
    make_loss,
    make_optimizer,
    make_regularizer,
    spectral_radius,
)
from pipeline.engine.gradcheck import analytic_gradients, away_from_kinks, check_gradients, nudge_from_zero
from pipeline.engine.recurrent import recurrent_weights

TOL = 1e-6


def make_net(cell="rnn", activation="tanh", hidden=5, in_dim=4, out_dim=3, dtype=np.float64, seed=0, **kw):
    return RecurrentNet(
        in_dim,
        out_dim,
        hidden,
        cell,
        make_initializer("xavier_normal"),
        np.random.default_rng(seed),
        dtype,
        activation=make_activation(activation) if cell == "rnn" else None,
        **kw,
    )


def problem(regression=False, batch=8, steps=7, in_dim=4, n_classes=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, in_dim))  # (batch, time, features)
    y = rng.standard_normal(batch) if regression else rng.integers(0, n_classes, batch)
    return x, y


CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("rnn", "sigmoid"), ("rnn", "identity"), ("lstm", None)]


@pytest.mark.parametrize("cell,activation", CELLS)
@pytest.mark.parametrize(
    "loss,regularizer",
    [("cross_entropy", "none"), ("mse", "l2"), ("hinge", "l1"), ("mse-regression", "elastic")],
)
def test_bptt_matches_finite_differences(cell, activation, loss, regularizer):
    regression = loss == "mse-regression"
    net = make_net(cell, activation or "tanh", out_dim=1 if regression else 3, recurrent_gain=0.9)
    x, y = problem(regression)
    lossf = make_loss("mse" if regression else loss, regression=regression)
    reg = make_regularizer(regularizer, 0.02)
    nudge_from_zero(net, reg, 1e-2)
    x, y = away_from_kinks(net, lossf, x, y, 1e-2)
    checks = check_gradients(net, lossf, reg, x, y)
    assert {c.name for c in checks} == set(net.params)  # every tensor, W_hh included
    assert max(c.rel_error for c in checks) < TOL
    assert all(c.analytic_norm > 0 for c in checks)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_a_wrong_gradient_is_caught(cell):
    net = make_net(cell)
    x, y = problem()
    lossf = make_loss("cross_entropy")
    original = net.cell.backward

    def broken(dh):
        original(dh)
        net.cell.grads["W_hh"] *= 1.01  # a 1% error in the recurrent gradient only

    net.cell.backward = broken
    errors = {c.name: c.rel_error for c in check_gradients(net, lossf, None, x, y)}
    assert errors["layer_01.W_hh"] > 1e-3
    assert errors["layer_01.W_xh"] < TOL


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_truncated_bptt_is_the_gradient_of_the_last_k_steps_from_a_fixed_state(cell):
    k = 3
    x, y = problem(steps=8)
    lossf = make_loss("cross_entropy")
    truncated, full = make_net(cell, bptt=k), make_net(cell)
    g_trunc = analytic_gradients(truncated, lossf, None, x, y)
    g_full = analytic_gradients(full, lossf, None, x, y)
    # the same forward: the loss and the output layer's gradient agree; the recurrent ones do not
    np.testing.assert_allclose(g_trunc["layer_02.W"], g_full["layer_02.W"])
    assert not np.allclose(g_trunc["layer_01.W_hh"], g_full["layer_01.W_hh"])
    # the stopped state: the last k steps from h_{T-k} (and c_{T-k}) as a constant, by full BPTT
    x_tail, state = truncated.stopped_prefix(x)
    assert x_tail.shape[1] == k
    tail = make_net(cell)
    logits = tail.forward(x_tail, state0=state)
    _, dlogits = lossf(logits, y)
    tail.backward(dlogits)
    for name, g in g_trunc.items():
        np.testing.assert_allclose(g, tail.grads[name], rtol=1e-10, atol=1e-12, err_msg=name)
    # and finite differences of that objective agree (what gradcheck checks for model.bptt)
    assert max(c.rel_error for c in check_gradients(truncated, lossf, None, x, y)) < TOL
    # dL/dh_t is exposed for every t: zero before the window, positive in it
    norms = truncated.cell.dh_norms
    assert norms.shape == (8,)
    assert np.all(norms[: 8 - k] == 0) and np.all(norms[8 - k :] > 0)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_dh_norms_are_the_gradient_norms_reaching_each_hidden_state(cell):
    """||dL/dh_t|| for t = 1..T, checked against finite differences of the loss in an added offset to h_t."""
    x, y = problem(steps=5, batch=4)
    net = make_net(cell)
    lossf = make_loss("cross_entropy")
    analytic_gradients(net, lossf, None, x, y)
    norms = net.cell.dh_norms.copy()
    h = 1e-6
    for t in (0, 2, 4):  # dL/dh_{t+1}: perturb the input of step t+1 through a state offset at step t
        numeric = np.zeros((4, 5))
        for b in range(4):
            for u in range(5):
                vals = []
                for sign in (1.0, -1.0):
                    vals.append(_loss_with_offset(net, lossf, x, y, t, b, u, sign * h))
                numeric[b, u] = (vals[0] - vals[1]) / (2 * h)
        np.testing.assert_allclose(norms[t], np.linalg.norm(numeric), rtol=1e-5)


def _loss_with_offset(net, lossf, x, y, t, b, u, eps):
    """The loss when h_{t+1} (0-based step t's output) of example b, unit u is moved by eps."""
    cell = net.cell
    tail = x[:, t + 1 :]
    net.forward(x[:, : t + 1])
    state = list(cell.state(t + 1))
    state[0][b, u] += eps
    if tail.shape[1] == 0:
        logits = net.output.forward(state[0])
    else:
        logits = net.forward(tail, state0=tuple(state))
    return lossf.value(logits, y)


def test_lstm_forget_bias_defaults_to_one_and_is_configurable():
    hidden = 6
    b = make_net("lstm", hidden=hidden).cell.params["b"]
    assert np.all(b[hidden : 2 * hidden] == 1.0)
    assert np.all(b[:hidden] == 0) and np.all(b[2 * hidden :] == 0)
    b0 = make_net("lstm", hidden=hidden, forget_bias=0.0).cell.params["b"]
    assert np.all(b0 == 0.0)
    assert make_net("lstm", forget_bias=2.5).cell.forget_bias == 2.5


@pytest.mark.parametrize("kind", ["orthogonal", "identity"])
@pytest.mark.parametrize("gain", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("blocks", [1, 4])
def test_recurrent_init_has_the_requested_spectral_radius(kind, gain, blocks):
    w = recurrent_weights(kind, 16, blocks, gain, np.random.default_rng(3), np.float64)
    assert w.shape == (16, 16 * blocks)
    for block in range(blocks):
        assert spectral_radius(w, block) == pytest.approx(gain, rel=1e-10)
        sub = w[:, block * 16 : (block + 1) * 16]
        np.testing.assert_allclose(sub.T @ sub, gain**2 * np.eye(16), atol=1e-12)  # scaled orthogonal
    if kind == "identity":
        np.testing.assert_array_equal(w[:, :16], gain * np.eye(16))


def test_the_net_uses_the_recurrent_init_and_gain():
    net = make_net("rnn", hidden=12, recurrent_init="identity", recurrent_gain=0.8)
    np.testing.assert_array_equal(net.cell.params["W_hh"], 0.8 * np.eye(12))
    net = make_net("lstm", hidden=12, recurrent_gain=1.3)
    assert spectral_radius(net.cell.params["W_hh"], 2) == pytest.approx(1.3)
    with pytest.raises(ValueError, match="recurrent init"):
        make_net("rnn", recurrent_init="xavier")


def test_same_seed_same_net_float32_stays_float32():
    a, b = make_net("lstm", dtype=np.float32, seed=5), make_net("lstm", dtype=np.float32, seed=5)
    for k in a.params:
        assert a.params[k].dtype == np.float32
        np.testing.assert_array_equal(a.params[k], b.params[k])
    x, y = problem()
    logits = a.forward(x.astype(np.float32))
    assert logits.dtype == np.float32
    _, d = make_loss("cross_entropy")(logits, y)
    a.backward(d)
    assert all(g.dtype == np.float32 for g in a.grads.values())
    c = make_net("lstm", dtype=np.float32, seed=6)
    assert not np.array_equal(a.params["layer_01.W_hh"], c.params["layer_01.W_hh"])


def test_float32_gradients_agree_with_float64():
    x, y = problem()
    lossf = make_loss("cross_entropy")
    net64, net32 = make_net("lstm"), make_net("lstm", dtype=np.float32)
    for k, v in net64.params.items():
        net32.params[k][...] = v  # the same weights, rounded to float32
    g64 = analytic_gradients(net64, lossf, None, x, y)
    g32 = analytic_gradients(net32, lossf, None, x.astype(np.float32), y)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=2e-3, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 1.0), ("momentum", 0.1), ("adam", 0.02), ("rmsprop", 0.02)])
def test_the_trainer_trains_a_recurrent_net_with_clipping_and_a_penalty(optimizer, lr):
    """The MLP's Trainer, optimizers, regularizers and clipping work unchanged on the recurrent net."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 2)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int64)  # the label is in the first step: memory through 5 steps
    net = make_net("lstm", in_dim=2, out_dim=2, hidden=8, dtype=np.float32)
    opt = make_optimizer(optimizer, decay_keys=net.weight_keys, lr=lr)
    trainer = Trainer(net, make_loss("cross_entropy"), opt, make_regularizer("l2", 1e-4), GradientClipper(max_norm=5.0))
    first = trainer.evaluate(x, y)[0]
    for _ in range(200):
        trainer.step(x, y, track_updates=True)
    loss, acc = trainer.evaluate(x, y)
    assert loss < 0.1 * first and acc > 0.95
    assert set(trainer.updates) == set(net.weight_keys)
    assert np.isfinite(trainer.last_grad_norm)


def test_regression_loss_is_the_plain_mean_squared_error():
    lossf = make_loss("mse", regression=True)
    assert lossf.regression
    out = np.array([[1.0], [3.0]])
    value, d = lossf(out, np.array([0.0, 1.0]))
    assert value == pytest.approx((1 + 4) / 2)
    np.testing.assert_allclose(d, [[1.0], [2.0]])  # 2 (out - y) / n
    with pytest.raises(ValueError, match="regression"):
        make_loss("cross_entropy", regression=True)


def test_bad_shapes_and_settings_are_refused():
    with pytest.raises(ValueError, match="batch, time, features"):
        make_net().forward(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="bptt"):
        make_net(bptt=0)
    with pytest.raises(ValueError, match="cell"):
        make_net("gru")


def test_forward_is_the_textbook_recurrence():
    """h_T against the equations written out plainly (gate blocks i, f, o, g; the forget gate's bias at 1)."""
    from scipy.special import expit

    x, _ = problem(batch=3, steps=4)
    net = make_net("lstm", hidden=5)
    p = {k.split(".")[1]: v for k, v in net.params.items() if k.startswith("layer_01")}
    h, c = np.zeros((3, 5)), np.zeros((3, 5))
    for t in range(4):
        a = x[:, t] @ p["W_xh"] + h @ p["W_hh"] + p["b"]
        i, f, o, g = expit(a[:, :5]), expit(a[:, 5:10]), expit(a[:, 10:15]), np.tanh(a[:, 15:])
        c = f * c + i * g
        h = o * np.tanh(c)
    np.testing.assert_allclose(net.forward(x), h @ net.params["layer_02.W"] + net.params["layer_02.b"], rtol=1e-12)
    np.testing.assert_allclose(net.cell.cache["hs"][:, -1], h, rtol=1e-12)

    net = make_net("rnn", "relu", hidden=5)
    h = np.zeros((3, 5))
    for t in range(4):
        h = np.maximum(
            x[:, t] @ net.params["layer_01.W_xh"] + h @ net.params["layer_01.W_hh"] + net.params["layer_01.b"], 0
        )
    net.forward(x)
    np.testing.assert_allclose(net.cell.cache["hs"][:, -1], h, rtol=1e-12)


@given(
    cell=st.sampled_from(["rnn", "lstm"]),
    # not elu: at alpha 1 its second derivative jumps at 0, where the fourth-order stencil loses its order
    activation=st.sampled_from(["tanh", "sigmoid", "relu", "leaky_relu", "identity"]),
    hidden=st.integers(1, 6),
    in_dim=st.integers(1, 4),
    steps=st.integers(1, 7),
    batch=st.integers(4, 9),
    bptt=st.one_of(st.none(), st.integers(1, 8)),
    gain=st.floats(0.3, 1.8),
    kind=st.sampled_from(["orthogonal", "identity"]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40)
def test_bptt_on_random_shapes(cell, activation, hidden, in_dim, steps, batch, bptt, gain, kind, seed):
    net = make_net(cell, activation, hidden, in_dim, 3, seed=seed, bptt=bptt, recurrent_gain=gain, recurrent_init=kind)
    rng = np.random.default_rng(seed + 1)
    x, y = rng.standard_normal((batch, steps, in_dim)), rng.integers(0, 3, batch)
    lossf = make_loss("cross_entropy")
    try:
        x, y = away_from_kinks(net, lossf, x, y, 1e-2)
    except ValueError:  # every example near a ReLU kink: nothing to check
        return
    assert max(c.rel_error for c in check_gradients(net, lossf, None, x, y)) < TOL


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_cached_states_are_the_textbook_ones_at_every_step(cell):
    """hs, cs, gates (batch, time, ...) and the probes' z, a rows (example b, step t at row b*T + t)."""
    from scipy.special import expit

    b, t, h = 3, 4, 5
    x, _ = problem(batch=b, steps=t)
    net = make_net(cell, hidden=h)
    p = {k.split(".")[1]: v for k, v in net.params.items() if k.startswith("layer_01")}
    net.forward(x)
    cache = net.cell.cache
    hid, c = np.zeros((b, h)), np.zeros((b, h))
    for s in range(t):
        pre = x[:, s] @ p["W_xh"] + hid @ p["W_hh"] + p["b"]  # (batch, G*H)
        if cell == "lstm":
            gates = np.concatenate([expit(pre[:, : 3 * h]), np.tanh(pre[:, 3 * h :])], axis=1)
            np.testing.assert_allclose(cache["gates"][:, s], gates, rtol=1e-12)
            c = gates[:, h : 2 * h] * c + gates[:, :h] * gates[:, 3 * h :]
            hid = gates[:, 2 * h : 3 * h] * np.tanh(c)
            np.testing.assert_allclose(cache["cs"][:, s + 1], c, rtol=1e-12)
            z = c
        else:
            np.testing.assert_allclose(cache["zs"][:, s], pre, rtol=1e-12)
            z, hid = pre, np.tanh(pre)
        np.testing.assert_allclose(cache["hs"][:, s + 1], hid, rtol=1e-12)
        rows = np.arange(b) * t + s  # example b's step s
        np.testing.assert_allclose(cache["z"][rows], z, rtol=1e-12)
        np.testing.assert_allclose(cache["a"][rows], hid, rtol=1e-12)
    assert cache["z"].shape == cache["a"].shape == (b * t, h)


def test_dz_rows_are_each_example_step_in_order():
    """With an identity cell dL/dz_t = dL/dh_t: dz's rows of step t (b*T + t) have the norm dh_norms[t]."""
    b, t = 4, 6
    x, y = problem(batch=b, steps=t)
    net = make_net("rnn", "identity", recurrent_gain=0.7)
    analytic_gradients(net, make_loss("cross_entropy"), None, x, y)
    dz = net.cell.dz.reshape(b, t, -1)  # (batch, time, H)
    np.testing.assert_allclose(np.linalg.norm(dz, axis=(0, 2)), net.cell.dh_norms, rtol=1e-12)
    truncated = make_net("rnn", "identity", recurrent_gain=0.7, bptt=2)
    analytic_gradients(truncated, make_loss("cross_entropy"), None, x, y)
    dz = truncated.cell.dz.reshape(b, t, -1)
    assert np.all(dz[:, : t - 2] == 0) and np.all(np.abs(dz[:, t - 2 :]).sum(axis=(0, 2)) > 0)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_what_the_probes_hold_survives_the_next_forward(cell):
    """The cache's arrays are new each forward: a probe's reference to the last pass's z, a, hs stays as it was."""
    net = make_net(cell)
    x, _ = problem()
    net.forward(x)
    held = {k: net.cell.cache[k] for k in ("z", "a", "hs")}
    copies = {k: v.copy() for k, v in held.items()}
    net.forward(2 * x)
    for k, v in held.items():
        np.testing.assert_array_equal(v, copies[k], err_msg=k)
        assert not np.allclose(net.cell.cache[k], v), k


def test_the_thread_choice_counts_the_per_step_product():
    """A narrow input and a wide LSTM: the per-step product (batch, H) x (H, 4H) is the largest."""
    from pipeline.harness.threads import largest_matmul

    net = make_net("lstm", hidden=256, in_dim=2, out_dim=3)
    assert net.sizes == [2, 256, 1024, 3]
    assert largest_matmul(net.sizes, 64) == 64 * 256 * 1024
