"""Study `depth`: first-layer / last-layer gradient norm against depth, beside 0.25^L for sigmoid."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.activations import grad_ratio
from pipeline.studies.base import StudyReport, StudyRun, finished

ACTIVATIONS = ("sigmoid", "tanh", "relu")
SIGMOID_BOUND = 0.25  # max of sigmoid'(z)


def per_layer_factor(depths: list[int], ratios: list[float]) -> float:
    """The geometric factor per layer: 10^(slope of log10(ratio) against depth), fitted by least squares."""
    pts = [(d, math.log10(r)) for d, r in zip(depths, ratios) if r > 0 and math.isfinite(r)]
    if len(pts) < 2 or len({d for d, _ in pts}) < 2:
        return math.nan
    d, lr = np.array(pts).T
    return float(10 ** np.polyfit(d, lr, 1)[0])


def series(runs: list[StudyRun], activation: str) -> tuple[list[int], list[float], list[float]]:
    """(depths, gradient ratios, final test accuracies) of one activation, by depth (seeds averaged)."""
    by_depth: dict[int, list[StudyRun]] = {}
    for r in finished(runs):
        if r.values.get("model.activation") == activation:
            by_depth.setdefault(int(r.values["model.depth"]), []).append(r)
    depths = sorted(by_depth)
    ratios = [float(np.exp(np.mean(np.log([max(grad_ratio(r), 1e-300) for r in by_depth[d]])))) for d in depths]
    accs = [float(np.mean([r.get("test/acc") for r in by_depth[d]])) for d in depths]
    return depths, ratios, accs


def ratio_table(runs: list[StudyRun]) -> list[dict]:
    """Wide rows for `dvc plots`: depth, the ratio per activation and its log10 (DVC draws linear axes), 0.25^L."""
    table: dict[int, dict] = {}
    for name in ACTIVATIONS:
        for d, r, _ in zip(*series(runs, name)):
            row = table.setdefault(d, {"depth": d, **{a: "" for a in ACTIVATIONS},
                                       **{f"log10_{a}": "" for a in ACTIVATIONS},
                                       "log10_bound": d * math.log10(SIGMOID_BOUND)})
            row[name] = r
            row[f"log10_{name}"] = math.log10(r) if r > 0 and math.isfinite(r) else ""
    return [table[d] for d in sorted(table)]


def figure(runs: list[StudyRun]) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ratio_ax, acc_ax = fig.subplots(1, 2)
    for name in ACTIVATIONS:
        depths, ratios, accs = series(runs, name)
        ratio_ax.semilogy(depths, ratios, marker="o", label=f"{name} (measured)")
        acc_ax.plot(depths, accs, marker="o", label=name)
        if name == "sigmoid" and depths:
            grid = np.arange(min(depths), max(depths) + 1)
            ratio_ax.semilogy(grid, SIGMOID_BOUND ** grid, "k--", label="0.25^L")
    ratio_ax.set(xlabel="depth L (hidden layers)", ylabel="||dL/dW_1|| / ||dL/dW_out||",
                 title="gradient reaching the first layer")
    acc_ax.set(xlabel="depth L (hidden layers)", ylabel="test accuracy", title="does it still learn?", ylim=(0, 1))
    for ax in (ratio_ax, acc_ax):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return fig


def report(runs: list[StudyRun], cfg) -> StudyReport:
    columns = ["activation", "depth", "seed", "grad ratio first/last", "0.25^L", "test acc", "verdict"]
    rows = [{"activation": r.values.get("model.activation"), "depth": int(r.values["model.depth"]),
             "seed": r.values.get("seed", "0"), "grad ratio first/last": grad_ratio(r),
             "0.25^L": SIGMOID_BOUND ** int(r.values["model.depth"]), "test acc": r.get("test/acc"),
             "verdict": ",".join(r.verdict) or r.status} for r in runs if r.ok]
    factors, metrics = {}, {}
    for name in ACTIVATIONS:
        depths, ratios, accs = series(runs, name)
        factors[name] = per_layer_factor(depths, ratios)
        metrics[f"per_layer_factor/{name}"] = factors[name]
        if depths:
            metrics[f"grad_ratio_deepest/{name}"] = ratios[-1]
            metrics[f"test_acc_deepest/{name}"] = accs[-1]
    fig = {"depth.png": figure(runs)}
    csvs = {"grad_ratio.csv": ratio_table(runs)}
    if not all(math.isfinite(f) for f in factors.values()):
        return StudyReport(columns, rows, "not enough finished depths to fit a per-layer factor", None, metrics, fig,
                           series=csvs)
    sig, tanh, relu = factors["sigmoid"], factors["tanh"], factors["relu"]
    supported = sig <= 0.5 and sig < 0.5 * tanh and sig < 0.5 * relu
    conclusion = (f"per-layer gradient factor fitted over depth: sigmoid {sig:.3f} (bound 0.25), tanh {tanh:.3f}, "
                  f"relu {relu:.3f}; at the deepest net the first layer gets {metrics['grad_ratio_deepest/sigmoid']:.1e}"
                  f" of the output layer's gradient with sigmoid vs {metrics['grad_ratio_deepest/relu']:.1e} with "
                  f"relu, test acc {metrics['test_acc_deepest/sigmoid']:.2f} vs {metrics['test_acc_deepest/relu']:.2f}.")
    return StudyReport(columns, rows, conclusion, supported, metrics, fig, series=csvs)
