"""Study `normalization`: deep sigmoid and ReLU nets, plain or with batch norm and/or residual blocks.

Each activation is a case at an init under which the plain net's forward signal shrinks with depth
(conf/study/normalization.yaml). Per seed and depth: the plain net does not learn, each cure (batch norm,
residual connections, both) makes the same net learn, and the weakest cure beats the plain net's test
accuracy by a margin.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import Findings, StudyRun, finished, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every, missing
from pipeline.studies.measures import grad_norm_ratio, signal_ratio_at_init, thresholds

VARIANTS = ("plain", "bn", "res", "bn+res")
# each cure as the checks name it, with its verb
CURES = {
    "bn": "batch norm makes",
    "res": "residual connections make",
    "bn+res": "batch norm with residual connections makes",
}
LIMITS = ("min_gain",)

Condition = tuple[str, int]  # (case, depth)


def as_bool(value) -> bool:
    """A swept value ('true', 'False', True) as a bool."""
    return str(value).strip().lower() == "true"


def variant(run: StudyRun) -> str:
    """plain, bn, res or bn+res, from the run's swept model.batch_norm and model.residual."""
    bn, res = as_bool(run.values.get("model.batch_norm")), as_bool(run.values.get("model.residual"))
    return {(False, False): "plain", (True, False): "bn", (False, True): "res", (True, True): "bn+res"}[(bn, res)]


def case_of(run: StudyRun) -> str:
    return run.case or str(run.values.get("model.activation"))


def depth_of(run: StudyRun) -> int:
    return int(run.values.get("model.depth", 0))


def described(run: StudyRun) -> str:
    """The case as the checks name it: activation and init, "relu (he_normal, gain 0.4)"."""
    init, gain = run.values.get("init"), run.values.get("init.gain")
    how = ", ".join(str(p) for p in (init, f"gain {gain}" if gain is not None else None) if p is not None)
    return f"{run.values.get('model.activation', case_of(run))}" + (f" ({how})" if how else "")


def conditions(runs: list[StudyRun]) -> list[Condition]:
    """The grid's (case, depth) pairs in the order the cases first appear, depths ascending."""
    cases = list(dict.fromkeys(case_of(r) for r in runs))
    return sorted({(case_of(r), depth_of(r)) for r in runs}, key=lambda c: (cases.index(c[0]), c[1]))


def cell(runs: list[StudyRun], cond: Condition, name: str) -> dict[str, StudyRun | None]:
    """{seed: the run of one condition and variant} over every seed of the grid (None: not in it)."""
    mine = {r.seed: r for r in runs if (case_of(r), depth_of(r)) == cond and variant(r) == name}
    return {s: mine.get(s) for s in seeds(runs)}


def accuracy(run: StudyRun | None) -> float:
    """Test accuracy; a diverged run counts as chance (it learned nothing usable); nan when it did not finish."""
    if run is None or not run.ok:
        return math.nan
    return run.get("data/chance_acc") if run.diverged else run.get("test/acc")


def loss_share(run: StudyRun) -> float:
    """Final training loss (whole training set, eval mode) over a constant predictor's (the labels' entropy)."""
    end, constant = run.get("train/final_loss"), run.get("data/chance_loss")
    return end / constant if constant > 0 else math.nan


def learning_flags(by_seed: dict[str, StudyRun | None], learned: bool) -> dict[str, bool | None]:
    """{"seed s": learned (or not, as asked)}; None for a run that did not finish or is not in the grid."""
    return {seed_label(s): (r.learned == learned if r is not None and r.ok else None) for s, r in by_seed.items()}


def accuracies(by_seed: dict[str, StudyRun | None]) -> str:
    """ "test acc 0.10, 0.93, diverged" in seed order."""

    def text(r: StudyRun | None) -> str:
        if r is None or not r.ok:
            return "missing" if r is None else r.status
        return "diverged" if r.diverged else f"{r.get('test/acc'):.2f}"

    return "test acc " + ", ".join(text(r) for _, r in sorted(by_seed.items()))


def weakest(accs: list[float]) -> float:
    """The lowest accuracy; nan when one is missing (Python's min would skip a nan that is not first)."""
    return math.nan if any(math.isnan(a) for a in accs) else min(accs)


