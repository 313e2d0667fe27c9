"""Study `init_depth`: act and back-propagated gradient std per layer of a deep net at init, against the theory.

The four (activation, init) pairs of Glorot & Bengio's and He et al.'s figures, one `init` stage run (no
training: one forward and one backward pass of the probe batch) per pair and seed. Per seed, the act std
of the last hidden layer over the first's decides whether a pair shrinks, keeps or vanishes, and the
measured act std is compared layer by layer with the mean-field prediction (analysis/theory.py).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import Findings, StudyRun, finished, per_seed, seed_table
from pipeline.studies.checks import Check, compare
from pipeline.studies.measures import geo_mean, off_one, thresholds

# the study's cases (conf/study/init_depth.yaml), "<activation> <init scheme>", in the papers' order
PAIRS = ("tanh standard", "tanh xavier", "relu xavier", "relu he")
LIMITS = ("shrunk", "shrink_steps", "tanh_kept", "vanished", "near_one", "theory_factor")
COLOURS = dict(zip(PAIRS, ("C0", "C1", "C2", "C3")))


def scheme(run: StudyRun) -> str:
    """The init scheme with Xavier's and He's uniform/normal variants folded together."""
    name = str(run.values.get("init", ""))
    return "xavier" if name.startswith("xavier") else "he" if name.startswith("he_") else name


def pair_of(run: StudyRun) -> str:
    """The run's pair name ("relu he"): its case, or its activation and folded init scheme."""
    return run.case or f"{run.values.get('model.activation')} {scheme(run)}"


def of_pair(runs: list[StudyRun], pair: str) -> list[StudyRun]:
    """Every run of one pair (one per seed), finished or not."""
    return [r for r in runs if pair_of(r) == pair]


def hidden(run: StudyRun, prefix: str) -> np.ndarray:
    """The hidden layers' values of prefix/layer_XX (the output layer, logged last, dropped)."""
    return np.array(run.layer_values(prefix)[:-1], dtype=float)  # (depth,)


def theory_std(run: StudyRun) -> np.ndarray:
    """sqrt of the predicted activation variance per hidden layer (nan where not logged)."""
    var = hidden(run, "theory_act_var")
    return np.sqrt(np.where(np.isfinite(var) & (var >= 0), var, np.nan))  # (depth,)


def last_over_first(values: np.ndarray) -> float:  # values: (layers,)
    """Last / first, nan when undefined."""
    if len(values) < 2 or not (np.isfinite(values[[0, -1]]).all() and values[0] > 0):
        return math.nan
    return float(values[-1] / values[0])


def act_ratio(run: StudyRun) -> float:
    """Act std of the last hidden layer over the first's: < 1 when the forward signal shrinks with depth."""
    return last_over_first(hidden(run, "act_std"))


def falling_share(run: StudyRun) -> float:
    """Share of the layer-to-layer steps where the act std falls: 1 when it shrinks layer by layer."""
    values = hidden(run, "act_std")
    return float(np.mean(np.diff(values) < 0)) if len(values) >= 2 and np.isfinite(values).all() else math.nan


def theory_gap(run: StudyRun) -> float:
    """Largest factor between the measured and the predicted act std over the hidden layers (1 = exact)."""
    measured, predicted = hidden(run, "act_std"), theory_std(run)  # (depth,), (depth,) when predicted
    if len(measured) == 0 or len(predicted) != len(measured):
        return math.nan
    ok = np.isfinite(measured) & np.isfinite(predicted) & (measured > 0) & (predicted > 0)
    if not ok.all():
        return math.nan
    return float(np.exp(np.abs(np.log(measured / predicted)).max()))


def delta_std_ratio(run: StudyRun) -> float:
    """Std of dL/dz at the first hidden layer over the last hidden layer's: < 1 when it shrinks backward.

    A ratio of the back-propagated signal's stds, not of weight-gradient norms (measures.grad_norm_ratio).
    """
    deltas = hidden(run, "grad_std")  # (depth,)
    if len(deltas) < 2 or not (np.isfinite(deltas[[0, -1]]).all() and deltas[-1] > 0):
        return math.nan
    return float(deltas[0] / deltas[-1])


