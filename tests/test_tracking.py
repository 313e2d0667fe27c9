"""Tests for pipeline.tracking, each against a temporary SQLite store (never the project's mlruns/)."""

import inspect
import math
import shutil
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pytest  # noqa: E402
import sqlalchemy.exc  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from pipeline import tracking  # noqa: E402
from pipeline.harness.paths import ROOT  # noqa: E402
from pipeline.tracking import NullRun, Terminated, TrackedRun  # noqa: E402
from pipeline.tracking import store as tracking_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (schema creation is the slow part); artifacts land beside it."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    assert tracking.artifact_location(uri) == (folder / "artifacts").as_uri()
    yield uri, folder


@pytest.fixture
def uri(store):
    return store[0]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)


def _run(uri, run_id):
    return MlflowClient(uri).get_run(run_id)


def _values(uri, run_id, key):
    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key)]


# --- URIs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [None, ""])
def test_resolve_uri_defaults_to_absolute_project_store(given):
    resolved = tracking.resolve_uri(given)
    assert resolved == tracking.default_uri() == f"sqlite:///{ROOT}/mlruns/mlflow.db"
    assert resolved.startswith("sqlite:////")
    assert tracking.artifact_location() == (ROOT / "mlruns" / "artifacts").as_uri()


def test_resolve_uri_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_uri(None) == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere/m.db")
    assert tracking.resolve_uri(None) == f"sqlite:///{ROOT}/elsewhere/m.db"


def test_resolve_uri_makes_relative_sqlite_absolute_and_passes_others():
    assert tracking.resolve_uri("sqlite:///mlruns/x.db") == f"sqlite:///{ROOT}/mlruns/x.db"
    assert tracking.resolve_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert tracking.resolve_uri("https://mlflow.example.org") == "https://mlflow.example.org"


@pytest.mark.parametrize("given", ["file:./mlruns", "file:///tmp/mlruns", "./mlruns", "/tmp/mlruns", "mlruns"])
def test_resolve_uri_refuses_the_file_store(given):
    with pytest.raises(ValueError, match="file store") as info:
        tracking.resolve_uri(given)
    message = str(info.value)
    assert "\n" not in message and "sqlite:///" in message and "http://" in message


# --- flatten ---------------------------------------------------------------------------------------


def test_flatten_nested_dict_and_dictconfig():
    nested = {
        "model": {"depth": 2, "widths": [4, 8]},
        "optimizer": {"lr": 0.01},
        "train": {"clip": {"max_norm": None}},
        "seed": 0,
        "empty": {},
    }
    expected = {
        "model.depth": "2",
        "model.widths": "[4, 8]",
        "optimizer.lr": "0.01",
        "train.clip.max_norm": "None",
        "seed": "0",
        "empty": "{}",
    }
    assert tracking.flatten(nested) == expected
    cfg = OmegaConf.create({**nested, "ref": {"lr": "${optimizer.lr}"}})
    assert tracking.flatten(cfg) == {**expected, "ref.lr": "0.01"}
    assert tracking.flatten({"a": 1}, prefix="p") == {"p.a": "1"}
    assert tracking.flatten({"long": "x" * 7000}) == {"long": "x" * 6000}


# --- experiments -----------------------------------------------------------------------------------


def test_ensure_experiment_creates_store_and_is_idempotent(tmp_path):
    uri = f"sqlite:///{tmp_path}/nested/dir/mlflow.db"
    first = tracking.ensure_experiment(uri, "idem")
    assert (tmp_path / "nested" / "dir" / "mlflow.db").is_file()
    assert tracking.ensure_experiment(uri, "idem") == first
    experiment = MlflowClient(uri).get_experiment(first)
    assert experiment.name == "idem"
    assert experiment.artifact_location == (tmp_path / "nested" / "dir" / "artifacts").as_uri()  # beside its db


def test_ensure_experiment_survives_creation_race(uri, monkeypatch):
    existing = tracking.ensure_experiment(uri, "raced")
    real_get = MlflowClient.get_experiment_by_name
    calls = []

    def get_missing_once(self, name):
        calls.append(name)
        return None if len(calls) == 1 else real_get(self, name)  # "another process" created it meanwhile

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", get_missing_once)
    assert tracking.ensure_experiment(uri, "raced") == existing
    assert len(calls) == 2


def test_ensure_experiment_restores_a_deleted_experiment(uri):
    experiment_id = tracking.ensure_experiment(uri, "deleted-once")
    MlflowClient(uri).delete_experiment(experiment_id)
    assert tracking.ensure_experiment(uri, "deleted-once") == experiment_id
    assert MlflowClient(uri).get_experiment(experiment_id).lifecycle_stage == "active"


