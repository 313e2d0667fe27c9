"""The tracking store: URIs, the check before any work, this process's MLflow client, SQLite lock retries,
store failures as one-line StoreErrors, and time in MLflow."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import sqlalchemy.exc
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy import event
from sqlalchemy.engine import Engine

from pipeline.harness.paths import TRACKING_ROOT
from pipeline.tracking.signals import interrupted

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
    artifacts back (study reports) would draw a progress bar per file on stderr. MLflow's SQL store logs
    every database error with its traceback (a locked database, a full disk) and then raises it, which
    gradlab retries or reports in one line (StoreError): that log is left out too.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


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
    return _attempts(contextlib.nullcontext, fn, args, kwargs)


def _attempts(guard: Callable[[], Any], fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    """_retry with each attempt inside `guard()` and the waits between attempts outside it.

    TrackedRun's guard holds interrupts during a SQLite call; between attempts no transaction is open, so
    an interrupt noted meanwhile is raised there instead of after every retry (seconds, not a minute).
    Once the process was interrupted, an HTTP call gets one try and a short timeout (`fail_fast`).
    """
    global _seconds_in_mlflow
    started = time.perf_counter()
    delay = _LOCK_FIRST_DELAY
    try:
        for attempt in range(1, _LOCK_TRIES + 1):
            try:
                with guard(), fail_fast() if interrupted() else contextlib.nullcontext():
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


@event.listens_for(Engine, "connect")
def _sqlite_sync(dbapi_connection: Any, record: Any) -> None:
    """Every SQLite connection MLflow opens in this process: fsync at checkpoints, not at every commit.

    With the write-ahead log (_use_wal) synchronous=NORMAL stays atomic and survives any crash of the process
    (only a power cut can lose the last commits).
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _use_wal(uri: str) -> None:
    """Put a SQLite store with its schema in write-ahead-log mode (kept in the file, for every reader).

    In the default rollback journal each of MLflow's commits waits on fsync (~5 ms here): WAL halves MLflow's
    time per run, and readers (the UI, a report) no longer block the writers. Set once the schema exists: its
    creation in WAL mode would first grow the log to megabytes.
    """
    path = uri.removeprefix("sqlite:///")
    if not uri.startswith("sqlite:///") or path in ("", ":memory:"):
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=CHECK_SECONDS, isolation_level=None)) as con:
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:  # a read-only or busy database keeps its mode; the store check says the rest
        _log.debug("could not put %s in WAL mode", path, exc_info=True)


def client(uri: str) -> MlflowClient:
    """This process's MlflowClient for `uri`; building one creates or migrates the schema of a fresh SQLite
    file and checks it (tens of ms: once per process, not once per run)."""
    found = _clients.get(uri)
    if found is None:
        check_store(uri)  # once per process: a store that cannot be used is one line, before MLflow tries
        quiet_mlflow()
        with warnings.catch_warnings(), _schema_lock(uri), store_errors(uri):
            # SQLAlchemy 2 deprecation warning from MLflow's own mappers, once per process: not ours to fix.
            warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
            fresh = _fresh_sqlite(uri)
            if fresh is not None:
                _copy_schema(fresh)
            found = _clients[uri] = _retry(MlflowClient, uri)
            if fresh is not None:
                _save_schema(fresh)
        _use_wal(uri)
        _keep_reserve(uri)
    return found


