"""What a stage records about its run: metric history (for plots and results) mirrored to MLflow."""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from typing import Any

import yaml
from mlflow.data.numpy_dataset import from_numpy
from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]  # made as mlflow.data loads
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline.data import prepared
from pipeline.harness.provenance import code_version
from pipeline.harness.sweep import in_multirun, job_label, sweep_info

History = dict[str, list[tuple[int, float]]]

HISTORY_FILE = "history.json"

# Per-layer profiles: one metric each whose MLflow step is the layer index (1 = the input side, the output layer
# last), so that one chart draws the quantity across the layers and overlays runs. {metric: (per-layer key, when)}:
# "mean" = the geometric mean over the run's measurements (norms multiply: profile/grad_norm's first/last layer is
# the ratio the depth study fits), "first" / "last" = the first / last finite measurement (early in training, the
# end), "init" = step 0 (the net as initialized: activations and weights only, gradients start at the first step).
PROFILES = {
    "profile/grad_norm": ("grad_norm", "mean"),
    "profile/grad_norm_first": ("grad_norm", "first"),
    "profile/grad_norm_last": ("grad_norm", "last"),
    "profile/act_std_init": ("act_std", "init"),
}
DIGEST_CHARS = 10  # a data set's MLflow digest: the start of its content sha256
_DATA_DIRS = (prepared.PREPARED_DIR, prepared.CACHE_DIR)  # where load_or_build keeps prepared sets

# keys that do not change what a run computes: left out of the config hash
_UNHASHED = ("hydra", "tracking", "study", "ablate", "export")
# keys only some stages read: left out of every other stage's hash and params (a fine-tuning run depends on the
# weights it loads, named by init.source, not on the settings that made them; a `finetune` job makes them itself)
_STAGE_ONLY = {"pretrain": ("pretrain", "finetune")}


def _left_out(stage: str | None) -> tuple[str, ...]:
    """The top-level keys not part of `stage`'s identity."""
    return tuple(key for key, owners in _STAGE_ONLY.items() if stage not in owners)


class Recorder:
    """Keeps every logged metric in memory (history.json: full resolution) and forwards it to the tracking run;
    the dense series (the loss and the probes, every `probes.every` steps) at most `max_points` points each.

    MLflow's charts sample a few hundred points per series anyway, and each value written to SQLite costs
    ~0.08 ms: probes at every step used to cost 4-10x the training. A dense measurement goes to MLflow when
    it falls on the stride (every `stride`-th dense step), and the last one always does (`close`), so the
    latest values MLflow shows are the run's last.
    """

    def __init__(self, run, stride: int = 1):
        self.run = run
        self.stride = max(1, int(stride))
        self.history: History = defaultdict(list)
        self.latest: dict[str, float] = {}
        self._dense_steps = 0  # distinct steps that dense measurements were made at
        self._dense_step: int | None = None
        self._held: dict[str, tuple[int, float]] = {}  # per series, its latest value the stride kept from MLflow

    def log(self, metrics: dict[str, float], step: int, dense: bool = False) -> None:
        """Record `metrics` at `step`; `dense`: one of the frequent measurements (thinned for MLflow)."""
        for key, value in metrics.items():
            value = float(value)
            self.history[key].append((step, value))
            self.latest[key] = value
        if not dense:
            self.run.log_metrics(metrics, step)
            return
        if step != self._dense_step:
            self._dense_step = step
            self._dense_steps += 1
        if (self._dense_steps - 1) % self.stride == 0:
            self.run.log_metrics(metrics, step)
            for key in metrics:
                self._held.pop(key, None)
        else:
            self._held.update((key, (step, float(value))) for key, value in metrics.items())

    def close(self) -> None:
        """Forward each dense series' last value if the stride kept it from MLflow (once): the latest value
        MLflow shows is the run's last, even when it ended between two measurements."""
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for key, (step, value) in self._held.items():
            by_step[step][key] = value
        for step, metrics in sorted(by_step.items()):
            self.run.log_metrics(metrics, step)
        self._held = {}

    def finite_latest(self) -> dict[str, float]:
        return {k: v for k, v in self.latest.items() if math.isfinite(v)}


def dense_stride(n_measurements: int, max_points: int | None) -> int:
    """Every how many dense measurements one goes to MLflow: `max_points` points per series at most
    (None or 0: every one)."""
    if not max_points or n_measurements <= max_points:
        return 1
    return math.ceil(n_measurements / max_points)


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, without Hydra's own node."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    return {str(k): v for k, v in c.items() if k != "hydra"}


