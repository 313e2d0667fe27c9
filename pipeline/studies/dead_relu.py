"""Study `dead_relu`: what kills ReLU units (high lr, large init, negative bias) and what prevents it."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import StudyReport, StudyRun, finished

BASELINE = "baseline"
CAUSES = ("high_lr", "large_init", "neg_bias")
ADAPTIVE = ("large_init+adam", "large_init+adagrad")
CHANCE = 1 / 3  # spiral: 3 balanced classes
RISE = 0.15  # a cause must add at least this dead share over the baseline
STAY = 0.6  # "never come back": the final dead share keeps at least this part of its peak
CURE = 0.5  # a cure must at least halve the dead share of the setting it cures
STYLES = {"": "-", "leaky": "--", "adam": ":", "adagrad": "-."}


def case(run: StudyRun) -> str:
    """The run's case name: the first word of its label ('high_lr+leaky seed=1' -> 'high_lr+leaky')."""
    return run.label.split(" ")[0]


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
    _, share = dead_series(run)
    return float(share.max()) if len(share) else math.nan


def accuracy(run: StudyRun) -> float:
    """Test accuracy; a diverged run (no test/acc) counts as chance."""
    acc = run.get("test/acc")
    return CHANCE if run.diverged or not math.isfinite(acc) else acc


def row(run: StudyRun) -> dict:
    layers = run.layer_values("dead_relu")
    return {
        "case": case(run),
        "change": " ".join(f"{k}={v}" for k, v in run.values.items() if k != "seed") or "-",
        "seed": run.values.get("seed", "0"),
        "dead share final": final_dead(run),
        "dead share peak": peak_dead(run),
        "dead per layer (final)": "/".join(f"{v:.2f}" for v in layers) or "-",
        "test acc": run.get("test/acc"),
        "verdict": ",".join(run.verdict) or run.status,
    }


def by_case(runs: list[StudyRun]) -> dict[str, list[StudyRun]]:
    groups: dict[str, list[StudyRun]] = {}
    for r in finished(runs):
        groups.setdefault(case(r), []).append(r)
    return groups


