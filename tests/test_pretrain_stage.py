"""Greedy layer-wise pretraining end to end: the stage, its files, and init=pretrained in train and init."""

import json
import zipfile

import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline import init as init_stage
from pipeline import pretrain, train
from pipeline.harness import pretrained
from pipeline.harness.build import build_trainer, load_data
from pipeline.harness.validate import ConfigError
from tests.helpers import cli, config, tmp_store

# a small sigmoid net on digits: 64 inputs, 3 hidden layers of 16, two epochs per layer
SMALL = ("model.activation=sigmoid", "model.depth=3", "model.width=16", "init=standard", "pretrain.epochs=2")


def runs_of(store):
    client = MlflowClient(store)
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """One pretrain run with export: (store, result, folder)."""
    tmp = tmp_path_factory.mktemp("pretrain")
    store, folder = tmp_store(tmp), tmp / "weights"
    result = pretrain.run(config(*SMALL, f"tracking.uri={store}", f"export={folder}"))
    return store, result, folder


def test_one_run_logs_every_layers_reconstruction_loss_per_epoch_and_the_weights(pretrained_run):
    store, result, folder = pretrained_run
    client, runs = runs_of(store)
    (run,) = runs
    assert run.info.status == "FINISHED" and run.info.run_id == result["run_id"]
    assert run.data.tags["stage"] == "pretrain" and run.data.params["pretrain.epochs"] == "2"
    for i in (1, 2, 3):
        for key in (f"recon/layer_0{i}", f"recon_val/layer_0{i}"):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == [0, 1, 2], key  # the epoch is the step, 0 = before training
    first = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "recon/layer_01")}
    assert first[2] < first[0]  # pretraining lowers layer 1's reconstruction loss
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "pretrained")}
    assert artifacts == {"pretrained/weights.npz", "pretrained/weights.json"}
    # the exported files: weights, the sidecar, metrics for DVC
    meta = json.loads((folder / "weights.json").read_text())
    assert meta["layers"] == [
        {"name": "layer_01", "W": [64, 16], "b": [16]},
        {"name": "layer_02", "W": [16, 16], "b": [16]},
        {"name": "layer_03", "W": [16, 16], "b": [16]},
    ]
    assert meta["activation"] == "sigmoid" and meta["in_dim"] == 64 and meta["run_id"] == run.info.run_id
    assert meta["data"]["config"]["name"] == "digits" and len(meta["data"]["sha256"]) == 64
    assert meta["init"]["name"] == "standard" and meta["pretrain"]["epochs"] == 2 and len(meta["config_hash"]) == 16
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {f"{q}/layer_0{i}" for q in ("recon", "recon_rel") for i in (1, 2, 3)} | {
        "start/grad_norm/layer_01",
        "start/loss",
    }
    assert all(0 < metrics[f"recon_rel/layer_0{i}"] < 1.5 for i in (1, 2, 3)), metrics
    with np.load(folder / "weights.npz") as f:
        assert sorted(f.files) == [
            "layer_01.W",
            "layer_01.b",
            "layer_02.W",
            "layer_02.b",
            "layer_03.W",
            "layer_03.b",
            "meta",
        ]
    assert run.data.tags["pretrained_sha256"] == meta["sha256"]


def test_layers_below_are_frozen_and_the_stage_is_reproducible(tmp_path):
    # layer 1 after a 1-layer stack equals layer 1 of a 2-layer stack: training layer 2 leaves it alone
    common = ("model.activation=tanh", "model.width=8", "pretrain.epochs=2", "tracking.enabled=false")
    one = pretrain.run(config(*common, "model.depth=1", f"export={tmp_path / 'one'}"))
    two = pretrain.run(config(*common, "model.depth=2", f"export={tmp_path / 'two'}"))
    again = pretrain.run(config(*common, "model.depth=2", f"export={tmp_path / 'again'}"))
    noisy = pretrain.run(config(*common, "model.depth=2", "pretrain.noise=0.3", f"export={tmp_path / 'noisy'}"))
    w = {
        name: pretrained.load(r["files"][0]).arrays
        for name, r in dict(one=one, two=two, again=again, noisy=noisy).items()
    }
    np.testing.assert_array_equal(w["one"]["layer_01.W"], w["two"]["layer_01.W"])
    for k in w["two"]:
        np.testing.assert_array_equal(w["two"][k], w["again"][k])  # same seed, same weights
    assert not np.allclose(w["two"]["layer_01.W"], w["noisy"]["layer_01.W"])  # the corruption changes the path
    assert (
        two["recon"]["layer_01"]
        < pretrain.run(config(*common, "model.depth=1", "pretrain.epochs=0"))["recon"]["layer_01"]
    )