def worst_theory_gap(runs: list[StudyRun]) -> dict[str, float]:
    """{seed: the largest theory gap over the four pairs}; nan when a pair is missing for that seed."""
    gaps: dict[str, list[float]] = {}
    for pair in PAIRS:
        for seed, gap in per_seed(of_pair(runs, pair), theory_gap).items():
            gaps.setdefault(seed, []).append(gap)
    complete = {seed: len(g) == len(PAIRS) and not any(math.isnan(v) for v in g) for seed, g in gaps.items()}
    return {seed: max(g) if complete[seed] else math.nan for seed, g in sorted(gaps.items())}


def checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/init_depth.yaml)."""
    lim = thresholds(cfg, *LIMITS)
    ratio = {pair: per_seed(of_pair(runs, pair), act_ratio) for pair in PAIRS}
    depth = max((len(hidden(r, "act_std")) for r in finished(runs)), default=0)
    return [
        compare(
            f"tanh + standard: activations shrink, act std last/first hidden (depth {depth})",
            ratio["tanh standard"],
            "<",
            lim["shrunk"],
            scale="log",
        ),
        compare(
            "tanh + standard: ... layer by layer (share of layer steps where the act std falls)",
            per_seed(of_pair(runs, "tanh standard"), falling_share),
            ">=",
            lim["shrink_steps"],
        ),
        compare(
            "tanh + xavier keeps its variance: act std last/first hidden",
            ratio["tanh xavier"],
            ">",
            lim["tanh_kept"],
            scale="log",
        ),
        compare(
            f"relu + xavier halves the variance per layer, so the activations vanish at depth {depth}: act std "
            "last/first hidden",
            ratio["relu xavier"],
            "<",
            lim["vanished"],
            scale="log",
        ),
        compare(
            "relu + he keeps it: act std last/first hidden near 1 (shown: the factor it is off 1, max(r, 1/r))",
            {seed: off_one(v) for seed, v in ratio["relu he"].items()},
            "<",
            lim["near_one"],
            scale="log",
        ),
        compare(
            "the measurement follows the mean-field prediction: largest factor measured vs predicted act std "
            "over every hidden layer and pair",
            worst_theory_gap(runs),
            "<=",
            lim["theory_factor"],
            scale="log",
        ),
    ]


def profile(runs: list[StudyRun], values_of) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(geometric mean, min, max) over the seeds of a per-layer profile; zeros and non-finite left out."""
    profiles = [values_of(r) for r in finished(runs)]
    n = min((len(p) for p in profiles), default=0)
    stack = np.array([p[:n] for p in profiles], dtype=float).reshape(len(profiles), n)  # (seeds, layers)
    if stack.size == 0:
        return np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    stack = np.ma.masked_invalid(np.where(stack > 0, stack, np.nan))  # a layer where no seed has a value: nan
    mean = np.exp(np.ma.log(stack).mean(axis=0))
    lo, hi = stack.min(axis=0), stack.max(axis=0)
    return (
        np.ma.filled(mean.astype(float), np.nan),
        np.ma.filled(lo.astype(float), np.nan),
        np.ma.filled(hi.astype(float), np.nan),
    )


def plot_pairs(ax, runs: list[StudyRun], values_of, with_theory: bool) -> None:
    """One line per pair (geometric mean over seeds, min..max shaded); the theory dashed in the same colour."""
    for pair, colour in COLOURS.items():
        mine = finished(of_pair(runs, pair))
        if not mine:
            continue
        mean, low, high = profile(mine, values_of)
        layers = np.arange(1, len(mean) + 1)
        ax.plot(layers, mean, marker="o", ms=3, color=colour, label=pair.replace(" ", " + "))
        ax.fill_between(layers, low, high, color=colour, alpha=0.2, lw=0)
        theory = profile(mine, theory_std)[0]
        if with_theory and len(theory) == len(mean) and np.isfinite(theory).any():  # no prediction: no line
            ax.plot(layers, theory, "--", color=colour, alpha=0.8, label=f"{pair.replace(' ', ' + ')} theory")


