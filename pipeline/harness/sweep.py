"""Hydra multirun -> one MLflow parent run per sweep, every job a child of it (docs/ARCHITECTURE.md, "Tracking")."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline import tracking

# in the sweep folder rather than only the environment: loky may reuse workers started before this sweep
SWEEP_FILE = "mlflow_sweep.json"


def sweep_info() -> dict:
    """Inside a Hydra multirun job: {"parent_run_id", "swept": [keys]} of its sweep ({} when unknown)."""
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


class MlflowSweepCallback(Callback):
    """Creates the parent run (and the store, once, before any worker) and closes it with a summary."""

    def __init__(self) -> None:
        self.parent: tracking.TrackedRun | None = None
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)
        if not config.tracking.enabled:
            return
        try:
            self._open_parent(config, self.sweep_dir)
        except tracking.StoreError as e:
            _stop(e)

    def _open_parent(self, config: DictConfig, sweep_dir: Path) -> None:
        uri = tracking.check_store(config.tracking.uri, config.tracking.experiment)  # before any job starts
        tracking.ensure_experiment(uri, config.tracking.experiment)  # schema migrated here, not in racing workers
        overrides = " ".join(config.hydra.overrides.task)
        self.parent = tracking.TrackedRun(
            uri,
            config.tracking.experiment,
            run_name=f"sweep {overrides}".strip(),
            tags={"stage": "sweep", "sweep": overrides},
            parent_run_id="",
        ).start()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        info = {"parent_run_id": self.parent.run_id, "swept": swept_keys(list(config.hydra.overrides.task))}
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(info))
        assert self.parent.run_id is not None  # started above
        os.environ[tracking.PARENT_RUN_ENV] = self.parent.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        os.environ.pop(tracking.PARENT_RUN_ENV, None)
        if self.parent is None or self.parent.run_id is None:
            return
        try:
            self._close_parent(self.parent)
        except tracking.StoreError as e:
            self.parent.abort(e)  # ended FAILED the short way; e says how
            _stop(e)

    def _close_parent(self, parent: tracking.TrackedRun) -> None:
        assert parent.run_id is not None
        children = tracking.child_runs(parent.uri, parent.run_id)
        statuses = [r.info.status for r in children]
        jobs = sum(1 for p in self.sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()) if self.sweep_dir else 0
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        invalid = max(0, jobs - len(children))
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) + (f", {invalid} invalid" if invalid else "")
        parent.set_tags({"children": str(len(children)), "summary": summary})
        parent.end("FINISHED")
        print(f"sweep: {len(children)} runs under parent run {parent.run_id}: {summary}")
        local = parent.uri.startswith("sqlite:")  # `make ui` serves the project's own store only
        print(f"open the MLflow UI: {tracking.ui_command(parent.uri)}" + ("  (or: make ui)" if local else ""))


def _stop(error: tracking.StoreError) -> None:
    """One line and exit 2: Hydra would turn a callback's exception into a warning and run the sweep anyway."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
