"""Study `activations`: sigmoid, tanh, relu, leaky_relu, elu at equal depth."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import StudyReport, StudyRun, by, finished

ORDER = ("sigmoid", "tanh", "relu", "leaky_relu", "elu")


def grad_ratio(run: StudyRun) -> float:
    """First-layer / last-layer gradient norm, averaged over training (log-mean: ratios multiply)."""
    _, first = run.series("grad_norm/layer_01")
    last_key = max((k for k in run.history if k.startswith("grad_norm/layer_")), default=None)
    if last_key is None or not len(first):
        return math.nan
    _, last = run.series(last_key)
    ok = (first > 0) & (last > 0) & np.isfinite(first) & np.isfinite(last)
    if ok.any():
        return float(np.exp(np.mean(np.log(first[ok] / last[ok]))))
    # the first layer's gradient underflowed to exactly 0 while the last one's did not: vanished entirely
    underflow = (first == 0) & (last > 0) & np.isfinite(last)
    return 0.0 if underflow.any() else math.nan


def mean_over_layers(run: StudyRun, prefix: str) -> float:
    """Mean of the hidden layers' last values (the output layer excluded)."""
    values = run.layer_values(prefix)[:-1] if prefix.startswith(("act_", "grad_")) else run.layer_values(prefix)
    return float(np.mean(values)) if values else math.nan


def ms_per_epoch(run: StudyRun) -> float:
    """Time in training steps alone (probes and logging excluded) per epoch."""
    epochs = run.get("epoch")
    return 1e3 * run.get("time/train_seconds") / epochs if epochs and epochs > 0 else math.nan


def row(run: StudyRun) -> dict:
    return {
        "activation": run.values.get("model.activation"),
        "seed": run.values.get("seed", "0"),
        "test acc": run.get("test/acc"),
        "grad ratio first/last": grad_ratio(run),
        "act mean (hidden)": mean_over_layers(run, "act_mean"),
        "saturation": mean_over_layers(run, "saturation"),
        "dead units": run.get("dead_relu/total"),
        "ms / epoch": ms_per_epoch(run),
        "verdict": ",".join(run.verdict) or run.status,
    }


def figures(runs: list[StudyRun]) -> dict[str, Figure]:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    curves, grads = fig.subplots(1, 2)
    for run in finished(runs):
        name = run.values.get("model.activation")
        steps, acc = run.series("val/acc")
        curves.plot(steps, acc, marker="o", ms=3, label=name)
        norms = run.layer_values("grad_norm")
        grads.semilogy(range(1, len(norms) + 1), norms, marker="o", label=name)
    curves.set(xlabel="step", ylabel="validation accuracy", title="learning curves", ylim=(0, 1))
    grads.set(xlabel="layer (1 = input side)", ylabel="||dL/dW|| at the end", title="gradient norm per layer")
    for ax in (curves, grads):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return {"activations.png": fig}


def report(runs: list[StudyRun], cfg) -> StudyReport:
    rows = [row(r) for r in runs if r.ok]
    columns = ["activation", "seed", "test acc", "grad ratio first/last", "act mean (hidden)", "saturation",
               "dead units", "ms / epoch", "verdict"]

    def mean(name: str, column: str) -> float:
        vals = [r[column] for r in rows if r["activation"] == name and math.isfinite(r[column])]
        return float(np.mean(vals)) if vals else math.nan

    keys = {"test acc": "test_acc", "grad ratio first/last": "grad_ratio", "act mean (hidden)": "act_mean",
            "ms / epoch": "ms_per_epoch"}
    metrics = {f"{key}/{name}": mean(name, column) for name in ORDER for column, key in keys.items()}
    sig, relu_family = "sigmoid", ("relu", "leaky_relu", "elu")
    needed = [mean(sig, "test acc"), mean("relu", "test acc"), mean(sig, "grad ratio first/last"),
              mean("relu", "grad ratio first/last")]
    if not all(math.isfinite(v) for v in needed) or not by(runs, model__activation="tanh"):
        return StudyReport(columns, rows, "not enough finished runs to decide", None, metrics, figures(runs))
    best_relu = max(mean(n, "test acc") for n in relu_family)
    checks = {
        "sigmoid's gradient shrinks more toward the input than relu's":
            mean(sig, "grad ratio first/last") < mean("relu", "grad ratio first/last"),
        "sigmoid is not zero-centred (|mean| > 0.25), tanh is (|mean| < 0.25)":
            abs(mean(sig, "act mean (hidden)")) > 0.25 > abs(mean("tanh", "act mean (hidden)")),
        "a ReLU-family net beats sigmoid on accuracy": best_relu > mean(sig, "test acc"),
    }
    slow_exp = min(mean(n, "ms / epoch") for n in ("sigmoid", "tanh", "elu")) > mean("relu", "ms / epoch")
    supported = all(checks.values())
    conclusion = (f"sigmoid: test acc {mean(sig, 'test acc'):.3f}, gradient ratio first/last "
                  f"{mean(sig, 'grad ratio first/last'):.2e}, mean activation {mean(sig, 'act mean (hidden)'):.2f}; "
                  f"relu: {mean('relu', 'test acc'):.3f}, {mean('relu', 'grad ratio first/last'):.2e}; "
                  f"tanh mean activation {mean('tanh', 'act mean (hidden)'):.2f}. "
                  + ("" if supported else "Failed: " + "; ".join(k for k, v in checks.items() if not v) + ". ")
                  + f"Time per epoch: every exp-based activation {'slower' if slow_exp else 'NOT slower'} than relu "
                    f"({mean('sigmoid', 'ms / epoch'):.1f} / {mean('tanh', 'ms / epoch'):.1f} / "
                    f"{mean('elu', 'ms / epoch'):.1f} ms vs {mean('relu', 'ms / epoch'):.1f} ms; matrix products "
                    "dominate a NumPy step, so the activation's cost is a small share).")
    notes = [f"- {k}: {'yes' if v else 'no'}" for k, v in checks.items()]
    return StudyReport(columns, rows, conclusion, supported, metrics, figures(runs), notes)
