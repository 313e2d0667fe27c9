"""SIGTERM during a study: workers end their runs KILLED with metrics flushed, the study stops within
seconds, and a re-run resumes from the finished children."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.harness.paths import ROOT
from tests.helpers import tmp_store

DRIVER = textwrap.dedent("""
    import sys
    from omegaconf import open_dict
    from pipeline import study, tracking
    from pipeline.harness.cli import sigterm_raises
    from tests.helpers import config
    cfg = config("study=dead_relu", "study.size=smoke", "study.n_jobs=2", "tracking.uri={store}",
                 "+study.reports_dir={reports}", "probes.every=1", hydra=True)
    with open_dict(cfg):  # a job that ends at once and one that would train for hours
        cfg.study.sizes.smoke.cases = [{{"name": "quick"}}, {{"name": "slow", "train.epochs": 100000}}]
    try:
        with sigterm_raises():
            study.run(cfg)
    except tracking.Terminated:
        sys.exit(143)
""")


def runs_by_name(store):
    """{name: newest run of that name}."""
    client = tracking.client(store)  # under the store's lock: never races the study creating it
    try:
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], order_by=["attributes.start_time ASC"]
        )
    except Exception:  # not created yet
        return client, {}
    return client, {r.info.run_name: r for r in runs}


def start_and_stop(tmp_path, store):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(store=store, reports=tmp_path / "reports"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            _, runs = runs_by_name(store)
            quick, slow = runs.get("quick"), runs.get("slow")
            if quick and quick.info.status == "FINISHED" and slow and slow.info.status == "RUNNING":
                break
        time.sleep(1.5)  # let the slow job log a few steps
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        return proc.returncode, time.time() - t0, err
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.slow
def test_sigterm_stops_a_study_cleanly_and_a_rerun_resumes(tmp_path):
    store = tmp_store(tmp_path)
    code, seconds, err = start_and_stop(tmp_path, store)
    assert code == 143, err
    assert seconds < 15
    client, runs = runs_by_name(store)
    assert runs["study dead_relu (smoke)"].info.status == "KILLED"
    assert runs["quick"].info.status == "FINISHED"
    slow = runs["slow"]
    assert slow.info.status == "KILLED"  # ended by its own worker, not left RUNNING
    assert "ended_by" not in slow.data.tags  # ... and not by the parent's clean-up of dead workers' runs
    # its worker ended it: every measurement in history.json (MLflow got them strided), the last one in MLflow
    with tempfile.TemporaryDirectory() as tmp:
        kept = json.loads(Path(client.download_artifacts(slow.info.run_id, "history.json", tmp)).read_text())
    sent = client.get_metric_history(slow.info.run_id, "train/loss")
    assert len(kept["train/loss"]) > 5 and sent and sent[-1].step == kept["train/loss"][-1][0]

    code, _, err = start_and_stop(tmp_path, store)  # the finished child is not run again
    assert code == 143, err
    client, _ = runs_by_name(store)
    all_runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    names = sorted(r.info.run_name for r in all_runs)
    assert names.count("quick") == 1 and names.count("slow") == 2
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
