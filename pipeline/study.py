"""python -m pipeline.study study=NAME [study.size=smoke|default|full] [study.n_jobs=N]

A study is a sweep plus a verdict: its grid (pipeline/studies/grid.py) runs in parallel, every job a
child of one MLflow parent run per study and size; jobs already FINISHED with the same config hash by the
same code are skipped, so an interrupted study resumes and a finished one returns at once; then the study's module
turns the runs into findings (checks, table, figures) and pipeline/studies/render.py writes
reports/<study>/. See docs/ARCHITECTURE.md, "Studies".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline.data import labeled, prepared
from pipeline.harness.cli import stage_main
from pipeline.harness.dispatch import JOB_STAGES, check_backend, dispatch, dispatch_dask, warm_up
from pipeline.harness.paths import ROOT
from pipeline.harness.progress import Progress
from pipeline.harness.provenance import code_version
from pipeline.harness.recording import HISTORY_FILE, History, check_store, decode_history
from pipeline.harness.validate import ConfigError, check_batch_size, validate
from pipeline.studies import STUDIES, browse, findings_for, render
from pipeline.studies.base import StudyRun, mlflow_value
from pipeline.studies.checks import verdict as study_verdict
from pipeline.studies.grid import Job, expand

REPORTS_DIR = ROOT / "reports"
SUPERSEDED_TAG = "superseded"  # on a child whose job was run again: only the latest attempt counts


def _parent(cfg: DictConfig, uri: str) -> tracking.TrackedRun:
    """This study's parent run at this size (and on this user's data set): the existing one reopened, or a new one."""
    tags = {"stage": "study", "study": cfg.study.name, "study_size": cfg.study.size}
    own_data = prepared.data_label(cfg.data)  # data=file / openml: a parent of its own, tagged `data`
    existing = [
        r for r in tracking.find_runs(uri, browse.study_experiment(cfg), tags) if r.data.tags.get("data") == own_data
    ]
    if own_data:
        tags["data"] = own_data
    if existing:
        return tracking.TrackedRun.resume(uri, existing[0].info.run_id)
    return tracking.TrackedRun(
        uri,
        browse.study_experiment(cfg),
        run_name=f"study {cfg.study.name} ({cfg.study.size}{', ' + own_data if own_data else ''})",
        tags={**tags, "claim": cfg.study.claim},
        parent_run_id="",
    ).start()


def _study_run(job: Job, child: Run | None, uri: str | None) -> StudyRun:
    """A job's record from its MLflow child run (metrics, verdict, history)."""
    if child is None:
        return StudyRun(job.label, job.values, "MISSING", case=job.case)
    metrics = {k: mlflow_value(v) for k, v in child.data.metrics.items()}
    verdict = [v for v in child.data.tags.get("verdict", "").split(",") if v]
    history: History = {}
    if uri is not None and child.info.status == "FINISHED":
        history = decode_history(tracking.download_json(uri, child.info.run_id, HISTORY_FILE))
    return StudyRun(
        job.label,
        job.values,
        child.info.status,
        child.info.run_id,
        verdict,
        metrics,
        history,
        child.data.tags.get("error"),
        job.case,
    )


def _job_runs(uri: str, parent_run_id: str, stage: str) -> list[Run]:
    """The parent's children that are jobs of the study: runs of its stage (a finetune job's pretrain run is not)."""
    return [c for c in tracking.child_runs(uri, parent_run_id) if c.data.tags.get("stage", stage) == stage]


def current(run: Run) -> bool:
    """FINISHED by the code that runs now (same code version: results and labels are today's)."""
    return run.info.status == "FINISHED" and run.data.tags.get("code_version") == code_version()


def _pick(children: list[Run]) -> dict[str, Run]:
    """Per config hash, the latest attempt: the newest child FINISHED by today's code, else the newest one.

    A child finished by older code is never picked over a newer attempt, nor counted as done (study.run
    runs its job again): a changed engine, probe or diagnosis must not leave stale results counted.
    """
    best: dict[str, Run] = {}
    for c in sorted(children, key=lambda c: c.info.start_time):
        h = c.data.tags.get("config_hash")
        if h is None:
            continue
        if h not in best or current(c) or not current(best[h]):
            best[h] = c
    return best