def test_runs_reuse_the_experiment_id_and_survive_its_deletion(uri, monkeypatch):
    with TrackedRun(uri, "cached-once", run_name="first"):
        pass
    lookups = []
    real = MlflowClient.get_experiment_by_name
    monkeypatch.setattr(
        MlflowClient, "get_experiment_by_name", lambda self, name: lookups.append(name) or real(self, name)
    )
    with TrackedRun(uri, "cached-once", run_name="second"):
        pass
    assert lookups == []  # the id this process already knows: no query per run
    experiment_id = tracking.ensure_experiment(uri, "cached-once")
    MlflowClient(uri).delete_experiment(experiment_id)  # deleted in the UI between two runs
    with TrackedRun(uri, "cached-once", run_name="third") as run:
        pass
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FINISHED"
    assert MlflowClient(uri).get_experiment(experiment_id).lifecycle_stage == "active"


# --- a full run ------------------------------------------------------------------------------------


def test_tracked_run_logs_everything_with_few_batches(uri, store, tmp_path, monkeypatch):
    batches = []
    real_log_batch = MlflowClient.log_batch

    def counting_log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        batches.append((len(metrics), len(params), len(tags), synchronous))
        return real_log_batch(self, run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)

    monkeypatch.setattr(MlflowClient, "log_batch", counting_log_batch)
    local_file = tmp_path / "notes.md"
    local_file.write_text("# notes\n")
    params = {f"p{i:03d}": i for i in range(150)}
    keys = ("train/loss", "grad_norm/layer_01", "dead_relu/total")

    with TrackedRun(uri, run_name="full", tags={"study": "unit"}) as run:
        run.log_params(params)
        for i in range(2500):
            run.log_metric(keys[i % 3], float(i), step=i // 3)
        run.set_tags({"verdict": "healthy"})
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        run.log_figure(fig, "plots/loss.png")
        run.log_text("seed: 0\n", "config.yaml")
        run.log_artifact(str(local_file), "docs")

    assert not plt.fignum_exists(fig.number)
    # 2 param batches (150 > 100), metrics at 1000 and 2000, the tags in one call, the final 500 metrics
    assert batches == [
        (0, 100, 0, True),
        (0, 50, 0, True),
        (1000, 0, 0, True),
        (1000, 0, 0, True),
        (0, 0, 1, True),
        (500, 0, 0, True),
    ]
    result = _run(uri, run.run_id)
    assert result.info.status == "FINISHED"
    assert result.info.run_name == "full"
    assert result.data.params == {k: str(v) for k, v in params.items()}
    assert result.data.tags["study"] == "unit" and result.data.tags["verdict"] == "healthy"
    for k, key in enumerate(keys):
        expected = [(i // 3, float(i)) for i in range(2500) if i % 3 == k]
        assert _values(uri, run.run_id, key) == expected
    client = MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"plots", "config.yaml", "docs"}
    assert [a.path for a in client.list_artifacts(run.run_id, "plots")] == ["plots/loss.png"]
    artifact_dir = store[1] / "artifacts" / run.run_id / "artifacts"
    assert (artifact_dir / "config.yaml").read_text() == "seed: 0\n"
    assert (artifact_dir / "docs" / "notes.md").is_file()
    assert run.seconds_in_mlflow > 0.0


def test_metrics_are_buffered_until_flush_every_or_flush(uri):
    with TrackedRun(uri, flush_every=4) as run:
        run.log_metrics({"a": 1.0, "b": 2.0}, step=0)
        run.log_metric("a", 3.0, step=1)
        assert _values(uri, run.run_id, "a") == []  # 3 values: still buffered
        run.log_metric("b", 4.0, step=1)  # the 4th value triggers a flush
        assert _values(uri, run.run_id, "a") == [(0, 1.0), (1, 3.0)]
        assert _values(uri, run.run_id, "b") == [(0, 2.0), (1, 4.0)]
        run.log_metrics({"a": 5.0}, step=2)
        assert len(_values(uri, run.run_id, "a")) == 2
        run.flush()
        assert _values(uri, run.run_id, "a")[-1] == (2, 5.0)


def test_non_finite_metrics_are_stored(uri):
    with TrackedRun(uri) as run:
        for step, value in enumerate([1.0, float("nan"), float("inf"), float("-inf")]):
            run.log_metric("train/loss", value, step)
    stored = [value for _, value in _values(uri, run.run_id, "train/loss")]
    assert stored[0] == 1.0 and math.isnan(stored[1])
    # SQL stores have no infinity: MLflow clamps +-inf to +-max float64.
    assert stored[2:] == [sys.float_info.max, -sys.float_info.max]


# --- how runs end ----------------------------------------------------------------------------------


def test_exception_marks_run_failed_with_error_tag_and_flushes(uri):
    with pytest.raises(ZeroDivisionError):
        with TrackedRun(uri) as run:
            run.log_metric("train/loss", 0.5, 0)
            _ = 1 / 0
    result = _run(uri, run.run_id)
    assert result.info.status == "FAILED"
    assert result.data.tags["error"] == "ZeroDivisionError: division by zero"
    assert _values(uri, run.run_id, "train/loss") == [(0, 0.5)]


def test_error_tag_is_truncated(uri):
    with pytest.raises(RuntimeError):
        with TrackedRun(uri) as run:
            raise RuntimeError("x" * 9000)
    assert len(_run(uri, run.run_id).data.tags["error"]) == 5000


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Terminated])
def test_interrupt_marks_run_killed_and_flushes(uri, interrupt):
    with pytest.raises(interrupt):
        with TrackedRun(uri) as run:
            run.log_metric("train/loss", 0.25, 3)
            raise interrupt()
    result = _run(uri, run.run_id)
    assert result.info.status == "KILLED"
    assert result.data.tags["error"].startswith("interrupted: SIG")  # never KILLED without saying why
    assert _values(uri, run.run_id, "train/loss") == [(3, 0.25)]


