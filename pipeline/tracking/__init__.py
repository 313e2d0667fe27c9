"""The one place that talks to MLflow (docs/ARCHITECTURE.md, "Tracking").

store: URIs, this process's client, lock retries and time spent in MLflow; runs: TrackedRun and NullRun;
queries: reading runs back; signals: interrupts that end runs cleanly. Callers use the names below.
"""

from pipeline.tracking.queries import child_runs, download_json, end_orphaned_runs, end_running_children, find_runs
from pipeline.tracking.runs import PARENT_RUN_ENV, NullRun, TrackedRun, end_stale_active_run, flatten
from pipeline.tracking.signals import Terminated, install_signal_handlers
from pipeline.tracking.store import (
    DEFAULT_EXPERIMENT,
    artifact_location,
    client,
    default_uri,
    ensure_experiment,
    resolve_uri,
    seconds_in_mlflow,
    ui_command,
)

__all__ = [
    "DEFAULT_EXPERIMENT",
    "PARENT_RUN_ENV",
    "NullRun",
    "Terminated",
    "TrackedRun",
    "artifact_location",
    "child_runs",
    "client",
    "default_uri",
    "download_json",
    "end_orphaned_runs",
    "end_running_children",
    "end_stale_active_run",
    "ensure_experiment",
    "find_runs",
    "flatten",
    "install_signal_handlers",
    "resolve_uri",
    "seconds_in_mlflow",
    "ui_command",
]
