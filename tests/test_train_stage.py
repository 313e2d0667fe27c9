"""The train and init stages end to end, as a user runs them, against a temporary MLflow store."""

import json
import math

import pytest
from mlflow import MlflowClient

from pipeline import init as init_stage
from pipeline import train
from pipeline.data import prepared
from pipeline.harness.recording import PROFILES
from tests.helpers import cli, config, tmp_store

PER_LAYER = ("grad_norm", "grad_std", "weight_norm", "spectral_norm", "update_ratio", "act_mean", "act_std")


def only_run(store):
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    return client, runs[0]


def test_train_logs_a_finished_run_with_every_metric_config_and_plots(tmp_path):
    store = tmp_store(tmp_path)
    cfg = config(
        "data=moons", "model.depth=3", "model.width=32", "train.epochs=3", f"tracking.uri={store}", "probes.every=5"
    )
    result = train.run(cfg)
    client, run = only_run(store)
    assert run.info.status == "FINISHED" and run.info.run_id == result["run_id"]
    keys = set(run.data.metrics)
    for prefix in PER_LAYER:  # 3 hidden layers + the output layer
        assert {f"{prefix}/layer_0{i}" for i in range(1, 5)} <= keys, prefix
    assert {f"dead_relu/layer_0{i}" for i in range(1, 4)} | {
        "dead_relu/total",
        "grad_norm/total",
        "sparsity/total",
    } <= keys
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"} <= keys
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 3
    assert run.data.params["model.depth"] == "3" and run.data.params["data.name"] == "moons"
    assert run.data.tags["verdict"] == ",".join(result["verdict"]) and run.data.tags["stage"] == "train"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "plots")
    }
    assert {
        "config.yaml",
        "plots/loss_curves.png",
        "plots/grad_norm_heatmap.png",
        "plots/unit_health.png",
        "plots/activation_histograms.png",
    } <= artifacts
    assert result["metrics"]["test/acc"] > 0.8  # moons with a 3x32 ReLU net
    # the data set as the run's dataset input (the runs table's Dataset column): name, content digest, MLflow's
    # schema and profile of the training split, its .npz as the source
    (given,) = run.inputs.dataset_inputs
    split, sidecar = prepared.load_or_build(cfg.data)
    assert given.dataset.name == "moons" and given.dataset.digest == sidecar["sha256"][:10]
    assert json.loads(given.dataset.profile)["features_shape"] == list(split.x_train.shape)
    assert json.loads(given.dataset.source)["uri"].endswith(prepared.paths(cfg.data)[0].name)
    assert {(t.key, t.value) for t in given.tags} == {("mlflow.data.context", "training")}
    # the per-layer profiles: one metric each, its step the layer (4 layers: 3 hidden + output)
    for layer in range(1, 5):
        norms = [v for _, v in sorted(_history(client, run, f"grad_norm/layer_0{layer}"))]
        profile = {key: dict(_history(client, run, key))[layer] for key in PROFILES}
        assert profile["profile/grad_norm"] == pytest.approx(math.exp(sum(map(math.log, norms)) / len(norms)))
        assert profile["profile/grad_norm_first"] == pytest.approx(norms[0])
        assert profile["profile/grad_norm_last"] == pytest.approx(norms[-1])
        assert profile["profile/act_std_init"] == pytest.approx(
            dict(_history(client, run, f"act_std/layer_0{layer}"))[0]
        )
    assert all(sorted(s for s, _ in _history(client, run, key)) == [1, 2, 3, 4] for key in PROFILES)


def _history(client, run, key):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def test_probes_off_logs_only_curves(tmp_path):
    store = tmp_store(tmp_path)
    train.run(config("data=xor", "model.depth=1", "train.epochs=2", "probes=off", f"tracking.uri={store}"))
    _, run = only_run(store)
    assert not [k for k in run.data.metrics if "/layer_" in k or k.startswith("profile/")]


