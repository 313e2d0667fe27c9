"""A study in MLflow's UI: an experiment of its own, runs named and tagged so they can be told apart and filtered,
and the study's answer on its parent run where the UI shows it without a download.

- Experiment: `<tracking.experiment>/<study>` (`gradlab/depth`), its description the claim. The experiment list
  reads as the list of studies, and one study's runs table and charts hold that study's runs, params and metrics.
- Children: named by their case and swept values (`relu he d20 s1`, grid.Job.name), tagged `study`, `study_case`
  (the case's name), `label` (every value spelled out, as the report's tables) and, at their end, `verdict`.
- Parent: `verdict` and `study_verdict` (the study's), `check.01`, ... ("holds: <check>"), metrics.json's numbers
  as metrics, the claim, verdict, checks and runs tables as its description (`mlflow.note.content`), the figures
  as logged images and in the description, the report under `report/`.
- A saved view of the experiment's runs table, "study": the verdict, the case and the swept values as columns,
  the layer profiles (harness.recording.PROFILES) as charts on a log scale.
"""

from __future__ import annotations

import base64
import json
import re
import time
import zlib
from pathlib import Path

from omegaconf import DictConfig, open_dict

from pipeline import tracking
from pipeline.harness.paths import CONF_DIR
from pipeline.harness.recording import PROFILES
from pipeline.studies import render
from pipeline.studies.base import Findings, StudyRun
from pipeline.studies.checks import verdict as study_verdict
from pipeline.studies.grid import Job

REPORT_DIR = "report"  # the parent run's artifact folder holding the report
SAVED_VIEW = "gradlab-study"  # the saved view's key: the UI opens it at #/experiments/<id>?viewStateShareKey=<key>
_VIEW_TAG = "mlflow.sharedViewState."  # how MLflow's UI (3.x) keeps a saved or shared view: an experiment tag
_VIEW_SECTION = "gradlab-profile"

Run = tracking.TrackedRun | tracking.NullRun


def study_experiment(cfg: DictConfig) -> str:
    """The MLflow experiment of a study's runs, one per study: `<tracking.experiment>/<study>` (gradlab/depth)."""
    return f"{cfg.tracking.experiment}/{cfg.study.name}"


def child_tracking(job: Job, cfg: DictConfig, parent_run_id: str | None, uri: str | None) -> None:
    """Where and as what a job's run is logged: in the study's experiment, a child of its parent, by its short name,
    with the tags that tell it apart (`study`; `study_case`, the case's name, not `case`: a word of MLflow's search
    syntax; `label`, every value spelled out)."""
    job.cfg.tracking.parent_run_id = parent_run_id
    job.cfg.tracking.run_name = job.name
    job.cfg.tracking.experiment = study_experiment(cfg)
    with open_dict(job.cfg):  # the `study` tag on every child: `tags.study = 'depth'` finds them
        job.cfg.tracking.study = cfg.study.name
        job.cfg.tracking.tags = {"label": job.label, **({"study_case": job.case} if job.case else {})}
    job.cfg.tracking.uri = uri  # resolved here: a dask worker has neither this cwd nor this environment


def describe_experiment(parent: Run, cfg: DictConfig, jobs: list[Job]) -> None:
    """The study's experiment: the claim as its description, shown in the UI's model-training view (the kind the UI
    itself sets when a user picks it; else it may open the GenAI view), and the saved view of its runs."""
    parent.set_experiment_tags(
        {
            "mlflow.note.content": f"**Study `{cfg.study.name}`.** {cfg.study.claim}",
            "mlflow.experimentKind": "custom_model_development",
            "study": cfg.study.name,
            **saved_view(jobs),
        }
    )


def param_key(key: str) -> str:
    """A swept key as the run's param: a config group's choice is its `name` (init -> init.name)."""
    return f"{key}.name" if "." not in key and (CONF_DIR / key).is_dir() else key


