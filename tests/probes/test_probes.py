"""Probe definitions on hand-built cases where the right answer is known."""

import math

import numpy as np
import pytest

from pipeline.analysis.theory import predicted_act_var
from pipeline.engine import MLP, Trainer, make_activation, make_initializer, make_loss, make_optimizer
from pipeline.probes import ProbeContext, ProbeSet
from pipeline.probes.activations import ActivationStats, DeadUnits, Saturation
from pipeline.probes.gradients import GradNorm, GradStd, UpdateRatio
from pipeline.probes.weights import Sparsity, SpectralNorm, WeightNorm


def net_of(activation="relu", depth=2, width=4, in_dim=3, out_dim=2, init="he_normal", seed=0, dtype=np.float64):
    return MLP(
        in_dim,
        out_dim,
        depth,
        width,
        make_activation(activation),
        make_initializer(init),
        np.random.default_rng(seed),
        dtype,
    )


def test_dead_units_exact_share():
    net = net_of("relu", depth=1, width=4)
    w = net.layers[0].params["W"]
    w[:, 0] = -1.0  # with inputs >= 0.1 these two units never fire
    w[:, 1] = -2.0
    w[:, 2:] = 1.0
    x = np.random.default_rng(0).uniform(0.1, 1.0, (50, 3))
    m = DeadUnits().measure(ProbeContext(net, probe_x=x))
    assert m["dead_relu/layer_01"] == 0.5 and m["dead_relu/total"] == 0.5


