"""Recurrent models through the stages: sequence data sets, config checks, gradcheck and train end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline import gradcheck, train
from pipeline.data import prepared
from pipeline.data.sources import load
from pipeline.engine.recurrent import LSTMCell
from pipeline.harness import through_time
from pipeline.harness.build import build_network
from pipeline.harness.validate import ConfigError, validate
from tests.helpers import TINY_RNN, cli, config, tmp_store


def test_adding_problem_two_marks_one_per_half_and_their_sum():
    X, y = load("adding", n_samples=500, seq_len=12, seed=3)
    assert X.shape == (500, 12, 2) and y.dtype == np.float64
    marks = X[:, :, 1]
    assert np.all(marks.sum(axis=1) == 2)
    assert np.all(marks[:, :6].sum(axis=1) == 1) and np.all(marks[:, 6:].sum(axis=1) == 1)
    np.testing.assert_allclose(y, (X[:, :, 0] * marks).sum(axis=1))
    # the bar: a constant predictor's MSE is the targets' variance, 2 * 1/12
    X, y = load("adding", n_samples=20000, seq_len=20, seed=0)
    assert y.var() == pytest.approx(1 / 6, rel=0.03)


def test_remember_puts_the_label_in_the_first_steps_only():
    X, y = load("remember", n_samples=400, noise=1.0, seed=0, seq_len=30, n_classes=5, cue_steps=2)
    assert X.shape == (400, 30, 5)
    assert np.bincount(y).tolist() == [80] * 5  # balanced: chance is 1/5
    np.testing.assert_array_equal(X[:, 0].argmax(axis=1), y)
    np.testing.assert_array_equal(X[:, 1].argmax(axis=1), y)
    assert np.all(X[:, :2].sum(axis=2) == 1.0)
    # the rest is noise, independent of the label
    assert abs(np.corrcoef(X[:, 2:, 0].mean(axis=1), y == 0)[0, 1]) < 0.2


@pytest.mark.parametrize("read,shape", [("rows", (8, 8)), ("pixels", (64, 1))])
def test_sequential_digits_read_by_row_or_pixel(read, shape):
    X, y = load("seq_digits", read=read)
    flat, labels = load("digits")
    assert X.shape == (1797, *shape)
    np.testing.assert_array_equal(X.reshape(1797, 64), flat)
    np.testing.assert_array_equal(y, labels)


def test_prepared_sequences_standardized_per_feature_over_every_step(tmp_path):
    data = config("data=adding", "data.seq_len=10", "data.n_samples=400").data
    split, meta = prepared.load_or_build(data, tmp_path)
    assert split.x_train.shape == (280, 10, 2) and split.seq_len == 10 and split.n_features == 2
    assert split.regression and split.out_dim == 1 and split.y_train.dtype == np.float64
    # one mean and scale per feature, over every step of every training sequence
    flat = split.x_train.reshape(-1, 2)
    np.testing.assert_allclose(flat.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(flat.std(axis=0), 1, atol=1e-12)
    # the marker channel keeps two values: the same scale at every step
    assert len(np.unique(np.round(split.x_train[:, :, 1], 9))) == 2
    # targets are not standardized: the sum of two U[0, 1] values
    assert 0 <= split.y_train.min() and split.y_train.max() <= 2
    sidecar = json.loads(prepared.paths(data, tmp_path)[1].read_text())
    assert sidecar["task"] == "regression" and sidecar["seq_len"] == 10
    assert sidecar["shapes"]["x_train"] == [280, 10, 2]
    assert sidecar["target_stats"]["train"]["var"] == pytest.approx(1 / 6, rel=0.2)
    again, meta2 = prepared.load_or_build(data, tmp_path)
    assert meta2["reused"] is True
    np.testing.assert_array_equal(again.x_train, split.x_train)
    np.testing.assert_array_equal(again.y_train, split.y_train)
    # classification sequences are split stratified and keep class counts
    split, meta = prepared.load_or_build(config("data=remember", "data.seq_len=6", "data.n_samples=200").data, tmp_path)
    assert meta["task"] == "classification" and meta["class_counts"]["test"] == [10, 10, 10, 10]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data=adding"], "model: data=adding is a sequence task"),
        (["model=rnn"], "model.cell: got 'rnn', which reads sequences, with data=digits"),
        (
            ["model=lstm", "data=adding", "model.loss=cross_entropy"],
            "model.loss: got 'cross_entropy'; data=adding is a regression",
        ),
        (["model=rnn", "data=adding", "data.seq_len=1"], "data.seq_len: got 1; allowed: an integer >= 2"),
        (["model=rnn", "data=adding", "model.bptt=0"], "model.bptt: got 0; allowed: null or an integer >= 1"),
        (["model=rnn", "data=adding", "model.activation=swish"], "model.activation: got 'swish'"),
        (
            ["model=rnn", "data=adding", "init.recurrent=xavier"],
            "init.recurrent: got 'xavier'; allowed: one of orthogonal, identity",
        ),
        (["model=rnn", "data=adding", "init.recurrent_gain=-1"], "init.recurrent_gain: got -1"),
        (["model=lstm", "data=adding", "model.forget_bias=abc"], "model.forget_bias: got 'abc'"),
        (["model=lstm", "data=remember", "data.cue_steps=60"], "data.cue_steps: got 60 with data.seq_len 50"),
        (
            ["model=lstm", "data=seq_digits", "data.read=columns"],
            "data.read: got 'columns'; allowed: one of rows, pixels",
        ),
    ],
)
def test_bad_recurrent_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
        validate(config(*overrides))
    assert "\n" not in str(e.value)


def test_good_recurrent_settings_pass_and_build_what_they_say():
    cfg = config("model=lstm", "data=adding", "model.bptt=5", "model.forget_bias=0.0", "init.recurrent_gain=0.9")
    validate(cfg)
    net = build_network(cfg.model, cfg.init, 2, 1, np.random.default_rng(0))
    assert net.bptt == 5 and net.cell.forget_bias == 0.0
    assert net.cell.params["W_hh"].shape == (32, 128)
    s = np.linalg.svd(net.cell.params["W_hh"][:, :32].astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(s, 0.9, rtol=1e-5)  # orthogonal times the gain
    validate(config("model=rnn", "data=seq_digits", "model.activation=relu", "init.recurrent=identity"))


def small(cell, *extra):
    return config(
        f"model={cell}",
        "model.width=3",
        "gradcheck.in_dim=2",
        "gradcheck.seq_len=3",
        "gradcheck.batch_size=5",
        *extra,
        name="gradcheck",
    )


@pytest.mark.parametrize("cell,rows", [("rnn", 6 * 4 * 4 * 2), ("lstm", 4 * 4 * 2)])
def test_gradcheck_stage_checks_every_recurrent_combination(cell, rows):
    result = gradcheck.run(small(cell))
    assert len(result["combinations"]) == rows  # activation x loss (regression too) x regularizer x bptt
    assert result["failed"] == [] and result["passed"]
    assert result["max_rel_error"] < 1e-6
    assert any("mse-reg" in k and "bptt=2" in k and "elastic" in k for k in result["combinations"])
    assert result["lines"][-1].startswith("max_rel_error=")


def test_gradcheck_stage_fails_a_wrong_lstm_derivative(monkeypatch):
    original = LSTMCell.backward

    def broken(self, dh):
        original(self, dh)
        self.grads["W_hh"][:, : self.hidden] *= 1.01  # the input gate's recurrent weights, 1% off

    monkeypatch.setattr(LSTMCell, "backward", broken)
    result = gradcheck.run(small("lstm"))
    assert not result["passed"] and len(result["failed"]) == len(result["combinations"])


def test_gradcheck_fails_at_an_impossible_tolerance():
    result = gradcheck.run(small("lstm", "gradcheck.tol=1e-30"))
    assert not result["passed"] and 0 < result["max_rel_error"] < 1e-6


@pytest.mark.slow
def test_gradcheck_cli_fails_at_an_impossible_tolerance():
    proc = cli("gradcheck", "model=lstm", "model.width=4", "gradcheck.seq_len=3", "gradcheck.tol=1e-30")
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines()[-1].startswith("max_rel_error=")
    assert "FAILED: max_rel_error" in proc.stderr


def test_lstm_learns_the_adding_problem_below_the_constant_predictor(tmp_path):
    store = tmp_store(tmp_path)
    result = train.run(
        config(
            "model=lstm",
            "data=adding",
            "data.seq_len=10",
            "data.n_samples=1000",
            "model.width=16",
            "train.epochs=8",
            "probes.every=10",
            "tracking.figures=false",
            f"tracking.uri={store}",
        )
    )
    m = result["metrics"]
    assert result["chance_loss"] == pytest.approx(1 / 6, rel=0.15)
    assert m["test/loss"] < 0.5 * result["chance_loss"]
    assert "test/acc" not in m and "train/acc" not in m  # a regression has no accuracy
    client = MlflowClient(store)
    run = client.get_run(result["run_id"])
    keys = set(run.data.metrics)
    for prefix in ("grad_norm", "update_ratio", "weight_norm", "grad_std", "act_std"):
        assert {f"{prefix}/layer_01", f"{prefix}/layer_02"} <= keys, prefix
    assert {"grad_norm/W_xh", "grad_norm/W_hh", "update_ratio/W_hh", "data/chance_loss", "train/final_loss"} <= keys
    assert {
        "grad_time_ratio",
        "grad_time_factor",
        "spectral_radius/W_hh",
        "forget_gate/mean",
        "cell_state/norm",
    } <= keys
    assert "spectral_radius/W_hh_f" in keys and "grad_time_theory" not in keys  # the theory line is the RNN's
    assert not [k for k in keys if k.endswith("/acc") or k.startswith("saturation/")]
    # every ||dL/dh_t|| of every measurement in one artifact; tracking.figures=false draws no heat map
    steps, norms = through_time.decode(_artifact(client, run, "grad_time.json"))
    history = json.loads(_artifact(client, run, "history.json"))
    assert norms.shape == (len(history["grad_time_factor"]), 10) and steps[0] == 0
    assert [s for s, _ in history["grad_time_factor"]] == steps.tolist()
    assert "plots" not in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "saturation: the LSTM has no single cell activation" in run.data.tags["probes_skipped"]
    assert "grad_time_theory: the LSTM has no single cell activation f" in run.data.tags["probes_skipped"]
    assert run.data.params["model.cell"] == "lstm" and run.data.tags["verdict"] == "healthy"


def _artifact(client, run, path: str) -> str:
    return Path(client.download_artifacts(run.info.run_id, path)).read_text()


@pytest.mark.slow  # ~5 s: a run with its figures (the default suite checks grad_time.json above)
def test_a_recurrent_run_draws_its_gradient_through_time_heat_map(tmp_path):
    store = tmp_store(tmp_path)
    result = train.run(
        config(
            *TINY_RNN,
            f"tracking.uri={store}",
        )
    )
    client = MlflowClient(store)
    plots = [a.path for a in client.list_artifacts(result["run_id"], "plots")]
    assert "plots/grad_time_heatmap.png" in plots
    png = Path(client.download_artifacts(result["run_id"], "plots/grad_time_heatmap.png")).read_bytes()
    assert png[:4] == b"\x89PNG"
    keys = set(client.get_run(result["run_id"]).data.metrics)
    assert {"grad_time_theory", "saturation/layer_01", "spectral_radius/W_hh"} <= keys


def test_rnn_trains_on_sequential_digits_with_its_probes(tmp_path):
    result = train.run(
        config(
            "model=rnn",
            "data=seq_digits",
            "model.width=16",
            "model.bptt=4",
            "train.epochs=2",
            "probes.every=10",
            "tracking=off",
        )
    )
    assert result["metrics"]["test/acc"] > 0.3  # chance 0.1
    assert result["verdict"] != ["diverged"]


def test_init_stage_refuses_a_recurrent_model():
    from pipeline import init as init_stage

    with pytest.raises(ConfigError, match="model.cell: got 'rnn'; the init stage analyses the MLP"):
        init_stage.run(config("model=rnn", "data=adding", "tracking=off"))


def test_a_diverging_recurrent_run_is_a_result_not_a_crash():
    result = train.run(config("model=rnn", "data=adding", "data.seq_len=10", "optimizer.lr=100", "tracking=off"))
    assert result["verdict"] == ["diverged"] and result["diverged_at_step"] is not None


def test_prepare_names_steps_features_and_the_bar():
    from pipeline import prepare

    meta = {
        "split_sizes": {"train": 1400, "val": 200, "test": 400},
        "reused": False,
        "config": {"name": "adding"},
        "path": "data/prepared/adding-x.npz",
        "n_features": 2,
        "seq_len": 20,
        "task": "regression",
        "target_stats": {"train": {"mean": 1.0, "var": 0.1661}},
    }
    line = prepare.summary_line(meta)
    assert line.endswith("20 steps of 2 features, regression (a constant predictor's MSE 0.166)")
    meta.update(n_features=1, seq_len=64, task="classification", n_classes=10)
    assert prepare.summary_line(meta).endswith("64 steps of 1 feature, 10 classes")