def schema_template() -> Path:
    """The empty MLflow schema this MLflow version makes, cached for every fresh SQLite store of the machine.

    MLflow builds a fresh store by running its ~60 Alembic migrations: 2-10 s per store (every test's store,
    a user's first run). A copy of the result, without the default experiment (MLflow adds it on opening, as in
    a store it builds), opens in milliseconds and passes MLflow's schema check (same version, same revision).
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gradlab"
    return cache / f"mlflow-{mlflow.__version__}-schema.db"


def _fresh_sqlite(uri: str) -> Path | None:
    """The database file of a SQLite store that does not exist yet (or is empty), else None."""
    path_text = uri.removeprefix("sqlite:///")
    if not uri.startswith("sqlite:///") or path_text in ("", ":memory:"):
        return None
    path = Path(path_text)
    return path if not path.exists() or path.stat().st_size == 0 else None


def _copy_schema(path: Path) -> None:
    """A fresh store from the cached schema when there is one (whole or not at all: written aside, renamed)."""
    template = schema_template()
    if not template.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        shutil.copyfile(template, part)
        part.replace(path)
    finally:
        with contextlib.suppress(OSError):
            part.unlink()


def _save_schema(path: Path) -> None:
    """Cache the schema of a store MLflow has just made, before any run is in it (best effort)."""
    template = schema_template()
    if template.is_file():
        return
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        part = template.with_name(f".{template.name}.{os.getpid()}.part")
        with contextlib.closing(sqlite3.connect(path)) as source, contextlib.closing(sqlite3.connect(part)) as copy:
            source.backup(copy)
            # MLflow makes the default experiment when a store has none: each store its own
            copy.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
            copy.execute("DELETE FROM experiments WHERE experiment_id = 0")
            copy.commit()
        part.replace(template)
    except (OSError, sqlite3.Error):
        _log.debug("could not cache MLflow's schema in %s", template, exc_info=True)
        with contextlib.suppress(OSError, UnboundLocalError):
            part.unlink()


RESERVE_BYTES = 128 * 1024  # room for ending a run in a store whose disk filled: a few pages of its log


def _reserve(uri: str) -> Path | None:
    """The ballast file beside a SQLite store (None for another store)."""
    if not uri.startswith("sqlite:///") or uri.removeprefix("sqlite:///") in ("", ":memory:"):
        return None
    return Path(uri.removeprefix("sqlite:///")).parent / ".gradlab-reserve"


def _keep_reserve(uri: str) -> None:
    """Keep RESERVE_BYTES of disk beside a SQLite store, given back when the disk fills (end_run_directly).

    In write-ahead-log mode ending a run appends its pages to the log, which needs room on the disk.
    """
    path = _reserve(uri)
    if path is None or (path.exists() and path.stat().st_size >= RESERVE_BYTES):
        return
    try:
        with open(path, "wb") as handle:
            handle.write(bytes(RESERVE_BYTES))
    except OSError:  # no room for it: the store check has just found room, so another writer took it
        with contextlib.suppress(OSError):
            path.unlink()


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
    with store_errors(uri):
        return _ensure_experiment_in(store, uri, name)


def _ensure_experiment_in(store: MlflowClient, uri: str, name: str) -> str:
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


# --- the store failing: checked before any work, one line whenever it fails ------------------------------

CHECK_SECONDS = 5  # how long the check waits for a SQLite lock, a server's answer or a database connection
BUSY_SECONDS = 30  # how long it waits for a SQLite database that other writers keep busy (committing meanwhile)
_PROBE_BYTES = 1 << 20  # written (and removed) beside a SQLite store: a full disk fails here, not mid-run
# MLflow's own defaults retry an unreachable server for about 4 minutes (7 retries, backoff factor 2) with
# 120 s per request. These ride out a server restart of up to about 30 s (waits of 0, 2, 4, 8 and 16 s, plus
# up to 1 s of jitter each) and give up on a server gone for good after that, on one that accepts and never
# answers after 6 x 20 s. A value the user set in the environment wins.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
_DATABASES = ("postgresql", "mysql", "mssql")  # the other database stores MLflow supports
ALLOWED_STORES = (
    "allowed: a writable sqlite:///<path>/mlflow.db, a tracking server that answers (http://<host>:<port>), "
    "or tracking=off"
)
ALLOWED_URIS = (
    "allowed: sqlite:///<path>/mlflow.db (a relative path is under the project), http(s)://<host>:<port>, "
    "or a database URI MLflow supports (postgresql://, mysql://, mssql://)"
)


class StoreError(RuntimeError):
    """The tracking store cannot be used: one line naming the store and the cause (printed like ConfigError).

    `run_notes` say what became of the runs that were open when it failed (`run ... ended FAILED`).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.run_notes: list[str] = []

    def __str__(self) -> str:
        return "; ".join([self.message, *filter(None, self.run_notes)])


