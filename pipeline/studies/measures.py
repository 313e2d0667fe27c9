"""Per-run measures several studies decide with (one definition each, named for what it measures)."""

from __future__ import annotations

import math

import numpy as np
from omegaconf import OmegaConf

from pipeline.harness.validate import ConfigError
from pipeline.studies.base import StudyRun


def thresholds(cfg, *names: str) -> dict[str, float]:
    """The study's thresholds and margins, `study.checks.<name>` in its YAML (a missing one is a ConfigError)."""
    found = OmegaConf.select(cfg, "study.checks", default=None) if cfg is not None else None
    missing = [n for n in names if found is None or found.get(n) is None]
    if found is None or missing:
        raise ConfigError(f"study.checks: missing {', '.join(missing)}; allowed: numbers set in the study's YAML")
    return {n: float(found[n]) for n in names}


def grad_norm_ratio(run: StudyRun) -> float:
    """||dL/dW_1|| / ||dL/dW_out||, log-averaged over the probe measurements (ratios multiply).

    0 when the first layer's gradient underflowed to exactly zero while the output layer's did not.
    """
    _, first = run.series("grad_norm/layer_01")
    last_key = max((k for k in run.history if k.startswith("grad_norm/layer_")), default=None)
    if last_key is None or not len(first):
        return math.nan
    _, last = run.series(last_key)
    ok = (first > 0) & (last > 0) & np.isfinite(first) & np.isfinite(last)
    if ok.any():
        return float(np.exp(np.mean(np.log(first[ok] / last[ok]))))
    underflow = (first == 0) & (last > 0) & np.isfinite(last)
    return 0.0 if underflow.any() else math.nan


def per_layer_factor(depths: list[int], ratios: list[float]) -> float:
    """The geometric factor per layer: 10^(slope of log10(ratio) against depth), fitted by least squares."""
    pts = [(d, math.log10(r)) for d, r in zip(depths, ratios) if r > 0 and math.isfinite(r)]
    if len(pts) < 2 or len({d for d, _ in pts}) < 2:
        return math.nan
    d, lr = np.array(pts).T
    return float(10 ** np.polyfit(d, lr, 1)[0])


def at_init(run: StudyRun, key: str) -> float:
    """A metric's value at step 0 (the network before any update), nan when it was not measured."""
    for step, value in run.history.get(key, []):
        if step == 0:
            return value
    return math.nan


def signal_ratio_at_init(run: StudyRun) -> float:
    """Activation std of the last hidden layer over the first's at initialization: the forward signal's fate."""
    keys = sorted(k for k in run.history if k.startswith("act_std/layer_"))
    if len(keys) < 3:  # the output layer is last: at least two hidden layers
        return math.nan
    first, last = at_init(run, keys[0]), at_init(run, keys[-2])
    return last / first if first > 0 else math.nan


def mean_over_layers(run: StudyRun, prefix: str) -> float:
    """Mean of the hidden layers' last values (the output layer excluded for act_ and grad_ metrics)."""
    values = run.layer_values(prefix)[:-1] if prefix.startswith(("act_", "grad_")) else run.layer_values(prefix)
    return float(np.mean(values)) if values else math.nan


def off_one(ratio: float) -> float:
    """How many times a ratio is away from 1, either way (0.5 and 2 are both 2): the factor a scale drifted."""
    return max(ratio, 1 / ratio) if ratio > 0 else math.inf if ratio == 0 else math.nan


def geo_mean(values: list[float]) -> float:
    """Geometric mean of the finite positive values (ratios multiply), nan when none."""
    ok = [v for v in values if math.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(ok)))) if ok else math.nan
