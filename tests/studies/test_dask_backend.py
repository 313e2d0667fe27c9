"""study.backend=dask: a study's jobs through joblib's dask backend, on its own LocalCluster or an existing
scheduler; same runs and metrics as the loky backend; bad settings give one line before any work."""

import sys

import pytest
from mlflow import MlflowClient

from pipeline import study
from pipeline.harness.validate import ConfigError
from tests.helpers import cli, config, run_study, tmp_store


def children(store, parent_run_id):
    """{run name: run} of the parent's children, and the parent."""
    client = MlflowClient(store)
    parent = client.get_run(parent_run_id)
    kids = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return parent, {k.info.run_name: k for k in kids}


def measured(run):
    """A run's metrics without the wall-clock ones."""
    return {k: v for k, v in run.data.metrics.items() if not k.startswith("time/")}


@pytest.mark.slow
def test_dask_local_cluster_runs_the_study_like_loky(tmp_path):
    pytest.importorskip("distributed", reason="study.backend=dask needs the [dist] extra: pip install -e '.[dist]'")
    dask = run_study("dead_relu", tmp_path / "dask", "study.backend=dask", "study.n_jobs=2")
    loky = run_study("dead_relu", tmp_path / "loky", "study.backend=loky", "study.n_jobs=2")
    assert dask["backend"] == "dask" and loky["backend"] == "loky"
    assert dask["ran"] == 3 and dask["failed"] == 0
    assert "(backend dask, " in study.summary_line(dask)
    parent, kids = children(tmp_store(tmp_path / "dask"), dask["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["backend"] == "dask"
    assert sorted(kids) == ["baseline", "high_lr", "high_lr+leaky"]  # the case names
    assert all(k.info.status == "FINISHED" for k in kids.values())
    loky_parent, loky_kids = children(tmp_store(tmp_path / "loky"), loky["parent_run_id"])
    assert loky_parent.data.tags["backend"] == "loky"
    # the same config and seed give the same numbers whichever processes ran them
    for name, kid in kids.items():
        assert kid.data.tags["config_hash"] == loky_kids[name].data.tags["config_hash"]
        assert measured(kid) == measured(loky_kids[name]), name
        assert len(measured(kid)) > 20
    assert dask["metrics"] == loky["metrics"]


@pytest.mark.slow
def test_dask_on_an_existing_scheduler(tmp_path):
    distributed = pytest.importorskip("distributed", reason="needs the [dist] extra: pip install -e '.[dist]'")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        result = run_study("dead_relu", tmp_path, "study.backend=dask", f"study.dask_address={cl.scheduler_address}")
        with distributed.Client(cl) as client:  # the cluster outlives the study: it was not the study's
            # the three jobs ran on its one worker, not in this process (joblib alone would run them here)
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
            assert sum(executed.values()) == 3
    parent, kids = children(tmp_store(tmp_path), result["parent_run_id"])
    assert parent.data.tags["backend"] == "dask" and len(kids) == 3
    assert all(k.info.status == "FINISHED" for k in kids.values())


@pytest.mark.parametrize(
    "override, message",
    [
        ("study.backend=ray", "error: study.backend: got 'ray'; allowed: one of loky, dask"),
        ("study.dask_address=nowhere", "error: study.dask_address: got 'nowhere'; allowed: null (a LocalCluster)"),
        (
            "study.dask_address=tcp://127.0.0.1:1",
            "error: study.dask_address: no scheduler answers at tcp://127.0.0.1:1",
        ),
    ],
)
def test_bad_backend_settings_give_one_line_and_no_run(tmp_path, override, message):
    if "dask_address" in override:
        pytest.importorskip("distributed", reason="needs the [dist] extra: pip install -e '.[dist]'")
    store = tmp_store(tmp_path)
    proc = cli(
        "study",
        "study=dead_relu",
        "study.size=smoke",
        "study.backend=dask",
        override,
        f"tracking.uri={store}",
        f"+study.reports_dir={tmp_path}/reports",
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "mlruns").exists()  # nothing ran, no store, no half-made run


def test_missing_distributed_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    cfg = config(
        "study=dead_relu", "study.size=smoke", "study.backend=dask", f"tracking.uri={tmp_store(tmp_path)}", hydra=True
    )
    with pytest.raises(
        ConfigError,
        match=r"^study\.backend: dask needs the `distributed` package.*"
        r"pip install -e '\.\[dist\]'$",
    ):
        study.run(cfg)
    assert not (tmp_path / "mlruns").exists()
