"""Bad input: one line naming the key and what is allowed, non-zero exit, no traceback, no MLflow run."""

import pytest

from pipeline.harness.validate import ConfigError, check_batch_size, validate
from tests.helpers import cli, config, tmp_store

BAD = [
    ("model.activation=swish", "model.activation: got 'swish'; allowed: one of sigmoid, tanh, relu"),
    ("optimizer.lr=-0.1", "optimizer.lr: got -0.1; allowed: a number > 0"),
    ("regularizer.strength=-1", "regularizer.strength: got -1; allowed: a number >= 0"),
    ("model.depth=-1", "model.depth: got -1; allowed: an integer >= 0"),
    ("model.width=0", "model.width: got 0; allowed: an integer >= 1"),
    ("train.batch_size=0", "train.batch_size: got 0; allowed: null or an integer >= 1"),
    ("train.epochs=abc", "train.epochs: got 'abc'; allowed: an integer >= 1"),
    ("train.epochs=2.5", "train.epochs: got 2.5; allowed: an integer >= 1"),
    ("model.loss=nll", "model.loss: got 'nll'; allowed: one of auto, cross_entropy, mse, hinge"),
    ("init.std=-1", "init.std: got -1; allowed: a number >= 0"),
    ("data.test_size=1.5", "data.test_size: got 1.5; allowed: a number > 0 and < 1"),
    ("train.clip.max_norm=0", "train.clip.max_norm: got 0; allowed: null or a number > 0"),
    ("model.batch_norm=maybe", "model.batch_norm: got 'maybe'; allowed: true or false"),
    ("probes.every=0", "probes.every: got 0; allowed: an integer >= 1"),
    ("probes.activations=eval", "probes.activations: got 'eval'; allowed: one of probe_batch, train_batch"),
    ("tracking.uri=file:./mlruns", "tracking.uri: got 'file:./mlruns'; allowed: null or sqlite:///"),
    (
        "probes.instruments=[grad_norm,bogus]",
        "probes.instruments: got ['grad_norm', 'bogus']; allowed: a list of: grad_norm, grad_std",
    ),
    ("tracking.figures=sometimes", "tracking.figures: got 'sometimes'; allowed: one of auto, True, False"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_each_bad_value_names_its_key(override, message):
    overrides = [override] + (["init=normal"] if override.startswith("init.std") else [])
    with pytest.raises(ConfigError) as e:
        validate(config(*overrides))
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_combinations_are_checked():
    with pytest.raises(ConfigError, match="model.batch_norm: batch norm needs batches of >= 2"):
        validate(config("model.batch_norm=true", "train.batch_size=1"))
    with pytest.raises(ConfigError, match="data.val_size: .*val_size \\+ test_size < 1"):
        validate(config("data.val_size=0.5", "data.test_size=0.5"))
    with pytest.raises(ConfigError, match="train.batch_size: got 5000; allowed: at most the 1257"):
        check_batch_size(5000, 1257)


def test_the_default_config_is_valid():
    validate(config())
    validate(config("model=deep", "optimizer=adamw", "regularizer=elastic", "init=orthogonal", "data=spiral"))


@pytest.mark.parametrize(
    "stage,override", [("train", "model.activation=swish"), ("init", "optimizer.lr=-1"), ("train", "train.epochs=abc")]
)
def test_cli_exits_2_with_one_line_and_creates_no_run(tmp_path, stage, override):
    store = tmp_store(tmp_path)
    proc = cli(stage, override, f"tracking.uri={store}")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # not even the store was created


def test_data_too_small_to_split_is_a_config_error(tmp_path):
    proc = cli("train", "data=moons", "data.n_samples=10", f"tracking.uri={tmp_store(tmp_path)}")
    assert proc.returncode == 2 and proc.stderr.startswith("error: data.n_samples: 10 examples cannot be split")
    assert "Traceback" not in proc.stderr and not (tmp_path / "mlruns").exists()


def test_unknown_group_option_gets_hydras_message_not_a_stack(tmp_path):
    proc = cli("train", "init=glorot", f"tracking.uri={tmp_store(tmp_path)}")
    assert proc.returncode != 0
    assert "Could not find 'init/glorot'" in proc.stderr
    assert "Traceback" not in proc.stderr
