"""MLflow runs as gradlab writes them: buffered metrics, batched params and tags, a clean end whatever happens."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import mlflow
import psutil
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from pipeline.tracking.signals import Terminated, _shield, drop_pending
from pipeline.tracking.store import (
    DEFAULT_EXPERIMENT,
    StoreError,
    _attempts,
    check_store,
    client,
    end_run_directly,
    ensure_experiment,
    fail_fast,
    resolve_uri,
    seconds_in_mlflow,
    store_errors,
    store_failure,
)

PARENT_RUN_ENV = "GRADLAB_PARENT_RUN_ID"
# the process writing a run, `host:pid:start time`: a run left RUNNING by a process that is gone is found by
# it (queries.end_orphaned_runs; `python -m pipeline.tracking.team reap`)
WRITER_TAG = "writer_process"

# MLflow's own limits (mlflow.utils.validation); the client rejects anything larger.
_MAX_PARAM_VALUE = 6000
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_ERROR_TAG = 5000

T = TypeVar("T")
_log = logging.getLogger(__name__)


def flatten(cfg: Mapping | DictConfig, prefix: str = "") -> dict[str, str]:
    """Nested config to {"model.depth": "2", ...} with string values cut to MLflow's param limit."""
    items = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    assert isinstance(items, Mapping)
    flat: dict[str, str] = {}
    for key, value in items.items():
        name = f"{prefix}.{key!s}" if prefix else str(key)
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = str(value)[:_MAX_PARAM_VALUE]
    return flat


def describe(exc: BaseException) -> str:
    """What ended a run, for its `error` tag: the error, or which interrupt."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted: SIGINT (Ctrl-C); running the same command again resumes"
    if isinstance(exc, Terminated):
        return "interrupted: SIGTERM; running the same command again resumes"
    return f"{type(exc).__name__}: {exc}"


def writer_process() -> str:
    """This process as WRITER_TAG names it: host, pid and start time (a reused pid is another process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.2f}"


# runs this process started, and ended KILLED: what the line after an interrupt says (`interrupt_outcome`)
_counts = {"started": 0, "killed": 0}


def run_counts() -> tuple[int, int]:
    """(runs started, runs ended KILLED) by this process so far."""
    return _counts["started"], _counts["killed"]


def interrupt_outcome(before: tuple[int, int]) -> str:
    """What became of this process's runs since `before` (run_counts()), for the line after an interrupt."""
    started, killed = (now - then for now, then in zip(run_counts(), before, strict=True))
    if not started:
        return "before any run started"
    if killed >= started:
        return "run marked KILLED"
    return "a run could not be marked KILLED: the tracking store failed (see the log)"


def end_stale_active_run() -> None:
    """End a fluent-API run left active in this (reused loky worker) process by an earlier job."""
    stale = mlflow.active_run()
    if stale is not None:
        _log.warning("ending stale MLflow run %s left active in this process", stale.info.run_id)
        mlflow.end_run(status="FAILED")