def condition_checks(runs: list[StudyRun], cond: Condition, min_gain: float) -> list[Check]:
    """The claim at one case and depth: plain does not learn, each cure learns, the weakest cure's margin."""
    cells = {name: cell(runs, cond, name) for name in VARIANTS}
    some = next(r for r in runs if (case_of(r), depth_of(r)) == cond)
    net = f"{cond[1]}-layer {described(some)} net"
    present = [name for name in CURES if any(r is not None for r in cells[name].values())]
    if not any(r is not None for r in cells["plain"].values()):
        return [
            missing(
                f"plain, the {net} does not learn; the cures make it learn",
                "a plain net per seed",
                "this size runs no plain net",
            )
        ]
    out = [
        every(
            f"plain, the {net} does not learn",
            learning_flags(cells["plain"], False),
            measured=accuracies(cells["plain"]),
            expected="not_learning on every seed",
        )
    ]
    for name, cure in CURES.items():
        if name not in present:
            out.append(missing(f"{cure} the {net} learn", "learns on every seed", f"this size runs no {name} net"))
            continue
        out.append(
            every(
                f"{cure} the {net} learn",
                learning_flags(cells[name], True),
                measured=accuracies(cells[name]),
                expected="learns on every seed",
            )
        )
    if present:
        gains = {
            seed_label(s): weakest([accuracy(cells[name][s]) for name in present]) - accuracy(r)
            for s, r in cells["plain"].items()
        }
        out.append(
            compare(
                f"... well above chance: the weakest cure's test acc ({', '.join(present)}) minus the "
                f"plain net's, {net}",
                gains,
                ">=",
                min_gain,
            )
        )
    return out


def checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/normalization.yaml)."""
    lim = thresholds(cfg, *LIMITS)
    if not runs:
        return [
            missing(
                "plain deep nets do not learn; batch norm and residual connections make them learn", "runs", "no run"
            )
        ]
    return [c for cond in conditions(runs) for c in condition_checks(runs, cond, lim["min_gain"])]


# --- table, figure, metrics --------------------------------------------------------------------------


COLUMNS = [
    "case",
    "depth",
    "variant",
    "seed",
    "test acc",
    "initial loss",
    "final loss / constant's",
    "signal ratio at init",
    "grad ratio first/last",
    "learned",
    "verdict",
]


def row(run: StudyRun) -> dict:
    """One finished run's measures (see the notes)."""
    return {
        "case": described(run),
        "depth": depth_of(run),
        "variant": variant(run),
        "seed": run.seed,
        "test acc": accuracy(run),
        "initial loss": run.get("train/initial_loss"),
        "final loss / constant's": loss_share(run),
        "signal ratio at init": signal_ratio_at_init(run) if variant(run) == "plain" else math.nan,
        "grad ratio first/last": grad_norm_ratio(run),
        "learned": run.learned,
        "verdict": ",".join(run.verdict) or run.status,
    }