def _mark_superseded(uri: str, children: list[Run], latest: dict[str, Run]) -> int:
    """Tag every earlier attempt of a job (KILLED, FAILED, or RUNNING left by a dead process) as superseded."""
    marked = 0
    for c in children:
        h = c.data.tags.get("config_hash")
        if (
            h in latest
            and latest[h] is not c
            and c.info.run_id != latest[h].info.run_id
            and c.data.tags.get(SUPERSEDED_TAG) != "true"
        ):
            tracking.tag_run(uri, c.info.run_id, {SUPERSEDED_TAG: "true", "superseded_by": latest[h].info.run_id})
            marked += 1
    return marked


@contextlib.contextmanager
def _progress(cfg: DictConfig, todo: list[Job], total: int, workers: int, backend: str):
    """A start line, then the jobs' progress as study.progress says (harness/progress.py); yields dispatch's on_done."""
    title = f"study {cfg.study.name} ({cfg.study.size})"
    skipped = f"{total - len(todo)} already finished, " if len(todo) < total else ""
    where = "in this process" if workers == 1 and backend == "loky" else f"on {workers} {backend} worker(s)"
    print(f"{title}: {total} jobs, {skipped}" + (f"{len(todo)} to run {where}" if todo else "none to run"), flush=True)
    with Progress(len(todo), title, cfg.study.get("progress", "auto") if todo else False) as progress:
        yield lambda i, outcome: progress.job_done(todo[i].label, outcome)


def run(cfg: DictConfig, exclude: tuple[str, ...] = ()) -> dict:
    """Run (or resume) the study `cfg.study` and write its report (`exclude`: see grid.expand)."""
    if "study" not in cfg or cfg.study is None:
        raise ConfigError("study: no study selected; allowed: study=" + "|".join(STUDIES))
    n_jobs = cfg.study.n_jobs
    if not (isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and (n_jobs >= 1 or n_jobs == -1)):
        raise ConfigError(f"study.n_jobs: got {n_jobs!r}; allowed: an integer >= 1, or -1 for one per core")
    validate({"study": {"progress": cfg.study.get("progress", "auto")}})  # the jobs' keys: checked as composed
    backend, dask_address = check_backend(cfg.study)
    if cfg.study.get("stage", "train") not in JOB_STAGES:
        raise ConfigError(f"study.stage: got {cfg.study.stage!r}; allowed: one of {', '.join(JOB_STAGES)}")
    check_store(cfg)
    mlflow_before = tracking.seconds_in_mlflow()
    pool = (os.cpu_count() or 1) if n_jobs == -1 else n_jobs
    if backend == "loky":  # workers import the stages while the jobs are composed here
        warm_up(pool, tracking.resolve_uri(cfg.tracking.uri) if cfg.tracking.enabled else None)
    jobs = expand(cfg, exclude)
    n_train: dict[str, int] = {}  # per distinct data config: prepared (and checked) once
    for job in jobs:  # prepared here: parallel jobs must not race to build the same files
        data_key = json.dumps(OmegaConf.to_container(job.cfg.data, resolve=True), sort_keys=True)
        if data_key not in n_train:
            split, _ = prepared.load_or_build(job.cfg.data)
            n_train[data_key] = labeled.n_train(job.cfg.data, split)  # data.n_labeled checked here too
        check_batch_size(job.cfg.train.batch_size, n_train[data_key])
    t0 = time.perf_counter()
    name, stage = cfg.study.name, cfg.study.get("stage", "train")
    uri = tracking.resolve_uri(cfg.tracking.uri) if cfg.tracking.enabled else None
    parent = _parent(cfg, uri) if uri else tracking.NullRun()
    with parent:
        # the store and the parent's id, or None with tracking off (nothing to resume, nothing to read back)
        tracked = (uri, parent.run_id) if uri and parent.run_id else None
        done = {}
        if tracked:
            done = {h: c for h, c in _pick(_job_runs(*tracked, stage)).items() if current(c)}
        todo = [j for j in jobs if j.hash not in done]
        workers = max(1, min(len(todo), pool))
        threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
        for job in todo:
            browse.child_tracking(job, cfg, parent.run_id, uri)
        browse.describe_experiment(parent, cfg, jobs)
        parent.set_tags({"backend": backend})
        try:
            cfgs = [j.cfg for j in todo]
            with _progress(cfg, todo, len(jobs), workers, backend) as on_done:  # closed before any line below
                if backend == "dask":
                    outcomes = dispatch_dask(stage, cfgs, workers, threads, dask_address, on_done) if todo else []
                else:
                    outcomes = dispatch(stage, cfgs, workers, threads, pool, on_done) if todo else []
        except (KeyboardInterrupt, tracking.Terminated) as e:
            if tracked:  # whatever a killed worker could not end itself
                tracking.end_running_children(*tracked, "KILLED")
                finished = sum(c.info.status == "FINISHED" for c in _pick(_job_runs(*tracked, stage)).values())
                # the command's one line on an interrupt (harness/cli.py prints it, after the progress bar is gone)
                how = "SIGTERM" if isinstance(e, tracking.Terminated) else "SIGINT"
                e.add_note(
                    f"study {name} ({cfg.study.size}) interrupted ({how}): {finished} of {len(jobs)} jobs finished, "
                    "the rest marked KILLED; running the same command again resumes"
                )
            raise
        children = _job_runs(*tracked, stage) if tracked else []
        latest = _pick(children)
        if tracked:
            _mark_superseded(tracked[0], children, latest)
        runs = [_study_run(j, latest.get(j.hash), uri) for j in jobs]
        seconds = time.perf_counter() - t0
        found = findings_for(name)(runs, cfg)
        folder = Path(cfg.study.get("reports_dir") or REPORTS_DIR) / report_folder(name, cfg)
        files = render.write(name, cfg.study.claim, cfg.study.size, found, runs, seconds, folder)
        browse.log_answer(parent, cfg, found, runs, files)
        v = study_verdict(found.checks)
        parent.set_tags(
            {
                "study_verdict": str(v),
                "conclusion": conclusion(found)[:5000],
                "runs": str(len(runs)),
                "skipped": str(len(jobs) - len(todo)),
            }
        )
    failed = render.failed_runs(runs)
    # MLflow time of this process (jobs that ran here included) and of the jobs that ran in other processes
    mlflow_seconds = (
        tracking.seconds_in_mlflow()
        - mlflow_before
        + sum(o["tracking_seconds"] for o in outcomes if "pid" in o and o["pid"] != os.getpid())
    )
    return {
        "study": name,
        "size": cfg.study.size,
        "data": prepared.data_label(cfg.data),  # None: the study's own data set
        "runs": len(runs),
        "ran": len(todo),
        "skipped": len(jobs) - len(todo),
        "failed": len(failed),
        "seconds": seconds,
        "backend": backend,
        "tracking_seconds": mlflow_seconds,
        "verdict": v.verdict,
        "verdict_text": str(v),
        "checks": [c.as_json() for c in found.checks],
        "conclusion": conclusion(found),
        "parent_run_id": parent.run_id,
        "report": str(folder / "summary.md"),
        "metrics": found.metrics,
        "ui": tracking.ui_command(uri) if uri else None,
    }