def test_finetuning_starts_from_the_pretrained_hidden_layers_and_is_tagged(pretrained_run, tmp_path):
    store, result, folder = pretrained_run
    cfg = config(*SMALL, "init=pretrained", f"init.source={folder}", "train.epochs=2", f"tracking.uri={store}")
    net = build_trainer(cfg, load_data(cfg)).net
    weights = pretrained.load(str(folder)).arrays
    for i in (1, 2, 3):
        np.testing.assert_array_equal(net.params[f"layer_0{i}.W"], weights[f"layer_0{i}.W"])
        np.testing.assert_array_equal(net.params[f"layer_0{i}.b"], weights[f"layer_0{i}.b"])
    # the output layer: the scheme the pretrained layers started from (standard: U[-1/sqrt(16), 1/sqrt(16)])
    out = net.params["layer_04.W"]
    assert out.shape == (16, 10) and 0 < np.abs(out).max() <= 0.25 and out.std() > 0.1
    twin = build_trainer(config(*SMALL, "tracking.enabled=false"), load_data(cfg)).net  # random init, same seed
    np.testing.assert_array_equal(out, twin.params["layer_04.W"])  # they differ in their hidden layers only
    assert not np.array_equal(net.params["layer_01.W"], twin.params["layer_01.W"])
    fine = train.run(cfg)
    client = MlflowClient(store)
    tags = client.get_run(fine["run_id"]).data.tags
    assert tags["init_source"] == str(folder) and tags["init_source_run"] == result["run_id"]
    assert tags["init_source_sha256"] == json.loads((folder / "weights.json").read_text())["sha256"]
    # by run id: the artifact of the pretrain run, the same weights
    by_id = train.run(
        config(*SMALL, "init=pretrained", f"init.source={result['run_id']}", "train.epochs=1", f"tracking.uri={store}")
    )
    tags = client.get_run(by_id["run_id"]).data.tags
    assert tags["init_source"] == result["run_id"] and tags["init_source_read"] == f"run:{result['run_id']}"
    assert tags["init_source_sha256"] == json.loads((folder / "weights.json").read_text())["sha256"]


def test_init_output_names_the_output_layers_scheme(pretrained_run):
    _, _, folder = pretrained_run
    cfg = config(*SMALL, "init=pretrained", f"init.source={folder}", "init.output=zeros", "tracking.enabled=false")
    net = build_trainer(cfg, load_data(cfg)).net
    assert not net.params["layer_04.W"].any() and net.params["layer_01.W"].any()


def test_the_init_stage_analyses_a_pretrained_net_as_the_pretrain_run_measured_its_start(pretrained_run):
    store, pre, folder = pretrained_run
    result = init_stage.run(config(*SMALL, "init=pretrained", f"init.source={folder}", "tracking.enabled=false"))
    assert result["theory_act_std"] is None and len(result["act_std"]) == 4
    start = pre["start"]  # the pretrain run's start/ metrics: the same net, probe batch and pass
    for key in ("grad_norm/layer_01", "grad_norm/layer_04", "act_std/layer_03", "saturation/layer_02"):
        assert start[f"start/{key}"] == pytest.approx(result["metrics"][key], rel=1e-5), key
    assert start["start/loss"] == pytest.approx(result["metrics"]["init/loss"], rel=1e-6)


BAD_SOURCES = {
    "missing": (lambda tmp, folder: [f"init.source={tmp / 'nothing.npz'}"], "allowed: a pretrained weights file"),
    "depth": (
        lambda tmp, folder: [f"init.source={folder}", "model.depth=2"],
        "holds 3 pretrained layers; model.depth is 2",
    ),
    "width": (lambda tmp, folder: [f"init.source={folder}", "model.width=8"], "width 16; model.width is 8"),
    "input size": (
        lambda tmp, folder: [f"init.source={folder}", "data=moons"],
        "64 input features; this data set has 2",
    ),
    "activation": (lambda tmp, folder: [f"init.source={folder}", "model.activation=tanh"], "activation sigmoid"),
    "garbage": (lambda tmp, folder: [f"init.source={garbage(tmp)}"], "not a readable pretrained weights file"),
    "truncated": (
        lambda tmp, folder: [f"init.source={truncated(tmp, folder)}"],
        "not a readable pretrained weights file",
    ),
    "tampered": (lambda tmp, folder: [f"init.source={tampered(tmp, folder)}"], "corrupted"),
    "unknown run": (
        lambda tmp, folder: ["init.source=0123456789abcdef0123456789abcdef"],
        "no pretrained weights in MLflow run",
    ),
    "null": (lambda tmp, folder: [], "init.source: got null"),
}


def garbage(tmp):
    path = tmp / "garbage.npz"
    path.write_bytes(b"not a zip file at all")
    return path


