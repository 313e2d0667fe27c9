"""The one place that talks to MLflow (docs/ARCHITECTURE.md, "Tracking").

store: URIs, the check of the store before any work (StoreError: one line), this process's client, lock
retries and time spent in MLflow; runs: TrackedRun and NullRun;
queries: reading runs back; signals: interrupts that end runs cleanly. Callers use the names below.
"""

from pipeline.tracking.queries import (
    child_runs,
    download_json,
    end_orphaned_runs,
    end_running_children,
    find_runs,
    tag_run,
)
from pipeline.tracking.runs import (
    PARENT_RUN_ENV,
    NullRun,
    TrackedRun,
    end_stale_active_run,
    flatten,
    interrupt_outcome,
    run_counts,
)
from pipeline.tracking.signals import Terminated, install_signal_handlers
from pipeline.tracking.store import (
    DEFAULT_EXPERIMENT,
    StoreError,
    artifact_location,
    check_store,
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
    "StoreError",
    "Terminated",
    "TrackedRun",
    "artifact_location",
    "check_store",
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
    "interrupt_outcome",
    "resolve_uri",
    "run_counts",
    "seconds_in_mlflow",
    "tag_run",
    "ui_command",
]