def report_folder(name: str, cfg: DictConfig) -> str:
    """reports/<study>/, or reports/<study>-<data>/ for a user's data set (reports/depth-wine.csv/)."""
    own_data = prepared.data_label(cfg.data)
    return name if own_data is None else f"{name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', own_data)}"


def conclusion(found) -> str:
    """One line: each check with what it measured and its outcome."""
    return "; ".join(f"{c.name}: {c.measured} ({c.outcome}{', ' + c.why if c.why else ''})" for c in found.checks)


def summary_line(result: dict) -> str:
    """What the terminal shows: the counts, the verdict, one line per check, where to look."""
    head = (
        f"study {result['study']} ({result['size']}{', ' + result['data'] if result.get('data') else ''}): "
        f"{result['runs']} runs ({result['ran']} run now, "
        f"{result['skipped']} already finished, {result['failed']} not finished) in {result['seconds']:.1f} s"
        f" (backend {result.get('backend', 'loky')}, {result.get('tracking_seconds', 0.0):.1f} s in MLflow)"
    )
    checks = [
        f"  [{c['outcome']}] {c['name']}: {c['measured']} (expected {c['expected']})"
        + (f" -- {c['why']}" if c["why"] else "")
        for c in result["checks"]
    ]
    return "\n".join(
        [head, f"{render.headline_text(result['verdict_text'])}:", *checks, f"report: {result['report']}"]
        + ([f"MLflow UI (parent run {result['parent_run_id']}): {result['ui']}"] if result["ui"] else [])
    )


main = stage_main(run, summary_line)

if __name__ == "__main__":
    main()
