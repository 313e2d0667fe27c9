"""Study `init_depth`: act and gradient std per layer of a deep net at init, against the mean-field theory."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import StudyReport, StudyRun, finished, fmt

PAIRS = (("tanh", "standard"), ("tanh", "xavier"), ("relu", "xavier"), ("relu", "he"))
SHRINKS = 1e-2  # tanh + standard shrinks: act std last / first hidden below this ...
SHRINK_STEPS = 0.9  # ... and falling from one layer to the next at this share of the layers at least
TANH_KEPT = 0.1  # tanh + xavier keeps its variance: last / first above this (theory drifts slowly, ~1/sqrt(l))
VANISHED = 1e-3  # relu + xavier vanishes: last / first below this (the README's verdict threshold)
NEAR_ONE = 2.0  # relu + he keeps it: last / first within this factor of 1
THEORY_FACTOR = 2.0  # the measurement follows the theory: within this factor at every hidden layer


def scheme(run: StudyRun) -> str:
    """The init scheme with Xavier's and He's uniform/normal variants folded together."""
    name = str(run.values.get("init", ""))
    return "xavier" if name.startswith("xavier") else "he" if name.startswith("he_") else name


def pair_runs(runs: list[StudyRun], activation: str, name: str) -> list[StudyRun]:
    """The finished runs (every seed) of one (activation, init) pair."""
    return [r for r in finished(runs) if r.values.get("model.activation") == activation and scheme(r) == name]


def hidden(run: StudyRun, prefix: str) -> np.ndarray:
    """The hidden layers' values of prefix/layer_XX (the output layer dropped)."""
    return np.array(run.layer_values(prefix)[:-1], dtype=float)  # (depth,)


def theory_std(run: StudyRun) -> np.ndarray:
    """sqrt of the predicted activation variance per hidden layer (nan where not logged)."""
    var = hidden(run, "theory_act_var")
    return np.sqrt(np.where(np.isfinite(var) & (var >= 0), var, np.nan))  # (depth,)


def ratio(values: np.ndarray) -> float:  # values: (layers,)
    """Last / first, nan when undefined."""
    if len(values) < 2 or not (np.isfinite(values[[0, -1]]).all() and values[0] > 0):
        return math.nan
    return float(values[-1] / values[0])


def falling_share(values: np.ndarray) -> float:
    """Share of layer-to-layer steps where the value falls."""
    return float(np.mean(np.diff(values) < 0)) if len(values) >= 2 else math.nan


def theory_gap(run: StudyRun) -> float:
    """Largest factor between measured and predicted act std over the hidden layers (1 = exact)."""
    measured, predicted = hidden(run, "act_std"), theory_std(run)  # (depth,), (depth,) when predicted
    if len(measured) == 0 or len(predicted) != len(measured):
        return math.nan
    ok = np.isfinite(measured) & np.isfinite(predicted) & (measured > 0) & (predicted > 0)
    if not ok.all():
        return math.nan
    return float(np.exp(np.abs(np.log(measured / predicted)).max()))


def grad_ratio(run: StudyRun) -> float:
    """grad std (dL/dz) of the first hidden layer / the last hidden layer's: < 1 when gradients shrink backward."""
    g = hidden(run, "grad_std")
    return float(g[0] / g[-1]) if len(g) >= 2 and np.isfinite(g[[0, -1]]).all() and g[-1] > 0 else math.nan


def geo_mean(values: list[float]) -> float:
    """Geometric mean of the finite positive values (ratios multiply), nan when none."""
    ok = [v for v in values if math.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(ok)))) if ok else math.nan


def summary(runs: list[StudyRun], activation: str, name: str) -> dict[str, float]:
    """A pair's figures, seeds aggregated: act ratio (measured, theory), falling share, theory gap, grad ratio."""
    chosen = pair_runs(runs, activation, name)
    falling = [falling_share(hidden(r, "act_std")) for r in chosen]
    return {"act_ratio": geo_mean([ratio(hidden(r, "act_std")) for r in chosen]),
            "theory_ratio": geo_mean([ratio(theory_std(r)) for r in chosen]),
            "falling_share": float(np.mean(falling)) if chosen else math.nan,
            "theory_gap": max((theory_gap(r) for r in chosen), default=math.nan),
            "grad_ratio": geo_mean([grad_ratio(r) for r in chosen])}


def row(run: StudyRun) -> dict:
    """One table row: the pair's scale at layer 1, its drift over depth, and how far from the theory."""
    acts = hidden(run, "act_std")
    return {"activation": run.values.get("model.activation"), "init": run.values.get("init"),
            "seed": run.values.get("seed", "0"), "depth": len(acts),
            "act std L1": acts[0] if len(acts) else math.nan, "act std last/first": ratio(acts),
            "theory last/first": ratio(theory_std(run)), "max factor vs theory": theory_gap(run),
            "grad std first/last": grad_ratio(run), "verdict": ",".join(run.verdict) or run.status}


