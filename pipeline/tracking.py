"""The one place that talks to MLflow: store URIs, experiments, buffered runs, clean run endings."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import sqlalchemy.exc
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from pipeline.paths import TRACKING_ROOT

DEFAULT_EXPERIMENT = "gradlab"
PARENT_RUN_ENV = "GRADLAB_PARENT_RUN_ID"

# MLflow's own limits (mlflow.utils.validation); the client rejects anything larger.
_MAX_PARAM_VALUE = 6000
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_ERROR_TAG = 5000

# SQLite lock retry: 0.05 s doubling, 10 tries (about 25 s of waiting in total).
_LOCK_TRIES = 10
_LOCK_FIRST_DELAY = 0.05
_sleep = time.sleep  # module attribute so tests can record the backoff without waiting

T = TypeVar("T")
_log = logging.getLogger(__name__)

# A fresh SQLite store logs "Creating initial MLflow database tables..." at INFO on the user's
# terminal; keep MLflow and alembic at WARNING unless the user asked for a level explicitly.
# reading a run's artifacts back (study reports) would draw a progress bar per file on stderr
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

if "MLFLOW_LOGGING_LEVEL" not in os.environ:
    for _name in ("mlflow", "alembic"):
        logging.getLogger(_name).setLevel(logging.WARNING)


def default_uri() -> str:
    """The project's SQLite store, as an absolute sqlite:/// URI."""
    return f"sqlite:///{TRACKING_ROOT}/mlruns/mlflow.db"


def artifact_location(uri: str | None = None) -> str:
    """The artifact root for experiments created in a database store: `artifacts/` beside a SQLite file.

    The project's store gives mlruns/artifacts; a store elsewhere (a test's, a copy's) keeps its
    artifacts next to its own database instead of writing into the project's.
    """
    if uri and uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return (TRACKING_ROOT / "mlruns" / "artifacts").as_uri()


def resolve_uri(uri: str | None) -> str:
    """Turn a configured tracking URI into an absolute, supported one (see DESIGN.md section 6)."""
    if not uri:
        env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        return resolve_uri(env_uri) if env_uri else default_uri()
    if uri.startswith("file:") or "://" not in uri:
        raise ValueError(
            f"tracking URI {uri!r} is an MLflow file store, which MLflow >= 3.13 refuses; "
            "use sqlite:///<path>/mlflow.db or http://<host>:<port> instead"
        )
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        # Hydra and DVC change the working directory, so a relative database path means "under ROOT".
        if path and path != ":memory:" and not Path(path).is_absolute():
            return f"sqlite:///{TRACKING_ROOT / path}"
    return uri


def _is_locked(exc: BaseException) -> bool:
    """True for SQLite's transient 'database is locked', however MLflow wrapped it."""
    lock_types = (MlflowException, sqlalchemy.exc.OperationalError, sqlite3.OperationalError)
    return isinstance(exc, lock_types) and "database is locked" in str(exc)


_seconds_in_mlflow = 0.0  # this process's wall time inside MLflow calls, for the tracking-overhead figure


def seconds_in_mlflow() -> float:
    """Wall time this process has spent in MLflow calls so far (every call goes through _retry)."""
    return _seconds_in_mlflow


