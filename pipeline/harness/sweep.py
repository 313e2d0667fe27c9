"""Hydra multirun -> one MLflow parent run per sweep, every job a child of it (docs/ARCHITECTURE.md, "Tracking").

The sweep's process also shows its progress (harness/progress.py): each job writes a record when it ends
(Hydra's on_job_end, in the job's own process) into <sweep dir>/progress/, and a thread of the sweep's process
turns the records into the bar or the lines. An interrupted sweep resumes: the same command again reopens its
parent run, and the jobs that FINISHED under it with the same config hash by the same code are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline import tracking
from pipeline.harness.progress import OK, Progress, use_bar

# in the sweep folder rather than only the environment: loky may reuse workers started before this sweep
SWEEP_FILE = "mlflow_sweep.json"
RECORDS = "progress"  # <sweep dir>/progress/<job num>.json: one record per ended job
POLL_SECONDS = 0.2
SUPERSEDED_TAG = "superseded"  # as a study's: an earlier attempt of a job that ran again
LAUNCHER_LOGGERS = ("hydra", "hydra_plugins")  # their per-job INFO lines would tear the bar

_said: list[tuple[str, str]] = []  # what this process's job had to say, for its record (when the sweep reports)
_active: MlflowSweepCallback | None = None  # the sweep this process runs, for interrupted()

# the pid of a sweep's own process, for its jobs: a job in another process is a launcher's worker
SWEEP_PID_ENV = "GRADLAB_SWEEP_PID"


def sweep_info() -> dict:
    """Inside a Hydra multirun job: {"parent_run_id", "swept": [keys], "reports", "done"} of its sweep ({} when
    unknown; reports: the sweep's process shows the jobs' lines; done: {config hash: run id} already FINISHED)."""
    try:
        return json.loads((Path(HydraConfig.get().sweep.dir) / SWEEP_FILE).read_text())
    except (ValueError, OSError):
        return {}


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_label() -> str:
    """Inside a sweep, the job's values of the swept keys ('model.activation=relu init=he_normal'); else ''."""
    if not in_multirun():
        return ""
    swept = sweep_info().get("swept")
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("hydra", "tracking"))]
    if swept:
        overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    return " ".join(overrides)


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a sweep varies (a,b lists, range(), choice(), glob()), from its command-line overrides."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.get_key_element() for o in parsed if o.is_sweep_override()]


def sweep_size(overrides: list[str]) -> int | None:
    """How many jobs the overrides make (the product of the swept lists); None when that cannot be told."""
    n = 1
    try:
        for o in OverridesParser.create().parse_overrides(overrides):
            if o.is_sweep_override():
                if not o.is_discrete_sweep():
                    return None
                n *= len(list(o.sweep_string_iterator()))
    except Exception:  # noqa: BLE001 -- a glob() or anything else only Hydra can expand: count unknown
        return None
    return n


def say(text: str, err: bool = False, prefix: str = "") -> None:
    """A stage's line: printed (after `prefix`), or kept for the job's record when the sweep's process shows the
    progress (without `prefix`, the job's number and label: the progress line names the job)."""
    if in_multirun() and sweep_info().get("reports"):
        _said.append(("stderr" if err else "stdout", text))
    else:
        print(f"{prefix}{text}", file=sys.stderr if err else sys.stdout)


def finished_before(config_hash: str) -> str | None:
    """Inside a resumed sweep: the run that already FINISHED this job (same config hash, same code), else None."""
    return sweep_info().get("done", {}).get(config_hash) if in_multirun() else None


def interrupted(e: BaseException) -> str | None:
    """After Ctrl-C or SIGTERM in a sweep's process: its runs ended KILLED, the one line to print; None outside."""
    return _active.interrupted(e) if _active is not None else None


