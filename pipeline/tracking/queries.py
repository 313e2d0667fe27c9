"""Reading runs back from the store: a study's parent and children, JSON artifacts, stale children, runs
whose writer process is gone."""

from __future__ import annotations

import json
import socket
import tempfile

import psutil
from mlflow.exceptions import MlflowException

from pipeline.tracking.runs import WRITER_TAG
from pipeline.tracking.store import _retry, client, resolve_uri


def find_runs(uri: str, experiment: str, tags: dict[str, str]) -> list:
    """Runs of `experiment` carrying all of `tags`, newest first (empty when the experiment is missing)."""
    store = client(resolve_uri(uri))
    found = _retry(store.get_experiment_by_name, experiment)
    if found is None:
        return []
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return _retry(
        store.search_runs, [found.experiment_id], query, max_results=50000, order_by=["attributes.start_time DESC"]
    )


def download_json(uri: str, run_id: str, artifact_file: str):
    """A JSON artifact of a run, parsed (None when it is missing)."""
    store = client(resolve_uri(uri))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _retry(store.download_artifacts, run_id, artifact_file, tmp)
        except (MlflowException, OSError):
            return None
        with open(path) as f:
            return json.load(f)


def child_runs(uri: str, parent_run_id: str) -> list:
    """The runs whose mlflow.parentRunId is `parent_run_id` (a sweep's or a study's jobs)."""
    store = client(resolve_uri(uri))
    experiment_id = _retry(store.get_run, parent_run_id).info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    return _retry(store.search_runs, [experiment_id], query, max_results=50000)


def end_running_children(uri: str, parent_run_id: str, status: str = "KILLED") -> int:
    """Mark children still RUNNING (their process died before it could end them) as `status`."""
    store = client(resolve_uri(uri))
    stale = [r for r in child_runs(uri, parent_run_id) if r.info.status == "RUNNING"]
    for r in stale:
        _retry(store.set_tag, r.info.run_id, "ended_by", "parent: the job's process could not end it")
        _retry(store.set_terminated, r.info.run_id, status)
    return len(stale)


def _gone(writer: str) -> bool:
    """Whether the process a WRITER_TAG names (on this host) no longer runs: dead, or its pid reused."""
    _, pid, started = writer.rsplit(":", 2)
    try:
        return abs(psutil.Process(int(pid)).create_time() - float(started)) > 1.0
    except (psutil.NoSuchProcess, ValueError):
        return True


def end_orphaned_runs(uri: str, status: str = "KILLED") -> list[str]:
    """Mark RUNNING runs whose writer process on this host is gone (killed, crashed, its machine's job
    ended) as `status`, with an `ended_by` tag saying so; the ids. Other hosts' runs are left to their hosts."""
    store = client(resolve_uri(uri))
    experiments = [e.experiment_id for e in _retry(store.search_experiments)]
    running = _retry(store.search_runs, experiments, "attributes.status = 'RUNNING'", max_results=50000)
    host = socket.gethostname()
    ended = []
    for r in running:
        writer = r.data.tags.get(WRITER_TAG, "")
        if writer.startswith(f"{host}:") and _gone(writer):
            _retry(store.set_tag, r.info.run_id, "ended_by", f"reaper: its writer process ({writer}) is gone")
            _retry(store.set_terminated, r.info.run_id, status)
            ended.append(r.info.run_id)
    return ended
