"""Running a study's jobs on worker processes, and stopping them cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import logging
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from joblib.externals.loky import get_reusable_executor
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from pipeline import tracking
from pipeline.harness.cli import leave_sigint_to_parent

STOP_SECONDS = 8.0  # how long interrupted workers get to end their runs cleanly


class Board:
    """A folder the workers and the parent share: which worker pids are inside a job, and a stop flag.

    Only busy workers are signalled on an interrupt: loky treats a dead idle worker as a broken pool and
    SIGKILLs the others, busy ones included, before they can end their runs.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def enter(self) -> bool:
        """Mark this process busy; False when the study is already stopping (the job must not start)."""
        (self.folder / f"{os.getpid()}.busy").touch()
        return not (self.folder / "stop").exists()  # checked after the mark, so a stop never misses a job

    def leave(self) -> None:
        """Mark this process idle again."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{os.getpid()}.busy").unlink()

    def stop(self) -> list[int]:
        """Raise the stop flag; the pids of the workers inside a job."""
        (self.folder / "stop").touch()
        return [int(p.stem) for p in self.folder.glob("*.busy")]


# the stages a study's jobs may run, by the name conf/study/*.yaml gives (study.stage); imported by name in
# the worker, so the harness does not import the stages above it
# finetune: pretrain then train in one job (harness/finetune.py)
JOB_STAGES = {"train": "pipeline.train", "init": "pipeline.init", "finetune": "pipeline.harness.finetune"}


def run_job(stage: str, cfg: DictConfig, threads: int | None, board: str | None = None) -> dict:
    """One job: the stage's own run(), its failure recorded, never raised.

    SIGTERM/SIGINT end the job's run as KILLED (metrics flushed); in this process they then propagate, in
    a worker (`board` given) the job returns KILLED so the pool stays intact while the others finish.
    """
    from pipeline.harness.cli import sigterm_raises

    run = importlib.import_module(JOB_STAGES[stage]).run
    limit = threadpool_limits(limits=threads, user_api="blas") if threads else None
    shared = Board(board) if board else None
    mlflow_before = tracking.seconds_in_mlflow()
    t0 = time.perf_counter()
    if shared:
        leave_sigint_to_parent()
    try:
        with sigterm_raises(sigint=not shared):
            if shared and not shared.enter():
                return {"status": "CANCELLED"}
            result = run(cfg)
        return {
            "status": "FINISHED",
            "run_id": result["run_id"],
            "seconds": result.get("seconds"),
            "elapsed": time.perf_counter() - t0,
            "verdict": result.get("verdict"),
            "tracking_seconds": tracking.seconds_in_mlflow() - mlflow_before,
            "pid": os.getpid(),
        }
    except Exception as e:  # noqa: BLE001 -- the run itself is already marked FAILED with the error
        return {"status": "FAILED", "error": f"{type(e).__name__}: {e}", "elapsed": time.perf_counter() - t0}
    except (KeyboardInterrupt, tracking.Terminated):
        if shared:
            return {"status": "KILLED"}
        raise
    finally:
        if shared:
            shared.leave()
        if limit is not None:
            limit.restore_original_limits()


# called with (the job's index in the list, its outcome) as soon as it ends, in the calling process's main thread
OnDone = Callable[[int, dict], None]


def _ignore(index: int, outcome: dict) -> None:
    pass


def dispatch(
    stage: str,
    jobs: list[DictConfig],
    workers: int,
    threads: int | None,
    pool: int = 0,
    on_done: OnDone = _ignore,
) -> list[dict]:
    """Run the jobs' configs on `workers` loky processes (in this process when 1); interrupts stop them.

    `pool`: the size of the study's loky pool when larger (the warmed-up workers: a smaller pool would
    stop one that is still importing); never more than the study's n_jobs, so no more jobs run at once.
    `on_done(index, outcome)` is called as each job ends, in the order they end; the outcomes come back in
    the order of `jobs`.

    On SIGINT/SIGTERM no new job starts, the busy workers get SIGTERM and a few seconds to end their runs
    as KILLED with their metrics flushed, then the interrupt goes on (joblib alone would SIGKILL them,
    leaving runs RUNNING).
    """
    if workers == 1:
        outcomes = []
        for i, cfg in enumerate(jobs):
            outcomes.append(run_job(stage, cfg, threads))
            on_done(i, outcomes[-1])
        return outcomes
    executor = get_reusable_executor(max_workers=max(workers, pool), initializer=leave_sigint_to_parent)
    with tempfile.TemporaryDirectory(prefix="gradlab-board-") as folder:
        futures = [executor.submit(run_job, stage, cfg, threads, folder) for cfg in jobs]
        index = {f: i for i, f in enumerate(futures)}
        try:
            for f in concurrent.futures.as_completed(futures):
                on_done(index[f], f.result())
            return [f.result() for f in futures]
        except (KeyboardInterrupt, tracking.Terminated):
            for f in futures:
                f.cancel()
            for pid in Board(folder).stop():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            started = [f for f in futures if not f.cancelled()]
            _wait(started, STOP_SECONDS)
            raise


def _import_stages(uri: str | None) -> None:
    """Import what a job needs (MLflow, matplotlib, Hydra: seconds in a fresh process) and open the store.

    Only a store that already exists: two processes creating a fresh SQLite schema at once fail.
    """
    for module in JOB_STAGES.values():
        importlib.import_module(module)
    if uri and uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).is_file():
        tracking.client(uri)  # MLflow checks the schema on a client's first use: ~1 s


def warm_up(workers: int, uri: str | None = None) -> None:
    """Start the loky workers and have them import the stages now, without waiting for them.

    Called before the study composes its jobs, so the workers' start-up overlaps with that work.
    """
    if workers > 1:
        executor = get_reusable_executor(max_workers=workers, initializer=leave_sigint_to_parent)
        for _ in range(workers):
            executor.submit(_import_stages, uri)


def _indexed(index: int, stage: str, cfg: DictConfig, threads: int | None) -> tuple[int, dict]:
    """run_job's outcome with the job's index (joblib's unordered results say which job they are)."""
    return index, run_job(stage, cfg, threads)


def _wait(futures: list, seconds: float) -> None:
    """Wait for the futures (a signal arriving meanwhile does not cut the wait short)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            concurrent.futures.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
            return
        except (KeyboardInterrupt, tracking.Terminated):  # a second Ctrl-C: keep the promise of a clean stop
            continue


def stop_pool(seconds: float = STOP_SECONDS) -> None:
    """Stop this process's loky pool (a sweep's, run by Hydra's joblib launcher) after an interrupt.

    Every worker gets SIGTERM (a busy one ends its run as KILLED) and `seconds` to exit; then the pool is
    shut down, the stragglers killed. Without this a SIGTERM'd sweep left its workers training on, orphaned.
    """
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor  # loky's module-level pool (no public accessor)
    if executor is None:
        return
    processes = list(getattr(executor, "_processes", {}).values())
    for p in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    for p in processes:
        with contextlib.suppress(KeyboardInterrupt, tracking.Terminated):  # a second signal: keep stopping
            p.join(timeout=max(0.0, deadline - time.monotonic()))
    with contextlib.suppress(Exception):  # a pool loky already found broken: its workers are gone
        executor.shutdown(wait=True, kill_workers=True)


BACKENDS = ("loky", "dask")
DIST_HINT = "pip install -e '.[dist]'"


def check_backend(study: DictConfig) -> tuple[str, str | None]:
    """The study's backend and dask scheduler address, checked before any work (one-line ConfigErrors).

    A known backend; for dask the `distributed` package, and a scheduler address that answers (when given).
    """
    from pipeline.harness.validate import ConfigError

    backend, address = study.get("backend", "loky"), study.get("dask_address")
    if backend not in BACKENDS:
        raise ConfigError(f"study.backend: got {backend!r}; allowed: one of {', '.join(BACKENDS)}")
    if backend != "dask":
        return backend, None
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"study.backend: dask needs the `distributed` package, which is not installed; install it with: {DIST_HINT}"
        ) from None
    if address is not None:
        allowed = "null (a LocalCluster) or the address of a running dask scheduler, e.g. tcp://10.0.0.5:8786"
        host, _, port = str(address).rpartition("://")[2].rpartition(":")
        if not (isinstance(address, str) and host and port.isdigit()):
            raise ConfigError(f"study.dask_address: got {address!r}; allowed: {allowed}")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as e:
            raise ConfigError(
                f"study.dask_address: no scheduler answers at {address} ({e}); allowed: {allowed}"
            ) from None
    return backend, address


def dispatch_dask(
    stage: str,
    jobs: list[DictConfig],
    workers: int,
    threads: int | None,
    address: str | None = None,
    on_done: OnDone = _ignore,
) -> list[dict]:
    """Run the jobs through joblib's dask backend: on the scheduler at `address`, else on a LocalCluster.

    A LocalCluster is the study's own: `workers` single-threaded worker processes, closed afterwards. With an
    address, the scheduler's workers run the jobs (they need gradlab installed and the tracking URI in reach:
    use a tracking server beyond one machine). Each job is one dask task; on a single worker thread joblib
    would run them all in this process, so they go to the cluster through the client directly. On an
    interrupt the client and any local cluster close (its worker processes end); the study's parent marks
    the runs left RUNNING KILLED.
    """
    from distributed import Client, LocalCluster, as_completed
    from joblib import Parallel, delayed, parallel_config

    if "DASK_LOGGING__DISTRIBUTED" not in os.environ:  # Hydra's INFO root logger would print every dask event
        logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = None
    if address:
        client = Client(address, set_as_default=False)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster, set_as_default=False)
    outcomes: list[dict] = [{} for _ in jobs]
    try:
        if sum(client.ncores().values()) > 1:
            with parallel_config(backend="dask", client=client):
                # as they end (on_done sees each at once), each with its index: the outcomes keep the jobs' order
                ended = Parallel(n_jobs=-1, batch_size=1, return_as="generator_unordered")(
                    delayed(_indexed)(i, stage, cfg, threads) for i, cfg in enumerate(jobs)
                )
                for i, outcome in ended:
                    outcomes[i] = outcome
                    on_done(i, outcome)
            return outcomes
        # one worker thread (or none yet): joblib would run every job here, in this process; submit them instead
        n = len(jobs)
        futures = client.map(run_job, [stage] * n, jobs, [threads] * n, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures, loop=client.loop):  # this client's loop: it is not the default one
            outcomes[index[future.key]] = future.result()
            on_done(index[future.key], outcomes[index[future.key]])
        return outcomes
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