def _latest(children: list) -> dict:
    """Per config hash, the attempt that counts: the newest FINISHED one, else the newest one."""
    best: dict = {}
    for c in sorted(children, key=lambda c: c.info.start_time):
        h = c.data.tags.get("config_hash")
        if h is not None and (h not in best or c.info.status == "FINISHED" or best[h].info.status != "FINISHED"):
            best[h] = c
    return best


def _outcome(job_return) -> dict:
    """A job's status (FINISHED, SKIPPED, INVALID, FAILED) and what goes with it, from what the stage returned."""
    from hydra.core.utils import JobStatus

    value = job_return._return_value
    if job_return.status != JobStatus.COMPLETED:
        return {"status": "FAILED", "error": f"{type(value).__name__}: {value}"}
    if not isinstance(value, dict):
        return {"status": "FINISHED"}
    status = str(value.get("status", "finished")).upper()
    if status == "FINISHED":
        return {"status": status, "verdict": value.get("verdict"), "run_id": value.get("run_id")}
    return {"status": status, "error": value.get("error"), "run_id": value.get("run_id")}


class MlflowSweepCallback(Callback):
    """Creates the parent run (and the store, once, before any worker), or reopens an interrupted sweep's; shows
    the jobs' progress (`progress`: auto, true, false, as study.progress); closes the parent with a summary."""

    def __init__(self, progress="auto") -> None:
        self.progress_mode = progress
        self.parent: tracking.TrackedRun | None = None
        self.sweep_dir: Path | None = None
        self.total: int | None = None
        self._job_t0 = 0.0
        self._live: dict = {}  # the sweep's process's own: progress, watcher thread, logger levels, signals

    def __getstate__(self) -> dict:  # a launcher ships the callbacks to its workers: not the live parts
        return {**self.__dict__, "_live": {}}

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        global _active
        if not (self.progress_mode == "auto" or isinstance(self.progress_mode, bool)):
            print(
                f"error: hydra.callbacks.mlflow_sweep.progress: got {self.progress_mode!r}; "
                "allowed: one of auto, true, false",
                file=sys.stderr,
            )
            sys.exit(2)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        os.environ[SWEEP_PID_ENV] = str(os.getpid())  # its launcher's workers leave Ctrl-C to this process
        task_overrides = list(config.hydra.overrides.task)
        self.total = sweep_size(task_overrides)
        info: dict = {"parent_run_id": None, "swept": swept_keys(task_overrides), "reports": True, "done": {}}
        if config.tracking.enabled:
            try:
                self.parent, info["done"] = self._open_parent(config, " ".join(task_overrides))
            except tracking.StoreError as e:
                _stop(e)
            info["parent_run_id"] = self.parent.run_id
            assert self.parent.run_id is not None  # started above
            os.environ[tracking.PARENT_RUN_ENV] = self.parent.run_id
        (self.sweep_dir / RECORDS).mkdir(parents=True, exist_ok=True)
        (self.sweep_dir / SWEEP_FILE).write_text(json.dumps(info))
        _active = self
        self._start_progress(len(info["done"]))

    def _open_parent(self, config: DictConfig, overrides: str) -> tuple[tracking.TrackedRun, dict[str, str]]:
        """The sweep's parent run: an interrupted one of the same overrides reopened, else a new one; and the
        jobs the reopened one already FINISHED by today's code ({config hash: run id})."""
        from pipeline.harness.provenance import code_version

        uri = tracking.check_store(config.tracking.uri, config.tracking.experiment)  # before any job starts
        tracking.ensure_experiment(uri, config.tracking.experiment)  # schema migrated here, not in racing workers
        tags = {"stage": "sweep", "sweep": overrides}
        earlier = tracking.find_runs(uri, config.tracking.experiment, tags)
        if earlier and earlier[0].info.status != "FINISHED":
            parent = tracking.TrackedRun.resume(uri, earlier[0].info.run_id)
            if "error" in earlier[0].data.tags:  # what ended it before: no longer true
                tracking.client(uri).delete_tag(earlier[0].info.run_id, "error")
            done = {
                h: c.info.run_id
                for h, c in _latest(tracking.child_runs(uri, earlier[0].info.run_id)).items()
                if c.info.status == "FINISHED" and c.data.tags.get("code_version") == code_version()
            }
            return parent, done
        parent = tracking.TrackedRun(
            uri, config.tracking.experiment, run_name=f"sweep {overrides}".strip(), tags=tags, parent_run_id=""
        ).start()
        return parent, {}

    def _start_progress(self, done: int) -> None:
        resumed = f", resuming: {done} already finished" if done else ""
        if use_bar(self.progress_mode):  # the launchers' per-job INFO lines would tear the bar: one line instead
            self._live["levels"] = {n: logging.getLogger(n).level for n in LAUNCHER_LOGGERS}
            for name in LAUNCHER_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
            print(f"sweep: {self.total or 'some'} jobs{resumed}, output in {self.sweep_dir}", flush=True)
        elif done:
            print(f"sweep: {self.total or 'some'} jobs{resumed}", flush=True)
        self._live.update(
            progress=Progress(self.total, "sweep", self.progress_mode), seen=set(), ok=0, stop=threading.Event()
        )
        self._live["watcher"] = threading.Thread(target=self._watch, name="sweep-progress", daemon=True)
        self._live["watcher"].start()
        if threading.current_thread() is threading.main_thread():  # SIGTERM ends the sweep as Ctrl-C does
            self._live["signals"] = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
            tracking.install_signal_handlers()

    def _watch(self) -> None:
        while not self._live["stop"].wait(POLL_SECONDS):
            self._drain()

    def _drain(self) -> None:
        """Report every job record not reported yet, in the order the jobs ended."""
        assert self.sweep_dir is not None
        records = []
        for path in (self.sweep_dir / RECORDS).glob("*.json"):
            if path.name not in self._live["seen"]:
                try:
                    records.append((path.name, json.loads(path.read_text())))
                except (OSError, ValueError):  # being replaced: next time
                    continue
        for name, record in sorted(records, key=lambda r: r[1].get("ended", 0)):
            self._live["seen"].add(name)
            outcome = record["outcome"]
            self._live["ok"] += outcome.get("status") in OK
            said = [tuple(x) for x in record.get("said", [])]
            detail = " ".join(text for stream, text in said if stream == "stdout")
            errors = [(stream, text) for stream, text in said if stream == "stderr"]
            self._live["progress"].job_done(record["label"], outcome, errors, detail)

    def _stop_progress(self) -> None:
        """Report what is left, clear the bar, restore the loggers and signals (once)."""
        watcher = self._live.pop("watcher", None)
        if watcher is None:
            return
        self._live["stop"].set()
        watcher.join()
        self._drain()
        self._live["progress"].close()
        for name, level in self._live.pop("levels", {}).items():
            logging.getLogger(name).setLevel(level)
        if "signals" in self._live:
            sigterm, sigint = self._live.pop("signals")
            signal.signal(signal.SIGTERM, sigterm)
            signal.signal(signal.SIGINT, sigint)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        self._job_t0 = time.perf_counter()
        _said.clear()

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        """The job's record for the sweep's progress (in the job's own process; written whole, then renamed)."""
        if config.hydra.mode != RunMode.MULTIRUN:  # a single run: no sweep, no record (and no hydra.job.num)
            return
        outcome = {**_outcome(job_return), "elapsed": time.perf_counter() - self._job_t0}
        said = list(_said)
        _said.clear()
        if outcome["status"] not in OK:  # the stage's own "error: job N (...): ..." line: the record's error says it
            said = [(stream, text) for stream, text in said if not text.startswith("error: ")]
        num = config.hydra.job.num
        record = {"label": job_label() or f"job {num}", "outcome": outcome, "said": said, "ended": time.time()}
        folder = Path(config.hydra.sweep.dir) / RECORDS
        try:
            (folder / f".{num}.json.tmp").write_text(json.dumps(record, default=str))
            (folder / f".{num}.json.tmp").replace(folder / f"{num}.json")
        except OSError:  # no records folder: no sweep process reading them
            return

    def interrupted(self, e: BaseException) -> str:
        """Ctrl-C / SIGTERM: the bar cleared, the runs left RUNNING and the parent KILLED; the one line to print."""
        global _active
        _active = None
        os.environ.pop(tracking.PARENT_RUN_ENV, None)
        os.environ.pop(SWEEP_PID_ENV, None)
        self._stop_progress()
        how = "SIGTERM" if isinstance(e, tracking.Terminated) else "SIGINT"
        of = f" of {self.total}" if self.total else ""
        from pipeline.harness.dispatch import stop_pool

        stop_pool()  # the launcher's workers: their runs ended, none left training orphaned
        if self.parent is None or self.parent.run_id is None:
            return f"sweep interrupted ({how}): {self._live.get('ok', 0)}{of} jobs finished (tracking off: no resume)"
        try:
            tracking.end_running_children(self.parent.uri, self.parent.run_id, "KILLED")
            latest = _latest(tracking.child_runs(self.parent.uri, self.parent.run_id))
            finished = sum(c.info.status == "FINISHED" for c in latest.values())
            self.parent.set_tags({"error": f"interrupted: {how}; running the same command again resumes"})
            self.parent.end("KILLED")
        except tracking.StoreError as failed:  # the store failed too: the parent ended the short way, one line
            self.parent.abort(failed)
            return f"sweep interrupted ({how}); error: {failed}"
        return (
            f"sweep interrupted ({how}): {finished}{of} jobs finished, the rest marked KILLED; "
            "running the same command again resumes"
        )

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        global _active
        _active = None
        os.environ.pop(tracking.PARENT_RUN_ENV, None)
        os.environ.pop(SWEEP_PID_ENV, None)
        self._stop_progress()
        if self.parent is None or self.parent.run_id is None:
            return
        try:
            self._close_parent(self.parent)
        except tracking.StoreError as e:
            self.parent.abort(e)  # ended FAILED the short way; e says how
            _stop(e)

    def _close_parent(self, parent: tracking.TrackedRun) -> None:
        """The summary on the parent run, which ends FINISHED; the lines that say where to look."""
        assert parent.run_id is not None
        children = tracking.child_runs(parent.uri, parent.run_id)
        latest = _latest(children)
        self._mark_superseded(children, latest)
        statuses = [r.info.status for r in latest.values()]
        jobs = sum(1 for p in self.sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()) if self.sweep_dir else 0
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        invalid = max(0, jobs - len(latest))
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) + (f", {invalid} invalid" if invalid else "")
        parent.set_tags({"children": str(len(latest)), "summary": summary})
        parent.end("FINISHED")
        print(f"sweep: {len(latest)} runs under parent run {parent.run_id}: {summary}")
        local = parent.uri.startswith("sqlite:")  # `make ui` serves the project's own store only
        print(f"open the MLflow UI: {tracking.ui_command(parent.uri)}" + ("  (or: make ui)" if local else ""))

    def _mark_superseded(self, children: list, latest: dict) -> None:
        """Tag the earlier attempts of jobs that ran again (after an interrupt) superseded, as a study does."""
        assert self.parent is not None
        for c in children:
            h = c.data.tags.get("config_hash")
            if h in latest and latest[h].info.run_id != c.info.run_id and c.data.tags.get(SUPERSEDED_TAG) != "true":
                superseded = {SUPERSEDED_TAG: "true", "superseded_by": latest[h].info.run_id}
                tracking.tag_run(self.parent.uri, c.info.run_id, superseded)


def _stop(error: tracking.StoreError) -> NoReturn:
    """One line and exit 2: Hydra would turn a callback's exception into a warning and run the sweep anyway."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