def truncated(tmp, folder):
    path = tmp / "truncated.npz"
    data = (folder / "weights.npz").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def tampered(tmp, folder):
    """A valid npz whose arrays no longer match the sha256 its meta records."""
    path = tmp / "tampered.npz"
    with np.load(folder / "weights.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["layer_02.W"] = arrays["layer_02.W"] + 1.0
    np.savez(path, **arrays)
    assert zipfile.is_zipfile(path)
    return path


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_a_bad_source_is_one_config_error_and_no_run(case, pretrained_run, tmp_path):
    store, _, folder = pretrained_run
    make, expected = BAD_SOURCES[case]
    cfg = config(*SMALL, "init=pretrained", *make(tmp_path, folder), f"tracking.uri={store}", "train.epochs=1")
    before = len(runs_of(store)[1])
    with pytest.raises(ConfigError, match="init.source") as info:
        train.run(cfg)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert len(runs_of(store)[1]) == before  # checked before any run opens


def test_a_bad_source_on_the_command_line_is_one_line_and_exit_2(pretrained_run, tmp_path):
    store, _, folder = pretrained_run
    make, expected = BAD_SOURCES["truncated"]
    proc = cli("train", *SMALL, "init=pretrained", *make(tmp_path, folder), f"tracking.uri={store}", "train.epochs=1")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: init.source") and expected in lines[0], proc.stderr
    _, runs = runs_of(store)
    assert all(r.info.status != "RUNNING" for r in runs)


@pytest.fixture(scope="module")
def cli_pretrained(tmp_path_factory):
    """The pretrain stage run through its CLI: (store, folder)."""
    tmp = tmp_path_factory.mktemp("cli")
    store, folder = tmp_store(tmp), tmp / "weights"
    proc = cli("pretrain", *SMALL, f"tracking.uri={store}", f"export={folder}")
    assert proc.returncode == 0, proc.stderr
    assert "pretrained 3 layers" in proc.stdout and str(folder / "weights.npz") in proc.stdout
    return store, folder


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_every_bad_source_on_the_command_line_is_one_line_and_exit_2_and_no_run(case, cli_pretrained, tmp_path):
    store, folder = cli_pretrained
    make, expected = BAD_SOURCES[case]
    for stage in ("train", "init"):
        proc = cli(stage, *SMALL, "init=pretrained", *make(tmp_path, folder), f"tracking.uri={store}", "train.epochs=1")
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: init.source") and expected in lines[0], proc.stderr
    _, runs = runs_of(store)
    assert [r.data.tags["stage"] for r in runs] == ["pretrain"] and runs[0].info.status == "FINISHED"


def test_bad_pretrain_settings_are_one_line_each():
    with pytest.raises(ConfigError, match="pretrain.noise"):
        pretrain.run(config("pretrain.noise=1.0", "tracking.enabled=false"))
    with pytest.raises(ConfigError, match="pretrain.optimizer.lr"):
        pretrain.run(config("pretrain.optimizer.lr=-1", "tracking.enabled=false"))
    with pytest.raises(ConfigError, match="model.depth"):
        pretrain.run(config("model.depth=0", "tracking.enabled=false"))
    with pytest.raises(ConfigError, match="model.batch_norm"):
        pretrain.run(config("model.batch_norm=true", "tracking.enabled=false"))
    # cross-entropy reconstructs [0, 1] inputs only; digits are standardized
    with pytest.raises(ConfigError, match="pretrain.loss: cross_entropy needs every layer's input in"):
        pretrain.run(config("pretrain.loss=cross_entropy", "tracking.enabled=false"))


def test_a_diverging_layer_stops_the_stage_with_one_line_and_a_failed_run(tmp_path):
    # xor's 2 inputs reconstructed from 64 ReLU units: SGD at lr 0.1 overflows in the first epoch
    store = tmp_store(tmp_path)
    with pytest.raises(ConfigError, match=r"pretrain.optimizer.lr: layer 1's reconstruction loss became (nan|inf)"):
        pretrain.run(config("data=xor", f"tracking.uri={store}", f"export={tmp_path / 'w'}"))
    _, (run,) = runs_of(store)
    assert run.info.status == "FAILED" and not (tmp_path / "w" / "weights.npz").exists()


def test_recurrent_models_are_refused_by_pretrain_and_by_init_pretrained(pretrained_run):
    _, _, folder = pretrained_run
    with pytest.raises(ConfigError, match="model.cell: got 'rnn'"):
        pretrain.run(config("model=rnn", "data=seq_digits", "tracking.enabled=false"))
    cfg = config("model=rnn", "data=seq_digits", "init=pretrained", f"init.source={folder}", "tracking.enabled=false")
    with pytest.raises(ConfigError, match="init=pretrained loads an MLP's hidden layers; model.cell is rnn"):
        train.run(cfg)
