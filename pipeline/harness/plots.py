"""Per-run figures of training dynamics: loss curves, gradient-norm heatmap, activation histograms,
unit health and depth profiles.

Every function is pure and returns a `matplotlib.figure.Figure` built with the object-oriented API on
an Agg canvas: no pyplot state machine, no GUI, nothing leaks between calls; callers save or log them.
A history is `dict[str, list[tuple[int, float]]]` keyed as in docs/ARCHITECTURE.md ("Metrics"). Non-finite values
(diverged runs) are left out of the plots rather than raising or warning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

History = Mapping[str, Sequence[tuple[int, float]]]

FIGSIZE = (8.0, 5.0)
DPI = 100
# grey is absent from viridis, so masked cells (missing, zero, NaN/inf) can't be read as a value
BAD_COLOUR = "lightgrey"
HEATMAP_CMAP = colormaps["viridis"].with_extremes(bad=BAD_COLOUR)
MAX_TICKS = 12
HIST_BINS = 40
# keeps histogram ranges (and their bin widths) finite even for values near the float64 limit
HIST_CLIP = 1e300
UNIT_FAMILIES = (("dead_relu", "dead ReLU share"), ("saturation", "saturated share"))


def _figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """A new figure on its own Agg canvas (constrained layout: makes room for colourbars and legends)."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # explicit canvas: savefig/print work without pyplot or a GUI backend
    return fig


def _suptitle(fig: Figure, title: str) -> None:
    """Put the caller's run title above all panels when one is given."""
    if title:
        fig.suptitle(title)


def _message_figure(message: str, title: str = "") -> Figure:
    """A figure that says why there is nothing to plot (one blank axes with centred text)."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=13)
    _suptitle(fig, title)
    return fig


def _points(series: Iterable[tuple[int, float]] | None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) as float arrays; None values become NaN."""
    arr = np.asarray(list(series or ()), dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _finite_points(series: Iterable[tuple[int, float]] | None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) with every non-finite step or value dropped."""
    steps, values = _points(series)
    keep = np.isfinite(steps) & np.isfinite(values)
    return steps[keep], values[keep]


def _legend(ax, **kwargs) -> None:
    """A legend only when something is labelled (an empty legend call makes matplotlib warn)."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(**kwargs)


def _layer_label(layer) -> str:
    """'layer 01' for an int layer index, the key itself otherwise."""
    return f"layer {layer:02d}" if isinstance(layer, (int, np.integer)) else str(layer)


def _layer_colours(n: int) -> list:
    """One colour per layer, shallow to deep along viridis, so depth reads as a gradient."""
    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.9, n)] if n else []


def layer_series(history: History, prefix: str) -> dict[int, list[tuple[int, float]]]:
    """The `prefix/layer_XX` series of a history keyed by int layer index, sorted by layer."""
    pattern = re.compile(rf"^{re.escape(prefix.rstrip('/'))}/layer_(\d+)$")
    found = {}
    for key, series in history.items():
        match = pattern.match(key)
        if match:
            found[int(match.group(1))] = list(series)
    return dict(sorted(found.items()))


def _diverged_step(history: History) -> float | None:
    """The step at which the run diverged, or None (the logged value is the step; fall back to its step)."""
    entries = list(history.get("diverged_at_step") or ())
    if not entries:
        return None
    step, value = _points(entries[:1])
    for candidate in (value[0], step[0]):
        if np.isfinite(candidate):
            return float(candidate)
    return None


