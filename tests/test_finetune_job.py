"""The finetune job (study.stage: finetune): pretrain, then train from its weights, one identity for both (the
runs it logs to MLflow: slow, a fresh store each; the smoke study end to end covers them too)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from pipeline import train
from pipeline.harness import finetune
from pipeline.harness.recording import config_hash
from pipeline.studies.grid import expand
from tests.helpers import config, tmp_store

SMALL = ("model.activation=sigmoid", "model.depth=2", "model.width=8", "init=standard", "train.epochs=1")


@pytest.mark.slow
def test_without_pretraining_it_is_the_train_run_itself_with_its_start_and_identity(tmp_path):
    store = tmp_store(tmp_path)
    cfg = config(*SMALL, "pretrain.epochs=0", f"tracking.uri={store}", "tracking.run_name=job")
    job, plain = finetune.run(cfg), train.run(config(*SMALL, "pretrain.epochs=0", "tracking.enabled=false"))
    assert job["metrics"] == plain["metrics"]  # the same net from the same draws: the random-init control
    client = MlflowClient(store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.tags["stage"] == "finetune" and run.data.tags["config_hash"] == config_hash(cfg, "finetune")
    assert "init_source_run" not in run.data.tags
    (start,) = client.get_metric_history(run.info.run_id, "start/grad_norm/layer_01")
    assert start.step == 0 and 0 < start.value < 1


def test_the_identity_covers_pretraining_for_finetune_jobs_only():
    a, b = config(*SMALL, "pretrain.epochs=3"), config(*SMALL, "pretrain.epochs=4")
    assert config_hash(a, "finetune") != config_hash(b, "finetune")
    assert config_hash(a) == config_hash(b) == config_hash(a, "train")  # train's identity as before
    smoke = config("study=pretraining", "study.size=smoke", hydra=True)
    jobs = expand(smoke)
    assert all(j.hash == config_hash(j.cfg, "finetune") for j in jobs) and len({j.hash for j in jobs}) == len(jobs)
    depth = expand(config("study=depth", "study.size=smoke", hydra=True))
    assert all(j.hash == config_hash(j.cfg) for j in depth)


@pytest.mark.slow
def test_with_pretraining_two_runs_the_fine_tuning_one_linked_to_the_pretrain_one(tmp_path):
    store = tmp_store(tmp_path)
    cfg = config(*SMALL, "pretrain.epochs=2", f"tracking.uri={store}", "tracking.run_name=sig d2")
    result = finetune.run(cfg)
    client = MlflowClient(store)
    runs = {r.data.tags["stage"]: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    pre, tuned = runs["pretrain"], runs["finetune"]
    assert tuned.info.run_id == result["run_id"] and pre.info.run_name == "sig d2 pretrain"
    assert tuned.data.tags["init_source_run"] == pre.info.run_id == tuned.data.tags["init_source"]
    assert tuned.data.tags["config_hash"] == config_hash(cfg, "finetune") and tuned.data.params["init.name"] == (
        "pretrained"
    )
    # the fine-tuning run starts from the pretrained stack: the gradient its first layer gets is the pretrain run's
    start = tuned.data.metrics["start/grad_norm/layer_01"]
    assert start == pytest.approx(pre.data.metrics["start/grad_norm/layer_01"], rel=1e-5)


def test_untracked_it_hands_the_weights_over_through_a_folder():
    off = ("tracking.enabled=false",)
    tuned = finetune.run(config(*SMALL, "pretrain.epochs=2", *off))
    control = finetune.run(config(*SMALL, "pretrain.epochs=0", *off))
    assert tuned["run_id"] is None and tuned["metrics"] != control["metrics"]


def test_a_net_pretraining_cannot_stack_is_one_line():
    from pipeline.harness.validate import ConfigError

    with pytest.raises(ConfigError, match="model.batch_norm=false"):
        finetune.run(config(*SMALL, "model.batch_norm=true", "pretrain.epochs=1", "tracking.enabled=false"))