def saved_view(jobs: list[Job]) -> dict[str, str]:
    """The experiment tag holding the saved view "study" of MLflow's runs table: the verdict, the case and the swept
    values as columns, every run shown, the layer profiles charted on a log scale, their section first.

    Written as MLflow's UI writes a view it saves or shares (an experiment tag, its state deflated); a view the UI
    cannot read is left out of its list, nothing else. tests/test_ui_browser.py opens it in Chromium.
    """
    swept = list(dict.fromkeys(param_key(k) for job in jobs for k in job.values))
    charts = [
        {
            "uuid": f"gradlab-{metric.replace('/', '-')}",
            "type": "LINE",
            "runsCountToCompare": 100,
            "metricSectionId": _VIEW_SECTION,
            "deleted": False,
            "isGenerated": False,
            "displayName": metric.split("/", 1)[1],
            "metricKey": metric,
            "selectedMetricKeys": [metric],
            "lineSmoothness": 0,
            "xAxisScaleType": "linear",
            "scaleType": "log",
            "range": {},
            "xAxisKey": "step",
            "selectedXAxisMetricKey": "",
            "yAxisKey": "metric",
            "yAxisExpressions": [],
            "ignoreOutliers": False,
            "useGlobalXaxisKey": False,
            "useGlobalLineSmoothing": False,
        }
        for metric in PROFILES
    ]
    state = {
        "selectedColumns": [
            "tags.`verdict`",
            "tags.`study_case`",
            *(f"params.`{k}`" for k in swept),
            "metrics.`test/acc`",
        ],
        "runsHiddenMode": "SHOW_ALL",
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "isAccordionReordered": True,
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": _VIEW_SECTION, "name": "profile", "display": True, "isReordered": False}],
    }
    packed = base64.b64encode(zlib.compress(json.dumps(state, separators=(",", ":")).encode())).decode()
    now = int(time.time() * 1000)
    view = {"name": "study", "createdAt": now, "updatedAt": now, "state": f"deflate;{packed}"}
    return {_VIEW_TAG + SAVED_VIEW: json.dumps(view, separators=(",", ":"))}


def mlflow_key(key: str) -> str:
    """A metrics.json key as an MLflow metric key (letters, digits, `_ - . / ` and spaces): `+` -> `_and_`, others
    -> `_` (`dead_peak/high_lr+leaky` -> `dead_peak/high_lr_and_leaky`)."""
    return re.sub(r"[^/\w.\- ]", "_", key.replace("+", "_and_"))


def log_answer(parent: Run, cfg: DictConfig, found: Findings, runs: list[StudyRun], files: list[Path]) -> None:
    """The study's answer on its parent run: the report under `report/` (summary.md with its figures as links that
    open, MLflow's viewer showing no images in Markdown), metrics.json's numbers as metrics at step 0, the verdict
    and each check as tags, the description, and the figures as images (the Model metrics tab shows them)."""
    from PIL import Image

    if parent.run_id is None:
        return
    summary = next((f for f in files if f.name == "summary.md"), None)
    for f in files:
        if f is not summary:
            parent.log_artifact(str(f), REPORT_DIR)
    if summary is not None:
        text = render.mlflow_markdown(summary.read_text(), parent.run_id, REPORT_DIR)
        parent.log_text(text, f"{REPORT_DIR}/{summary.name}")
    parent.log_metrics({mlflow_key(k): x for k, x in render.flat_metrics(found, runs).items()}, step=0)
    figures = [f for f in files if f.suffix == ".png"]
    description = render.run_description(
        cfg.study.name,
        cfg.study.claim,
        cfg.study.size,
        found,
        runs,
        parent.run_id,
        [f"{REPORT_DIR}/{f.name}" for f in figures],
    )
    checks = {f"check.{i:02d}": f"{c.outcome}: {c.name}"[:5000] for i, c in enumerate(found.checks, 1)}
    parent.set_tags({"verdict": str(study_verdict(found.checks)), "mlflow.note.content": description, **checks})
    for f in figures:
        with Image.open(f) as image:
            parent.log_image(image.convert("RGB"), key=mlflow_key(f"{REPORT_DIR}/{f.stem}"), step=0)