def config_hash(cfg: DictConfig, stage: str | None = None) -> str:
    """Identity of what a run computes: same hash -> same metrics (tracking and study keys excluded).

    The data's identity is its prepared set's (`data=file` adds the file's sha256): a study run again on an
    edited file runs its jobs again instead of resuming finished ones.
    """
    c = {k: v for k, v in plain_config(cfg).items() if k not in _UNHASHED + _left_out(stage)}
    if "data" in c:
        c["data"] = prepared.data_config(cfg.data)
        if cfg.data.get("n_labeled") is not None:  # the labeled part a run trains on (null: hashes as before)
            c["data"]["n_labeled"] = cfg.data.n_labeled
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_name(stage: str) -> str:
    """'train', or inside a sweep with the swept values: 'train model.activation=relu init=he_normal'."""
    return f"{stage} {job_label()}".strip()


def check_store(cfg: DictConfig) -> None:
    """Before any work: the tracking store can be written or answers, else one line (tracking.StoreError)."""
    if cfg.tracking.enabled:
        tracking.check_store(cfg.tracking.uri, cfg.tracking.experiment)


def open_run(cfg: DictConfig, stage: str, tags: dict[str, str] | None = None):
    """A TrackedRun (or NullRun with tracking.enabled=false) tagged with the stage and config hash."""
    if not cfg.tracking.enabled:
        return tracking.NullRun()
    tracking.end_stale_active_run()
    all_tags = {"stage": stage, "config_hash": config_hash(cfg, stage), "code_version": code_version(), **(tags or {})}
    if cfg.tracking.get("study"):  # a study's child
        all_tags["study"] = cfg.tracking.study
    all_tags.update({str(k): str(v) for k, v in (cfg.tracking.get("tags") or {}).items()})  # a study's: case, label
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


def log_config(run, cfg: DictConfig, stage: str | None = None) -> None:
    """Params = the flattened resolved config (less what only another stage reads); the YAML itself as an
    artifact; the data set as its input."""
    plain = plain_config(cfg)
    skipped = ("ablate", "study", *_left_out(stage))
    run.log_params(tracking.flatten({k: v for k, v in plain.items() if k not in skipped}))
    run.log_text(yaml.safe_dump(plain, sort_keys=False), "config.yaml")  # plain containers: no OmegaConf round trip
    if run.run_id is not None:
        run.log_inputs([dataset_input(cfg.data)])


def dataset_input(data_cfg) -> DatasetInput:
    """The run's prepared data set as an MLflow dataset input, what `mlflow.log_input(dataset, "training")` logs
    (that call needs the run active in this process; TrackedRun logs by run id).

    `mlflow.data.from_numpy` on the training split gives MLflow's schema and profile; the name is the data set's
    (`wine.csv` for a user's file), the digest the start of its content sha256 (the sidecar's: the same arrays,
    the same digest), the source the user's file or the prepared .npz. The runs table's Dataset column shows
    `name (digest)`, the run's page the rest.
    """
    split, meta = prepared.load_or_build(data_cfg)  # already prepared and checked by the stage: read again, ms
    npz = next((p for p in (prepared.paths(data_cfg, d)[0] for d in _DATA_DIRS) if p.exists()), None)
    source = (meta.get("source") or {}).get("path") or (str(npz) if npz else str(meta["config"]["name"]))
    dataset = from_numpy(
        split.x_train,
        targets=split.y_train,
        source=LocalArtifactDatasetSource(source),  # a user's file (data=file), else the prepared .npz
        name=prepared.data_label(data_cfg) or str(meta["config"]["name"]),  # digits; wine.csv; openml iris
        digest=meta["sha256"][:DIGEST_CHARS],
    )
    return DatasetInput(Dataset(**dataset.to_dict()), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])


def layer_profiles(history: History) -> dict[str, list[tuple[int, float]]]:
    """PROFILES from a run's history: {metric: [(layer, value), ...]} (layers without a usable value left out)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for metric, (prefix, when) in PROFILES.items():
        points = []
        for key in sorted(k for k in history if k.startswith(f"{prefix}/layer_")):
            finite = [(s, v) for s, v in sorted(history[key]) if math.isfinite(v)]
            if when == "init":
                finite = [(s, v) for s, v in finite if s == 0]
            elif when == "mean":  # geometric: of the positive values
                logs = [math.log(v) for _, v in finite if v > 0]
                finite = [(0, math.exp(sum(logs) / len(logs)))] if logs else []
            if finite:
                points.append((int(key.rsplit("_", 1)[1]), finite[-1 if when == "last" else 0][1]))
        if points:
            out[metric] = points
    return out


def log_layer_profiles(run, history: History) -> None:
    """Log layer_profiles: one metric per quantity, its step the layer index."""
    for metric, points in layer_profiles(history).items():
        for layer, value in points:
            run.log_metric(metric, value, layer)
