"""The tracking store failing: one line on stderr naming the store and the cause, exit 2, no traceback, no run
left RUNNING, in seconds; SIGTERM and Ctrl-C honoured within seconds while MLflow retries (README, "When the
tracking store fails").

Each case runs the stage as a user would and measures the exit code, the single stderr line and the seconds to
fail. A read-only folder and a full disk are real: a read-only bind mount and a small tmpfs in a private mount
namespace (`unshare`), skipped where the kernel does not allow one; a read-only folder by permissions where the
tests do not run as root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.harness.paths import ROOT
from pipeline.tracking import store as store_module
from tests.helpers import free_port

ALLOWED = "allowed: a writable sqlite:///<path>/mlflow.db, a tracking server that answers"
FAST = 15  # seconds a failing command may take, start-up included, on a loaded 2-core machine (MLflow: minutes)
TINY = ["train.epochs=1", "model.depth=1", "model.width=8", "data=xor"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the user's MLflow settings (the store comes from the command line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_HTTP_REQUEST", "MLFLOW_TRACKING"))}
    return {**env, **extra}


def stage(
    tmp_path: Path, module: str, *args: str, prefix: tuple[str, ...] = (), env: dict | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    """python -m pipeline.<module> args (Hydra's folders under tmp_path); the result and its wall seconds."""
    hydra_dirs = [f"hydra.run.dir={tmp_path}/outputs", f"hydra.sweep.dir={tmp_path}/multirun"]
    started = time.monotonic()
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", f"pipeline.{module}", *args, *hydra_dirs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env or clean_env(),
    )
    return proc, time.monotonic() - started


def one_line(proc: subprocess.CompletedProcess, *parts: str) -> str:
    """The single stderr line of a command refused for its store: exit 2, no traceback anywhere."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: tracking.uri"), lines[0]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def statuses(db: Path) -> list[str]:
    """Every run's status in a SQLite store (none when the file does not exist)."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as con:
        return [status for (status,) in con.execute("SELECT status FROM runs")]


# --- private mount namespaces: a read-only folder and a full disk, for real ------------------------------------


