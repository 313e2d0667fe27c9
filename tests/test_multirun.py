"""Hydra multirun with the joblib launcher: one parent run per sweep, every job a child, failures contained."""

import pytest
from mlflow import MlflowClient

from tests.helpers import cli, tmp_store


def children_of_sweep(store):
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, kids, runs


@pytest.mark.slow
def test_joblib_sweep_groups_children_under_one_parent(tmp_path):
    store = tmp_store(tmp_path)
    proc = cli(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "model.activation=sigmoid,relu",
        "init=xavier_uniform,he_normal",
        "data=xor",
        "model.depth=2",
        "model.width=8",
        "train.epochs=1",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    assert proc.returncode == 0, proc.stderr
    parent, kids, runs = children_of_sweep(store)
    assert len(kids) == 4 and len(runs) == 5
    assert parent.info.status == "FINISHED" and all(k.info.status == "FINISHED" for k in kids)
    assert {k.info.run_name for k in kids} == {
        f"train model.activation={a} init={i}" for a in ("sigmoid", "relu") for i in ("xavier_uniform", "he_normal")
    }
    assert "4 FINISHED" in parent.data.tags["summary"]
    assert "mlflow ui --backend-store-uri" in proc.stdout


def test_a_failing_and_an_invalid_job_do_not_stop_the_others(tmp_path):
    store = tmp_store(tmp_path)
    # a width of 10^12 passes validation but cannot be allocated: that job fails with a MemoryError
    proc = cli(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "data=moons",
        "model.width=1000000000000,8",
        "model.activation=relu,swish",
        "model.depth=1",
        "train.epochs=1",
        "train.batch_size=8",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    assert "Traceback" not in proc.stderr
    assert "model.activation: got 'swish'" in proc.stderr
    parent, kids, _ = children_of_sweep(store)
    statuses = sorted(k.info.status for k in kids)
    assert statuses == ["FAILED", "FINISHED"]  # the two swish jobs never created a run
    failed = next(k for k in kids if k.info.status == "FAILED")
    assert failed.data.tags["error"].startswith("MemoryError")
    client = MlflowClient(store)
    assert "error.txt" in {a.path for a in client.list_artifacts(failed.info.run_id)}  # the traceback
    assert "2 invalid" in parent.data.tags["summary"] and parent.info.status == "FINISHED"