def loss_curves(history: History, title: str = "") -> Figure:
    """Loss (top) and accuracy (bottom) against step for train/val, test as a marker, divergence marked."""
    fig = _figure((8.0, 6.0))
    ax_loss, ax_acc = fig.subplots(2, 1, sharex=True)
    diverged = _diverged_step(history)
    panels = ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Accuracy"))
    for ax, metric, name in panels:
        plotted = []
        for split, style in (("train", {}), ("val", {"marker": "o", "markersize": 3})):
            steps, values = _finite_points(history.get(f"{split}/{metric}"))
            if len(values):
                # a lone point has no line segment to show, so give it a marker
                if len(values) == 1:
                    style = {**style, "marker": "o"}
                ax.plot(steps, values, label=split, **style)
                plotted.append(values)
        steps, values = _finite_points(history.get(f"test/{metric}"))
        if len(values):
            ax.plot(steps, values, linestyle="none", marker="*", markersize=12, color="black", label="test")
            plotted.append(values)
        if diverged is not None:
            ax.axvline(diverged, color="red", linestyle="--", linewidth=1.2, label="diverged")
        ax.set_title(name)
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.grid(True, alpha=0.3)
        every = np.concatenate(plotted) if plotted else np.empty(0)
        if not len(every):
            ax.text(0.5, 0.5, f"no {name.lower()} logged", ha="center", va="center", transform=ax.transAxes)
        elif metric == "loss" and every.min() > 0 and every.max() / every.min() > 100:
            ax.set_yscale("log")  # only here: > 2 decades, all positive, so log scale can't warn
        elif metric == "acc" and every.min() >= 0 and every.max() <= 1:
            ax.set_ylim(-0.02, 1.02)
        _legend(ax, fontsize="small")
    ax_acc.set_xlabel("step")
    _suptitle(fig, title)
    return fig


def _ticks(n: int, max_ticks: int = MAX_TICKS) -> np.ndarray:
    """At most `max_ticks` indices of range(n) from 0 at a regular stride (even spacing reads as time)."""
    return np.arange(0, n, max(1, math.ceil(n / max_ticks)))


def grad_norm_heatmap(history: History, title: str = "") -> Figure:
    """Image of log10 grad_norm per layer (rows, layer 1 on top) over logged steps (columns)."""
    series = layer_series(history, "grad_norm")
    if not series:
        return _message_figure("no gradient-norm probes in this run", title)
    layers = list(series)
    parsed = {layer: _points(points) for layer, points in series.items()}
    # align layers on the union of their (finite) steps; a step a layer didn't log stays NaN -> masked
    all_steps = np.concatenate([steps for steps, _ in parsed.values()])
    steps = np.unique(all_steps[np.isfinite(all_steps)])
    grid = np.full((len(layers), len(steps)), np.nan)
    for row, layer in enumerate(layers):
        s, v = parsed[layer]
        keep = np.isfinite(s)
        grid[row, np.searchsorted(steps, s[keep])] = v[keep]
    valid = np.isfinite(grid) & (grid > 0)
    logs = np.full(grid.shape, np.nan)
    logs[valid] = np.log10(grid[valid])  # only positive finite entries: log10 never warns
    image = np.ma.masked_array(logs, mask=~valid)

    if valid.any():
        lo, hi = float(logs[valid].min()), float(logs[valid].max())
    else:
        lo, hi = -1.0, 1.0  # all masked: any range works, autoscaling an empty array would not
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5  # one distinct value: give the colour scale a nonzero width

    fig = _figure()
    ax = fig.add_subplot()
    im = ax.imshow(
        image,
        cmap=HEATMAP_CMAP,
        norm=Normalize(vmin=lo, vmax=hi),
        aspect="auto",
        interpolation="nearest",
        origin="upper",
    )
    fig.colorbar(im, ax=ax, label="log10 ||dL/dW||")
    xt = _ticks(len(steps))
    ax.set_xticks(xt, [f"{steps[i]:g}" for i in xt])
    yt = _ticks(len(layers), 25)
    ax.set_yticks(yt, [_layer_label(layers[i]) for i in yt])
    ax.set_xlabel("step" + ("   (grey: missing, zero or non-finite)" if (~valid).any() else ""))
    ax.set_ylabel("layer (input side on top)")
    ax.set_title("Gradient norm per layer over training")
    _suptitle(fig, title)
    return fig


def _finite_values(values) -> np.ndarray:
    """Flattened finite float values of an array of any shape, clipped to keep bin widths finite."""
    flat = np.asarray(values, dtype=float).ravel()
    return np.clip(flat[np.isfinite(flat)], -HIST_CLIP, HIST_CLIP)


