"""python -m pipeline.study study=NAME [study.size=smoke|default|full] [study.n_jobs=N]

A study is a sweep plus a report: its grid (Hydra override sweep syntax over the normal config keys)
runs in parallel with joblib, every job a child of one MLflow parent run per study and size; jobs
already FINISHED with the same config hash are skipped, so an interrupted study resumes and a
finished one returns at once; then the study's report turns the runs into reports/<study>/.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pipeline import tracking
from pipeline.data import prepared
from pipeline.harness.cli import stage_main
from pipeline.harness.dispatch import check_backend, dispatch, dispatch_dask, warm_up
from pipeline.harness.paths import CONF_DIR, ROOT
from pipeline.harness.recording import HISTORY_FILE, config_hash, decode_history
from pipeline.studies import STUDIES, report_for
from pipeline.studies.base import StudyReport, StudyRun, markdown_table, mlflow_value
from pipeline.harness.validate import ConfigError, check_batch_size, validate

REPORTS_DIR = ROOT / "reports"
SIZES = ("smoke", "default", "full")


@dataclass
class Job:
    """One point of the grid: its swept values and its composed config."""

    label: str
    values: dict[str, str]
    cfg: DictConfig
    hash: str


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose from conf/ inside a Hydra app (the study command) or outside it (tests, other stages)."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


class Composer:
    """compose_config for many jobs that differ mostly in plain values (seed=1, model.depth=8).

    Hydra composes once per distinct set of config-group choices (init=normal, optimizer=adam, ...); the
    plain value overrides are then set on a copy, as Hydra itself applies them after the defaults list.
    Whatever this cannot do (a key that does not exist, ...) falls back to a full compose, which also
    gives Hydra's own error message. Same configs either way (tested for every study and size).
    """

    def __init__(self):
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._parser = OverridesParser.create()

    @staticmethod
    def _is_group_choice(text: str) -> bool:
        """init=normal, hydra/launcher=joblib: a choice in the defaults list, not a value."""
        key = text.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
        return "/" in key or key.startswith("hydra") or (CONF_DIR / key).is_dir()

    def __call__(self, overrides: list[str]) -> DictConfig:
        groups = tuple(o for o in overrides if self._is_group_choice(o))
        values = [o for o in overrides if not self._is_group_choice(o)]
        try:
            base = self._bases.get(groups)
            if base is None:
                base = self._bases[groups] = compose_config(list(groups))
            cfg = copy.deepcopy(base)
            parsed = self._parser.parse_overrides(values)
            if any(o.is_sweep_override() for o in parsed):
                raise ValueError("a sweep is not one job")
            with read_write(cfg):  # Hydra's own step: the same checks and merge rules as compose
                ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
            return cfg
        except Exception:  # noqa: BLE001 -- Hydra decides, and words the error
            return compose_config(overrides)


def split_overrides(mapping) -> tuple[list[str], dict[str, list[str]]]:
    """key -> value pairs into fixed overrides and swept keys with their values (a,b / range() / choice())."""
    fixed, swept = [], {}
    for key, value in (mapping or {}).items():
        text = f"{key}={'null' if value is None else str(value).lower() if isinstance(value, bool) else value}"
        override = OverridesParser.create().parse_override(text)
        if override.is_sweep_override():
            # spelled as on the command line (true, not Python's True), whatever the YAML said
            swept[key] = [{"True": "true", "False": "false"}.get(str(v), str(v))
                          for v in override.sweep_string_iterator()]
        else:
            fixed.append(text)
    return fixed, swept


def _case_overrides(case) -> tuple[str | None, dict[str, str], dict[str, list[str]]]:
    """A case's name, its fixed key -> value overrides, and the grid axes of its own `grid` (if any)."""
    case = dict(case)
    name = case.pop("name", None)
    _, own_grid = split_overrides(case.pop("grid", None))
    values = {k: "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in case.items()}
    return name, values, own_grid


def expand(cfg: DictConfig, exclude: tuple[str, ...] = ()) -> list[Job]:
    """Every job of the study at its size, composed and validated before anything runs.

    Jobs are the study's `cases` (explicit override sets: one per cause, cure, scheme...; one empty case
    when it has none; a case may carry its own `grid`) crossed with the product of the study's `grid`
    axes (sweep syntax: a,b,c / range()). A size may replace `cases`, add fixed overrides, and widen,
    narrow, pin or add grid axes (seeds). `exclude`: prefixes of the user's overrides that are not
    config keys of the jobs (another stage's own group).
    """
    study = cfg.study
    size = study.size
    if size not in SIZES:
        raise ConfigError(f"study.size: got {size!r}; allowed: one of {', '.join(SIZES)}")
    sized = dict((study.get("sizes") or {}).get(size) or {})
    cases = sized.pop("cases", None) or study.get("cases") or [{}]
    base_fixed, base_grid = split_overrides(study.get("grid"))
    size_fixed, size_grid = split_overrides(sized)
    grid = {**base_grid, **size_grid}  # a size may narrow or widen an axis, or add one (seeds)
    for override in size_fixed:  # a size's single value for a grid axis pins that axis to it
        key, value = override.split("=", 1)
        if key in grid:
            grid[key] = [value]
    size_fixed = [o for o in size_fixed if o.split("=", 1)[0] not in grid]
    fixed = [o for o in base_fixed if o.split("=")[0] not in grid] + size_fixed
    skip = ("study=", "study.", "hydra", *exclude)
    user = [o for o in user_overrides(cfg) if not o.lstrip("+").startswith(skip)]
    jobs, composer = [], Composer()
    for case in cases:
        case_name, case_values, case_grid = _case_overrides(case)
        axes = {**case_grid, **grid}
        for combo in itertools.product(*axes.values()) if axes else [()]:
            swept = dict(zip(axes, combo))
            values = {**case_values, **swept}
            overrides = [f"study={study.name}", *fixed, *user, *(f"{k}={v}" for k, v in values.items()),
                         f"study.size={size}"]
            job_cfg = composer(overrides)
            validate(job_cfg)
            parts = [case_name] if case_name else [f"{k}={v}" for k, v in case_values.items()]
            label = " ".join(parts + [f"{k}={v}" for k, v in swept.items()]) or study.name
            jobs.append(Job(label, values, job_cfg, config_hash(job_cfg)))
    return jobs


def user_overrides(cfg: DictConfig) -> list[str]:
    """The overrides `cfg` was composed with (model.width=..., tracking.uri=...), to apply to every job.

    From the command line Hydra keeps them; a config composed with return_hydra_config=True carries them.
    """
    from hydra.core.hydra_config import HydraConfig

    if "hydra" in cfg:
        return list(cfg.hydra.overrides.task)
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _parent(cfg: DictConfig, uri: str) -> tracking.TrackedRun:
    """This study's parent run at this size: the existing one reopened, or a new one."""
    tags = {"stage": "study", "study": cfg.study.name, "study_size": cfg.study.size}
    existing = tracking.find_runs(uri, cfg.tracking.experiment, tags)
    if existing:
        return tracking.TrackedRun.resume(uri, existing[0].info.run_id)
    return tracking.TrackedRun(uri, cfg.tracking.experiment, run_name=f"study {cfg.study.name} ({cfg.study.size})",
                               tags={**tags, "claim": cfg.study.claim}, parent_run_id="").start()


def _study_run(job: Job, child, uri: str) -> StudyRun:
    """A job's record from its MLflow child run (metrics, verdict, history)."""
    if child is None:
        return StudyRun(job.label, job.values, "MISSING")
    metrics = {k: mlflow_value(v) for k, v in child.data.metrics.items()}
    verdict = [v for v in child.data.tags.get("verdict", "").split(",") if v]
    history = decode_history(tracking.download_json(uri, child.info.run_id, HISTORY_FILE)) if child.info.status == \
        "FINISHED" else {}
    return StudyRun(job.label, job.values, child.info.status, child.info.run_id, verdict, metrics, history,
                    child.data.tags.get("error"))


def _pick(children: list) -> dict[str, object]:
    """Per config hash, the newest FINISHED child, else the newest other one."""
    best: dict[str, object] = {}
    for c in sorted(children, key=lambda c: c.info.start_time):
        h = c.data.tags.get("config_hash")
        if h is None:
            continue
        if h not in best or c.info.status == "FINISHED" or best[h].info.status != "FINISHED":
            best[h] = c
    return best


def write_report(name: str, claim: str, size: str, report: StudyReport, runs: list[StudyRun],
                 seconds: float, folder: Path) -> list[Path]:
    """reports/<study>/: summary.md, metrics.json and the PNG figures."""
    from pipeline.harness import plots

    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.png"), *folder.glob("*.csv")]:
        old.unlink()
    files = [plots.save(fig, folder / fname) for fname, fig in report.figures.items()]
    tables = []
    for fname, rows in report.series.items():
        with (folder / fname).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)
        tables.append(folder / fname)
    verdict = {True: "supported", False: "not supported", None: "undecided"}[report.supported]
    failed = [r for r in runs if not r.ok]
    lines = [f"# Study `{name}` ({size})", "", f"**Claim.** {claim}", "",
             f"**Conclusion ({verdict}).** {report.conclusion}", "",
             markdown_table(report.columns, report.rows)]
    if failed:
        lines += ["**Runs that did not finish:**", ""]
        lines += [f"- `{r.label}`: {r.status}{': ' + r.error if r.error else ''}" for r in failed] + [""]
    lines += report.notes + ([""] if report.notes else [])
    lines += [f"![{f.stem}]({f.name})" for f in files] + [""]
    lines += [f"{len(runs)} runs, {sum(r.ok for r in runs)} finished; wall time {seconds:.1f} s.", ""]
    summary = folder / "summary.md"
    summary.write_text("\n".join(lines))
    metrics = {k: v for k, v in report.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    metrics.update({"runs": len(runs), "finished": sum(r.ok for r in runs),
                    "supported": {True: 1, False: 0, None: -1}[report.supported]})
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return [summary, folder / "metrics.json", *files, *tables]


def run(cfg: DictConfig, exclude: tuple[str, ...] = ()) -> dict:
    """Run (or resume) the study `cfg.study` and write its report (`exclude`: see expand)."""
    if "study" not in cfg or cfg.study is None:
        raise ConfigError("study: no study selected; allowed: study=" + "|".join(STUDIES))
    n_jobs = cfg.study.n_jobs
    if not (isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and (n_jobs >= 1 or n_jobs == -1)):
        raise ConfigError(f"study.n_jobs: got {n_jobs!r}; allowed: an integer >= 1, or -1 for one per core")
    backend, dask_address = check_backend(cfg.study)
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
            n_train[data_key] = len(split.y_train)
        check_batch_size(job.cfg.train.batch_size, n_train[data_key])
    t0 = time.perf_counter()
    name, stage = cfg.study.name, cfg.study.get("stage", "train")
    uri = tracking.resolve_uri(cfg.tracking.uri) if cfg.tracking.enabled else None
    parent = _parent(cfg, uri) if uri else tracking.NullRun()
    with parent:
        done = {}
        if uri:
            done = {h: c for h, c in _pick(tracking.child_runs(uri, parent.run_id)).items()
                    if c.info.status == "FINISHED"}
        todo = [j for j in jobs if j.hash not in done]
        workers = max(1, min(len(todo), pool))
        threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
        for job in todo:
            job.cfg.tracking.parent_run_id = parent.run_id
            job.cfg.tracking.run_name = f"{name} {job.label}"
            with open_dict(job.cfg):  # the `study` tag on every child (docs/ARCHITECTURE.md): `tags.study = 'depth'` finds them
                job.cfg.tracking.study = name
            job.cfg.tracking.uri = uri  # resolved here: a dask worker has neither this cwd nor this environment
        parent.set_tags({"backend": backend})
        try:
            cfgs = [j.cfg for j in todo]
            if backend == "dask":
                outcomes = dispatch_dask(stage, cfgs, workers, threads, dask_address) if todo else []
            else:
                outcomes = dispatch(stage, cfgs, workers, threads, pool) if todo else []
        except (KeyboardInterrupt, tracking.Terminated):
            if uri:  # whatever a killed worker could not end itself
                tracking.end_running_children(uri, parent.run_id, "KILLED")
            raise
        children = _pick(tracking.child_runs(uri, parent.run_id)) if uri else {}
        runs = [_study_run(j, children.get(j.hash), uri) for j in jobs]
        seconds = time.perf_counter() - t0
        report = report_for(name)(runs, cfg)
        folder = Path(cfg.study.get("reports_dir") or REPORTS_DIR) / name
        files = write_report(name, cfg.study.claim, cfg.study.size, report, runs, seconds, folder)
        for f in files:
            parent.log_artifact(str(f), "report")
        parent.set_tags({"conclusion": report.conclusion[:5000],
                         "supported": {True: "yes", False: "no", None: "undecided"}[report.supported],
                         "runs": str(len(runs)), "skipped": str(len(jobs) - len(todo))})
    failures = [o for o in outcomes if o["status"] != "FINISHED"]
    # MLflow time of this process (jobs that ran here included) and of the jobs that ran in other processes
    mlflow_seconds = tracking.seconds_in_mlflow() - mlflow_before + sum(
        o["tracking_seconds"] for o in outcomes if "pid" in o and o["pid"] != os.getpid())
    return {"study": name, "size": cfg.study.size, "runs": len(runs), "ran": len(todo),
            "skipped": len(jobs) - len(todo), "failed": len(failures), "seconds": seconds, "backend": backend,
            "tracking_seconds": mlflow_seconds,
            "supported": report.supported, "conclusion": report.conclusion, "parent_run_id": parent.run_id,
            "report": str(folder / "summary.md"), "metrics": report.metrics,
            "ui": tracking.ui_command(uri) if uri else None}


def report_line(result: dict) -> str:
    verdict = {True: "SUPPORTED", False: "NOT SUPPORTED", None: "UNDECIDED"}[result["supported"]]
    return (f"study {result['study']} ({result['size']}): {result['runs']} runs ({result['ran']} run now, "
            f"{result['skipped']} already finished, {result['failed']} failed) in {result['seconds']:.1f} s"
            f" (backend {result.get('backend', 'loky')}, {result.get('tracking_seconds', 0.0):.1f} s in MLflow)\n"
            f"{verdict}: {result['conclusion']}\nreport: {result['report']}"
            + (f"\nMLflow UI (parent run {result['parent_run_id']}): {result['ui']}" if result["ui"] else ""))


main = stage_main(run, report_line)

if __name__ == "__main__":
    main()