class TrackedRun:
    """One MLflow run with buffered metrics; a context manager that always ends the run."""

    def __init__(
        self,
        uri: str,
        experiment: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        flush_every: int = 1000,
    ) -> None:
        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.run_name = run_name
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        # None means "inherit the sweep's parent from the environment"; "" means explicitly no parent.
        parent = parent_run_id if parent_run_id is not None else os.environ.get(PARENT_RUN_ENV)
        self.parent_run_id = parent or None
        self.flush_every = flush_every
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._mlflow_before = seconds_in_mlflow()
        self._client: MlflowClient | None = None
        self._buffer: list[Metric] = []
        self._ended = False
        self._store_failed: StoreError | None = None  # the first call that found the store failed

    @property
    def seconds_in_mlflow(self) -> float:
        """This process's time in MLflow calls since the run was made (its own calls, in a stage)."""
        return seconds_in_mlflow() - self._mlflow_before

    @property
    def _store(self) -> MlflowClient:
        """The client of a started run."""
        if self._client is None:
            raise RuntimeError("the run is not started")
        return self._client

    @property
    def _local(self) -> bool:
        """A SQLite store: this process holds the database's locks while it writes."""
        return self.uri.startswith("sqlite:")

    def _guard(self) -> contextlib.AbstractContextManager:
        """Interrupts held during a SQLite call (a half-done transaction would keep its lock); a call to a server
        can be cut short by Ctrl-C or SIGTERM at any time (MLflow may be retrying one that does not answer)."""
        return _shield() if self._local else contextlib.nullcontext()

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one MLflow call with lock retry (interrupts held during each SQLite attempt); a failing store
        raises StoreError. Once the store has failed this run, a later call (the history saved on the way out)
        gets one short try, and failing again raises the first StoreError: the bounded retries are spent once
        per run, not once per call, and the line the user reads names the first failure."""
        failed = self._store_failed
        try:
            with fail_fast() if failed else contextlib.nullcontext(), store_errors(self.uri):
                return _attempts(self._guard, fn, args, kwargs)
        except StoreError as exc:
            if failed is None:
                self._store_failed = exc
                raise
            raise failed  # noqa: B904 -- its own cause (the first failure) is the one to keep

    def start(self) -> TrackedRun:
        """Create the run (and the experiment if needed); a second call does nothing."""
        if self.run_id is not None:
            return self
        check_store(self.uri, self.experiment)  # once per process; interruptible
        with self._guard():
            experiment_id = ensure_experiment(self.uri, self.experiment, cached=True)  # retries internally
            self._client = client(self.uri)
        tags = {**self.tags, WRITER_TAG: writer_process()}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        try:
            run = self._call(self._store.create_run, experiment_id, run_name=self.run_name, tags=tags)
        except MlflowException:  # the cached experiment may have been deleted since: look it up afresh
            experiment_id = ensure_experiment(self.uri, self.experiment)
            run = self._call(self._store.create_run, experiment_id, run_name=self.run_name, tags=tags)
        self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        _counts["started"] += 1
        return self

    @classmethod
    def resume(cls, uri: str, run_id: str) -> TrackedRun:
        """Reopen an ended run (a study's parent, on a re-run): RUNNING again, its tags and data kept."""
        run = cls(uri, parent_run_id="")
        check_store(run.uri)
        run._client = client(run.uri)
        info = run._call(run._client.get_run, run_id).info
        run.run_name, run.run_id, run.experiment_id = info.run_name, run_id, info.experiment_id
        run._call(run._client.update_run, run_id, status="RUNNING")
        run._call(run._client.set_tag, run_id, WRITER_TAG, writer_process())  # this process writes it now
        _counts["started"] += 1
        return run

    def log_params(self, params: dict[str, str]) -> None:
        """Log params now, in batches of MLflow's 100-param limit."""
        items = [Param(key, str(value)[:_MAX_PARAM_VALUE]) for key, value in params.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self._call(
                self._store.log_batch, self.run_id, params=items[i : i + _MAX_PARAMS_PER_BATCH], synchronous=True
            )

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
            self._call(
                self._store.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True
            )

    def set_experiment_tags(self, tags: dict[str, str]) -> None:
        """Set tags on the run's experiment (`mlflow.note.content` is its description in the UI)."""
        for key, value in tags.items():
            self._call(self._store.set_experiment_tag, self.experiment_id, key, str(value))

    def log_inputs(self, datasets: list[DatasetInput]) -> None:
        """Record the data sets the run read (the runs table's Dataset column)."""
        self._call(self._store.log_inputs, self.run_id, datasets=datasets)

    def log_image(self, image: Any, key: str, step: int = 0) -> None:
        """An image (a PIL image or an array) under `key` at `step`: the run's Model metrics tab shows it."""
        self._call(self._store.log_image, self.run_id, image, key=key, step=step, synchronous=True)

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
                self._call(self._store.log_artifacts, self.run_id, tmp)
        finally:
            for fig in figures.values():
                plt.close(fig)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Copy a local file or folder into the run's artifacts."""
        self._call(self._store.log_artifact, self.run_id, local_path, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write a string as an artifact file."""
        self._call(self._store.log_text, self.run_id, text, artifact_file)

    def flush(self) -> None:
        """Write buffered metrics synchronously in batches of 1000; unsent ones stay buffered on error."""
        while self._buffer:
            chunk = self._buffer[:_MAX_METRICS_PER_BATCH]
            self._call(self._store.log_batch, self.run_id, metrics=chunk, synchronous=True)
            del self._buffer[: len(chunk)]

    def end(self, status: str = "FINISHED") -> None:
        """Flush, then mark the run ended with status; later calls do nothing."""
        if self._ended or self.run_id is None:
            return
        try:
            self.flush()
        except StoreError:
            raise  # nothing more to ask of a failed store: the `with` block's exit ends the run the short way
        except BaseException as exc:
            # Metrics were lost: the run did not finish cleanly, whatever the caller asked. An interrupt that
            # lands in this last flush makes it KILLED, anything else FAILED; the error tag says which.
            if status == "FINISHED":
                status = "KILLED" if isinstance(exc, (KeyboardInterrupt, Terminated)) else "FAILED"
                self._tag_error(exc)
            self._terminate(status)
            raise
        self._terminate(status)

    def _terminate(self, status: str) -> None:
        self._call(self._store.set_terminated, self.run_id, status)
        self._ended = True  # only once terminated, so a failed end can be retried
        _counts["killed"] += status == "KILLED"

    def _tag_error(self, exc: BaseException) -> None:
        """The `error` tag: what ended the run (best effort: the run is ending anyway; a failed store raises)."""
        try:
            with _shield():  # a second interrupt waits until the tag is written
                self.set_tags({"error": describe(exc)[:_MAX_ERROR_TAG]})
        except StoreError:
            raise
        except BaseException:  # noqa: BLE001 -- the caller re-raises the exception that ended the run
            _log.exception("could not record the error on run %s", self.run_id)

    def __enter__(self) -> TrackedRun:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is None:
            try:
                self.end("FINISHED")
            except StoreError as failed:  # the last flush or the status could not be written
                failed.run_notes.append(self._end_in_failed_store("FAILED", failed))
                raise
            return False
        with _shield():  # already unwinding: a second Ctrl-C must not cut the flush and the ending short
            self._end_after(exc)
            drop_pending()
        return False

    def abort(self, exc: BaseException) -> None:
        """End the run after `exc` as a `with` block would: KILLED for an interrupt, else FAILED."""
        self.__exit__(type(exc), exc, exc.__traceback__)

    def _end_after(self, exc: BaseException) -> None:
        """Flush and end the run as KILLED (interrupt) or FAILED (error tag); MLflow errors only logged.

        When the store itself has failed (a StoreError, now or while ending), the run is ended by the shortest
        way left (`_end_in_failed_store`) and the StoreError's run_notes say how it ended. After an interrupt a
        server gets one try per call, CHECK_SECONDS each: the user asked to stop.
        """
        interrupted = isinstance(exc, (KeyboardInterrupt, Terminated))
        status = "KILLED" if interrupted else "FAILED"
        if isinstance(exc, StoreError):
            exc.run_notes.append(self._end_in_failed_store(status, exc))
            return
        quick = fail_fast() if interrupted and not self._local else contextlib.nullcontext()
        try:
            with quick:
                self._record_end(exc, status)
        except StoreError as failed:
            note = self._end_in_failed_store(status, exc, tried=not self._local)
            _log.warning("%s; %s", failed, note)

    def _record_end(self, exc: BaseException, status: str) -> None:
        """Flush, the error tag, the traceback for a failure, the status; a StoreError stops it at once."""
        try:
            self.flush()
        except StoreError:
            raise
        except Exception:
            _log.exception("could not flush metrics of run %s", self.run_id)
        self._tag_error(exc)
        if status == "FAILED":
            try:
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                self.log_text(trace, "error.txt")  # the whole story, where the tag has one line
            except StoreError:
                raise
            except Exception:
                _log.exception("could not record the error's traceback on run %s", self.run_id)
        try:
            self.end(status)
        except StoreError:
            raise
        except Exception:
            _log.exception("could not end run %s as %s", self.run_id, status)

    def _end_in_failed_store(self, status: str, exc: BaseException, tried: bool = False) -> str:
        """End the run in a store that failed, the shortest way left; say how it went (`run ... ended FAILED`).

        SQLite: straight into the database with the journal in memory (a full disk has no room for one). A
        server or another database: the status, then the error tag, once each without retries (`tried`: a call
        just failed that way, so the store is not asked again). Nothing here waits longer than CHECK_SECONDS.
        An empty note when there is no run to end.
        """
        if self._ended or self.run_id is None:
            return ""
        error = describe(exc)[:_MAX_ERROR_TAG]
        try:
            if self._local:
                end_run_directly(self.uri, self.run_id, status, error)
            elif tried:
                raise StoreError("the store failed while the run was ending")
            else:
                with fail_fast():
                    self._store.set_terminated(self.run_id, status)  # first: the run must not stay RUNNING
                    with contextlib.suppress(Exception):
                        self._store.log_batch(self.run_id, tags=[RunTag("error", error)], synchronous=True)
        except Exception as failed:  # noqa: BLE001 -- said in the note; the caller raises the store's error
            why = store_failure(failed)
            _log.debug("could not end run %s in the failed store", self.run_id, exc_info=True)
            return f"run {self.run_id} could not be ended ({why[1] if why else failed}) and stays RUNNING"
        finally:
            self._ended = True
        _counts["killed"] += status == "KILLED"
        return f"run {self.run_id} ended {status}"


class NullRun:
    """TrackedRun's interface doing nothing, for tracking.enabled=false."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run_id: str | None = None
        self.experiment_id: str | None = None
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

    def set_experiment_tags(self, tags: dict[str, str]) -> None:
        """Do nothing."""

    def log_inputs(self, datasets: list[DatasetInput]) -> None:
        """Do nothing."""

    def log_image(self, image: Any, key: str, step: int = 0) -> None:
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

    def abort(self, exc: BaseException) -> None:
        """Do nothing."""

    def __enter__(self) -> NullRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        return False
