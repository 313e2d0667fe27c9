"""Study `dead_relu`: what kills ReLU units (high lr, large init, negative bias) and what prevents it.

Each cause is one change from a healthy baseline (ReLU, He init, zero bias, SGD at lr 0.1), each cure one
change from a cause. Every part of the claim is decided per seed, the cause paired with the baseline (or the
cure with its cause) of the same seed: the dead share rises and stays, the net learns worse; the cures keep
units alive, or keep the net learning.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from matplotlib.figure import Figure

from pipeline.analysis.diagnosis import NOT_LEARNING_RULE
from pipeline.studies.base import Findings, StudyRun, finished, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every, missing
from pipeline.studies.measures import thresholds

BASELINE = "baseline"
CAUSES = ("high_lr", "large_init", "neg_bias")
# what the baseline does instead of each cause: the one-change cure the baseline itself is
KEPT_BY = {
    "high_lr": "the baseline's lower lr",
    "large_init": "He init (the baseline)",
    "neg_bias": "the baseline's zero bias",
}
ADAPTIVE = ("adam", "adagrad")  # tried on the large init: "large_init+adam", ...
DEAD_FROM_START = "neg_bias+adam"  # an adaptive optimizer on units dead before the first step
LIMITS = ("rise", "stay", "acc_gap", "cure")
STYLES = {"": "-", "leaky": "--", "adam": ":", "adagrad": "-."}

Measure = Callable[[StudyRun], float]


def case_of(run: StudyRun) -> str:
    """The run's case name (conf/study/dead_relu.yaml `cases`); the label's first word for older runs."""
    return run.case or run.label.split(" ")[0]


def dead_series(run: StudyRun, key: str = "dead_relu/total") -> tuple[np.ndarray, np.ndarray]:
    """(steps, dead share) with non-finite points dropped."""
    steps, share = run.series(key)
    ok = np.isfinite(share)
    return steps[ok], share[ok]


def final_dead(run: StudyRun) -> float:
    """The last measured dead share (a diverged run: the last one before it stopped)."""
    _, share = dead_series(run)
    return float(share[-1]) if len(share) else math.nan


def peak_dead(run: StudyRun) -> float:
    """The largest dead share measured, the network at initialization (step 0) included."""
    _, share = dead_series(run)
    return float(share.max()) if len(share) else math.nan


def dead_at_init(run: StudyRun) -> float:
    steps, share = dead_series(run)
    return float(share[0]) if len(share) and steps[0] == 0 else math.nan


def kept_dead(run: StudyRun) -> float:
    """Final dead share over its peak: 1 = every unit dead at the peak is still dead (as a share), 0 = none
    died or all came back."""
    peak = peak_dead(run)
    return final_dead(run) / peak if peak > 0 else (0.0 if peak == 0 else math.nan)


def accuracy(run: StudyRun) -> float:
    """Test accuracy; a diverged run (no test acc) counts at chance (the majority class's share)."""
    acc = run.get("test/acc")
    return run.get("data/chance_acc") if run.diverged or not math.isfinite(acc) else acc


def change(run: StudyRun) -> str:
    """What the case changes from the baseline: "optimizer.lr=2.0"."""
    return " ".join(f"{k}={v}" for k, v in run.values.items() if k != "seed") or "-"


# --- per-seed values ---------------------------------------------------------------------------------


def of_case(runs: list[StudyRun], case: str) -> dict[str, StudyRun]:
    """{seed: run} of one case."""
    return {r.seed: r for r in runs if case_of(r) == case}


def values(runs: list[StudyRun], case: str, measure: Measure) -> dict[str, float]:
    """{"seed s": measure(run of case)} over every seed of the study; nan where that run did not finish."""
    mine = of_case(runs, case)
    return {seed_label(s): measure(mine[s]) if s in mine and mine[s].ok else math.nan for s in seeds(runs)}


def difference(runs: list[StudyRun], case: str, other: str, measure: Measure) -> dict[str, float]:
    """{"seed s": measure(case) - measure(other)}, paired by seed."""
    a, b = values(runs, case, measure), values(runs, other, measure)
    return {k: a[k] - b[k] for k in a}


def learned(runs: list[StudyRun], case: str) -> dict[str, bool | None]:
    """{"seed s": learned} of one case; None where the run did not finish."""
    mine = of_case(runs, case)
    return {seed_label(s): mine[s].learned if s in mine and mine[s].ok else None for s in seeds(runs)}


def accuracies(runs: list[StudyRun], case: str) -> str:
    return ", ".join("-" if math.isnan(v) else f"{v:.2f}" for v in values(runs, case, accuracy).values())


# --- the claim, check by check -----------------------------------------------------------------------


def needing(
    runs: list[StudyRun], cases: tuple[str, ...], name: str, expected: str, build: Callable[[], Check]
) -> Check:
    """The check `build` makes, or a `missing` one when this size runs none of some case it needs."""
    present = {case_of(r) for r in runs}
    absent = [c for c in cases if c not in present]
    if absent:
        return missing(name, expected, f"this size runs no {', '.join(absent)} case")
    return build()


def cause_checks(runs: list[StudyRun], cause: str, lim: dict[str, float]) -> list[Check]:
    """A cause kills units the baseline keeps alive, they stay dead, and the net learns clearly worse."""
    what = change(next(iter(of_case(runs, cause).values()))) if of_case(runs, cause) else "-"
    pair = (cause, BASELINE)
    rise = (
        f"{cause} ({what}) kills units that {KEPT_BY[cause]} keeps alive: its final dead share minus the "
        f"baseline's >= {lim['rise']:g}"
    )
    stay = f"... for good: {cause}'s final dead share keeps >= {lim['stay']:.0%} of its peak"
    worse = f"... and {cause}'s net learns clearly worse: the baseline's test acc minus its >= {lim['acc_gap']:g}"
    return [
        needing(
            runs,
            pair,
            rise,
            f">= {lim['rise']:g}",
            lambda: compare(rise, difference(runs, cause, BASELINE, final_dead), ">=", lim["rise"]),
        ),
        needing(
            runs,
            (cause,),
            stay,
            f">= {lim['stay']:g}",
            lambda: compare(stay, values(runs, cause, kept_dead), ">=", lim["stay"]),
        ),
        needing(
            runs,
            pair,
            worse,
            f">= {lim['acc_gap']:g}",
            lambda: compare(worse, difference(runs, BASELINE, cause, accuracy), ">=", lim["acc_gap"]),
        ),
    ]


def baseline_learns(runs: list[StudyRun]) -> Check:
    name = "the baseline (lower lr, He init, zero bias) learns"
    return needing(
        runs,
        (BASELINE,),
        name,
        "learns on every seed",
        lambda: every(
            name,
            learned(runs, BASELINE),
            measured=f"test acc {accuracies(runs, BASELINE)}",
            expected="learns on every seed",
        ),
    )


def adaptive_checks(runs: list[StudyRun], optimizer: str, lim: dict[str, float]) -> list[Check]:
    """An adaptive optimizer keeps the large init's units alive (at most `cure` x SGD's dead share) and learns."""
    case = f"large_init+{optimizer}"
    alive = f"{optimizer} keeps the large init's units alive: final dead share <= {lim['cure']:g} x SGD's"
    learns = f"... and {optimizer} on the large init learns"
    return [
        needing(
            runs,
            (case, "large_init"),
            alive,
            f"<= {lim['cure']:g} x SGD's",
            lambda: compare(
                alive,
                values(runs, case, final_dead),
                "<=",
                values(runs, "large_init", final_dead),
                times=lim["cure"],
                scale="log",
                limit_name="large_init's (SGD)",
            ),
        ),
        needing(
            runs,
            (case,),
            learns,
            "learns on every seed",
            lambda: every(
                learns,
                learned(runs, case),
                measured=f"test acc {accuracies(runs, case)}",
                expected="learns on every seed",
            ),
        ),
    ]


def dead_from_start_check(runs: list[StudyRun], lim: dict[str, float]) -> Check:
    """The limit: an adaptive optimizer does no better than SGD for units dead before the first step (no gradient)."""
    name = (
        f"adam does not help units dead from the start (a negative bias): {DEAD_FROM_START}'s final dead "
        f"share stays > {lim['cure']:g} x SGD's (neg_bias)"
    )
    return needing(
        runs,
        (DEAD_FROM_START, "neg_bias"),
        name,
        f"> {lim['cure']:g} x SGD's",
        lambda: compare(
            name,
            values(runs, DEAD_FROM_START, final_dead),
            ">",
            values(runs, "neg_bias", final_dead),
            times=lim["cure"],
            scale="log",
            limit_name="neg_bias's (SGD)",
        ),
    )


def leaky_checks(runs: list[StudyRun], cause: str, lim: dict[str, float]) -> list[Check]:
    """LeakyReLU under a cause learns clearly better than ReLU under it, and learns.

    Its share of units with z <= 0 everywhere is no measure of death: such a unit still passes slope x gradient.
    """
    case = f"{cause}+leaky"
    better = f"leaky_relu keeps learning under {cause}: its test acc minus relu's (same cause) >= {lim['acc_gap']:g}"
    learns = f"... and leaky_relu under {cause} learns"
    return [
        needing(
            runs,
            (case, cause),
            better,
            f">= {lim['acc_gap']:g}",
            lambda: compare(better, difference(runs, case, cause, accuracy), ">=", lim["acc_gap"]),
        ),
        needing(
            runs,
            (case,),
            learns,
            "learns on every seed",
            lambda: every(
                learns,
                learned(runs, case),
                measured=f"test acc {accuracies(runs, case)}",
                expected="learns on every seed",
            ),
        ),
    ]


def checks(runs: list[StudyRun], lim: dict[str, float]) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/dead_relu.yaml)."""
    out = [c for cause in CAUSES for c in cause_checks(runs, cause, lim)]
    out.append(baseline_learns(runs))
    out += [c for opt in ADAPTIVE for c in adaptive_checks(runs, opt, lim)]
    out.append(dead_from_start_check(runs, lim))
    out += [c for cause in CAUSES for c in leaky_checks(runs, cause, lim)]
    return out


# --- table, figure, metrics --------------------------------------------------------------------------


def row(run: StudyRun) -> dict:
    layers = run.layer_values("dead_relu")
    return {
        "case": case_of(run),
        "change": change(run),
        "seed": run.seed,
        "dead share at init": dead_at_init(run),
        "dead share peak": peak_dead(run),
        "dead share final": final_dead(run),
        "final / peak": kept_dead(run),
        "dead per layer (final)": "/".join(f"{v:.2f}" for v in layers) or "-",
        "test acc": run.get("test/acc"),
        "verdict": ",".join(run.verdict) or run.status,
    }


COLUMNS = [
    "case",
    "change",
    "seed",
    "dead share at init",
    "dead share peak",
    "dead share final",
    "final / peak",
    "test acc",
    "verdict",
]
LAYERS = "dead per layer (final, seed mean)"


def layer_means(runs: list[StudyRun], case: str) -> str:
    """The final dead share of each hidden layer, averaged over the case's seeds: "0.00/0.05/0.10/0.02"."""
    layers = [r.layer_values("dead_relu") for r in finished(runs) if case_of(r) == case]
    layers = [v for v in layers if v and len(v) == len(layers[0])]
    return "/".join(f"{v:.2f}" for v in np.mean(layers, axis=0)) if layers else "-"  # (seeds, layers) -> (layers,)


