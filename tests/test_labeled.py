"""Few labels (data.n_labeled): a stratified, nested, seeded part of the training split; pretraining reads it all."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import pretrain, train
from pipeline.data import labeled, prepared
from pipeline.harness.build import load_data
from pipeline.harness.recording import config_hash
from pipeline.harness.validate import ConfigError, validate
from tests.helpers import cli, config, tmp_store


@pytest.fixture(scope="module")
def split():
    return prepared.load_or_build(config().data)[0]  # digits: 1257 training examples, 10 classes


def test_the_order_is_a_seeded_permutation_whose_every_prefix_is_stratified(split):
    y = split.y_train
    order = labeled.order(y, 0)
    assert sorted(order) == list(range(len(y))) and np.array_equal(order, labeled.order(y, 0))
    assert not np.array_equal(order, labeled.order(y, 1))
    share = np.bincount(y) / len(y)
    assert len(set(y[order[:10]])) == 10  # one of each class first
    for n in (10, 25, 50, 100, 333, 1000):
        counts = np.bincount(y[order[:n]], minlength=10)
        assert np.all(np.abs(counts - n * share) <= 2), (n, counts, n * share)


def test_real_targets_get_a_plain_permutation():
    y = np.linspace(0.0, 1.0, 50)
    assert sorted(labeled.order(y, 3)) == list(range(50))


def test_the_labeled_part_is_nested_and_leaves_validation_and_test_alone(split):
    few, more = labeled.labeled(split, 50, 0), labeled.labeled(split, 100, 0)
    assert len(few.y_train) == 50 and len(more.y_train) == 100 and few.x_train.shape == (50, 64)
    rows = {r.tobytes() for r in more.x_train}
    assert all(r.tobytes() in rows for r in few.x_train)  # the first 50 are among the first 100
    assert few.x_val is split.x_val and few.y_test is split.y_test and few.n_classes == 10
    assert labeled.labeled(split, None, 0) is split


def test_a_count_the_split_cannot_hold_is_one_line(split):
    with pytest.raises(
        ConfigError,
        match=r"^data.n_labeled: got 5; allowed: null \(every training example\) or "
        r"10..1257 \(the training split holds 1257 examples of 10 classes\)$",
    ):
        labeled.labeled(split, 5, 0)
    with pytest.raises(ConfigError, match="got 2000"):
        labeled.labeled(split, 2000, 0)
    with pytest.raises(ConfigError, match=r"^data.n_labeled: got 0; allowed: null or an integer >= 1$"):
        validate(config("data.n_labeled=0"))


def test_the_count_is_the_runs_identity_not_the_prepared_sets():
    plain, few = config(), config("data.n_labeled=100")
    assert prepared.data_key(plain.data) == prepared.data_key(few.data)  # the same prepared file
    assert config_hash(plain) != config_hash(few)
    assert "n_labeled" not in prepared.data_config(few.data)
    assert len(load_data(few).y_train) == 100 and len(load_data(plain).y_train) == 1257


def test_train_uses_the_labeled_part_pretrain_reads_every_input():
    small = ("model.depth=1", "model.width=8", "train.epochs=1", "tracking.enabled=false", "probes.enabled=false")
    assert train.run(config(*small, "data.n_labeled=30", "train.batch_size=10"))["steps"] == 3  # 30 in batches of 10
    pre = [pretrain.run(config(*small, "pretrain.epochs=1", n)) for n in ("data.n_labeled=30", "data.n_labeled=null")]
    assert pre[0]["recon"] == pre[1]["recon"]  # the same inputs, the same weights


@pytest.mark.slow
def test_the_count_is_a_param_of_the_run(tmp_path):
    from mlflow import MlflowClient

    store = tmp_store(tmp_path)
    result = train.run(
        config("model.depth=1", "train.epochs=1", "data.n_labeled=30", "train.batch_size=10", f"tracking.uri={store}")
    )
    assert MlflowClient(store).get_run(result["run_id"]).data.params["data.n_labeled"] == "30"


@pytest.mark.slow
def test_a_bad_count_on_the_command_line_is_one_line_and_no_run(tmp_path):
    proc = cli("train", "data.n_labeled=5000", f"tracking.uri={tmp_store(tmp_path)}")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: data.n_labeled: got 5000; allowed: null (every training example) or 10..1257 (the training split "
        "holds 1257 examples of 10 classes)"
    ]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # refused before any run (the store is not created)


def test_run_names_show_the_count_and_leave_every_label_unsaid():
    from pipeline.studies.grid import short_value

    assert short_value("data.n_labeled", "100") == "lab100" and short_value("data.n_labeled", "null") == ""