def test_one_live_example_keeps_a_unit_alive():
    net = net_of("relu", depth=1, width=2)
    net.layers[0].params["W"][:] = [[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]
    x = np.zeros((10, 3))
    x[:, 0] = -1.0
    x[3, 0] = 1.0  # unit 0 fires on example 3 only; unit 1 on all but example 3
    assert DeadUnits().measure(ProbeContext(net, probe_x=x))["dead_relu/layer_01"] == 0.0


def test_saturated_tanh_layer():
    net = net_of("tanh", depth=1, width=8)
    net.layers[0].params["W"][:] *= 100.0  # |z| >> 1: tanh'(z) = 1 - tanh^2 ~ 0
    x = np.random.default_rng(1).standard_normal((64, 3))
    saturated = Saturation().measure(ProbeContext(net, probe_x=x))["saturation/layer_01"]
    z = x @ net.layers[0].params["W"] + net.layers[0].params["b"]
    assert saturated == pytest.approx(np.mean(1 - np.tanh(z) ** 2 < 0.1))
    assert saturated > 0.9
    net.layers[0].params["W"][:] /= 1e4  # |z| << 1: nothing saturates
    assert Saturation().measure(ProbeContext(net, probe_x=x))["saturation/layer_01"] == 0.0


def test_saturation_and_dead_apply_to_their_families_only():
    assert not Saturation().applies(net_of("relu")) and Saturation().applies(net_of("sigmoid"))
    assert DeadUnits().applies(net_of("leaky_relu")) and not DeadUnits().applies(net_of("elu"))
    names = {type(p).__name__ for p in ProbeSet(net_of("tanh"), probe_x=np.zeros((2, 3))).probes}
    assert "Saturation" in names and "DeadUnits" not in names


def stepped(activation="tanh", clip=None):
    from pipeline.engine import GradientClipper

    net = net_of(activation, depth=3, width=5)
    trainer = Trainer(
        net, make_loss("cross_entropy"), make_optimizer("sgd", lr=0.5), clipper=GradientClipper(max_norm=clip)
    )
    rng = np.random.default_rng(2)
    trainer.step(rng.standard_normal((16, 3)), rng.integers(0, 2, 16), track_updates=True)
    return net, trainer


def test_grad_norm_is_the_preclip_gradient_norm():
    net, trainer = stepped(clip=1e-3)
    m = GradNorm().measure(ProbeContext(net, trainer))
    for i in range(1, 5):
        assert m[f"grad_norm/layer_0{i}"] == pytest.approx(np.linalg.norm(trainer.preclip_grads[f"layer_0{i}.W"]))
    assert m["grad_norm/total"] == pytest.approx(trainer.last_grad_norm)
    assert m["grad_norm/total"] > 1e-2  # the clipped gradient (norm 1e-3) is not what is reported


def test_grad_std_and_update_ratio():
    net, trainer = stepped()
    m = {**GradStd().measure(ProbeContext(net, trainer)), **UpdateRatio().measure(ProbeContext(net, trainer))}
    assert m["grad_std/layer_02"] == pytest.approx(np.std(net.layers[1].dz))
    w0 = net.layers[1].params["W"] - trainer.updates["layer_02.W"]
    expected = np.linalg.norm(net.layers[1].params["W"] - w0) / np.linalg.norm(w0)
    assert m["update_ratio/layer_02"] == pytest.approx(expected)
    # plain SGD: the update is lr * gradient
    assert m["update_ratio/layer_02"] == pytest.approx(
        0.5 * np.linalg.norm(net.grads["layer_02.W"]) / np.linalg.norm(w0)
    )


def test_spectral_norm_power_iteration_matches_svd():
    net = net_of("relu", depth=3, width=40, in_dim=30)
    ctx = ProbeContext(net)
    exact = SpectralNorm(exact=True).measure(ctx)
    approx_probe = SpectralNorm()
    approx = approx_probe.measure(ctx)
    for k in exact:
        assert approx[k] == pytest.approx(exact[k], rel=1e-2)
    for layer in net.layers:  # a small change: the warm start keeps up
        layer.params["W"] *= 1.1
    again = approx_probe.measure(ctx)
    for k in exact:
        assert again[k] == pytest.approx(1.1 * exact[k], rel=1e-2)


def test_weight_norm_and_sparsity():
    net = net_of("relu", depth=1, width=4)
    net.layers[0].params["W"][:] = 0.0
    net.layers[0].params["W"][0, 0] = 3.0
    net.layers[1].params["W"][:] = 5e-4
    ctx = ProbeContext(net)
    assert WeightNorm().measure(ctx)["weight_norm/layer_01"] == 3.0
    total = 12 + 8
    assert Sparsity().measure(ctx)["sparsity/total"] == pytest.approx((total - 1) / total)


def test_activation_stats_on_the_probe_batch_in_eval_mode():
    net = MLP(
        3,
        2,
        1,
        4,
        make_activation("relu"),
        make_initializer("he_normal"),
        np.random.default_rng(0),
        np.float64,
        batch_norm=True,
    )
    x = np.random.default_rng(3).standard_normal((20, 3))
    running = net.layers[0].norm.running_mean.copy()
    m = ActivationStats().measure(ProbeContext(net, probe_x=x))
    np.testing.assert_array_equal(net.layers[0].norm.running_mean, running)  # probing does not train BN
    a = net.forward(x, train=False)
    assert m["act_mean/layer_02"] == pytest.approx(a.mean()) and m["act_std/layer_02"] == pytest.approx(a.std())


def test_probes_return_every_documented_key_per_layer():
    net, trainer = stepped("relu")
    m = ProbeSet(net, trainer, np.random.default_rng(0).standard_normal((32, 3))).measure()
    for prefix in ("grad_norm", "grad_std", "weight_norm", "spectral_norm", "update_ratio", "act_mean", "act_std"):
        assert [k for k in m if k.startswith(prefix + "/layer_")] == [f"{prefix}/layer_0{i}" for i in range(1, 5)]
    assert [k for k in m if k.startswith("dead_relu/layer_")] == [f"dead_relu/layer_0{i}" for i in range(1, 4)]
    assert {"grad_norm/total", "dead_relu/total", "sparsity/total"} <= set(m)
    assert all(0.0 <= m[k] <= 1.0 for k in m if k.startswith(("dead_relu", "sparsity")))


@pytest.mark.parametrize(
    "activation,init",
    [("relu", "xavier_normal"), ("relu", "he_normal"), ("tanh", "xavier_normal"), ("sigmoid", "standard")],
)
def test_theory_predicts_the_measured_activation_scale(activation, init):
    """Mean over initializations; one 6-layer, 512-wide draw (3 seeds) stays within 15% of it."""
    ratios = []
    for seed in range(3):
        net = net_of(activation, depth=6, width=512, in_dim=512, init=init, seed=seed)
        theory = predicted_act_var(net, init, {})
        x = np.random.default_rng(0).standard_normal((512, 512))
        measured = ActivationStats().measure(ProbeContext(net, probe_x=x))["act_std/layer_06"]
        ratios.append(measured / math.sqrt(theory[5]))
    assert math.exp(np.mean(np.log(ratios))) == pytest.approx(1.0, abs=0.15)


def test_no_theory_for_deterministic_inits():
    assert predicted_act_var(net_of("tanh", init="zeros"), "zeros", {}) is None


def test_the_configured_instruments_and_only_they_are_measured():
    net, trainer = stepped("relu")
    x = np.random.default_rng(0).standard_normal((32, 3))
    m = ProbeSet(net, trainer, x, instruments=["grad_norm", "dead_units"]).measure()
    assert {k.split("/")[0] for k in m} == {"grad_norm", "dead_relu"}
    every = ProbeSet(net, trainer, x).measure()
    assert {k.split("/")[0] for k in every} >= {
        "grad_norm",
        "grad_std",
        "update_ratio",
        "weight_norm",
        "spectral_norm",
        "sparsity",
        "act_mean",
        "act_std",
        "dead_relu",
    }
    with pytest.raises(ValueError, match="unknown probes"):
        ProbeSet(net, trainer, x, instruments=["grad_nrom"])


def test_every_named_set_in_conf_lists_known_instruments():
    from pipeline.harness.paths import CONF_DIR
    from pipeline.harness.validate import validate
    from pipeline.probes import INSTRUMENTS
    from tests.helpers import config

    for path in (CONF_DIR / "probes").glob("*.yaml"):
        cfg = config(f"probes={path.stem}")
        validate(cfg)
        assert set(cfg.probes.instruments) <= set(INSTRUMENTS), path
    assert config("probes=gradients").probes.instruments != config("probes=default").probes.instruments