def _retry(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call fn, retrying with exponential backoff while SQLite reports 'database is locked'."""
    global _seconds_in_mlflow
    started = time.perf_counter()
    delay = _LOCK_FIRST_DELAY
    try:
        for attempt in range(1, _LOCK_TRIES + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if attempt == _LOCK_TRIES or not _is_locked(exc):
                    raise
                _log.debug("database is locked (try %d of %d), retrying in %.2f s", attempt, _LOCK_TRIES, delay)
                _sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")
    finally:
        _seconds_in_mlflow += time.perf_counter() - started


_clients: dict[str, MlflowClient] = {}


def _client(uri: str) -> MlflowClient:
    """This process's MlflowClient for `uri`; building one creates or migrates the schema of a fresh SQLite
    file and checks it (tens of ms: once per process, not once per run)."""
    client = _clients.get(uri)
    if client is None:
        with warnings.catch_warnings(), _schema_lock(uri):
            # SQLAlchemy 2 deprecation warning from MLflow's own mappers, once per process: not ours to fix.
            warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
            client = _clients[uri] = _retry(MlflowClient, uri)
    return client


@contextlib.contextmanager
def _schema_lock(uri: str):
    """Hold an exclusive lock file beside a SQLite store while a client is built.

    Building a client creates or migrates the schema, and two processes doing that at once on a fresh file
    fail (two commands started together, a test polling the store a job is creating). Where the file
    system has no locks, go on without.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            _log.debug("no file lock on %s; building the MLflow client unlocked", path)
        yield  # the lock goes with the handle


_experiment_ids: dict[tuple[str, str], str] = {}  # (uri, name) -> id, known to exist in this process


def ensure_experiment(uri: str, name: str = DEFAULT_EXPERIMENT, cached: bool = False) -> str:
    """Create the store and the experiment if missing and return its id; call once before workers start.

    `cached`: trust an id this process already saw (a run start: saves a query per run; a run that then
    fails to start because the experiment was deleted meanwhile asks again).
    """
    uri = resolve_uri(uri)
    if cached and (uri, name) in _experiment_ids:
        return _experiment_ids[(uri, name)]
    _experiment_ids[(uri, name)] = experiment_id = _ensure_experiment(uri, name)
    return experiment_id


def _ensure_experiment(uri: str, name: str) -> str:
    client = _client(uri)  # a SQLite store's folder is made under its lock
    experiment = _retry(client.get_experiment_by_name, name)
    if experiment is None:
        # A tracking server chooses its own artifact root; a database store we write to directly.
        location = None if uri.startswith(("http://", "https://")) else artifact_location(uri)
        try:
            return _retry(client.create_experiment, name, artifact_location=location)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = _retry(client.get_experiment_by_name, name)  # another process created it first
    if experiment.lifecycle_stage == "deleted":
        # Someone deleted it in the UI; runs cannot be created in a deleted experiment.
        _retry(client.restore_experiment, experiment.experiment_id)
    return experiment.experiment_id


def flatten(cfg: Mapping | DictConfig, prefix: str = "") -> dict[str, str]:
    """Nested config to {"model.depth": "2", ...} with string values cut to MLflow's param limit."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = str(value)[:_MAX_PARAM_VALUE]
    return flat


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store (the venv's mlflow, bound to localhost)."""
    import sys

    if uri.startswith(("http://", "https://")):
        return uri  # a tracking server serves the UI itself

    mlflow_cli = Path(sys.executable).parent / "mlflow"
    # as `make ui`: no GenAI job runner (seconds of start-up), and UI-made experiments keep artifacts here
    root = artifact_location(uri).removeprefix("file://")
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow_cli} ui --backend-store-uri {uri} "
            f"--default-artifact-root {root} --host 127.0.0.1 --port 5000 --workers 1")


def find_runs(uri: str, experiment: str, tags: dict[str, str]) -> list:
    """Runs of `experiment` carrying all of `tags`, newest first (empty when the experiment is missing)."""
    client = _client(resolve_uri(uri))
    found = _retry(client.get_experiment_by_name, experiment)
    if found is None:
        return []
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return _retry(client.search_runs, [found.experiment_id], query, max_results=50000,
                  order_by=["attributes.start_time DESC"])


def download_json(uri: str, run_id: str, artifact_file: str):
    """A JSON artifact of a run, parsed (None when it is missing)."""
    import json
    import tempfile

    client = _client(resolve_uri(uri))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _retry(client.download_artifacts, run_id, artifact_file, tmp)
        except (MlflowException, OSError):
            return None
        with open(path) as f:
            return json.load(f)


def child_runs(uri: str, parent_run_id: str) -> list:
    """The runs whose mlflow.parentRunId is `parent_run_id` (a sweep's or a study's jobs)."""
    client = _client(resolve_uri(uri))
    experiment_id = _retry(client.get_run, parent_run_id).info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    return _retry(client.search_runs, [experiment_id], query, max_results=50000)