def test_an_interrupt_during_the_last_flush_ends_the_run_killed_not_failed(uri, monkeypatch):
    run = TrackedRun(uri).start()
    run.set_tags({"verdict": "healthy"})  # the run had finished its work
    run.log_metric("train/loss", 1.0, 0)
    real = run._client.log_batch

    def interrupted_once(*args, **kwargs):  # as Ctrl-C held during the write, raised as soon as it returns
        monkeypatch.setattr(run._client, "log_batch", real)
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(run._client, "log_batch", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        run.end()
    result = _run(uri, run.run_id)
    assert result.info.status == "KILLED"
    assert result.data.tags["error"] == "interrupted: SIGINT (Ctrl-C); running the same command again resumes"


def test_end_is_idempotent(uri):
    run = TrackedRun(uri).start()
    run.end("KILLED")
    run.end("FINISHED")
    with run:
        pass
    assert _run(uri, run.run_id).info.status == "KILLED"


def test_failed_flush_still_terminates_the_run(uri, monkeypatch):
    run = TrackedRun(uri).start()
    run.log_metric("train/loss", 1.0, 0)

    def broken_log_batch(*args, **kwargs):
        raise MlflowException("disk full")

    monkeypatch.setattr(run._client, "log_batch", broken_log_batch)
    with pytest.raises(MlflowException, match="disk full"):
        run.end()
    assert _run(uri, run.run_id).info.status == "FAILED"


def test_failed_flush_does_not_mask_the_original_exception(uri, monkeypatch):
    with pytest.raises(KeyError):
        with TrackedRun(uri) as run:
            run.log_metric("train/loss", 1.0, 0)
            monkeypatch.setattr(run._client, "log_batch", lambda *a, **k: 1 / 0)
            raise KeyError("original")
    assert _run(uri, run.run_id).info.status == "FAILED"


# --- sweeps: parent runs ---------------------------------------------------------------------------


def test_parent_run_from_argument_and_environment(uri, monkeypatch):
    with TrackedRun(uri, run_name="sweep") as parent:
        with TrackedRun(uri, parent_run_id=parent.run_id) as by_argument:
            pass
        monkeypatch.setenv(tracking.PARENT_RUN_ENV, parent.run_id)
        with TrackedRun(uri) as by_environment:
            pass
        with TrackedRun(uri, parent_run_id="") as explicitly_none:
            pass
    assert _run(uri, by_argument.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert _run(uri, by_environment.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert "mlflow.parentRunId" not in _run(uri, explicitly_none.run_id).data.tags
    assert "mlflow.parentRunId" not in _run(uri, parent.run_id).data.tags


def test_end_stale_active_run(uri, monkeypatch):
    tracking.end_stale_active_run()  # nothing active: no-op
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the fluent API's store, for this test only
    stale = mlflow.start_run(experiment_id=tracking.ensure_experiment(uri))
    tracking.end_stale_active_run()
    assert mlflow.active_run() is None
    assert _run(uri, stale.info.run_id).info.status == "FAILED"


# --- signals ---------------------------------------------------------------------------------------


def test_sigterm_raises_terminated_in_main_thread_only():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        worker = threading.Thread(target=tracking.install_signal_handlers)
        worker.start()
        worker.join()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # no-op outside the main thread
        tracking.install_signal_handlers()
        with pytest.raises(Terminated):
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- NullRun ---------------------------------------------------------------------------------------


def _public_methods(cls):
    return {
        name
        for name, _ in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") or name in ("__enter__", "__exit__")
    }


def test_null_run_has_the_same_api_and_does_nothing():
    assert _public_methods(TrackedRun) <= _public_methods(NullRun)
    for name in _public_methods(TrackedRun):
        tracked = inspect.signature(getattr(TrackedRun, name)).parameters
        null = inspect.signature(getattr(NullRun, name)).parameters
        assert list(tracked) == list(null), name
    fig = plt.figure()
    with NullRun("sqlite:///never.db", run_name="x") as run:
        assert run.start() is run and run.run_id is None and run.seconds_in_mlflow == 0.0
        run.log_params({"a": "1"})
        run.log_metric("m", 1.0, 0)
        run.log_metrics({"m": 1.0}, 1)
        run.set_tags({"t": "v"})
        run.log_figure(fig, "f.png")
        run.log_text("t", "t.txt")
        run.log_artifact("missing.txt")
        run.flush()
        run.end()
    assert not plt.fignum_exists(fig.number)  # closed even when nothing is tracked
    assert not Path("never.db").exists()
    with pytest.raises(ValueError):
        with NullRun():
            raise ValueError("propagates")


# --- lock retry ------------------------------------------------------------------------------------


def _locked_error():
    return sqlalchemy.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))


def test_retry_backs_off_on_locked_database_then_succeeds(monkeypatch):
    delays = []
    monkeypatch.setattr(tracking_store, "_sleep", delays.append)
    failures = [_locked_error(), MlflowException("(sqlite3.OperationalError) database is locked")]

    def flaky(x, *, y):
        if failures:
            raise failures.pop(0)
        return x + y

    assert tracking_store._retry(flaky, 1, y=2) == 3
    assert delays == [0.05, 0.1]


def test_retry_gives_up_and_ignores_other_errors(monkeypatch):
    delays = []
    monkeypatch.setattr(tracking_store, "_sleep", delays.append)
    calls = []

    def always_locked():
        calls.append(1)
        raise _locked_error()

    with pytest.raises(sqlalchemy.exc.OperationalError):
        tracking_store._retry(always_locked)
    assert len(calls) == tracking_store._LOCK_TRIES and len(delays) == tracking_store._LOCK_TRIES - 1

    def other_error():
        calls.append(2)
        raise sqlalchemy.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: runs"))

    calls.clear()
    delays.clear()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="no such table"):
        tracking_store._retry(other_error)
    assert calls == [2] and delays == []