def mean_of(fn, group: list[StudyRun]) -> float:
    """Mean of fn over a case's seeds, ignoring runs without a value."""
    vals = [v for v in (fn(r) for r in group) if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def style(name: str) -> tuple[str, str]:
    """(colour, line style) of a case: the colour of its cause, the style of its cure."""
    cause, _, cure = name.partition("+")
    colour = "k" if cause == BASELINE else f"C{CAUSES.index(cause)}" if cause in CAUSES else "C7"
    return colour, STYLES.get(cure, "-")


def figure(runs: list[StudyRun]) -> Figure:
    """Dead share over training per case; per layer for the worst run; final dead share per case."""
    groups = by_case(runs)
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    curves, layers, bars = fig.subplots(1, 3)
    for name, group in groups.items():
        colour, ls = style(name)
        for k, r in enumerate(group):
            steps, share = dead_series(r)
            curves.plot(steps, share, color=colour, ls=ls, lw=1.3, label=name if k == 0 else None)
    curves.set(xlabel="step", ylabel="share of units with z <= 0 on every probe example",
               title="dead share over training", ylim=(-0.02, 1.02))
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
    layers.set(xlabel="step", ylabel="dead share", ylim=(-0.02, 1.02),
               title=f"per layer, worst ReLU run: {worst.label if worst else '-'}")
    names = list(groups)
    finals = [mean_of(final_dead, groups[n]) for n in names]
    bars.barh(range(len(names)), finals, color=[style(n)[0] for n in names])
    for i, n in enumerate(names):
        x = finals[i] if math.isfinite(finals[i]) else 0.0
        bars.text(x + 0.01, i, f"test acc {mean_of(accuracy, groups[n]):.2f}", va="center", fontsize=7)
    bars.set_yticks(range(len(names)), names, fontsize=8)
    bars.invert_yaxis()
    bars.set(xlabel="final dead share", title="at the end (diverged runs: acc = chance)", xlim=(0, 1))
    for ax in (curves, layers, bars):
        ax.grid(alpha=0.3)
    return fig


def checks_for(groups: dict[str, list[StudyRun]]) -> dict[str, bool] | None:
    """The claim's checks, or None when a case they need did not finish."""
    needed = [BASELINE, *CAUSES, *(f"{c}+leaky" for c in CAUSES), *ADAPTIVE]
    if any(n not in groups for n in needed):
        return None
    final = {n: mean_of(final_dead, groups[n]) for n in needed}
    peak = {n: mean_of(peak_dead, groups[n]) for n in needed}
    acc = {n: mean_of(accuracy, groups[n]) for n in needed}
    if not all(math.isfinite(v) for v in (*final.values(), *peak.values())):
        return None
    base = final[BASELINE]
    return {
        f"every cause raises the final dead share by >= {RISE} over the baseline":
            all(final[c] >= base + RISE for c in CAUSES),
        f"the dead units stay: every cause ends with >= {STAY:.0%} of its peak dead share":
            all(final[c] >= STAY * peak[c] for c in CAUSES),
        f"lower lr (0.1, the baseline) has <= {CURE:.0%} of high_lr's dead share": base <= CURE * final["high_lr"],
        f"He init (the baseline) has <= {CURE:.0%} of large_init's dead share": base <= CURE * final["large_init"],
        f"adam and adagrad on large_init have <= {CURE:.0%} of SGD's dead share":
            all(final[a] <= CURE * final["large_init"] for a in ADAPTIVE),
        "leaky_relu keeps learning under the causes (mean test acc above relu's)":
            np.mean([acc[f"{c}+leaky"] for c in CAUSES]) > np.mean([acc[c] for c in CAUSES]),
    }


def report(runs: list[StudyRun], cfg) -> StudyReport:
    columns = ["case", "change", "seed", "dead share final", "dead share peak", "dead per layer (final)",
               "test acc", "verdict"]
    rows = [row(r) for r in runs if r.ok]
    groups = by_case(runs)
    metrics = {}
    for name, group in groups.items():
        metrics[f"dead_final/{name}"] = mean_of(final_dead, group)
        metrics[f"dead_peak/{name}"] = mean_of(peak_dead, group)
        metrics[f"test_acc/{name}"] = mean_of(accuracy, group)
    figs = {"dead_relu.png": figure(runs)}
    checks = checks_for(groups)
    if checks is None:
        return StudyReport(columns, rows, "not enough finished cases to decide (needs the baseline, every cause, "
                           "its leaky version and the adaptive cures)", None, metrics, figs)
    supported = all(checks.values())

    def d(name: str) -> str:
        return f"{metrics[f'dead_final/{name}']:.2f}"

    leaky_lower = all(metrics[f"dead_final/{c}+leaky"] < metrics[f"dead_final/{c}"] for c in CAUSES)
    conclusion = (f"final dead share: baseline {d(BASELINE)}; causes high_lr {d('high_lr')} (peak "
                  f"{metrics['dead_peak/high_lr']:.2f}), large_init {d('large_init')}, neg_bias {d('neg_bias')}; "
                  f"cures on large_init: adam {d('large_init+adam')}, adagrad {d('large_init+adagrad')}; leaky "
                  f"z<=0 share {d('high_lr+leaky')}/{d('large_init+leaky')}/{d('neg_bias+leaky')} "
                  f"({'lower' if leaky_lower else 'NOT lower'} than relu's) but test acc "
                  f"{np.mean([metrics[f'test_acc/{c}+leaky'] for c in CAUSES]):.2f} vs relu "
                  f"{np.mean([metrics[f'test_acc/{c}'] for c in CAUSES]):.2f} under the causes. "
                  + ("Supported." if supported else
                     "Not supported: " + "; ".join(k for k, v in checks.items() if not v) + "."))
    notes = [f"- {k}: {'yes' if v else 'no'}" for k, v in checks.items()]
    notes += ["", "Dead = z <= 0 on every probe example. A leaky_relu unit in that region is counted by the same "
              "rule but still passes slope * gradient (0.01 here), so it is not dead in the sense that matters: "
              "it can still learn its way back; its share is shown for comparison, and its cure is judged by "
              "whether the net keeps learning (test accuracy). The adaptive optimizers run at their "
              "conventional lr (adam 0.001, adagrad 0.01) against SGD at 0.1: their per-weight step is about lr "
              "whatever the gradient's size, which is what protects units from one huge update. neg_bias+adam "
              f"(final dead share {metrics.get('dead_final/neg_bias+adam', math.nan):.2f} vs neg_bias "
              f"{d('neg_bias')}) shows the limit: a unit already dead gets zero gradient under any optimizer.",
              "Every run clips the gradient norm at 10, which the baseline never reaches: without it the high-lr "
              "and large-init runs overflow within a few steps and stop as diverged instead of showing whether "
              "their units come back."]
    return StudyReport(columns, rows, conclusion, supported, metrics, figs, notes)