def end_running_children(uri: str, parent_run_id: str, status: str = "KILLED") -> int:
    """Mark children still RUNNING (their process died before it could end them) as `status`."""
    client = _client(resolve_uri(uri))
    stale = [r for r in child_runs(uri, parent_run_id) if r.info.status == "RUNNING"]
    for r in stale:
        _retry(client.set_tag, r.info.run_id, "ended_by", "parent: the job's process could not end it")
        _retry(client.set_terminated, r.info.run_id, status)
    return len(stale)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so runs end KILLED."""


# An interrupt that lands inside a database call can leave this process holding SQLite's write lock in a
# half-finished transaction; the flush that then ends the run KILLED would wait on its own lock. So while
# an MLflow call is under way the signal is only noted, and raised as soon as the call returns.
_shielded = 0
_pending: BaseException | None = None


def _interrupt(signum: int, frame: object) -> None:
    """Signal handler: SIGTERM -> Terminated, SIGINT -> KeyboardInterrupt, deferred past an MLflow call."""
    global _pending
    exc = Terminated(f"received signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()
    if _shielded:
        _pending = _pending or exc
        return
    raise exc


@contextlib.contextmanager
def _shield():
    """Hold interrupts while MLflow works; raise a held one once no call is under way."""
    global _shielded, _pending
    _shielded += 1
    try:
        yield
    finally:
        _shielded -= 1
    if not _shielded and _pending is not None:
        exc, _pending = _pending, None
        raise exc


def install_signal_handlers() -> None:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt (both held during MLflow calls); main thread.

    SIGINT is set explicitly: a process started in the background of a non-interactive shell inherits
    it ignored, and Ctrl-C or kill -INT must still end the run as KILLED.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)


def end_stale_active_run() -> None:
    """End a fluent-API run left active in this (reused loky worker) process by an earlier job."""
    stale = mlflow.active_run()
    if stale is not None:
        _log.warning("ending stale MLflow run %s left active in this process", stale.info.run_id)
        mlflow.end_run(status="FAILED")


class TrackedRun:
    """One MLflow run with buffered metrics; a context manager that always ends the run."""

    def __init__(self, uri: str, experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
                 tags: dict[str, str] | None = None, parent_run_id: str | None = None,
                 flush_every: int = 1000) -> None:
        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.run_name = run_name
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        # None means "inherit the sweep's parent from the environment"; "" means explicitly no parent.
        parent = parent_run_id if parent_run_id is not None else os.environ.get(PARENT_RUN_ENV)
        self.parent_run_id = parent or None
        self.flush_every = flush_every
        self.run_id: str | None = None
        self._mlflow_before = seconds_in_mlflow()
        self._client: MlflowClient | None = None
        self._buffer: list[Metric] = []
        self._ended = False

    @property
    def seconds_in_mlflow(self) -> float:
        """This process's time in MLflow calls since the run was made (its own calls, in a stage)."""
        return seconds_in_mlflow() - self._mlflow_before

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one MLflow call with lock retry, interrupts held until it returns."""
        with _shield():
            return _retry(fn, *args, **kwargs)

    def start(self) -> TrackedRun:
        """Create the run (and the experiment if needed); a second call does nothing."""
        if self.run_id is not None:
            return self
        with _shield():
            experiment_id = ensure_experiment(self.uri, self.experiment, cached=True)  # retries internally
            self._client = _client(self.uri)
        tags = dict(self.tags)
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        try:
            run = self._call(self._client.create_run, experiment_id, run_name=self.run_name, tags=tags)
        except MlflowException:  # the cached experiment may have been deleted since: look it up afresh
            experiment_id = ensure_experiment(self.uri, self.experiment)
            run = self._call(self._client.create_run, experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        return self

    @classmethod
    def resume(cls, uri: str, run_id: str) -> TrackedRun:
        """Reopen an ended run (a study's parent, on a re-run): RUNNING again, its tags and data kept."""
        run = cls(uri, parent_run_id="")
        run._client = _client(run.uri)
        info = run._call(run._client.get_run, run_id).info
        run.run_name, run.run_id = info.run_name, run_id
        run._call(run._client.update_run, run_id, status="RUNNING")
        return run

    def log_params(self, params: dict[str, str]) -> None:
        """Log params now, in batches of MLflow's 100-param limit."""
        items = [Param(key, str(value)[:_MAX_PARAM_VALUE]) for key, value in params.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self._call(self._client.log_batch, self.run_id, params=items[i:i + _MAX_PARAMS_PER_BATCH],
                       synchronous=True)

    def log_metric(self, key: str, value: float, step: int) -> None:
        """Buffer one metric value; written on flush (one synchronous log_metric costs ~3-5 ms)."""
        self._buffer.append(Metric(key, float(value), int(time.time() * 1000), int(step)))
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffer several metric values at one step."""
        timestamp = int(time.time() * 1000)
        self._buffer.extend(Metric(key, float(value), timestamp, int(step)) for key, value in metrics.items())
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set tags now (not buffered), all in one call."""
        if tags:
            self._call(self._client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()],
                       synchronous=True)

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as an artifact, then close it to free its memory."""
        self.log_figures({artifact_file: fig})

    def log_figures(self, figures: dict[str, Any]) -> None:
        """Save figures as artifacts ({artifact file: figure}) in one MLflow call, then close them.

        Rendered here, outside the MLflow call: drawing is matplotlib's time, not tracking's.
        """
        import matplotlib.pyplot as plt

        try:
            with tempfile.TemporaryDirectory() as tmp:
                for artifact_file, fig in figures.items():
                    path = Path(tmp, artifact_file)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fig.savefig(path)
                self._call(self._client.log_artifacts, self.run_id, tmp)
        finally:
            for fig in figures.values():
                plt.close(fig)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Copy a local file or folder into the run's artifacts."""
        self._call(self._client.log_artifact, self.run_id, local_path, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write a string as an artifact file."""
        self._call(self._client.log_text, self.run_id, text, artifact_file)

    def flush(self) -> None:
        """Write buffered metrics synchronously in batches of 1000; unsent ones stay buffered on error."""
        while self._buffer:
            chunk = self._buffer[:_MAX_METRICS_PER_BATCH]
            self._call(self._client.log_batch, self.run_id, metrics=chunk, synchronous=True)
            del self._buffer[:len(chunk)]

    def end(self, status: str = "FINISHED") -> None:
        """Flush, then mark the run ended with status; later calls do nothing."""
        if self._ended or self.run_id is None:
            return
        try:
            self.flush()
        except BaseException:
            # Metrics were lost: the run did not finish cleanly, whatever the caller asked.
            status = "FAILED" if status == "FINISHED" else status
            raise
        finally:
            self._call(self._client.set_terminated, self.run_id, status)
            self._ended = True  # only once terminated, so a failed end can be retried

    def __enter__(self) -> TrackedRun:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            self.end("FINISHED")
            return False
        global _pending
        with _shield():  # already unwinding: a second Ctrl-C must not cut the flush and the ending short
            self._end_after(exc)
            _pending = None
        return False

    def _end_after(self, exc: BaseException) -> None:
        """Flush and end the run as KILLED (interrupt) or FAILED (error tag); MLflow errors only logged."""
        try:
            self.flush()
        except Exception:
            _log.exception("could not flush metrics of run %s", self.run_id)
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            status = "KILLED"
        else:
            status = "FAILED"
            try:
                self.set_tags({"error": f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_TAG]})
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                self.log_text(trace, "error.txt")  # the whole story, where the tag has one line
            except Exception:
                _log.exception("could not record the error on run %s", self.run_id)
        try:
            self.end(status)
        except Exception:
            _log.exception("could not end run %s as %s", self.run_id, status)


class NullRun:
    """TrackedRun's interface doing nothing, for tracking.enabled=false."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run_id: str | None = None
        self.seconds_in_mlflow = 0.0

    def start(self) -> NullRun:
        """Do nothing."""
        return self

    def log_params(self, params: dict[str, str]) -> None:
        """Do nothing."""

    def log_metric(self, key: str, value: float, step: int) -> None:
        """Do nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Do nothing."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Do nothing."""

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """Close the figure (callers rely on log_figure to free it)."""
        self.log_figures({artifact_file: fig})

    def log_figures(self, figures: dict[str, Any]) -> None:
        """Close the figures."""
        import matplotlib.pyplot as plt

        for fig in figures.values():
            plt.close(fig)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Do nothing."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Do nothing."""

    def flush(self) -> None:
        """Do nothing."""

    def end(self, status: str = "FINISHED") -> None:
        """Do nothing."""

    def __enter__(self) -> NullRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        return False