def _unshare() -> tuple[str, ...] | None:
    """`unshare` with a private mount namespace (root), or a user namespace too (a user); None where refused."""
    args = ("unshare", "-m") if os.geteuid() == 0 else ("unshare", "-Urm")
    try:
        ok = subprocess.run([*args, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return args if ok else None


UNSHARE = _unshare()
needs_namespace = pytest.mark.skipif(UNSHARE is None, reason="no private mount namespace here (unshare refused)")


def mounted(script: str, folder: Path) -> tuple[str, ...]:
    """A command prefix: in a private mount namespace, `script` ($0 = folder) runs, then the command."""
    assert UNSHARE is not None
    return (*UNSHARE, "sh", "-c", f'{script} && exec "$@"', str(folder))


def read_only(folder: Path) -> tuple[str, ...]:
    return mounted('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0"', folder)


def tmpfs(folder: Path, size: str) -> tuple[str, ...]:
    return mounted(f'mount -t tmpfs -o size={size} tmpfs "$0"', folder)


_TEMPLATE: list[Path] = []  # one store with its schema, made once: MLflow's migrations take seconds


def make_store(folder: Path) -> str:
    """A SQLite store with its schema and one finished run, as a user's mlruns/ after a first command."""
    import atexit
    import shutil
    import tempfile

    if not _TEMPLATE:
        made = tempfile.mkdtemp(prefix="gradlab-store-template-")
        atexit.register(shutil.rmtree, made, True)
        template = Path(made) / "mlflow.db"
        with tracking.TrackedRun(f"sqlite:///{template}", parent_run_id="") as run:
            run.log_metrics({"x": 1.0}, 0)
        _TEMPLATE.append(template)
    folder.mkdir(parents=True, exist_ok=True)
    # SQLite's backup API: a copy of the file alone would miss what is still in its write-ahead log
    with (
        contextlib.closing(sqlite3.connect(_TEMPLATE[0])) as source,
        contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as copy,
    ):
        source.backup(copy)
    return f"sqlite:///{folder}/mlflow.db"


# --- local stores ----------------------------------------------------------------------------------------------


@needs_namespace
def test_a_read_only_store_is_one_line_and_no_run(tmp_path):
    folder = tmp_path / "mlruns"
    uri = make_store(folder)
    proc, seconds = stage(tmp_path, "train", f"tracking.uri={uri}", *TINY, prefix=read_only(folder))
    one_line(proc, f"tracking.uri: {uri} cannot be written (read-only file system); {ALLOWED}")
    assert seconds < FAST
    assert statuses(folder / "mlflow.db") == ["FINISHED"]  # only the run made before


def _permissions_bind() -> bool:
    """Whether this user is kept out of a folder without write permission (root is not)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            Path(folder, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o755)
    return False


@pytest.mark.skipif(not _permissions_bind(), reason="this user (root) writes through a folder's permissions")
def test_a_folder_without_write_permission_is_one_line(tmp_path):
    folder = tmp_path / "mlruns"
    uri = make_store(folder)
    folder.chmod(0o555)
    try:
        proc, seconds = stage(tmp_path, "train", f"tracking.uri={uri}", *TINY)
    finally:
        folder.chmod(0o755)
    one_line(proc, f"tracking.uri: {uri} cannot be written (permission denied)")
    assert seconds < FAST and statuses(folder / "mlflow.db") == ["FINISHED"]


@needs_namespace
def test_a_full_disk_is_one_line_before_any_work(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    uri = f"sqlite:///{disk}/mlruns/mlflow.db"
    proc, seconds = stage(tmp_path, "train", f"tracking.uri={uri}", *TINY, prefix=tmpfs(disk, "256k"))
    one_line(proc, f"tracking.uri: {uri} cannot be written (no space left on device)")
    assert seconds < FAST


@pytest.mark.slow
@needs_namespace
def test_a_disk_that_fills_during_the_run_ends_it_failed_in_one_line(tmp_path):
    """Room for the check (1 MiB) and the schema, not for every metric of the run: the run ends FAILED."""
    disk = tmp_path / "disk"
    disk.mkdir()
    uri = f"sqlite:///{disk}/mlruns/mlflow.db"
    # the store as the namespace left it (its tmpfs goes with the process): the database and its write-ahead log
    script = (
        f'mount -t tmpfs -o size=1600k tmpfs "$0" && "$@"; code=$?; cp "$0"/mlruns/mlflow.db* {tmp_path}; exit $code'
    )
    proc, seconds = stage(
        tmp_path,
        "train",
        f"tracking.uri={uri}",
        "train.epochs=20",
        "probes=full",
        prefix=(*UNSHARE, "sh", "-c", script, str(disk)),
    )
    # the disk fills under the database's log or under an artifact, whichever writes first: SQLite and the OS
    # name it each their way
    full = r"(database or disk is full|no space left on device)"
    line = one_line(proc, f"tracking.uri: {uri} cannot be written (")
    assert re.fullmatch(
        rf"error: tracking\.uri: {re.escape(uri)} cannot be written \({full}\); run \w+ ended FAILED", line
    )
    assert seconds < 60
    with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db")) as con:
        (status, error), *others = con.execute(
            "SELECT status, (SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid AND key = 'error') FROM runs r"
        ).fetchall()
    assert not others and status == "FAILED" and re.search(full, error), error


def test_a_file_where_the_store_folder_should_be_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "mlruns").write_text("not a folder")
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setattr(store_module, "_checked", {})
    with pytest.raises(tracking.StoreError) as failed:
        tracking.check_store(uri)
    assert str(failed.value).startswith(f"tracking.uri: {uri} cannot be written ({tmp_path}/mlruns is a file, not")


def test_a_locked_database_is_refused_after_the_check_waits(tmp_path, monkeypatch):
    uri = make_store(tmp_path / "mlruns")
    monkeypatch.setattr(store_module, "_checked", {})
    monkeypatch.setattr(store_module, "CHECK_SECONDS", 0.5)
    with contextlib.closing(sqlite3.connect(tmp_path / "mlruns" / "mlflow.db", isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")  # another process writing, and never done
        started = time.monotonic()
        with pytest.raises(tracking.StoreError) as failed:
            tracking.check_store(uri)
        seconds = time.monotonic() - started
    assert str(failed.value) == (
        f"tracking.uri: {uri} cannot be written (the database is locked by another process for more than 0.5 s); "
        f"{ALLOWED} (http://<host>:<port>), or tracking=off"
    )
    assert 0.4 < seconds < 3


def test_a_database_other_writers_keep_busy_is_waited_for_not_called_locked(tmp_path, monkeypatch):
    """A study's worker starting while the others commit back to back: their commits show the database is busy,
    not stuck, so the check waits on (here up to BUSY_SECONDS = 1.5 s) instead of refusing it after 0.5 s."""
    uri = make_store(tmp_path)
    monkeypatch.setattr(store_module, "_checked", {})
    monkeypatch.setattr(store_module, "CHECK_SECONDS", 0.5)
    monkeypatch.setattr(store_module, "BUSY_SECONDS", 1.5)
    stop = threading.Event()

    def writer() -> None:  # holds the write lock almost all the time, committing every 50 ms
        with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None, timeout=10)) as con:
            con.execute("CREATE TABLE IF NOT EXISTS busy (x)")
            while not stop.is_set():
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT INTO busy VALUES (randomblob(4096))")
                time.sleep(0.05)
                con.execute("COMMIT")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    try:
        tracking.check_store(uri)
        outcome = "ok"
    except tracking.StoreError as e:
        outcome = str(e)
    finally:
        stop.set()
        thread.join(10)
    seconds = time.monotonic() - started
    assert outcome == "ok" or "other writers kept the database busy for more than" in outcome, outcome
    assert seconds < 3


@pytest.mark.slow
def test_a_locked_database_is_one_line_after_five_seconds(tmp_path):
    uri = make_store(tmp_path / "mlruns")
    with contextlib.closing(sqlite3.connect(tmp_path / "mlruns" / "mlflow.db", isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        proc, seconds = stage(tmp_path, "train", f"tracking.uri={uri}", *TINY)
    one_line(proc, "cannot be written (the database is locked by another process for more than 5 s)")
    assert 5 < seconds < 5 + FAST
    assert statuses(tmp_path / "mlruns" / "mlflow.db") == ["FINISHED"]


def test_a_file_that_is_not_a_database_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "mlflow.db").write_text("plain text, not SQLite\n" * 100)
    monkeypatch.setattr(store_module, "_checked", {})
    with pytest.raises(tracking.StoreError, match=r"mlflow.db cannot be opened \(file is not a database\)"):
        tracking.check_store(f"sqlite:///{tmp_path}/mlflow.db")


def test_the_check_leaves_nothing_behind(tmp_path, monkeypatch):
    """A command refused later for a mistake (a data set too small) finds no mlruns/ made by the check."""
    monkeypatch.setattr(store_module, "_checked", {})
    tracking.check_store(f"sqlite:///{tmp_path}/a/b/mlruns/mlflow.db")
    assert list(tmp_path.iterdir()) == []


# --- URIs and servers ------------------------------------------------------------------------------------------


def test_a_uri_that_is_neither_a_database_nor_a_server_is_one_line(monkeypatch):
    monkeypatch.setattr(store_module, "_checked", {})
    with pytest.raises(tracking.StoreError) as failed:
        tracking.check_store("ftp://example.org/mlruns")
    assert str(failed.value) == (
        "tracking.uri: got 'ftp://example.org/mlruns'; allowed: sqlite:///<path>/mlflow.db (a relative path is "
        "under the project), http(s)://<host>:<port>, or a database URI MLflow supports (postgresql://, mysql://, "
        "mssql://)"
    )


def test_a_uri_from_the_environment_is_named_so(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    with pytest.raises(tracking.StoreError, match=r"^tracking.uri \(from \$MLFLOW_TRACKING_URI\): got './mlruns'"):
        tracking.check_store(None)


@pytest.mark.parametrize(
    "module,args",
    [
        ("train", TINY),
        ("study", ["study=depth", "study.size=smoke"]),
        ("train", ["-m", "model.depth=1,2", *TINY[:1]]),  # a sweep: its parent run is never made
        pytest.param("init", ["model.depth=2"], marks=pytest.mark.slow),
        pytest.param("ablate", ["study.size=smoke"], marks=pytest.mark.slow),
        pytest.param("pretrain", ["model.depth=2"], marks=pytest.mark.slow),
    ],
    ids=["train", "study", "sweep", "init", "ablate", "pretrain"],
)
def test_a_server_where_nothing_listens_is_one_line_at_once(tmp_path, module, args):
    uri = f"http://127.0.0.1:{free_port()}"
    proc, seconds = stage(tmp_path, module, *args, "tracking=server", f"tracking.uri={uri}")
    one_line(proc, f"tracking.uri: {uri} does not answer (connection refused); {ALLOWED}")
    assert seconds < FAST  # MLflow alone retries for about 4 minutes
    assert not (tmp_path / "reports").exists()


@contextlib.contextmanager
def silent_server():
    """A port that accepts connections and never answers; yields (uri, event set once a connection came)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        connected = threading.Event()
        held: list[socket.socket] = []

        def accept() -> None:
            with contextlib.suppress(OSError):
                while True:
                    held.append(listener.accept()[0])
                    connected.set()

        threading.Thread(target=accept, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{listener.getsockname()[1]}", connected
        finally:
            for conn in held:
                conn.close()


def test_a_server_that_never_answers_is_one_line_within_its_timeout(tmp_path):
    """MLFLOW_HTTP_REQUEST_TIMEOUT, when below the check's 5 s, is how long the check waits."""
    with silent_server() as (uri, _):
        env = clean_env(MLFLOW_HTTP_REQUEST_TIMEOUT="2")
        proc, seconds = stage(tmp_path, "train", "tracking=server", f"tracking.uri={uri}", *TINY, env=env)
    one_line(proc, f"tracking.uri: {uri} does not answer (no reply within 2 s)")
    assert 2 < seconds < FAST


@pytest.mark.slow
def test_a_server_that_never_answers_is_one_line_after_five_seconds(tmp_path):
    with silent_server() as (uri, _):
        proc, seconds = stage(
            tmp_path, "study", "study=depth", "study.size=smoke", "tracking=server", f"tracking.uri={uri}"
        )
    one_line(proc, f"tracking.uri: {uri} does not answer (no reply within 5 s)")
    assert 5 < seconds < 5 + FAST


def test_the_check_waits_at_most_five_seconds_whatever_the_timeout(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    assert store_module.server_check_seconds() == 5
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    assert store_module.server_check_seconds() == 2


def test_mlflows_http_retries_are_bounded_unless_the_user_set_them(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    store_module.bound_http_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # the user's value wins
    with store_module.fail_fast():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


# --- a server that fails after the check: MLflow's retries, SIGTERM and Ctrl-C ----------------------------------

EXPERIMENT = {
    "experiment_id": "1",
    "name": "gradlab",
    "artifact_location": "mlflow-artifacts:/1",
    "lifecycle_stage": "active",
}


class FlakyServer(ThreadingHTTPServer):
    """An MLflow server that answers the check and finding the experiment, then `failing` endpoints with 503.

    `requests` counts the requests per endpoint; `statuses` records the statuses runs were ended with.
    """

    daemon_threads = True

    def __init__(self, failing: tuple[str, ...], fail_for: float | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.failing = failing
        self.fail_for = fail_for  # seconds from the first failed request on which they fail (None: for ever)
        self.first_failure: float | None = None
        self.requests: dict[str, int] = {}
        self.statuses: list[str] = []
        self.uri = f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, endpoint: str) -> int:
        return self.requests.get(endpoint, 0)

    def still_failing(self) -> bool:
        self.first_failure = self.first_failure or time.monotonic()
        return self.fail_for is None or time.monotonic() - self.first_failure < self.fail_for


class _FlakyHandler(BaseHTTPRequestHandler):
    server: FlakyServer

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self) -> None:
        endpoint = self.path.split("?")[0].removeprefix("/api/2.0/mlflow/")
        size = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(size) or b"{}")
        except ValueError:  # an artifact's content
            body = {}
        self.server.requests[endpoint] = self.server.count(endpoint) + 1
        if endpoint in self.server.failing and self.server.still_failing():
            self._reply(503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"})
        elif endpoint == "experiments/get-by-name":
            self._reply(200, {"experiment": EXPERIMENT})
        elif endpoint in ("runs/create", "runs/get"):
            info = {"run_id": "r1", "run_uuid": "r1", "experiment_id": "1", "status": "RUNNING", "start_time": 1}
            self._reply(200, {"run": {"info": {**info, "artifact_uri": "mlflow-artifacts:/1/r1"}, "data": {}}})
        elif endpoint == "runs/update":
            self.server.statuses.append(body.get("status"))
            self._reply(200, {"run_info": {"run_id": "r1", "run_uuid": "r1", "status": body.get("status")}})
        else:
            self._reply(200, {})

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        """Quiet."""


@contextlib.contextmanager
def flaky_server(*failing: str, fail_for: float | None = None):
    server = FlakyServer(failing, fail_for)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen, sig: int) -> tuple[str, float]:
    """Send `sig`; stderr and the seconds until the process ended."""
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return err, time.monotonic() - started


def popen(tmp_path: Path, *args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", *args, f"hydra.run.dir={tmp_path}/outputs"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize(
    "sig,code,name",
    [(signal.SIGTERM, 143, "SIGTERM"), pytest.param(signal.SIGINT, 130, "SIGINT", marks=pytest.mark.slow)],
)
def test_an_interrupt_is_honoured_at_once_while_mlflow_retries(tmp_path, sig, code, name):
    """MLflow's own retry settings (7 retries, backoff factor 2: about 4 minutes), set by the user; the signal
    lands while MLflow waits to try creating the run again."""
    env = clean_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="7", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="2")
    with flaky_server("runs/create") as server:
        proc = popen(tmp_path, "tracking=server", f"tracking.uri={server.uri}", *TINY, env=env)
        wait_for(lambda: server.count("runs/create") >= 2 or proc.poll() is not None)  # retrying
        err, seconds = interrupt(proc, sig)
    assert proc.returncode == code, err
    assert seconds < 5, f"{seconds:.1f} s after {name}"  # 0.4 s on 2 idle cores
    assert err == f"interrupted ({name}): before any run started\n", err
    assert server.count("runs/create") < 5


def test_sigterm_is_honoured_while_the_check_waits_for_a_silent_server(tmp_path):
    with silent_server() as (uri, connected):
        proc = popen(tmp_path, "tracking=server", f"tracking.uri={uri}", *TINY, env=clean_env())
        assert connected.wait(60)
        err, seconds = interrupt(proc, signal.SIGTERM)
    assert proc.returncode == 143 and seconds < 5, (seconds, err)
    assert err == "interrupted (SIGTERM): before any run started\n", err


@pytest.mark.slow
def test_a_server_failing_during_the_run_ends_it_failed_in_one_line(tmp_path):
    """The server answers the check and creates the run, then fails every write: after gradlab's bounded
    retries (5, backoff factor 1: waits of 0, 2, 4, 8, 16 s) the command ends in one line, the run ended FAILED
    on the server."""
    with flaky_server("runs/log-batch") as server:
        proc, seconds = stage(tmp_path, "train", "tracking=server", f"tracking.uri={server.uri}", *TINY)
    one_line(
        proc,
        f"tracking.uri: {server.uri} stopped answering (it keeps answering with server errors); run r1 ended FAILED",
    )
    assert 30 < seconds < 30 + 5 + FAST and server.statuses == ["FAILED"]
    assert server.count("runs/log-batch") == 6 + 1  # the first write tried 6 times, then the error tag once


@pytest.mark.slow
def test_a_server_restarting_during_the_run_is_ridden_out(tmp_path):
    """Every write fails for 6 s (a server restarting), then works: MLflow's bounded retries carry the run
    through, FINISHED."""
    with flaky_server("runs/log-batch", fail_for=6) as server:
        proc, seconds = stage(tmp_path, "train", "tracking=server", f"tracking.uri={server.uri}", *TINY)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert server.statuses == ["FINISHED"] and server.count("runs/log-batch") > 3


# --- how failures are told apart, in this process ----------------------------------------------------------------


def test_what_mlflow_raises_is_told_apart_from_other_errors():
    import errno

    import requests
    from mlflow.exceptions import MlflowException

    refused = requests.exceptions.ConnectionError(
        "HTTPConnectionPool: Max retries exceeded ([Errno 111] Connection refused)"
    )
    unknown = requests.exceptions.ConnectionError("Failed to resolve 'nowhere.invalid' (Name or service not known)")
    silent = requests.exceptions.ReadTimeout("HTTPConnectionPool: Read timed out. (read timeout=3)")
    assert store_module.store_failure(refused) == ("stopped answering", "connection refused")
    assert store_module.store_failure(unknown) == ("stopped answering", "host not found")
    assert store_module._http_why(silent, 3) == "no reply within 3 s"
    full = MlflowException("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO metrics ...]")
    assert store_module.store_failure(full) == ("cannot be written", "database or disk is full")
    assert store_module.store_failure(OSError(errno.EROFS, "Read-only file system")) == (
        "cannot be written",
        "read-only file system",
    )
    for other in (ValueError("a bug"), MlflowException("RESOURCE_DOES_NOT_EXIST: no such run"), MemoryError()):
        assert store_module.store_failure(other) is None
        with pytest.raises(type(other)):  # not turned into a StoreError: it keeps its own path
            with store_module.store_errors("sqlite:///x"):
                raise other


def test_a_store_failing_during_a_run_ends_it_failed_directly_in_sqlite(tmp_path, monkeypatch):
    """A full disk mid-run, as MLflow reports it: the run is ended in SQLite itself, and the line says so."""
    from mlflow.exceptions import MlflowException

    uri = make_store(tmp_path)
    run = tracking.TrackedRun(uri, parent_run_id="").start()
    run.log_metrics({"x": 1.0}, 0)

    def full(*args, **kwargs):
        raise MlflowException("(sqlite3.OperationalError) database or disk is full")

    monkeypatch.setattr(run._store, "log_batch", full)
    with pytest.raises(tracking.StoreError) as failed:
        with run:
            run.flush()
    assert str(failed.value) == (
        f"tracking.uri: {uri} cannot be written (database or disk is full); run {run.run_id} ended FAILED"
    )
    monkeypatch.undo()
    ended = tracking.client(uri).get_run(run.run_id)
    assert ended.info.status == "FAILED" and "database or disk is full" in ended.data.tags["error"]


def test_after_an_interrupt_mlflow_calls_get_one_short_try(monkeypatch):
    """From the first SIGTERM on, while the stage's handlers are installed; the user's settings otherwise."""
    seen = []

    def call():
        seen.append((os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]))

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        tracking.install_signal_handlers()
        store_module._retry(call)
        with pytest.raises(tracking.Terminated):
            signal.raise_signal(signal.SIGTERM)
        store_module._retry(call)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    store_module._retry(call)  # the stage is over: its handlers are gone
    assert seen == [("7", "120"), ("0", "5"), ("7", "120")]
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"  # restored after each call


def test_a_report_reading_runs_back_from_a_failed_store_stops_rather_than_reading_nothing(tmp_path, monkeypatch):
    """A missing artifact is None (a run without history); a store that fails is a StoreError, not a missing file
    that would change what the study decides."""
    from mlflow.exceptions import MlflowException

    uri = make_store(tmp_path)
    store = tracking.client(uri)
    run_id = store.search_runs([store.get_experiment_by_name("gradlab").experiment_id])[0].info.run_id
    assert tracking.download_json(uri, run_id, "history.json") is None
    refused = MlflowException("API request to http://x failed with exception Max retries exceeded (Connection refused)")
    monkeypatch.setattr(store, "download_artifacts", lambda *a, **k: (_ for _ in ()).throw(refused))
    with pytest.raises(tracking.StoreError, match="stopped answering"):
        tracking.download_json(uri, run_id, "history.json")


def test_the_line_after_an_interrupt_says_what_became_of_the_runs(tmp_path, monkeypatch):
    from pipeline.tracking import runs

    monkeypatch.setattr(runs, "_counts", {"started": 3, "killed": 1})
    before = tracking.run_counts()
    assert tracking.interrupt_outcome(before) == "before any run started"
    run = tracking.TrackedRun(make_store(tmp_path), parent_run_id="")
    with pytest.raises(KeyboardInterrupt), run:
        raise KeyboardInterrupt
    assert tracking.interrupt_outcome(before) == "run marked KILLED"
    monkeypatch.setattr(runs, "_counts", {"started": 5, "killed": 1})
    assert tracking.interrupt_outcome(before).startswith("a run could not be marked KILLED: the tracking store failed")


def test_a_sweep_interrupted_while_its_store_fails_ends_in_one_line(tmp_path, monkeypatch):
    """Ctrl-C in a sweep whose server has gone: the line says both, the parent run is ended, no traceback."""
    from pipeline.harness import dispatch, sweep

    callback = sweep.MlflowSweepCallback()
    callback.parent = tracking.TrackedRun(make_store(tmp_path), parent_run_id="").start()
    failed = tracking.StoreError("tracking.uri: http://127.0.0.1:5000 stopped answering (connection refused)")

    def gone(*args, **kwargs):
        raise failed

    monkeypatch.setattr(dispatch, "stop_pool", lambda: None)
    monkeypatch.setattr(tracking, "end_running_children", gone)
    line = callback.interrupted(KeyboardInterrupt())
    assert line == (
        "sweep interrupted (SIGINT); error: tracking.uri: http://127.0.0.1:5000 stopped answering (connection "
        f"refused); run {callback.parent.run_id} ended FAILED"
    )
    assert tracking.client(callback.parent.uri).get_run(callback.parent.run_id).info.status == "FAILED"