def checks(s: dict[tuple[str, str], dict[str, float]]) -> dict[str, bool | None]:
    """The claim's checks from each pair's summary; None where the pair's numbers are missing."""
    def decide(value: float, test) -> bool | None:
        return None if not math.isfinite(value) else bool(test(value))

    ts, tx, rx, rh = (s[p] for p in PAIRS)
    gaps = [s[p]["theory_gap"] for p in PAIRS]
    return {
        f"tanh + standard shrinks: act std last/first < {SHRINKS:g}":
            decide(ts["act_ratio"], lambda v: v < SHRINKS),
        f"tanh + standard shrinks at >= {SHRINK_STEPS:.0%} of the layer steps":
            decide(ts["falling_share"], lambda v: v >= SHRINK_STEPS),
        f"tanh + xavier keeps its variance: last/first > {TANH_KEPT:g}":
            decide(tx["act_ratio"], lambda v: v > TANH_KEPT),
        f"relu + xavier vanishes: last/first < {VANISHED:g}": decide(rx["act_ratio"], lambda v: v < VANISHED),
        f"relu + he keeps it: last/first within x{NEAR_ONE:g} of 1":
            decide(rh["act_ratio"], lambda v: 1 / NEAR_ONE <= v <= NEAR_ONE),
        f"every pair within x{THEORY_FACTOR:g} of the mean-field prediction at every hidden layer":
            None if not all(map(math.isfinite, gaps)) else max(gaps) <= THEORY_FACTOR,
    }


def plot_pairs(ax, runs: list[StudyRun], prefix: str, with_theory: bool) -> None:
    """One line per pair (its first seed), log y; with the theory as a dashed line of the same colour."""
    for (activation, name), colour in zip(PAIRS, ("C0", "C1", "C2", "C3")):
        chosen = pair_runs(runs, activation, name)
        if not chosen:
            continue
        values = np.array(chosen[0].layer_values(prefix), dtype=float)  # (layers incl. output,)
        values = values[:-1] if with_theory else values  # act std: hidden layers; grad std: the output too
        keep = np.isfinite(values) & (values > 0)  # a log axis cannot show zeros
        layers = np.arange(1, len(values) + 1)
        ax.plot(layers, np.where(keep, values, np.nan), marker="o", ms=3, color=colour,
                label=f"{activation} + {name}")
        if with_theory and len(theory_std(chosen[0])) == len(values):  # no prediction logged: no line
            ax.plot(layers, theory_std(chosen[0]), "--", color=colour, alpha=0.8, label=f"{activation} + {name} theory")


def figure(runs: list[StudyRun]) -> Figure:
    """Act std per layer with the theory (left) and grad std per layer (right), for the four pairs."""
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    act_ax, grad_ax = fig.subplots(1, 2)
    plot_pairs(act_ax, runs, "act_std", with_theory=True)
    plot_pairs(grad_ax, runs, "grad_std", with_theory=False)
    act_ax.set(yscale="log", xlabel="hidden layer", ylabel="std of f(z) at init",
               title="activations: measured (o) and mean-field theory (--)")
    grad_ax.set(yscale="log", xlabel="layer (last = output)", ylabel="std of dL/dz at init",
                title="back-propagated gradients")
    for ax in (act_ax, grad_ax):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:  # no finished pair: no legend
            ax.legend(fontsize=7, ncol=2)
    return fig


def report(runs: list[StudyRun], cfg) -> StudyReport:
    """The table, the two per-layer figures, and the claim's six checks."""
    rows = [row(r) for r in finished(runs)]
    columns = ["activation", "init", "seed", "depth", "act std L1", "act std last/first", "theory last/first",
               "max factor vs theory", "grad std first/last", "verdict"]
    s = {p: summary(runs, *p) for p in PAIRS}
    metrics = {f"{key}/{a}_{n}": v for (a, n), values in s.items() for key, v in values.items()}
    results = checks(s)
    supported = None if any(v is None for v in results.values()) else all(results.values())
    notes = [f"- {k}: {'undecided (runs missing)' if v is None else 'yes' if v else 'no'}" for k, v in results.items()]
    return StudyReport(columns, rows, conclusion(s, results, supported), supported, metrics,
                       {"init_depth.png": figure(runs)}, notes)


def conclusion(s: dict, results: dict, supported: bool | None) -> str:
    """One line with the deciding figures."""
    head = {True: "Supported", False: "Not supported", None: "Undecided (runs missing)"}[supported]
    pairs = "; ".join(f"{a} + {n} {fmt(s[(a, n)]['act_ratio'])} (theory {fmt(s[(a, n)]['theory_ratio'])})"
                      for a, n in PAIRS)
    worst = max((v["theory_gap"] for v in s.values() if math.isfinite(v["theory_gap"])), default=math.nan)
    failed = [k for k, v in results.items() if v is False]
    return (f"{head}: act std last/first hidden layer at init — {pairs}; measurement within x{fmt(worst)} of the "
            f"mean-field prediction at every layer." + (f" Failed: {'; '.join(failed)}." if failed else ""))
