"""The tied-weight autoencoder of greedy pretraining: gradients against finite differences, noise, training."""

import numpy as np
import pytest

from pipeline.engine import make_activation, make_initializer, make_optimizer
from pipeline.engine.autoencoder import Autoencoder, check_autoencoder, corrupt
from pipeline.engine.layer import Layer


def autoencoder(fan_in=7, width=5, activation="sigmoid", loss="mse", noise=0.0, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    layer = Layer(fan_in, width, make_activation(activation), make_initializer("xavier_normal"), rng, dtype)
    layer.params["b"][:] = rng.normal(0, 0.1, width)  # nonzero biases: their gradient is checked too
    return Autoencoder(layer, loss=loss, noise=noise)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "identity"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_gradients_match_finite_differences(activation, loss, noise):
    rng = np.random.default_rng(1)
    ae = autoencoder(activation=activation, loss=loss, noise=noise)
    x = rng.random((12, 7)) if loss == "cross_entropy" else rng.standard_normal((12, 7))
    checks = check_autoencoder(ae, x, np.random.default_rng(2))
    assert {c.name for c in checks} == {"W", "b", "c"}
    assert max(c.rel_error for c in checks) < 1e-7, [(c.name, c.rel_error) for c in checks]
    assert all(c.analytic_norm > 0 for c in checks)


def test_the_check_catches_a_wrong_gradient(monkeypatch):
    # drop the decoder's share of the tied weight's gradient: the check must fail on W, not on b or c
    ae = autoencoder()
    x = np.random.default_rng(1).standard_normal((10, 7))
    real = ae.loss_and_grads

    def encoder_share_only(x_in, target):
        value = real(x_in, target)
        h = ae.encoder.cache["a"]
        _, s, r = ae.reconstruct(x_in)
        ds = 2.0 * (r - target) / r.size
        ae.grads["W"] -= ds.T @ h
        return value

    monkeypatch.setattr(ae, "loss_and_grads", encoder_share_only)
    errors = {c.name: c.rel_error for c in check_autoencoder(ae, x)}
    assert errors["W"] > 1e-2 and errors["b"] < 1e-7 and errors["c"] < 1e-7


def test_the_decoder_is_tied_to_the_encoder_layer():
    ae = autoencoder()
    assert ae.params["W"] is ae.encoder.params["W"] and ae.grads["W"] is ae.encoder.grads["W"]
    x = np.random.default_rng(0).standard_normal((4, 7))
    _, s, r = ae.reconstruct(x)
    h = ae.encoder.activation.fn(x @ ae.encoder.W + ae.encoder.params["b"])
    np.testing.assert_allclose(r, h @ ae.encoder.W.T + ae.params["c"])


def test_masking_noise_zeroes_the_given_fraction_from_the_generator_and_leaves_the_input():
    x = np.ones((200, 50))
    a = corrupt(x, 0.3, np.random.default_rng(5))
    b = corrupt(x, 0.3, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)  # the same Generator state -> the same mask
    assert abs((a == 0).mean() - 0.3) < 0.02 and set(np.unique(a)) == {0.0, 1.0}
    assert (x == 1).all() and corrupt(x, 0.0, None) is x
    with pytest.raises(ValueError, match="Generator"):
        corrupt(x, 0.3, None)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="loss"):
        autoencoder(loss="hinge")
    with pytest.raises(ValueError, match="noise"):
        autoencoder(noise=1.0)
    rng = np.random.default_rng(0)
    bn = Layer(4, 3, make_activation("tanh"), make_initializer("xavier_normal"), rng, batch_norm=True)
    with pytest.raises(ValueError, match="batch norm"):
        Autoencoder(bn)


@pytest.mark.parametrize("noise", [0.0, 0.25])
def test_training_lowers_the_reconstruction_loss_of_structured_data(noise):
    # 4-dimensional data embedded in 12 dimensions: a 6-unit code can reconstruct it
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((400, 4)) @ rng.standard_normal((4, 12))).astype(np.float32)
    ae = autoencoder(fan_in=12, width=6, activation="tanh", noise=noise, dtype=np.float32)
    opt = make_optimizer("adam", lr=0.01)
    before = ae.evaluate(x)
    noise_rng = np.random.default_rng(1)
    for _ in range(300):
        ae.step(x[rng.choice(400, 64)], opt, noise_rng)
    after = ae.evaluate(x)
    assert after < 0.4 * before, (before, after)  # the clean input's loss
    assert ae.encode(x).shape == (400, 6) and ae.encode(x).dtype == np.float32


def test_a_centred_decoder_reconstructs_the_mean_code_as_the_mean_input():
    rng = np.random.default_rng(0)
    ae = autoencoder(activation="sigmoid")
    x = rng.standard_normal((50, 7)) + 3.0  # inputs far from 0, codes near 0.5 * W's column sums
    before = ae.evaluate(x)
    ae.center_decoder(x)
    h = ae.encode(x)
    np.testing.assert_allclose(h.mean(axis=0) @ ae.params["W"].T + ae.params["c"], x.mean(axis=0))
    assert ae.evaluate(x) < before