@pytest.mark.slow
def test_processes_creating_one_fresh_store_at_once_all_succeed(tmp_path):
    """The schema is built under a lock file: four commands started together on a new store all work."""
    import subprocess
    import sys

    from pipeline.harness.paths import ROOT

    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    code = f"from pipeline import tracking; print(tracking.ensure_experiment({uri!r}, 'together'))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # one experiment, the same id for all


def test_a_fresh_store_is_copied_from_the_cached_schema(tmp_path, monkeypatch):
    """The first fresh store caches MLflow's empty schema (no default experiment); the next is a copy of it,
    whose default experiment MLflow makes as it does in a store it builds itself."""
    from pipeline.tracking import store as store_module

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = store_module.schema_template()
    assert not template.exists()
    first = f"sqlite:///{tmp_path}/a/mlflow.db"
    made_by_mlflow = tracking.client(first).get_experiment("0")
    with sqlite3.connect(template) as con:  # the schema, without the first store's default experiment
        assert con.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
        assert con.execute("SELECT COUNT(*) FROM alembic_version").fetchone() == (1,)
    second = f"sqlite:///{tmp_path}/b/mlflow.db"
    made, copy = [], shutil.copyfile
    monkeypatch.setattr(store_module.shutil, "copyfile", lambda a, b: made.append(a) or copy(a, b))
    client = tracking.client(second)
    assert made == [template]
    default = client.get_experiment("0")
    assert (default.name, default.artifact_location) == (made_by_mlflow.name, made_by_mlflow.artifact_location)
    with tracking.TrackedRun(second, "x", parent_run_id="") as run:
        run.log_metrics({"m": 1.0}, 0)
    assert client.get_run(run.run_id).data.metrics == {"m": 1.0}