def figure(runs: list[StudyRun]) -> Figure:
    """Act std per hidden layer with the theory (left) and dL/dz std per layer (right), for the four pairs."""
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    act_ax, delta_ax = fig.subplots(1, 2)
    plot_pairs(act_ax, runs, lambda r: hidden(r, "act_std"), with_theory=True)
    plot_pairs(delta_ax, runs, lambda r: np.array(r.layer_values("grad_std"), dtype=float), with_theory=False)
    act_ax.set(
        yscale="log",
        xlabel="hidden layer",
        ylabel="std of f(z) at init (seeds: geometric mean, range)",
        title="activations: measured (o) and mean-field theory (--)",
    )
    delta_ax.set(
        yscale="log",
        xlabel="layer (last = output)",
        ylabel="std of dL/dz at init",
        title="back-propagated signal dL/dz",
    )
    for ax in (act_ax, delta_ax):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:  # no finished pair: no legend
            ax.legend(fontsize=7, ncol=2)
    return fig


COLUMNS = [
    "pair",
    "seed",
    "depth",
    "act std L1",
    "act std last/first",
    "theory last/first",
    "falling share",
    "max factor vs theory",
    "dL/dz std first/last",
    "verdict",
]


def row(run: StudyRun) -> dict:
    """One run: the pair's scale at layer 1, its drift over depth, how far from the theory, the dL/dz drift."""
    acts = hidden(run, "act_std")
    return {
        "pair": pair_of(run),
        "seed": run.seed,
        "depth": len(acts),
        "act std L1": acts[0] if len(acts) else math.nan,
        "act std last/first": act_ratio(run),
        "theory last/first": last_over_first(theory_std(run)),
        "falling share": falling_share(run),
        "max factor vs theory": theory_gap(run),
        "dL/dz std first/last": delta_std_ratio(run),
        "verdict": ",".join(run.verdict) or run.status,
    }


def pair_metrics(runs: list[StudyRun]) -> dict[str, float]:
    """Flat metrics per pair over its seeds: ratios as geometric means, the theory gap at its worst."""
    out: dict[str, float] = {}
    for pair in PAIRS:
        mine, key = finished(of_pair(runs, pair)), pair.replace(" ", "_")
        if not mine:
            continue
        out |= {
            f"act_ratio/{key}": geo_mean([act_ratio(r) for r in mine]),
            f"theory_ratio/{key}": geo_mean([last_over_first(theory_std(r)) for r in mine]),
            f"falling_share/{key}": float(np.mean([falling_share(r) for r in mine])),
            f"theory_gap/{key}": max(theory_gap(r) for r in mine),
            f"delta_std_ratio/{key}": geo_mean([delta_std_ratio(r) for r in mine]),
        }
    return out


def order(row_: dict) -> tuple:
    return (list(PAIRS).index(row_["pair"]) if row_["pair"] in PAIRS else len(PAIRS), row_["seed"])


def findings(runs: list[StudyRun], cfg) -> Findings:
    per_run = sorted((row(r) for r in finished(runs)), key=order)
    columns, rows = seed_table(per_run, ["pair"], COLUMNS)
    notes = [
        (
            "Each row folds the seeds: mean (min..max). Every run is the `init` stage: one forward and one "
            "backward pass of the probe batch through the freshly initialized net, no update. act std: std of "
            "f(z) over the probe batch and the layer's units; last/first: the last hidden layer's over the "
            "first's. falling share: the share of the layer-to-layer steps where it falls. theory: the "
            "mean-field recursion Var[z_l] = fan_in Var[W] E[f(z_{l-1})^2] (analysis/theory.py); max factor "
            "vs theory: the largest factor between measured and predicted act std over the hidden layers. "
            "dL/dz std first/last: the std of the back-propagated signal dL/dz at the first hidden layer over "
            "the last's (a ratio of stds of dL/dz, not of the weight-gradient norms ||dL/dW|| other studies "
            "compare). A factor away from 1 counts either way: max(r, 1/r). The theory is the infinite-width "
            "limit: one draw of a finite net drifts around it (a random walk in log act std whose spread grows "
            "like sqrt(depth / width)), the reason for the width of conf/study/init_depth.yaml."
        )
    ]
    return Findings(
        checks(runs, cfg),
        columns,
        rows,
        pair_metrics(runs),
        {"init_depth.png": figure(runs)},
        notes,
        {"runs.csv": per_run},
    )