def test_divergence_is_a_result_not_a_crash(tmp_path):
    store = tmp_store(tmp_path)
    proc = cli(
        "train",
        "data=moons",
        "init=normal",
        "init.std=3.0",
        "optimizer.lr=1e4",
        "model.depth=3",
        "train.epochs=3",
        f"tracking.uri={store}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "diverged at step" in proc.stdout and "overflow" not in proc.stderr
    client, run = only_run(store)
    assert run.info.status == "FINISHED"
    assert "diverged" in run.data.tags["verdict"].split(",")
    step = run.data.metrics["diverged_at_step"]
    assert 1 <= step <= 3 * 11  # 700 examples / 64 per batch -> 11 steps an epoch
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/loss_curves.png" in plots


def test_same_seed_same_metrics_and_progress_quiet_off_a_terminal(tmp_path):
    overrides = ["data=spiral", "model.depth=2", "train.epochs=2", "tracking=off"]
    a, b = train.run(config(*overrides)), train.run(config(*overrides))
    assert a["metrics"] == b["metrics"]
    assert train.run(config(*overrides, "seed=1"))["metrics"] != a["metrics"]
    proc = cli("train", *overrides)
    assert proc.returncode == 0 and "epoch/s" not in proc.stderr and "it/s" not in proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr  # e.g. a sweep's callback failing on a single run


@pytest.mark.parametrize("schedule,expected_last_lr", [("constant", 0.1), ("step", 0.1 * 0.1**2), ("cosine", 0.0)])
def test_learning_rate_schedules(schedule, expected_last_lr):
    cfg = config(
        "data=xor",
        "model.depth=1",
        "train.epochs=5",
        "tracking=off",
        "probes=off",
        f"train.schedule.name={schedule}",
        "train.schedule.step_size=2",
    )
    from pipeline.engine.schedules import make_schedule

    lr = make_schedule(schedule, 0.1, 5, **{k: v for k, v in cfg.train.schedule.items() if k != "name"})
    assert lr(4) == pytest.approx(expected_last_lr, abs=1e-12)
    assert lr(0) == pytest.approx(0.1)


@pytest.mark.parametrize("init,low,high", [("xavier_normal", 0.0, 1e-3), ("he_normal", 0.3, 3.0)])
def test_init_stage_xavier_vanishes_he_does_not_at_depth_30(tmp_path, init, low, high):
    store = tmp_store(tmp_path)
    result = init_stage.run(
        config("model.depth=30", "model.width=256", "model.activation=relu", f"init={init}", f"tracking.uri={store}")
    )
    ratio = result["act_std"][29] / result["act_std"][0]
    assert low < ratio < high
    client, run = only_run(store)
    assert {f"theory_act_var/layer_{i:02d}" for i in range(1, 32)} <= set(run.data.metrics)
    assert ("vanishing" in run.data.tags["verdict"]) == (init == "xavier_normal")
    theory = [math.sqrt(run.data.metrics[f"theory_act_var/layer_{i:02d}"]) for i in (1, 30)]
    assert theory[1] / theory[0] == pytest.approx(0.5**14.5 if init == "xavier_normal" else 1.0, rel=0.05)
    assert "plots/depth_profile.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    profile = client.get_metric_history(run.info.run_id, "profile/act_std_init")  # one chart across the 31 layers
    assert sorted(m.step for m in profile) == list(range(1, 32))
    assert profile[0].value == pytest.approx(result["act_std"][profile[0].step - 1])


def test_layer_profiles_from_a_history_leave_out_what_is_not_finite():
    from pipeline.harness.recording import layer_profiles

    nan, inf = math.nan, math.inf
    history = {
        "grad_norm/layer_01": [(5, 1e-4), (10, 1e-2), (15, nan)],  # diverged at step 15: its last finite value
        "grad_norm/layer_02": [(5, 0.0), (10, 0.5)],  # 0 has no logarithm: left out of the geometric mean
        "grad_norm/layer_03": [(5, inf)],  # nothing finite: the layer is left out
        "grad_norm/total": [(5, 1.0)],  # not a layer
        "act_std/layer_01": [(0, 0.8), (5, 0.7)],
        "act_std/layer_02": [(5, 0.6)],  # not measured at step 0
    }
    profiles = layer_profiles(history)
    assert profiles["profile/grad_norm"] == [(1, pytest.approx(1e-3)), (2, pytest.approx(0.5))]
    assert profiles["profile/grad_norm_first"] == [(1, 1e-4), (2, 0.0)]
    assert profiles["profile/grad_norm_last"] == [(1, 1e-2), (2, 0.5)]
    assert profiles["profile/act_std_init"] == [(1, 0.8)]
    assert layer_profiles({"train/loss": [(5, 1.0)]}) == {}


def test_a_users_file_is_the_dataset_input_by_its_name_and_path(tmp_path):
    from pipeline.harness.recording import dataset_input
    from tests.test_data_file import wine_csv

    csv = wine_csv(tmp_path / "wine.csv")
    data = config("data=file", f"data.path={csv}").data
    given = dataset_input(data)
    _, sidecar = prepared.load_or_build(data)
    assert given.dataset.name == "wine.csv" and given.dataset.digest == sidecar["sha256"][:10]
    assert json.loads(given.dataset.source)["uri"] == str(csv)  # the user's file, not the prepared copy
    assert json.loads(given.dataset.profile)["features_shape"] == [124, 13]
