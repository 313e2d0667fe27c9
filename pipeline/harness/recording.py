"""What a stage records about its run: metric history (for plots and results) mirrored to MLflow."""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline.data.prepared import data_config
from pipeline.harness.provenance import code_version
from pipeline.harness.sweep import in_multirun, job_label, sweep_info

History = dict[str, list[tuple[int, float]]]

HISTORY_FILE = "history.json"

# keys that do not change what a run computes: left out of the config hash
_UNHASHED = ("hydra", "tracking", "study", "ablate", "export")


class Recorder:
    """Keeps every logged metric in memory and forwards it to the (buffered) tracking run."""

    def __init__(self, run):
        self.run = run
        self.history: History = defaultdict(list)
        self.latest: dict[str, float] = {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            value = float(value)
            self.history[key].append((step, value))
            self.latest[key] = value
        self.run.log_metrics(metrics, step)

    def finite_latest(self) -> dict[str, float]:
        return {k: v for k, v in self.latest.items() if math.isfinite(v)}


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, without Hydra's own node."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    return {str(k): v for k, v in c.items() if k != "hydra"}


def config_hash(cfg: DictConfig) -> str:
    """Identity of what a run computes: same hash -> same metrics (tracking and study keys excluded).

    The data's identity is its prepared set's (`data=file` adds the file's sha256): a study run again on an
    edited file runs its jobs again instead of resuming finished ones.
    """
    c = {k: v for k, v in plain_config(cfg).items() if k not in _UNHASHED}
    if "data" in c:
        c["data"] = data_config(cfg.data)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_name(stage: str) -> str:
    """'train', or inside a sweep with the swept values: 'train model.activation=relu init=he_normal'."""
    return f"{stage} {job_label()}".strip()


def open_run(cfg: DictConfig, stage: str, tags: dict[str, str] | None = None):
    """A TrackedRun (or NullRun with tracking.enabled=false) tagged with the stage and config hash."""
    if not cfg.tracking.enabled:
        return tracking.NullRun()
    tracking.end_stale_active_run()
    all_tags = {"stage": stage, "config_hash": config_hash(cfg), "code_version": code_version(), **(tags or {})}
    if cfg.tracking.get("study"):  # a study's child
        all_tags["study"] = cfg.tracking.study
    sweep = sweep_info() if in_multirun() else {}
    return tracking.TrackedRun(
        tracking.resolve_uri(cfg.tracking.uri),
        cfg.tracking.experiment,
        run_name=cfg.tracking.get("run_name") or run_name(stage),
        tags=all_tags,
        parent_run_id=cfg.tracking.get("parent_run_id") or sweep.get("parent_run_id"),
    )


def log_history(run, history: History) -> None:
    """The whole metric history as one JSON artifact: what study reports read back (inf stays inf)."""
    encoded = {k: [[s, v if math.isfinite(v) else str(v)] for s, v in pts] for k, pts in history.items()}
    run.log_text(json.dumps(encoded, separators=(",", ":")), HISTORY_FILE)


def decode_history(data: dict | None) -> History:
    """The inverse of log_history's encoding."""
    return {k: [(int(s), float(v)) for s, v in pts] for k, pts in (data or {}).items()}


def log_config(run, cfg: DictConfig) -> None:
    """Params = the flattened resolved config; the YAML itself as an artifact."""
    plain = plain_config(cfg)
    run.log_params(tracking.flatten({k: v for k, v in plain.items() if k not in ("ablate", "study")}))
    run.log_text(OmegaConf.to_yaml(OmegaConf.create(plain)), "config.yaml")
