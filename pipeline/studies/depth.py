"""Study `depth`: the gradient reaching the first layer against depth, and whether the net still learns.

Sigmoid, tanh and ReLU with Glorot (Xavier) init, and ReLU with He init, at depths 2..20 on several
seeds. Per seed, the per-layer factor is fitted to log(first/last gradient norm) against depth.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.analysis.diagnosis import NOT_LEARNING_RULE
from pipeline.studies.base import Findings, StudyRun, finished, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every, missing
from pipeline.studies.measures import grad_norm_ratio, per_layer_factor, signal_ratio_at_init, thresholds

SIGMOID_BOUND = 0.25  # max of sigmoid'(z)
# the study's cases (conf/study/depth.yaml): name -> what the table and figure call it
CASES = {"sigmoid": "sigmoid (xavier)", "tanh": "tanh (xavier)", "relu": "relu (xavier)", "relu he": "relu (he)"}
LIMITS = ("sigmoid_factor_max", "factor_gap", "signal_shrunk", "signal_kept")


def case_of(run: StudyRun) -> str:
    return run.case or str(run.values.get("model.activation"))


def depth_of(run: StudyRun) -> int:
    return int(run.values["model.depth"])


def of_case(runs: list[StudyRun], case: str) -> list[StudyRun]:
    return [r for r in runs if case_of(r) == case]


def factor_per_seed(runs: list[StudyRun], case: str) -> dict[str, float]:
    """{seed: fitted per-layer factor of the case}; nan when a depth of that seed did not finish."""
    out = {}
    for seed in seeds(runs):
        mine = [r for r in of_case(runs, case) if r.seed == seed]
        if not mine or not all(r.ok for r in mine):
            out[seed_label(seed)] = math.nan
            continue
        out[seed_label(seed)] = per_layer_factor([depth_of(r) for r in mine], [grad_norm_ratio(r) for r in mine])
    return out


def deepest(runs: list[StudyRun], case: str) -> list[StudyRun]:
    """The case's runs at the largest depth of the grid, one per seed."""
    mine = of_case(runs, case)
    if not mine:
        return []
    top = max(depth_of(r) for r in mine)
    return [r for r in mine if depth_of(r) == top]


def learning_flags(runs: list[StudyRun], learned: bool) -> dict[str, bool | None]:
    """{seed: learned (or not, as asked)}; None for a run that did not finish."""
    return {seed_label(r.seed): (r.learned == learned if r.ok else None) for r in runs}


def signal_factor(run: StudyRun) -> float:
    """Per-layer factor of the activation std at init: (last / first hidden layer)^(1 / (depth - 1))."""
    ratio, d = signal_ratio_at_init(run), depth_of(run)
    return ratio ** (1.0 / (d - 1)) if d > 1 and ratio > 0 else math.nan


def accuracies(runs: list[StudyRun]) -> str:
    return ", ".join(f"{r.get('test/acc'):.2f}" if r.ok else r.status for r in sorted(runs, key=lambda r: r.seed))


def checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/depth.yaml)."""
    lim = thresholds(cfg, *LIMITS)
    factor = {case: factor_per_seed(runs, case) for case in CASES}
    out = [
        compare(
            "sigmoid's first-layer gradient shrinks geometrically with depth (bound 0.25 per layer)",
            factor["sigmoid"],
            "<=",
            lim["sigmoid_factor_max"],
            scale="log",
        )
    ]
    for case in ("tanh", "relu he"):
        if factor[case]:
            out.append(
                compare(
                    f"{CASES[case]} keeps it far better: sigmoid's factor below {lim['factor_gap']:g} x {case}'s",
                    factor["sigmoid"],
                    "<",
                    factor[case],
                    times=lim["factor_gap"],
                    scale="log",
                    limit_name=f"{case}'s factor",
                )
            )
    top = {case: deepest(runs, case) for case in CASES}
    d = max((depth_of(r) for r in runs), default=0)
    out.append(
        every(
            f"the deepest sigmoid net (depth {d}) does not learn",
            learning_flags(top["sigmoid"], False),
            measured=f"test acc {accuracies(top['sigmoid'])}",
            expected="not_learning on every seed",
        )
    )
    for case in ("tanh", "relu he"):
        if top[case]:
            out.append(
                every(
                    f"{CASES[case]} still learns at depth {d}",
                    learning_flags(top[case], True),
                    measured=f"test acc {accuracies(top[case])}",
                    expected="learns on every seed",
                )
            )
    if top["relu"] and top["relu he"]:
        out.append(
            every(
                f"relu with Xavier init does not learn at depth {d} although its gradient ratio holds",
                learning_flags(top["relu"], False),
                measured=f"test acc {accuracies(top['relu'])}",
                expected="not_learning on every seed",
            )
        )
        signal = {
            case: {seed_label(r.seed): signal_factor(r) if r.ok else math.nan for r in top[case]}
            for case in ("relu", "relu he")
        }
        out.append(
            compare(
                "because Xavier halves ReLU's signal variance per layer: act std per layer at init "
                f"(last/first hidden)^(1/(L-1)), depth {d}; 2^-1/2 = 0.71 expected",
                signal["relu"],
                "<",
                lim["signal_shrunk"],
                scale="log",
            )
        )
        out.append(
            compare(
                f"while He keeps ReLU's signal: the same per-layer factor at depth {d}",
                signal["relu he"],
                ">",
                lim["signal_kept"],
                scale="log",
            )
        )
    else:
        out.append(
            missing(
                "relu with Xavier vs He init at the deepest depth",
                "both cases in the grid",
                "this size runs no relu (he) case",
            )
        )
    return out


def series(runs: list[StudyRun], case: str) -> tuple[list[int], list[float], list[float]]:
    """(depths, gradient ratios (geometric mean over seeds), test accuracies (mean)) of one case."""
    by_depth: dict[int, list[StudyRun]] = {}
    for r in finished(of_case(runs, case)):
        by_depth.setdefault(depth_of(r), []).append(r)
    depths = sorted(by_depth)
    ratios = [float(np.exp(np.mean(np.log([max(grad_norm_ratio(r), 1e-300) for r in by_depth[d]])))) for d in depths]
    accs = [float(np.mean([r.get("test/acc") for r in by_depth[d]])) for d in depths]
    return depths, ratios, accs


def ratio_table(runs: list[StudyRun]) -> list[dict]:
    """Wide rows for `dvc plots`: depth, log10 of the ratio per case (DVC draws linear axes), 0.25^L."""
    table: dict[int, dict] = {}
    names = [c.replace(" ", "_") for c in CASES]
    for case, name in zip(CASES, names):
        for d, r, _ in zip(*series(runs, case)):
            row = table.setdefault(
                d, {"depth": d, **{f"log10_{n}": "" for n in names}, "log10_bound": d * math.log10(SIGMOID_BOUND)}
            )
            row[f"log10_{name}"] = math.log10(r) if r > 0 and math.isfinite(r) else ""
    return [table[d] for d in sorted(table)]


def figure(runs: list[StudyRun]) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ratio_ax, acc_ax = fig.subplots(1, 2)
    for case, label in CASES.items():
        depths, ratios, accs = series(runs, case)
        if not depths:
            continue
        ratio_ax.semilogy(depths, ratios, marker="o", label=label)
        acc_ax.plot(depths, accs, marker="o", label=label)
        if case == "sigmoid":
            grid = np.arange(min(depths), max(depths) + 1)
            ratio_ax.semilogy(grid, SIGMOID_BOUND**grid, "k--", label="0.25^L")
    chance = [r.get("data/chance_acc") for r in finished(runs) if math.isfinite(r.get("data/chance_acc"))]
    if chance:
        acc_ax.axhline(float(np.mean(chance)), color="grey", ls=":", lw=1, label="chance")
    ratio_ax.set(
        xlabel="depth L (hidden layers)",
        ylabel="||dL/dW_1|| / ||dL/dW_out|| (seeds: geometric mean)",
        title="gradient reaching the first layer",
    )
    acc_ax.set(
        xlabel="depth L (hidden layers)",
        ylabel="test accuracy (mean over seeds)",
        title="does it still learn?",
        ylim=(0, 1),
    )
    for ax in (ratio_ax, acc_ax):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


COLUMNS = [
    "case",
    "depth",
    "seed",
    "grad ratio first/last",
    "0.25^L",
    "signal factor per layer at init",
    "test acc",
    "verdict",
]


def findings(runs: list[StudyRun], cfg) -> Findings:
    per_run = [
        {
            "case": CASES.get(case_of(r), case_of(r)),
            "depth": depth_of(r),
            "seed": r.seed,
            "grad ratio first/last": grad_norm_ratio(r),
            "0.25^L": SIGMOID_BOUND ** depth_of(r),
            "signal factor per layer at init": signal_factor(r),
            "test acc": r.get("test/acc"),
            "verdict": ",".join(r.verdict) or r.status,
        }
        for r in finished(runs)
    ]
    columns, rows = seed_table(
        sorted(
            per_run,
            key=lambda x: (list(CASES.values()).index(x["case"]) if x["case"] in CASES.values() else 9, x["depth"]),
        ),
        ["case", "depth"],
        COLUMNS,
    )
    metrics = {}
    for case in CASES:
        key = case.replace(" ", "_")
        factors = [f for f in factor_per_seed(runs, case).values() if math.isfinite(f)]
        if factors:
            metrics[f"per_layer_factor/{key}"] = float(10 ** np.mean(np.log10(factors)))
        depths, ratios, accs = series(runs, case)
        if depths:
            metrics[f"grad_ratio_deepest/{key}"] = ratios[-1]
            metrics[f"test_acc_deepest/{key}"] = accs[-1]
    notes = [
        "Each row folds the seeds: mean (min..max). grad ratio first/last: ||dL/dW_1|| / ||dL/dW_out||, "
        "log-averaged over training; the per-layer factor is fitted to its log against depth, per seed. "
        "signal factor per layer at init: (activation std of the last hidden layer over the first's before "
        "any update)^(1/(L-1)) (Glorot's init keeps it for tanh near 0; for ReLU, which zeroes half "
        "of its input, it halves "
        "the variance per layer, He's doubles the weights' variance to keep it). " + NOT_LEARNING_RULE
    ]
    return Findings(
        checks(runs, cfg),
        columns,
        rows,
        metrics,
        {"depth.png": figure(runs)},
        notes,
        {"grad_ratio.csv": ratio_table(runs), "runs.csv": per_run},
    )
