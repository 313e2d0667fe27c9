"""The tracking store: URIs, this process's MLflow client, SQLite lock retries and time in MLflow."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy.exc
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.harness.paths import TRACKING_ROOT

DEFAULT_EXPERIMENT = "gradlab"

# SQLite lock retry: 0.05 s doubling, 10 tries (about 25 s of waiting in total).
_LOCK_TRIES = 10
_LOCK_FIRST_DELAY = 0.05
_sleep = time.sleep  # module attribute so tests can record the backoff without waiting

T = TypeVar("T")
_log = logging.getLogger(__name__)


def quiet_mlflow() -> None:
    """Keep MLflow's chatter off the user's terminal unless asked for (called before the first client).

    A fresh SQLite store logs "Creating initial MLflow database tables..." at INFO; reading a run's
    artifacts back (study reports) would draw a progress bar per file on stderr.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)


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
    """Turn a configured tracking URI into an absolute, supported one (docs/ARCHITECTURE.md, "Tracking")."""
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


def client(uri: str) -> MlflowClient:
    """This process's MlflowClient for `uri`; building one creates or migrates the schema of a fresh SQLite
    file and checks it (tens of ms: once per process, not once per run)."""
    found = _clients.get(uri)
    if found is None:
        quiet_mlflow()
        with warnings.catch_warnings(), _schema_lock(uri):
            # SQLAlchemy 2 deprecation warning from MLflow's own mappers, once per process: not ours to fix.
            warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
            found = _clients[uri] = _retry(MlflowClient, uri)
    return found


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
    store = client(uri)  # a SQLite store's folder is made under its lock
    experiment = _retry(store.get_experiment_by_name, name)
    if experiment is None:
        # A tracking server chooses its own artifact root; a database store we write to directly.
        location = None if uri.startswith(("http://", "https://")) else artifact_location(uri)
        try:
            return _retry(store.create_experiment, name, artifact_location=location)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = _retry(store.get_experiment_by_name, name)  # another process created it first
    if experiment is None:  # vanished between the two calls: deleted for good by someone else
        raise MlflowException(f"experiment {name!r} could not be created or found")
    if experiment.lifecycle_stage == "deleted":
        # Someone deleted it in the UI; runs cannot be created in a deleted experiment.
        _retry(store.restore_experiment, experiment.experiment_id)
    return experiment.experiment_id


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store (the venv's mlflow, bound to localhost)."""
    import sys

    if uri.startswith(("http://", "https://")):
        return uri  # a tracking server serves the UI itself

    mlflow_cli = Path(sys.executable).parent / "mlflow"
    # as `make ui`: no GenAI job runner (seconds of start-up), and UI-made experiments keep artifacts here
    root = artifact_location(uri).removeprefix("file://")
    return (
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow_cli} ui --backend-store-uri {uri} "
        f"--default-artifact-root {root} --host 127.0.0.1 --port 5000 --workers 1"
    )
