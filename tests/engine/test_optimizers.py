"""One or two steps of each optimizer against the closed form of PyTorch's update rule."""

import math

import numpy as np
import pytest

from pipeline.engine.optimizers import OPTIMIZERS, make_optimizer

W0 = np.array([1.0, -2.0])
G = np.array([0.5, 0.25])
LR = 0.1
SIGN = np.sign(G)


def steps(name, n, **params):
    opt = make_optimizer(name, lr=LR, **params)
    w = {"W": W0.copy()}
    for _ in range(n):
        opt.step(w, {"W": G.copy()})
    return w["W"]


@pytest.mark.parametrize(
    "name,n,params,expected",
    [
        ("sgd", 1, {}, W0 - LR * G),
        ("sgd", 1, {"weight_decay": 0.1}, W0 - LR * (G + 0.1 * W0)),
        ("momentum", 1, {"momentum": 0.9}, W0 - LR * G),  # the buffer starts as g
        ("momentum", 2, {"momentum": 0.9}, W0 - LR * G - LR * 1.9 * G),
        ("momentum", 2, {"momentum": 0.9, "dampening": 0.5}, W0 - LR * G - LR * (0.9 + 0.5) * G),
        ("nesterov", 1, {"momentum": 0.9}, W0 - LR * 1.9 * G),  # g + mu * buf
        ("nesterov", 2, {"momentum": 0.9}, W0 - LR * 1.9 * G - LR * (1 + 0.9 * 1.9) * G),
        ("adagrad", 1, {"eps": 0.0}, W0 - LR * SIGN),
        ("adagrad", 2, {"eps": 0.0}, W0 - LR * SIGN - LR / math.sqrt(2) * SIGN),
        ("adagrad", 2, {"eps": 0.0, "lr_decay": 0.5}, W0 - LR * SIGN - LR / 1.5 / math.sqrt(2) * SIGN),
        ("rmsprop", 1, {"eps": 0.0, "alpha": 0.99}, W0 - LR * G / np.sqrt(0.01 * G**2)),
        ("rmsprop", 2, {"eps": 0.0, "alpha": 0.9}, W0 - LR * G / np.sqrt(0.1 * G**2) - LR * G / np.sqrt(0.19 * G**2)),
        (
            "rmsprop",
            2,
            {"eps": 0.0, "alpha": 0.9, "momentum": 0.5},
            W0 - LR * G / np.sqrt(0.1 * G**2) - LR * (0.5 * G / np.sqrt(0.1 * G**2) + G / np.sqrt(0.19 * G**2)),
        ),
        ("adam", 1, {"eps": 0.0}, W0 - LR * SIGN),  # bias correction makes the first step lr * sign(g)
        ("adam", 2, {"eps": 0.0}, W0 - 2 * LR * SIGN),  # constant g: m_hat = g, v_hat = g^2 again
        ("adam", 1, {"eps": 0.0, "weight_decay": 0.1}, W0 - LR * np.sign(G + 0.1 * W0)),
        ("adamw", 1, {"eps": 0.0, "weight_decay": 0.1}, W0 * (1 - LR * 0.1) - LR * SIGN),
    ],
)
def test_closed_form(name, n, params, expected):
    np.testing.assert_allclose(steps(name, n, **params), expected, rtol=1e-12, atol=1e-12)


def test_adam_second_step_with_changing_gradient():
    opt = make_optimizer("adam", lr=LR, eps=0.0)
    w = {"W": W0.copy()}
    g1, g2 = G, np.array([-1.0, 0.5])
    opt.step(w, {"W": g1.copy()})
    opt.step(w, {"W": g2.copy()})
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.999**2)
    np.testing.assert_allclose(w["W"], W0 - LR * SIGN - LR * m_hat / np.sqrt(v_hat), rtol=1e-12)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_weight_decay_touches_only_decay_keys(name):
    opt = make_optimizer(name, lr=LR, weight_decay=0.5, decay_keys=["W"])
    params = {"W": np.ones(3), "b": np.ones(3)}
    opt.step(params, {"W": np.zeros(3), "b": np.zeros(3)})
    assert np.all(params["b"] == 1.0)
    assert np.all(params["W"] < 1.0)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_float32_state_and_weights_stay_float32(name):
    opt = make_optimizer(name, lr=LR, decay_keys=["W"])
    params = {"W": np.ones((4, 3), dtype=np.float32)}
    for _ in range(2):
        opt.step(params, {"W": np.full((4, 3), 0.5, dtype=np.float32)})
    assert params["W"].dtype == np.float32
    assert all(v.dtype == np.float32 for v in opt.state["W"].values())


def test_caller_gradient_is_not_modified_by_coupled_decay():
    g = G.copy()
    make_optimizer("sgd", lr=LR, weight_decay=0.3).step({"W": W0.copy()}, {"W": g})
    np.testing.assert_array_equal(g, G)


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("sgd", {"lr": -1.0}, "lr must be >= 0"),
        ("adam", {"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ("momentum", {"momentum": 1.5}, "momentum must be in"),
        ("lion", {}, "unknown optimizer 'lion'"),
    ],
)
def test_bad_parameters_are_named(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(name, **params)