class _Unusable(Exception):
    """Raised by the probes: what is wrong with the store (`cannot be written`) and why."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(what, why)
        self.what, self.why = what, why


_checked: dict[str, str] = {}  # resolved URI -> how the user named it, for the stores this process checked


def _label(configured: str | None) -> str:
    if not configured and os.environ.get("MLFLOW_TRACKING_URI"):
        return "tracking.uri (from $MLFLOW_TRACKING_URI)"
    return "tracking.uri"


def bound_http_retries() -> None:
    """Bounded retries and timeouts for MLflow's HTTP calls, where the user has not set their own."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def check_store(uri: str | None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Check once per process that the store can be used; return its resolved URI, else raise StoreError.

    A SQLite store: its folder can be made and written (a read-only or full file system, a path under a file,
    a file you may not write), the database file can be locked for writing within CHECK_SECONDS and is a
    database. A server: answers an MLflow API call within CHECK_SECONDS. Another database: MLflow connects to
    it within 2 x CHECK_SECONDS. Any other URI is refused. Nothing is left behind (not even the store's folder).
    """
    label = _label(uri)
    try:
        resolved = resolve_uri(uri)
    except ValueError:
        raise StoreError(f"{label}: got {uri or os.environ.get('MLFLOW_TRACKING_URI')!r}; {ALLOWED_URIS}") from None
    if resolved in _checked:
        return resolved
    bound_http_retries()
    scheme = resolved.partition("://")[0].partition("+")[0].lower()
    try:
        if scheme == "sqlite":
            if resolved != "sqlite://" and not resolved.startswith("sqlite:///"):
                raise StoreError(f"{label}: got {resolved!r}; {ALLOWED_URIS}")
            _check_sqlite(resolved)
        elif scheme in ("http", "https"):
            _check_server(resolved, experiment)
        elif scheme in _DATABASES:
            _check_database(resolved)
        elif not scheme.startswith("databricks") and scheme != "uc":  # Databricks: its own auth and retries
            raise StoreError(f"{label}: got {resolved!r}; {ALLOWED_URIS}")
    except _Unusable as bad:
        raise StoreError(f"{label}: {resolved} {bad.what} ({bad.why}); {ALLOWED_STORES}") from None
    _checked[resolved] = label
    return resolved


def _why(exc: OSError) -> str:
    """'read-only file system' from an OSError."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _check_sqlite(uri: str) -> None:
    path_text = uri.removeprefix("sqlite:///")
    if uri == "sqlite://" or path_text in ("", ":memory:"):
        return
    path = Path(path_text)
    # the store's folder, or the nearest folder above it where the first run will make it: nothing is made here
    # (a command refused for a mistake found later leaves no mlruns/ behind)
    nearest = next(folder for folder in (path.parent, *path.parent.parents) if folder.exists())
    if not nearest.is_dir():
        raise _Unusable("cannot be written", f"{nearest} is a file, not a folder")
    try:
        _write_probe(nearest, _PROBE_BYTES)
        for existing in (path, Path(f"{path}.lock")):  # what MLflow and the schema lock open for writing
            if existing.exists():
                with open(existing, "r+b"):
                    pass
    except OSError as exc:
        raise _Unusable("cannot be written", _why(exc)) from None
    if path.is_file() and path.stat().st_size:
        _check_sqlite_lock(path)
    artifacts = Path(artifact_location(uri).removeprefix("file://"))
    if artifacts.is_dir():
        try:
            _write_probe(artifacts, 1)
        except OSError as exc:
            raise _Unusable("cannot be written", f"{_why(exc)}: {artifacts}") from None


def _write_probe(folder: Path, size: int) -> None:
    """Write `size` bytes in a new file in `folder`, then remove it (OSError when the folder cannot take it)."""
    fd, name = tempfile.mkstemp(prefix=".gradlab-write-check-", dir=folder)
    try:
        block = bytes(min(size, 1 << 16))
        left = size
        while left > 0:
            left -= os.write(fd, block[:left])
    finally:
        os.close(fd)
        os.unlink(name)


def _stamp(path: Path) -> tuple:
    """What changes when a writer commits: the database file's and its journals' size and modification time."""
    stamp: list[tuple[int, int] | None] = []
    for file in (path, Path(f"{path}-journal"), Path(f"{path}-wal")):
        try:
            st = file.stat()
        except OSError:
            stamp.append(None)
        else:
            stamp.append((st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def _check_sqlite_lock(path: Path) -> None:
    """The database takes a write lock (then gives it back) and is a database.

    A lock held CHECK_SECONDS by a process that writes nothing meanwhile is a locked store. A database that
    other writers keep busy (committing: the files change) is waited for as long as a run's calls would be
    (BUSY_SECONDS): a study's or a sweep's workers start while the others write.
    """
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=CHECK_SECONDS, isolation_level=None)
    except sqlite3.Error as exc:
        raise _Unusable("cannot be opened", str(exc)) from None
    waited = 0.0
    try:
        while True:
            before = _stamp(path)
            try:
                con.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                waited += CHECK_SECONDS
                if _stamp(path) == before:
                    why = f"the database is locked by another process for more than {CHECK_SECONDS:g} s"
                    raise _Unusable("cannot be written", why) from None
                if waited >= BUSY_SECONDS:
                    why = f"other writers kept the database busy for more than {waited:g} s"
                    raise _Unusable("cannot be written", why) from None
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        con.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        raise _Unusable("cannot be written", str(exc)) from None
    except sqlite3.DatabaseError as exc:  # not a database
        raise _Unusable("cannot be opened", str(exc)) from None
    finally:
        con.close()


def server_check_seconds() -> int:
    """How long the check waits for a server: CHECK_SECONDS, or MLFLOW_HTTP_REQUEST_TIMEOUT when that is less."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

    try:
        return max(1, min(CHECK_SECONDS, MLFLOW_HTTP_REQUEST_TIMEOUT.get()))
    except ValueError:  # not a number: MLflow says so at its first call
        return CHECK_SECONDS


def _check_server(uri: str, experiment: str) -> None:
    """One MLflow API call, no retry, server_check_seconds() of timeout: any MLflow answer will do."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    seconds = server_check_seconds()
    endpoint = "/api/2.0/mlflow/experiments/get-by-name"
    try:
        response = http_request(
            get_default_host_creds(uri),
            endpoint,
            "GET",
            max_retries=0,
            timeout=seconds,
            raise_on_status=False,
            params={"experiment_name": experiment},
        )
    except Exception as exc:  # noqa: BLE001 -- whatever it is, the server did not answer
        raise _Unusable("does not answer", _http_why(exc, seconds) or _first_line(exc)) from None
    status = response.status_code
    if status in (401, 403):
        raise _Unusable(
            "refuses access",
            f"HTTP {status}: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN",
        )
    if status == 200:
        return
    try:
        code = response.json().get("error_code")
    except ValueError:
        code = None
    if status != 404 or code != "RESOURCE_DOES_NOT_EXIST":  # 404 + that code: a server without the experiment
        raise _Unusable("does not answer as an MLflow tracking server", f"HTTP {status} on {endpoint}")


def _check_database(uri: str) -> None:
    """MLflow connects to another database within 2 x CHECK_SECONDS (in a thread: a connect can hang)."""
    outcome: dict[str, BaseException] = {}

    def connect() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                MlflowClient(uri).search_experiments(max_results=1)
        except BaseException as exc:  # noqa: BLE001 -- reported by the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=connect, name="gradlab-store-check", daemon=True)
    thread.start()
    thread.join(2 * CHECK_SECONDS)
    if thread.is_alive():
        raise _Unusable("does not answer", f"no connection within {2 * CHECK_SECONDS} s")
    if "error" in outcome:
        exc = outcome["error"]
        why = f"{exc}: install that database's driver" if isinstance(exc, ImportError) else _first_line(exc)
        raise _Unusable("cannot be opened", why)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """exc and the exceptions it was raised from or during, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_why(exc: BaseException, seconds: float | str | None = None) -> str | None:
    """Why an HTTP call failed, in a few words, when it failed for want of a server (else None).

    `seconds`: the timeout of the call (MLflow's MLFLOW_HTTP_REQUEST_TIMEOUT when not given).
    """
    import requests

    seconds = seconds or os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    for e in _chain(exc):
        if isinstance(e, requests.exceptions.SSLError):
            return f"TLS error: {_first_line(e)}"
        if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            text = str(e)
            if "refused" in text:
                return "connection refused"
            if "resolve" in text or "Name or service not known" in text:
                return "host not found"
            if isinstance(e, requests.exceptions.ConnectTimeout) or "connect timeout" in text:
                return f"no connection within {seconds} s"
            if isinstance(e, requests.exceptions.Timeout) or "timed out" in text:
                return f"no reply within {seconds} s"
            return f"connection failed: {_first_line(e)}"
        if isinstance(e, requests.exceptions.RetryError):
            return "it keeps answering with server errors"
    text = str(exc)
    if "Max retries exceeded" in text or "failed with timeout exception" in text:
        return "no answer after MLflow's retries"
    return None


# SQLite's messages for a store that cannot take a write, as MLflow passes them on
_SQLITE_FAILURES = (
    "database or disk is full",
    "attempt to write a readonly database",
    "unable to open database file",
    "disk i/o error",
    "database is locked",
    "file is not a database",
)
_STORE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO, errno.ENOTDIR}


def store_failure(exc: BaseException) -> tuple[str, str] | None:
    """(what, why) when exc says the store failed (a full disk, a read-only file, a lock held, no server), else None."""
    why = _http_why(exc)
    if why is not None:
        return "stopped answering", why
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _STORE_ERRNOS:
            return "cannot be written", _why(e)
        text = str(e).lower()
        for message in _SQLITE_FAILURES:
            if message in text:
                if message == "database is locked":
                    return "cannot be written", "the database stayed locked by another process"
                return "cannot be written", message
    return None


@contextlib.contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Turn an exception that says the store failed into a one-line StoreError naming the store."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        failure = store_failure(exc)
        if failure is None:
            raise
        what, why = failure
        _log.debug("the tracking store %s failed", uri, exc_info=True)
        raise StoreError(f"{_checked.get(uri, 'tracking.uri')}: {uri} {what} ({why})") from exc


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """MLflow's HTTP calls in this block: one try, server_check_seconds() of timeout.

    For the calls made once the store has failed or the user interrupted (ending runs), not for logging.
    """
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(server_check_seconds())}
    saved = {key: os.environ.get(key) for key in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def end_run_directly(uri: str, run_id: str, status: str, error: str) -> None:
    """End a run in a SQLite store that MLflow could not write: the last resort, for a full disk.

    SQLite's rollback journal needs room on the disk; with the journal in memory the status update rewrites
    a page in place. A store in write-ahead-log mode (gradlab's) stays in it (leaving it needs every other
    connection closed and room to checkpoint): the update's pages go into the room the reserve file gave back.
    Only `runs.status`, `runs.end_time` and the `error` tag are written, each in its own
    transaction (the tag may need a page the disk cannot give). Raises sqlite3.Error when even that fails.
    """
    path = Path(uri.removeprefix("sqlite:///"))
    reserve = _reserve(uri)
    if reserve is not None:
        with contextlib.suppress(OSError):
            reserve.unlink()
    con = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=CHECK_SECONDS, isolation_level=None)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=MEMORY")
        con.execute(
            "UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?", (status, int(time.time() * 1000), run_id)
        )
        with contextlib.suppress(sqlite3.Error):
            con.execute("INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES ('error', ?, ?)", (error, run_id))
    finally:
        con.close()
