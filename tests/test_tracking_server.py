"""tracking=server: a train and a study log to a running `mlflow server` (SQLite backend, served artifacts)."""

import json
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import cli, free_port, serving

pytestmark = pytest.mark.slow  # a real `mlflow server` per module: make test-slow and CI run it

MLFLOW = Path(sys.executable).parent / "mlflow"
START_SECONDS = 90  # a cold start (schema creation, app import) takes about 10 s on 2 cores


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A local `mlflow server` on a free port, with its own SQLite store and artifact folder; always stopped."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(MLFLOW),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder}/mlflow.db",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with serving(
        cmd, f"{url}/health", folder / "server.log", timeout=START_SECONDS, grace=5
    ):  # uvicorn waits for idle keep-alive connections: a temporary store
        yield url, folder


def test_train_logs_metrics_and_artifacts_to_a_tracking_server(server, tmp_path):
    url, folder = server
    proc = cli(
        "train",
        "tracking=server",
        f"tracking.uri={url}",
        "tracking.experiment=server-train",
        "data=moons",
        "model.depth=2",
        "model.width=8",
        "train.epochs=2",
    )
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("server-train")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server's, not a local folder
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "train" and run.data.tags["verdict"]
    assert {"grad_norm/total", "grad_norm/layer_01", "test/acc", "dead_relu/total"} <= set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) >= 2 and all(h.value > 0 for h in history)
    assert [h.step for h in history] == sorted(h.step for h in history)
    # artifacts went through the server into its artifact folder, and come back through it
    assert {"config.yaml", "history.json", "plots"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    assert "depth: 2" in config.read_text()
    stored = list((folder / "artifacts").rglob("config.yaml"))
    assert len(stored) == 1 and run.info.run_id in str(stored[0])
    assert json.loads(Path(client.download_artifacts(run.info.run_id, "history.json", str(tmp_path))).read_text())


@pytest.mark.slow
def test_study_on_a_tracking_server_groups_and_reads_back_its_runs(server, tmp_path):
    url, _ = server
    proc = cli(
        "study",
        "study=dead_relu",
        "study.size=smoke",
        "tracking=server",
        f"tracking.uri={url}",
        "tracking.experiment=server-study",
        f"+study.reports_dir={tmp_path}/reports",
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 runs (3 run now" in proc.stdout
    assert "MLflow UI (parent run " in proc.stdout and f"): {url}" in proc.stdout  # the server is the UI
    client = MlflowClient(url)
    study_experiment = client.get_experiment_by_name("server-study/dead_relu")  # tracking.experiment/<study>
    runs = client.search_runs([study_experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("stage") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert all(c.info.status == "FINISHED" for c in children)
    # the report was built from the children's history.json, downloaded from the server
    metrics = json.loads((tmp_path / "reports" / "dead_relu" / "metrics.json").read_text())
    assert metrics["finished"] == 3
    assert metrics["dead_peak/high_lr"] > 0  # a peak over the history: absent (NaN) without history.json
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # a second run finds the finished children on the server and skips them
    again = cli(
        "study",
        "study=dead_relu",
        "study.size=smoke",
        "tracking=server",
        f"tracking.uri={url}",
        "tracking.experiment=server-study",
        f"+study.reports_dir={tmp_path}/reports",
    )
    assert again.returncode == 0, again.stderr
    assert "(0 run now, 3 already finished" in again.stdout
