"""SIGTERM / SIGINT during a run: buffered metrics flushed, the run marked KILLED, a prompt exit."""

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

from pipeline import tracking
from pipeline.harness import cli as cli_module
from pipeline.harness.paths import ROOT
from tests.helpers import tmp_store


def runs_in(store):
    client = tracking.client(store)  # under the store's lock: never races the job creating it
    try:
        return client, client.search_runs([e.experiment_id for e in client.search_experiments()])
    except Exception:  # the store does not exist yet
        return client, []


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)])
def test_signal_marks_the_run_killed_and_keeps_its_metrics(tmp_path, sig, code):
    store = tmp_store(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.train",
            "train.epochs=100000",
            "probes.every=1",
            "model.depth=1",
            "data=xor",
            f"tracking.uri={store}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until the run exists and is training
            time.sleep(0.5)
            client, runs = runs_in(store)
            if runs and runs[0].info.status == "RUNNING":
                break
        time.sleep(1.0)
        t0 = time.time()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert time.time() - t0 < 10
    finally:  # never leave the child behind (a live Popen warns when collected later)
        proc.kill()
        proc.communicate()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "run marked KILLED" in err
    client, runs = runs_in(store)
    assert len(runs) == 1 and runs[0].info.status == "KILLED"
    sent = client.get_metric_history(runs[0].info.run_id, "grad_norm/total")
    # every measurement is in history.json (MLflow got them strided: 100000 epochs planned, 500 points at most)
    with tempfile.TemporaryDirectory() as tmp:
        kept = json.loads(Path(client.download_artifacts(runs[0].info.run_id, "history.json", tmp)).read_text())
    assert len(kept["grad_norm/total"]) > 10
    assert sent and sent[-1].step == kept["grad_norm/total"][-1][0]  # the last measurement reached MLflow too


def test_parallel_jobs_get_one_blas_thread_each(monkeypatch):
    monkeypatch.setattr(cli_module, "parallel_jobs", lambda: 64)
    with cli_module.blas_limit():
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")


def test_an_interrupt_during_an_mlflow_call_waits_for_the_call():
    from pipeline import tracking
    from pipeline.tracking import signals

    finished = []
    with pytest.raises(KeyboardInterrupt):
        with signals._shield():
            signals._interrupt(signal.SIGINT, None)  # as if Ctrl-C arrived inside a database commit
            finished.append("commit done")
    assert finished == ["commit done"]
    with pytest.raises(tracking.Terminated):
        signals._interrupt(signal.SIGTERM, None)  # outside a call: at once


def _ctrl_c_then_report() -> dict:
    """A job's body: Ctrl-C reaches this process (as it reaches every process of a terminal's group)."""
    import os

    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # a handler that raises would have run by now
    return {"run_id": "r", "handler": str(signal.getsignal(signal.SIGINT))}


def test_a_study_worker_leaves_ctrl_c_to_its_parent(monkeypatch, tmp_path):
    """A worker (a board given) ignores SIGINT inside a job and after it; its parent relays a stop as SIGTERM."""
    from pipeline.harness import dispatch

    monkeypatch.setitem(dispatch.JOB_STAGES, "probe", __name__)
    monkeypatch.setattr(sys.modules[__name__], "run", lambda cfg: _ctrl_c_then_report(), raising=False)
    before = signal.getsignal(signal.SIGINT)
    try:
        outcome = dispatch.run_job("probe", None, None, board=str(tmp_path))
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)
    assert outcome["status"] == "FINISHED", outcome
    assert after is signal.SIG_IGN  # idle between jobs too: the next Ctrl-C lands nowhere
    with pytest.raises(KeyboardInterrupt):  # a run in the user's own process still stops on Ctrl-C
        dispatch.run_job("probe", None, None)