def _bin_edges(values: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Bin edges spanning `values`; a constant (or nearly constant) sample gets a small window around it."""
    lo, hi = float(values.min()), float(values.max())
    edges = np.linspace(lo, hi, bins + 1)
    if hi > lo and np.all(np.diff(edges) > 0):
        return edges
    # hist of a constant needs a nonzero range: centre one window on it, scaled to its magnitude
    centre = float(np.mean([lo, hi]))
    half = 0.05 * abs(centre) if centre != 0 else 0.5
    return np.linspace(centre - half, centre + half, bins + 1)


def activation_histograms(
    start: Mapping[int, np.ndarray], end: Mapping[int, np.ndarray] | None = None, title: str = ""
) -> Figure:
    """One histogram panel per layer of activation values at the start, with the end overlaid if given."""
    end = end or {}
    layers = sorted(set(start) | set(end))
    if not layers:
        return _message_figure("no activations given", title)
    ncols = min(4, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    fig = _figure((max(8.0, 2.6 * ncols), 1.2 + 2.3 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, layer in zip(axes, layers):
        samples = [
            (label, _finite_values(arrays[layer]))
            for label, arrays in (("start", start), ("end", end))
            if layer in arrays
        ]
        finite = [values for _, values in samples if len(values)]
        if not finite:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        else:
            edges = _bin_edges(np.concatenate(finite))  # shared bins so start and end compare bar for bar
            for label, values in samples:
                if len(values):
                    # binned here and drawn as one outline: ax.hist makes a patch per bar (3x slower)
                    counts, _ = np.histogram(values, bins=edges)
                    ax.stairs(counts, edges, fill=True, alpha=0.6, label=label)
                else:
                    ax.plot([], [], label=f"{label} (no finite values)")
        ax.set_title(_layer_label(layer), fontsize="medium")
        ax.tick_params(labelsize="small")
        if end:
            _legend(ax, fontsize="x-small")
    for ax in axes[len(layers) :]:
        ax.set_axis_off()  # unused grid cells
    for ax in axes[(nrows - 1) * ncols :]:
        ax.set_xlabel("activation")
    for ax in axes[::ncols]:
        ax.set_ylabel("count")
    fig.suptitle(title or "Activation histograms per layer")
    return fig


def unit_health(history: History, title: str = "") -> Figure:
    """Dead-ReLU and saturated-unit shares per layer against step, one panel per family present."""
    families = [(prefix, label, layer_series(history, prefix)) for prefix, label in UNIT_FAMILIES]
    families = [family for family in families if family[2]]
    if not families:
        return _message_figure("no dead-ReLU or saturation probes in this run", title)
    fig = _figure((8.0, 1.5 + 3.3 * len(families)))
    axes = fig.subplots(len(families), 1, sharex=True, squeeze=False).ravel()
    for ax, (_, label, series) in zip(axes, families):
        for colour, (layer, points) in zip(_layer_colours(len(series)), series.items()):
            steps, values = _finite_points(points)
            marker = "o" if len(values) == 1 else None  # a lone point is invisible as a line
            ax.plot(steps, values, color=colour, marker=marker, label=_layer_label(layer))
        ax.set_ylim(-0.02, 1.02)  # shares: always the full 0..1 range so panels and runs compare
        ax.set_ylabel(label)
        ax.set_title(label[0].upper() + label[1:] + " per layer")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), ncols=math.ceil(len(series) / 12))
    axes[-1].set_xlabel("step")
    _suptitle(fig, title)
    return fig


def depth_profile(
    values: Mapping[str, Sequence[float]], theory: Sequence[float] | None = None, title: str = "", ylabel: str = "std"
) -> Figure:
    """Per-layer quantities (layer 1..L) on a log y axis, with an optional dashed theory line."""
    fig = _figure()
    ax = fig.add_subplot()
    series: list[tuple[str, np.ndarray, dict[str, Any]]] = [
        (name, np.asarray(list(v), dtype=float).ravel(), {"marker": "o"}) for name, v in values.items()
    ]
    if theory is not None:
        series.append(("theory", np.asarray(list(theory), dtype=float).ravel(), {"linestyle": "--", "color": "black"}))
    any_positive = False
    for name, y, style in series:
        x = np.arange(1, len(y) + 1)
        keep = np.isfinite(y) & (y > 0)  # a log axis can't show zero, negative or non-finite values
        if keep.any():
            any_positive = True
            # NaN where a value is left out: the line breaks there instead of bridging the gap
            ax.plot(x, np.where(keep, y, np.nan), label=name, **style)
        else:
            ax.plot([], [], label=f"{name} (no positive values)", **style)
    if any_positive:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no positive values to plot", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} per layer")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return fig


def save(fig: Figure, path) -> Path:
    """Write `fig` to `path` (format from the suffix) at 100 dpi, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path
