"""Activation probes read from the step's own forward (probes.activations=train_batch): same numbers as
describing the cached arrays directly, no probe forward, and dead units judged over a window of examples."""

import numpy as np
import pytest

from pipeline.engine import MLP, Trainer, make_activation, make_initializer, make_loss, make_optimizer
from pipeline.probes import ProbeSet
from tests.helpers import config


def trainer_of(activation="relu", depth=3, width=8, in_dim=4, seed=0, bias=0.0):
    net = MLP(
        in_dim,
        3,
        depth,
        width,
        make_activation(activation),
        make_initializer("he_normal"),
        np.random.default_rng(seed),
        np.float32,
        bias_value=bias,
    )
    return Trainer(net, make_loss("cross_entropy"), make_optimizer("sgd", lr=0.1))


def test_train_batch_source_describes_the_steps_own_forward():
    trainer = trainer_of("tanh")
    rng = np.random.default_rng(1)
    probe_x = rng.standard_normal((64, 4)).astype(np.float32)
    probes = ProbeSet(trainer.net, trainer, probe_x, source="train_batch", every=1)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 3, 16)
    trainer.step(x, y, track_updates=True)
    cached = [layer.cache["a"].copy() for layer in trainer.net.layers]
    forwards = []
    original = trainer.net.forward
    trainer.net.forward = lambda *a, **k: forwards.append(1) or original(*a, **k)
    m = probes.measure()
    assert not forwards  # nothing ran through the network: the step's caches were read
    for i, a in enumerate(cached, 1):
        assert m[f"act_std/layer_{i:02d}"] == pytest.approx(float(np.std(a.astype(np.float64))), rel=1e-5)
        assert m[f"act_mean/layer_{i:02d}"] == pytest.approx(float(np.mean(a.astype(np.float64))), rel=1e-4, abs=1e-6)
    z1 = cached[0]  # tanh output; saturation = share with 1 - a^2 < 0.1
    assert m["saturation/layer_01"] == pytest.approx(np.mean(1 - z1.astype(np.float64) ** 2 < 0.1))


def test_probe_batch_source_runs_the_fixed_batch():
    trainer = trainer_of("tanh")
    rng = np.random.default_rng(1)
    probe_x = rng.standard_normal((64, 4)).astype(np.float32)
    trainer.step(rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 3, 16), track_updates=True)
    m = ProbeSet(trainer.net, trainer, probe_x, source="probe_batch").measure()
    a1 = np.tanh(probe_x @ trainer.net.layers[0].W + trainer.net.layers[0].params["b"])
    assert m["act_std/layer_01"] == pytest.approx(float(np.std(a1.astype(np.float64))), rel=1e-5)


def test_pure_sgd_does_not_make_every_silent_unit_look_dead():
    """One example per step: a unit silent on it is not dead; the window asks for probe-batch many examples."""
    trainer = trainer_of("relu", depth=2, width=32)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((512, 4)).astype(np.float32), rng.integers(0, 3, 512)
    probes = ProbeSet(trainer.net, trainer, x[:64], source="train_batch", every=1)
    probes.measure(before_training=True)
    shares = []
    for i in range(200):
        trainer.step(x[i : i + 1], y[i : i + 1], track_updates=True)
        shares.append(probes.measure()["dead_relu/total"])
    single_example = np.mean([np.all(layer.cache["z"] <= 0, axis=0).mean() for layer in trainer.net.hidden])
    assert single_example > 0.2  # what "silent on the batch" would report with batch size 1
    assert max(shares[-50:]) < 0.1


def test_dead_units_seeded_at_step_zero_and_kept_until_they_fire():
    trainer = trainer_of("relu", depth=1, width=6, bias=-100.0)  # every unit below zero for any input
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((64, 4)).astype(np.float32), rng.integers(0, 3, 64)
    probes = ProbeSet(trainer.net, trainer, x[:32], source="train_batch", every=1)
    assert probes.measure(before_training=True)["dead_relu/layer_01"] == 1.0
    trainer.step(x[:8], y[:8], track_updates=True)
    assert probes.measure()["dead_relu/layer_01"] == 1.0  # dead from the start: no warm-up window needed
    trainer.net.layers[0].params["b"][:3] = 100.0  # three units revive
    trainer.step(x[8:16], y[8:16], track_updates=True)
    assert probes.measure()["dead_relu/layer_01"] == pytest.approx(0.5)


def test_full_preset_reads_the_training_batches_and_bad_source_is_refused():
    assert config("probes=full").probes.activations == "train_batch"
    assert config().probes.activations == "probe_batch"
    with pytest.raises(ValueError, match="activation source"):
        ProbeSet(trainer_of().net, source="eval")


def test_a_diverged_unit_is_not_counted_dead():
    trainer = trainer_of("relu", depth=1, width=4)
    x = np.random.default_rng(4).standard_normal((8, 4)).astype(np.float32)
    trainer.net.layers[0].params["W"][:, :2] = np.nan  # two units diverged, two alive
    trainer.net.layers[0].params["W"][:, 2:] = 0.0
    trainer.net.layers[0].params["b"][2:] = 1.0
    for source in ("probe_batch", "train_batch"):
        probes = ProbeSet(trainer.net, trainer, x, source=source)
        trainer.net.forward(x)  # the "step's" forward, for train_batch
        assert probes.measure()["dead_relu/layer_01"] == 0.0
