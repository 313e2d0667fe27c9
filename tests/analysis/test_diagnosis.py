"""A run's diagnosis (the labels of its `verdict` tag) and the theory line of the init analysis."""

import numpy as np
import pytest

from pipeline.analysis.diagnosis import diagnose, learned
from pipeline.analysis.theory import predicted_act_var
from tests.probes.test_probes import net_of


def test_verdicts():
    constant = net_of("tanh", init="constant")
    assert "symmetric" in diagnose({}, constant)
    assert diagnose({}, net_of("tanh")) == ["healthy"]
    net = net_of("relu", depth=3)
    assert "vanishing" in diagnose({"grad_norm/layer_01": 1e-8, "grad_norm/layer_04": 1.0}, net)
    assert "exploding" in diagnose({"act_std/layer_01": 1.0, "act_std/layer_03": 1e4}, net)
    assert "dead" in diagnose({"dead_relu/total": 0.8}, net)
    assert "saturated" in diagnose({"saturation/layer_01": 0.9, "saturation/layer_02": 0.7}, net_of("sigmoid"))
    assert diagnose({}, net, diverged=True)[0] == "diverged"


TRAINED = {
    "train/initial_loss": 2.60,
    "train/final_loss": 0.20,
    "test/acc": 0.93,
    "data/chance_acc": 0.10,
    "data/chance_loss": 2.3026,
}


def test_a_run_that_learned_is_healthy():
    assert learned(TRAINED) and diagnose(TRAINED, net_of("tanh")) == ["healthy"]


@pytest.mark.parametrize(
    "change",
    [
        {"train/final_loss": 2.29, "test/acc": 0.36},  # a constant predictor's loss, a lucky argmax: learned nothing
        {"train/final_loss": 2.32, "test/acc": 0.36},  # the same, just above it
        {"test/acc": 0.10},  # at chance, whatever the loss did (a flat, overconfident net can lower it a little)
        {"test/acc": 0.32},  # within a quarter of the way from chance (0.1) to 1: 0.325
    ],
)
def test_a_run_at_chance_or_with_a_flat_loss_is_not_learning_and_never_healthy(change):
    latest = {**TRAINED, **change}
    assert not learned(latest)
    labels = diagnose(latest, net_of("tanh"))
    assert labels == ["not_learning"] and "healthy" not in labels


def test_learning_is_judged_against_the_majority_class_and_on_val_without_test():
    # 80% of one class: 0.85 accuracy is barely above always answering it
    assert not learned({"test/acc": 0.85, "data/chance_acc": 0.80})
    assert learned({"val/acc": 0.96, "data/chance_acc": 0.80})
    assert learned({})  # the init stage: no training, no judgement


def test_a_diverged_run_is_diverged_not_also_not_learning():
    assert diagnose({**TRAINED, "test/acc": 0.1}, net_of("tanh"), diverged=True) == ["diverged"]


def test_theory_matches_glorot_and_he():
    width, depth = 256, 10
    xavier = net_of("relu", depth=depth, width=width, in_dim=width, init="xavier_normal")
    he = net_of("relu", depth=depth, width=width, in_dim=width, init="he_normal")
    v_x = predicted_act_var(xavier, "xavier_normal", {})
    v_h = predicted_act_var(he, "he_normal", {})
    # ReLU: Var[z_l] = fan_in Var[W] E[a^2], E[a^2] = Var[z]/2 -> xavier halves it per layer, He keeps it
    assert v_x[depth - 1] / v_x[0] == pytest.approx(0.5 ** (depth - 1), rel=1e-6)
    assert v_h[depth - 1] / v_h[0] == pytest.approx(1.0, rel=1e-6)


def test_a_loss_below_its_inflated_start_but_at_a_constant_predictors_is_not_learning():
    # sigmoid nets start above ln 10 (non-zero-mean activations) and relax to the uniform output: 2.6 -> 2.30
    assert not learned({**TRAINED, "train/initial_loss": 2.6, "train/final_loss": 2.30, "test/acc": 0.11})


def test_chance_loss_is_the_label_entropy_for_cross_entropy_and_a_constant_predictors_otherwise():
    from pipeline.engine import make_loss
    from pipeline.harness.loop import chance_loss

    y = np.array([0] * 80 + [1] * 20)
    entropy = -(0.8 * np.log(0.8) + 0.2 * np.log(0.2))
    assert chance_loss(make_loss("cross_entropy"), y, 2) == pytest.approx(entropy, rel=1e-6)
    balanced = np.arange(100) % 10
    assert chance_loss(make_loss("cross_entropy"), balanced, 10) == pytest.approx(np.log(10), rel=1e-6)
    for name in ("mse", "hinge"):  # no constant does better: a trained net's loss must go below it
        loss = make_loss(name)
        assert chance_loss(loss, y, 2) <= loss.value(np.zeros((100, 2)), y) + 1e-12


def test_an_overconfident_net_that_learned_is_not_called_not_learning():
    # a large init under Adam: 70% right, but the wrong answers so confident that the loss is far above ln 10
    assert learned({**TRAINED, "train/final_loss": 6.5, "test/acc": 0.70})


def test_a_regression_learned_only_below_the_constant_predictors_mse():
    from pipeline.analysis.diagnosis import diagnose, learned

    constant = {"data/chance_loss": 0.167}
    assert learned({**constant, "train/final_loss": 0.03}, regression=True)
    assert not learned({**constant, "train/final_loss": 0.166}, regression=True)  # within 1%
    assert not learned({**constant, "train/final_loss": 0.22}, regression=True)  # worse than the constant
    assert learned({**constant, "train/final_loss": 0.22})  # a classifier may be overconfident there
    assert diagnose({**constant, "train/final_loss": 0.22}, regression=True) == ["not_learning"]
    # held out: the test MSE must get a quarter of the way from the constant's to 0 (0.125 here)
    assert learned({**constant, "train/final_loss": 0.05, "test/loss": 0.12}, regression=True)
    assert not learned({**constant, "train/final_loss": 0.05, "test/loss": 0.13}, regression=True)
    assert not learned({**constant, "train/final_loss": 0.05, "val/loss": 0.18}, regression=True)


@pytest.mark.parametrize(
    "ratio,label",
    [(1e-5, "vanishing"), (1e5, "exploding"), (0.2, None)],
)
def test_the_gradient_through_time_gives_the_same_labels_as_through_depth(ratio, label):
    learned = {"test/loss": 0.01, "train/final_loss": 0.01, "data/chance_loss": 0.167}
    labels = diagnose({**learned, "grad_time_ratio": ratio}, regression=True)
    assert labels == ([label] if label else ["healthy"])
    # a truncated run logs no ratio: nothing is said about time
    assert diagnose({**learned, "grad_time_factor": 0.1}, regression=True) == ["healthy"]


def test_a_net_with_overflowed_weights_is_not_symmetric_and_raises_no_warning():
    import warnings

    net = net_of("tanh")
    net.layers[0].W[:, 0] = np.inf  # what a diverged run leaves
    net.layers[0].W[:, 1] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "symmetric" not in diagnose({}, net)
