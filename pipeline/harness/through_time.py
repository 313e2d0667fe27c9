"""A recurrent run's gradient through time: every ||dL/dh_t|| the `grad_time` probe measured, kept as a
time x training-step table (the artifact grad_time.json) and drawn as one heat map (plots/grad_time_heatmap.png).

The scalars (grad_time_ratio, grad_time_factor) are metrics like any probe's; the full profile would be T
series per run in MLflow, so it goes into one artifact instead, and the picture is one imshow at the end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pipeline.harness.plots import HEATMAP_CMAP, MAX_TICKS
from pipeline.probes import ProbeSet
from pipeline.probes.recurrent import GradientThroughTime

TRACE_FILE = "grad_time.json"
HEATMAP_FILE = "plots/grad_time_heatmap.png"


def trace(probes: ProbeSet | None, history: Mapping[str, Sequence[tuple[int, float]]]):
    """(steps (m,), norms (m, T)) of the run's grad_time measurements, or None when it made none.

    The probe keeps one row per measurement in order; its steps are those of the grad_time_factor series, which
    it logs with every row.
    """
    probe = next((p for p in probes.probes if isinstance(p, GradientThroughTime)), None) if probes else None
    if probe is None or not probe.trace:
        return None
    norms = np.vstack(probe.trace)  # (measurements, time)
    steps = np.array([s for s, _ in history.get("grad_time_factor", [])], dtype=np.int64)
    if len(steps) != len(norms):  # cannot happen while the probe logs the factor with each row; stay readable
        steps = np.arange(len(norms))
    return steps, norms


def encode(steps: np.ndarray, norms: np.ndarray) -> str:
    """The table as JSON: steps, t = 1..T and one row of ||dL/dh_t|| per measurement (6 significant digits)."""
    rows = [[float(f"{v:.6g}") if math.isfinite(v) else str(v) for v in row] for row in norms.tolist()]
    return json.dumps(
        {"steps": steps.tolist(), "t": list(range(1, norms.shape[1] + 1)), "dh_norms": rows}, separators=(",", ":")
    )


def decode(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `encode`: (steps (m,), norms (m, T))."""
    data = json.loads(text)
    return np.array(data["steps"], dtype=np.int64), np.array(data["dh_norms"], dtype=np.float64).reshape(
        len(data["steps"]), -1
    )


def heatmap(steps: np.ndarray, norms: np.ndarray, title: str = "") -> Figure:
    """||dL/dh_t|| on a log colour scale: time step t down (t = 1 on top), training step across."""
    fig = Figure(figsize=(8.0, 5.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    valid = np.isfinite(norms) & (norms > 0)  # 0 = not reached (before a truncation window)
    logs = np.full(norms.shape, np.nan)
    logs[valid] = np.log10(norms[valid])
    image = np.ma.masked_array(logs, mask=~valid).T  # (time, measurements)
    lo, hi = (float(logs[valid].min()), float(logs[valid].max())) if valid.any() else (-1.0, 1.0)
    im = ax.imshow(
        image,
        cmap=HEATMAP_CMAP,
        norm=Normalize(vmin=lo, vmax=max(hi, lo + 1e-9)),
        aspect="auto",
        interpolation="nearest",
        origin="upper",
        extent=(-0.5, len(steps) - 0.5, norms.shape[1] + 0.5, 0.5),
    )
    fig.colorbar(im, ax=ax, label="log10 ||dL/dh_t||")
    ticks = np.arange(0, len(steps), max(1, math.ceil(len(steps) / MAX_TICKS)))
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks])
    ax.set_xlabel("training step" + ("   (grey: not reached, zero or non-finite)" if (~valid).any() else ""))
    ax.set_ylabel("time step t (1 = first, T = read-out)")
    ax.set_title(title or "gradient reaching each time step, over training")
    return fig


def log_trace(run, probes: ProbeSet | None, history, draw: bool = True) -> bool:
    """Log grad_time.json and (when `draw`) the heat map; False when the run measured no gradient through time."""
    found = trace(probes, history)
    if found is None:
        return False
    steps, norms = found
    run.log_text(encode(steps, norms), TRACE_FILE)
    if draw:
        run.log_figures({HEATMAP_FILE: heatmap(steps, norms)})
    return True