def table(runs: list[StudyRun], per_run: list[dict]) -> tuple[list[str], list[dict]]:
    """The run table, seeds folded per case, with each case's per-layer dead shares (seed means)."""
    columns, rows = seed_table(per_run, ["case", "change"], COLUMNS)
    for r in rows:
        r[LAYERS] = layer_means(runs, r["case"])
    return columns[:-2] + [LAYERS] + columns[-2:], rows


def by_case(runs: list[StudyRun]) -> dict[str, list[StudyRun]]:
    groups: dict[str, list[StudyRun]] = {}
    for r in finished(runs):
        groups.setdefault(case_of(r), []).append(r)
    return groups


def style(name: str) -> tuple[str, str]:
    """(colour, line style) of a case: the colour of its cause, the style of its cure."""
    cause, _, cure = name.partition("+")
    colour = "k" if cause == BASELINE else f"C{CAUSES.index(cause)}" if cause in CAUSES else "C7"
    return colour, STYLES.get(cure, "-")


def mean_curve(group: list[StudyRun]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) of the dead share over the seeds, on the steps every seed measured."""
    series = [dict(zip(*dead_series(r))) for r in group]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not steps:
        return np.array([]), np.array([]), np.array([]), np.array([])
    grid = np.array([[s[t] for t in steps] for s in series])  # (seeds, steps)
    return np.array(steps), grid.mean(axis=0), grid.min(axis=0), grid.max(axis=0)


def figure(runs: list[StudyRun]) -> Figure:
    """Dead share over training per case (seed mean, min..max); per layer for the worst ReLU run; final dead
    share per case with its test accuracy."""
    groups = by_case(runs)
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    curves, layers, bars = fig.subplots(1, 3)
    for name, group in groups.items():
        colour, ls = style(name)
        steps, mean, lo, hi = mean_curve(group)
        curves.plot(steps, mean, color=colour, ls=ls, lw=1.3, label=name)
        curves.fill_between(steps, lo, hi, color=colour, alpha=0.08)
    curves.set(
        xlabel="step",
        ylabel="share of units with z <= 0 on every probe example",
        title="dead share over training (seeds: mean, min..max)",
        ylim=(-0.02, 1.02),
    )
    if groups:
        curves.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    # the worst truly dead net: a leaky unit with z <= 0 everywhere still learns
    relu_runs = [r for r in finished(runs) if r.values.get("model.activation", "relu") == "relu"]
    worst = max((r for r in relu_runs if math.isfinite(final_dead(r))), key=final_dead, default=None)
    if worst is not None:
        keys = sorted(k for k in worst.history if k.startswith("dead_relu/layer_"))
        for i, key in enumerate(keys, 1):
            steps, share = dead_series(worst, key)
            layers.plot(steps, share, lw=1.3, label=f"layer {i}")
        if keys:
            layers.legend(fontsize=7)
    layers.set(
        xlabel="step",
        ylabel="dead share",
        ylim=(-0.02, 1.02),
        title=f"per layer, worst ReLU run: {worst.label if worst else '-'}",
    )
    names = list(groups)
    finals = [[final_dead(r) for r in groups[n]] for n in names]
    means = np.array([np.nanmean(f) if any(math.isfinite(v) for v in f) else 0.0 for f in finals])
    spans = np.array(
        [
            [m - np.nanmin(f), np.nanmax(f) - m] if any(math.isfinite(v) for v in f) else [0, 0]
            for m, f in zip(means, finals)
        ]
    ).T.clip(min=0)  # (2, cases): below, above the mean (>= 0)
    bars.barh(range(len(names)), means, xerr=spans, color=[style(n)[0] for n in names], capsize=2)
    for i, n in enumerate(names):
        acc = float(np.mean([accuracy(r) for r in groups[n]]))
        bars.text(means[i] + spans[1][i] + 0.02, i, f"test acc {acc:.2f}", va="center", fontsize=7)
    bars.set_yticks(range(len(names)), names, fontsize=8)
    bars.invert_yaxis()
    bars.set(
        xlabel="final dead share (seeds: mean, min..max)",
        title="at the end (diverged runs: acc = chance)",
        xlim=(0, 1.2),
    )  # room for the accuracy beside a full bar
    for ax in (curves, layers, bars):
        ax.grid(alpha=0.3)
    return fig


def metrics_of(runs: list[StudyRun]) -> dict[str, float]:
    """Seed means per case: final and peak dead share, test accuracy (a diverged run at chance)."""
    out = {}
    for name, group in by_case(runs).items():
        for key, measure in (("dead_final", final_dead), ("dead_peak", peak_dead), ("test_acc", accuracy)):
            vals = [v for v in map(measure, group) if math.isfinite(v)]
            if vals:
                out[f"{key}/{name}"] = float(np.mean(vals))
    return out


NOTES = [
    (
        "Each row folds the seeds: mean (min..max), labels counted; every check pairs runs of the same seed. "
        "Dead share: share of hidden units with z <= 0 on every example of the probe batch (256 training "
        "examples), measured before the first step and every 10 steps; final / peak: the last measurement over "
        "the largest one (1: whatever died is still dead as a share). A leaky_relu unit in that region is counted "
        "by the same rule but still passes slope x gradient (slope 0.01), so it is not dead in the sense that "
        "matters; LeakyReLU is judged by whether the net learns, against ReLU under the same cause. The adaptive "
        "optimizers run at their conventional lr (adam 0.001, adagrad 0.01) against SGD at 0.1: their per-weight "
        "step is about lr whatever the gradient's size, which is what protects units from one huge update; a unit "
        "dead from the start gets no gradient under any optimizer (neg_bias+adam). Every run clips the gradient "
        "norm at 10, which the baseline never reaches: without it the high-lr and large-init runs overflow within "
        "a few steps and stop as diverged instead of showing whether their units come back. A diverged run's "
        "accuracy counts at chance. " + NOT_LEARNING_RULE
    )
]


def findings(runs: list[StudyRun], cfg) -> Findings:
    lim = thresholds(cfg, *LIMITS)
    per_run = [row(r) for r in finished(runs)]
    columns, rows = table(runs, per_run)
    return Findings(
        checks(runs, lim),
        columns,
        rows,
        metrics_of(runs),
        {"dead_relu.png": figure(runs)},
        NOTES,
        {"runs.csv": per_run},
    )
