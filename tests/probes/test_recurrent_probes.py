"""The probes on a recurrent net: per-tensor gradient norms and update ratios, the gradient through time."""

import math

import numpy as np
import pytest

from pipeline.engine import RecurrentNet, Trainer, make_activation, make_initializer, make_loss, make_optimizer
from pipeline.probes import ProbeSet
from pipeline.probes.recurrent import per_step_factor


def trainer(cell="rnn", gain=1.0, bptt=None, activation="tanh", seed=0):
    net = RecurrentNet(
        3,
        2,
        6,
        cell,
        make_initializer("xavier_normal"),
        np.random.default_rng(seed),
        np.float64,
        activation=make_activation(activation),
        recurrent_gain=gain,
        bptt=bptt,
    )
    return Trainer(net, make_loss("cross_entropy"), make_optimizer("sgd", decay_keys=net.weight_keys, lr=0.1))


def batch(steps=12, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((16, steps, 3)), rng.integers(0, 2, 16)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_gradient_norms_and_update_ratios_per_tensor_and_per_layer(cell):
    t = trainer(cell)
    x, y = batch()
    before = {k: v.copy() for k, v in t.net.params.items()}
    t.step(x, y, track_updates=True)
    m = ProbeSet(t.net, t, x).measure()
    g = t.net.grads
    assert m["grad_norm/W_hh"] == pytest.approx(np.linalg.norm(g["layer_01.W_hh"]))
    assert m["grad_norm/W_xh"] == pytest.approx(np.linalg.norm(g["layer_01.W_xh"]))
    assert m["grad_norm/layer_01"] == pytest.approx(math.hypot(m["grad_norm/W_hh"], m["grad_norm/W_xh"]))
    assert m["grad_norm/layer_02"] == pytest.approx(np.linalg.norm(g["layer_02.W"]))
    for name in ("W_hh", "W_xh"):
        key = f"layer_01.{name}"
        expected = np.linalg.norm(t.net.params[key] - before[key]) / np.linalg.norm(before[key])
        assert m[f"update_ratio/{name}"] == pytest.approx(expected, rel=1e-6)
    w = np.concatenate([before["layer_01.W_xh"].ravel(), before["layer_01.W_hh"].ravel()])
    dw = np.concatenate([(t.net.params[k] - before[k]).ravel() for k in ("layer_01.W_xh", "layer_01.W_hh")])
    assert m["update_ratio/layer_01"] == pytest.approx(np.linalg.norm(dw) / np.linalg.norm(w), rel=1e-6)
    assert m["act_std/layer_01"] > 0 and "sparsity/total" in m and "spectral_norm/layer_01" in m


def test_grad_time_ratio_is_the_first_steps_gradient_over_the_last():
    t = trainer("rnn")
    x, y = batch()
    t.step(x, y)
    m = ProbeSet(t.net, t, x, instruments=["grad_time"]).measure()
    norms = t.net.cell.dh_norms
    assert m["grad_time_ratio"] == pytest.approx(norms[0] / norms[-1])
    assert set(m) == {"grad_time_ratio", "grad_time_factor"}


def test_the_fitted_factor_recovers_a_geometric_decay():
    norms = 3.0 * 0.7 ** (9 - np.arange(10))  # ||dL/dh_t|| = 3 * 0.7^(T - t)
    assert per_step_factor(norms) == pytest.approx(0.7)
    norms[:4] = 0.0  # a truncated backward: fitted over the steps it reached
    assert per_step_factor(norms) == pytest.approx(0.7)
    assert math.isnan(per_step_factor(np.array([0.0, 0.0, 1.0])))


def test_linear_rnn_gradient_through_time_follows_the_spectral_radius():
    """A linear RNN with W_hh = rho * orthogonal: dL/dh_{t-1} = dL/dh_t W_hh^T, so the factor is exactly rho."""
    for rho in (0.5, 1.0, 1.5):
        t = trainer("rnn", gain=rho, activation="identity")
        x, y = batch(steps=10)
        t.step(x, y)
        m = ProbeSet(t.net, t, x, instruments=["grad_time"]).measure()
        assert m["grad_time_factor"] == pytest.approx(rho, rel=1e-6)
        assert m["grad_time_ratio"] == pytest.approx(rho**9, rel=1e-6)


def test_truncated_bptt_logs_the_factor_but_no_ratio():
    t = trainer("lstm", bptt=4)
    x, y = batch()
    t.step(x, y)
    m = ProbeSet(t.net, t, x, instruments=["grad_time"]).measure()
    assert "grad_time_ratio" not in m and math.isfinite(m["grad_time_factor"])


def test_grad_time_does_not_apply_to_an_mlp():
    from pipeline.engine import MLP

    net = MLP(3, 2, 2, 4, make_activation("tanh"), make_initializer("xavier_normal"), np.random.default_rng(0))
    assert not [p for p in ProbeSet(net, None, None, instruments=["grad_time"]).probes]


def test_on_the_probe_batch_from_step_0_and_after_the_step_s_gradient_probes():
    t = trainer("lstm")
    x, y = batch(seed=2)
    px, py = batch(seed=3)
    probes = ProbeSet(t.net, t, px, probe_y=py)
    at_init = probes.measure(before_training=True)
    assert "grad_norm/total" not in at_init and math.isfinite(at_init["grad_time_ratio"])
    t.step(x, y)
    step_grads = {k: g.copy() for k, g in t.net.grads.items()}
    m = probes.measure()
    # the step's gradient probes read the step's gradients, measured before grad_time's own backward
    assert m["grad_norm/W_hh"] == pytest.approx(np.linalg.norm(step_grads["layer_01.W_hh"]))
    # grad_time: the probe batch's gradient through time, the same whatever batch the step trained on
    reference = trainer("lstm")
    for k, v in t.net.params.items():
        reference.net.params[k][...] = v
    _, d = reference.loss(reference.net.forward(px), py)
    reference.net.backward(d)
    norms = reference.net.cell.dh_norms
    assert m["grad_time_ratio"] == pytest.approx(norms[0] / norms[-1])
    assert m["grad_time_factor"] == pytest.approx(per_step_factor(norms))


def test_dead_units_on_training_batches_count_every_step_of_the_probe_batch_size():
    from pipeline.probes.activations import DeadUnits

    t = trainer("rnn", activation="relu")
    px, _ = batch(steps=12)
    probes = ProbeSet(t.net, t, px, source="train_batch")
    (dead,) = [p for p in probes.probes if isinstance(p, DeadUnits)]
    assert dead.window == 16 * 12  # the probe batch's sequences times their steps: rows of (batch*time, H)


def test_spectral_radius_is_the_recurrent_gain_at_init_and_per_gate_for_the_lstm():
    m = ProbeSet(trainer("rnn", gain=1.5).net, None, None, instruments=["spectral_radius"]).measure()
    assert m == {"spectral_radius/W_hh": pytest.approx(1.5)}
    t = trainer("lstm", gain=0.8)
    t.net.cell.params["W_hh"][:, 6:12] *= 2.0  # the forget gate's block (H = 6): radius 1.6
    m = ProbeSet(t.net, None, None, instruments=["spectral_radius"]).measure()
    assert m["spectral_radius/W_hh_i"] == pytest.approx(0.8) and m["spectral_radius/W_hh_f"] == pytest.approx(1.6)
    assert m["spectral_radius/W_hh"] == pytest.approx(1.6)


@pytest.mark.parametrize("activation,rms", [("identity", 1.0), ("relu", None), ("tanh", None)])
def test_the_theory_factor_is_sigma_max_times_the_rms_derivative_and_predicts_the_measured_one(activation, rms):
    t = trainer("rnn", gain=1.2, activation=activation)
    x, y = batch(steps=30)
    m = ProbeSet(t.net, t, x, probe_y=y, instruments=["grad_time_theory", "grad_time"]).measure(before_training=True)
    z, a = t.net.cell.cache["z"], t.net.cell.cache["a"]
    expected = 1.2 * (rms or float(np.sqrt(np.mean(t.net.activation.grad(z, a) ** 2))))
    assert m["grad_time_theory"] == pytest.approx(expected, rel=1e-6)
    # at init (W_hh scaled orthogonal) the estimate is within 15% of the factor measured through the gradients
    assert m["grad_time_factor"] == pytest.approx(m["grad_time_theory"], rel=0.15)


def test_forget_gate_and_cell_state_of_the_lstm_on_the_probe_batch():
    t = trainer("lstm")
    px, py = batch(seed=4)
    m = ProbeSet(t.net, t, px, probe_y=py, instruments=["forget_gate", "cell_state"]).measure(before_training=True)
    # the reference: the gates by hand from the parameters, on the probe batch
    cell, h = t.net.cell, 6
    hs, cs, fs = np.zeros((16, h)), np.zeros((16, h)), []
    norms = []
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for s in range(px.shape[1]):
        pre = px[:, s] @ cell.params["W_xh"] + hs @ cell.params["W_hh"] + cell.params["b"]
        i, f, o, g = sig(pre[:, :h]), sig(pre[:, h : 2 * h]), sig(pre[:, 2 * h : 3 * h]), np.tanh(pre[:, 3 * h :])
        cs = f * cs + i * g
        hs = o * np.tanh(cs)
        fs.append(f)
        norms.append(np.linalg.norm(cs, axis=1))
    assert m["forget_gate/mean"] == pytest.approx(np.mean(fs), rel=1e-9)
    assert m["cell_state/norm"] == pytest.approx(np.mean(norms), rel=1e-9)
    assert 0.6 < m["forget_gate/mean"] < 0.85  # sigmoid(1.0) = 0.73: the default forget bias


def test_the_lstm_probes_do_not_apply_to_the_rnn_nor_the_rnn_ones_to_the_lstm():
    names = ["forget_gate", "cell_state", "grad_time_theory", "spectral_radius", "saturation"]
    on = {
        cell: {p.name for p in ProbeSet(trainer(cell).net, None, batch()[0], instruments=names).probes}
        for cell in ("rnn", "lstm")
    }
    assert on["rnn"] == {"grad_time_theory", "spectral_radius", "saturation"}
    assert on["lstm"] == {"forget_gate", "cell_state", "spectral_radius"}
    # asked for where they say nothing, the run's probes_skipped tag says why; an MLP is told nothing of them
    assert set(ProbeSet(trainer("rnn").net, None, batch()[0], instruments=names).skipped) == {
        "forget_gate",
        "cell_state",
    }
    from pipeline.engine import MLP

    mlp = MLP(3, 2, 2, 4, make_activation("tanh"), make_initializer("xavier_normal"), np.random.default_rng(0))
    assert not ProbeSet(mlp, None, batch()[0][:, 0], instruments=names).skipped


def test_hidden_state_saturation_is_the_share_of_h_near_tanh_s_bounds():
    """saturation/layer_01 of a tanh RNN counts every step of every example: |h| > 0.949 (tanh' < 0.1)."""
    t = trainer("rnn", gain=3.0)
    x, _ = batch(steps=20)
    m = ProbeSet(t.net, None, x, instruments=["saturation"]).measure()
    h = t.net.cell.cache["hs"][:, 1:]  # (batch, time, H)
    assert m["saturation/layer_01"] == pytest.approx(np.mean(1 - h**2 < 0.1))
    assert m["saturation/layer_01"] > 0.4  # radius 3: driven towards the bounds (0 at radius 0.1, below)
    t = trainer("rnn", gain=0.1)
    assert ProbeSet(t.net, None, x, instruments=["saturation"]).measure()["saturation/layer_01"] < 0.1


def test_every_measurement_keeps_its_row_of_norms_for_the_heat_map():
    from pipeline.probes.recurrent import GradientThroughTime

    t = trainer("rnn")
    x, y = batch(steps=7)
    probes = ProbeSet(t.net, t, x, probe_y=y, instruments=["grad_time"])
    probes.measure(before_training=True)
    t.step(x, y)
    probes.measure()
    (probe,) = [p for p in probes.probes if isinstance(p, GradientThroughTime)]
    assert len(probe.trace) == 2 and probe.trace[1].shape == (7,)
    np.testing.assert_array_equal(probe.trace[1], t.net.cell.dh_norms)
    assert not np.array_equal(probe.trace[0], probe.trace[1])  # a copy per measurement, before and after the step