def band(group: list[StudyRun], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) of a metric over the runs, at the steps where every run has a finite value."""
    curves = [dict((s, v) for s, v in r.history.get(key, []) if math.isfinite(v)) for r in group]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    vals = np.array([[c[s] for s in steps] for c in curves]).reshape(len(curves), len(steps))  # (runs, steps)
    if not steps:
        return (np.zeros(0),) * 4
    return np.array(steps, dtype=float), vals.mean(axis=0), vals.min(axis=0), vals.max(axis=0)


def figure(runs: list[StudyRun]) -> Figure:
    """Test accuracy per condition and variant (mean, min..max over seeds); training loss per case."""
    done = finished(runs)
    conds = conditions(done)
    cases = list(dict.fromkeys(c for c, _ in conds))
    fig = Figure(figsize=(5 + 5 * len(cases), 4.6), layout="constrained")
    bars, *curves = fig.subplots(1, 1 + len(cases)) if cases else (fig.subplots(1, 1),)
    width = 0.8 / len(VARIANTS)
    for i, name in enumerate(VARIANTS):
        accs = [[accuracy(r) for r in done if (case_of(r), depth_of(r)) == c and variant(r) == name] for c in conds]
        mean = np.array([np.mean(a) if a else math.nan for a in accs])
        # (conditions,) each; rounding can put a mean of equal values an ulp outside them
        low = np.array([max(mean[k] - min(a), 0.0) if a else 0.0 for k, a in enumerate(accs)])
        high = np.array([max(max(a) - mean[k], 0.0) if a else 0.0 for k, a in enumerate(accs)])
        bars.bar(
            np.arange(len(conds)) + (i - 1.5) * width,
            mean,
            width,
            yerr=[low, high],
            capsize=2,
            label=name,
            color=f"C{i}",
        )
    chance = [r.get("data/chance_acc") for r in done if math.isfinite(r.get("data/chance_acc"))]
    if chance:
        bars.axhline(float(np.mean(chance)), color="k", ls=":", lw=1, label="chance")
    names = {case_of(r): described(r) for r in done}
    bars.set_xticks(range(len(conds)), [f"{names[c]}\ndepth {d}" for c, d in conds], fontsize=8)
    bars.set(
        ylabel="test accuracy (mean, min..max over seeds; diverged = chance)",
        title="which deep nets learn",
        ylim=(0, 1),
    )
    bars.legend(fontsize=8)
    for ax, case in zip(curves, cases):
        for cond in (c for c in conds if c[0] == case):
            for name in VARIANTS:
                group = [r for r in done if (case_of(r), depth_of(r)) == cond and variant(r) == name]
                steps, mean, low, high = band(group, "train/loss")
                if not len(steps):
                    continue
                diverged = sum(r.diverged for r in group)
                colour, dashes = (
                    f"C{VARIANTS.index(name)}",
                    "-" if cond[1] == min(d for c, d in conds if c == case) else "--",
                )
                ax.semilogy(
                    steps,
                    mean,
                    color=colour,
                    ls=dashes,
                    lw=1.2,
                    label=f"{name}, depth {cond[1]}" + (f" ({diverged} diverged)" if diverged else ""),
                )
                ax.fill_between(steps, low, high, color=colour, alpha=0.2, lw=0)
        constant = [r.get("data/chance_loss") for r in done if case_of(r) == case]
        if constant and math.isfinite(constant[0]):
            ax.axhline(constant[0], color="k", ls=":", lw=1, label="constant predictor")
        ax.set(xlabel="step", ylabel="training loss (mean, min..max over seeds)", title=f"{names[case]}: training loss")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in (bars, *curves):
        ax.grid(alpha=0.3, which="both")
    return fig


def flat_metrics(runs: list[StudyRun]) -> dict[str, float]:
    """test_acc/<case>_d<depth>_<variant> (mean over seeds, diverged = chance) and learned_share/..."""
    out = {}
    done = finished(runs)
    for case, depth in conditions(done):
        for name in VARIANTS:
            group = [r for r in done if (case_of(r), depth_of(r)) == (case, depth) and variant(r) == name]
            if group:
                key = f"{case.replace(' ', '_')}_d{depth}_{name}"
                out[f"test_acc/{key}"] = float(np.mean([accuracy(r) for r in group]))
                out[f"learned_share/{key}"] = float(np.mean([r.learned for r in group]))
    return out


NOTES = [
    "Each row folds the seeds: mean (min..max). test acc: on the test split; a diverged run counts as "
    "chance. initial loss: the whole training set's loss before any step (a residual sigmoid net starts "
    "high: each block adds its output, about 0.5 per unit, onto the stream). final loss / constant's: the "
    "training set's loss at the end (eval mode) over a constant predictor's (the labels' entropy, ln 10 "
    "here). signal ratio at init (plain nets): the last hidden layer's activation std over the first's, "
    "before any update, on the probe batch (not shown with batch norm, whose eval-mode running statistics "
    "are still the identity at step 0, nor with residual blocks, whose activation is the branch, not the "
    "stream). grad ratio first/last: ||dL/dW_1|| / ||dL/dW_out||, log-averaged over the "
    "probe measurements (0: the first layer's gradient underflowed). A run is `not_learning` (learned "
    "false) when its final training loss is >= 0.99 x the constant predictor's or its test accuracy stays "
    'within a quarter of the way from chance to 1 (README, "Verdicts"); a diverged run did not learn '
    "either."
]


def findings(runs: list[StudyRun], cfg) -> Findings:
    per_run = [row(r) for r in finished(runs)]
    order = {c: i for i, c in enumerate(dict.fromkeys(r["case"] for r in per_run))}
    per_run.sort(key=lambda x: (order[x["case"]], x["depth"], VARIANTS.index(x["variant"]), x["seed"]))
    columns, rows = seed_table(per_run, ["case", "depth", "variant"], COLUMNS)
    return Findings(
        checks(runs, cfg),
        columns,
        rows,
        flat_metrics(runs),
        {"normalization.png": figure(runs)},
        list(NOTES),
        {"runs.csv": per_run},
    )
