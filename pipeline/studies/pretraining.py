"""Study `pretraining`: deep sigmoid and tanh nets from the standard init, random against layer-wise pretrained,
beside ReLU + He and batch norm, with every label and with few (conf/study/pretraining.yaml).

Every job is a finetune job (harness/finetune.py): its run holds `start/grad_norm/layer_01`, the first layer's
gradient on the probe batch before the first update, and the usual test accuracy. Per label regime and deep depth
(>= `deep_from`), per seed: random sigmoid does not learn; pretraining multiplies its first-layer gradient; the
pretrained sigmoid net learns and beats random init by a margin; ReLU + He and sigmoid + batch norm, without
pretraining, reach the pretrained net's test accuracy (within `as_good`).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import Findings, StudyRun, finished, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every, missing
from pipeline.studies.measures import thresholds

RANDOM, PRETRAINED = "sigmoid random", "sigmoid pretrained"
FIXES = {"relu he": "ReLU with He's init", "sigmoid bn": "batch norm in the sigmoid net"}
CASES = (RANDOM, PRETRAINED, "tanh random", "tanh pretrained", *FIXES)
LIMITS = ("deep_from", "min_gain", "grad_gain", "as_good")
START_GRAD = "start/grad_norm/layer_01"

Condition = tuple[str, int]  # (labels, depth)


def labels_of(run: StudyRun) -> str:
    """The label regime: "every label", or "100 labels"."""
    n = run.values.get("data.n_labeled")
    return "every label" if n in (None, "null", "None") else f"{n} labels"


def depth_of(run: StudyRun) -> int:
    return int(run.values.get("model.depth", 0))


def case_of(run: StudyRun) -> str:
    return run.case or "?"


def regimes(runs: list[StudyRun]) -> list[str]:
    """The label regimes in the grid, every label first."""
    return sorted({labels_of(r) for r in runs}, key=lambda s: (s != "every label", s))


def depths(runs: list[StudyRun]) -> list[int]:
    return sorted({depth_of(r) for r in runs})


def cell(runs: list[StudyRun], case: str, cond: Condition) -> dict[str, StudyRun | None]:
    """{seed: the run of one case, regime and depth} over every seed of the grid (None: not in it)."""
    mine = {r.seed: r for r in runs if case_of(r) == case and (labels_of(r), depth_of(r)) == cond}
    return {s: mine.get(s) for s in seeds(runs)}


def accuracy(run: StudyRun | None) -> float:
    """Test accuracy; a diverged run counts as chance; nan when it did not finish."""
    if run is None or not run.ok:
        return math.nan
    return run.get("data/chance_acc") if run.diverged else run.get("test/acc")


def start_grad(run: StudyRun | None) -> float:
    """||dL/dW_1|| on the probe batch before the first update of fine-tuning (nan when not measured)."""
    return math.nan if run is None or not run.ok else run.get(START_GRAD)


def flags(by_seed: dict[str, StudyRun | None], learned: bool) -> dict[str, bool | None]:
    """{"seed s": learned (or not, as asked)}; None for a run that did not finish or is not in the grid."""
    return {seed_label(s): (r.learned == learned if r is not None and r.ok else None) for s, r in by_seed.items()}


def accuracies(by_seed: dict[str, StudyRun | None]) -> str:
    """ "test acc 0.10, 0.93, diverged" in seed order."""

    def text(r: StudyRun | None) -> str:
        if r is None or not r.ok:
            return "missing" if r is None else r.status
        return "diverged" if r.diverged else f"{r.get('test/acc'):.2f}"

    return "test acc " + ", ".join(text(r) for _, r in sorted(by_seed.items()))


def pairwise(a: dict[str, StudyRun | None], b: dict[str, StudyRun | None], measure, how) -> dict[str, float]:
    """{"seed s": how(measure(a's run), measure(b's run))}, nan where either is missing."""
    return {seed_label(s): how(measure(a[s]), measure(b.get(s))) for s in a}


def ratio(x: float, y: float) -> float:
    return x / y if y > 0 else math.nan


def condition_checks(runs: list[StudyRun], cond: Condition, lim: dict[str, float]) -> list[Check]:
    """The claim at one label regime and depth."""
    regime, depth = cond
    where = f"depth {depth}, {regime}"
    cells = {case: cell(runs, case, cond) for case in CASES}
    present = {case for case, c in cells.items() if any(r is not None for r in c.values())}
    if not {RANDOM, PRETRAINED} <= present:
        return [missing(f"pretraining makes the sigmoid net learn ({where})", "random and pretrained runs", "not run")]
    rand, pre = cells[RANDOM], cells[PRETRAINED]
    out = [
        every(
            f"random standard init: the sigmoid net does not learn ({where})",
            flags(rand, False),
            measured=accuracies(rand),
            expected="not_learning on every seed",
        ),
        compare(
            f"pretraining multiplies the first layer's gradient before fine-tuning, pretrained / random ({where})",
            pairwise(pre, rand, start_grad, ratio),
            ">=",
            lim["grad_gain"],
            scale="log",
        ),
        every(
            f"pretrained, the sigmoid net learns ({where})",
            flags(pre, True),
            measured=accuracies(pre),
            expected="learns on every seed",
        ),
        compare(
            f"... its test acc minus random init's ({where})",
            pairwise(pre, rand, accuracy, lambda x, y: x - y),
            ">=",
            lim["min_gain"],
        ),
    ]
    for case, fix in FIXES.items():
        if case not in present:
            out.append(missing(f"{fix} is as good without pretraining ({where})", "a run per seed", f"no {case} run"))
            continue
        out.append(
            compare(
                f"{fix} is as good without pretraining: its test acc minus pretrained sigmoid's ({where})",
                pairwise(cells[case], pre, accuracy, lambda x, y: x - y),
                ">=",
                -lim["as_good"],
            )
        )
    return out


def checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/pretraining.yaml)."""
    lim = thresholds(cfg, *LIMITS)
    deep = [d for d in depths(runs) if d >= lim["deep_from"]]
    if not runs or not deep:
        why = "no run" if not runs else f"no depth >= {lim['deep_from']:g} in this size"
        return [missing("layer-wise pretraining makes deep sigmoid nets learn", "runs of deep nets", why)]
    return [c for regime in regimes(runs) for d in deep for c in condition_checks(runs, (regime, d), lim)]


# --- table, figure, metrics --------------------------------------------------------------------------

COLUMNS = [
    "case",
    "labels",
    "depth",
    "seed",
    "test acc",
    "first-layer grad before fine-tuning",
    "initial loss",
    "final loss",
    "learned",
    "verdict",
]


def row(run: StudyRun) -> dict:
    """One finished run's measures (see the notes)."""
    return {
        "case": case_of(run),
        "labels": labels_of(run),
        "depth": depth_of(run),
        "seed": run.seed,
        "test acc": accuracy(run),
        "first-layer grad before fine-tuning": start_grad(run),
        "initial loss": run.get("train/initial_loss"),
        "final loss": run.get("train/final_loss"),
        "learned": run.learned,
        "verdict": ",".join(run.verdict) or run.status,
    }


def _band(ax, runs: list[StudyRun], case: str, regime: str, measure, colour: str, style: str, label: str) -> None:
    """Mean and min..max over seeds of `measure` against depth, one line."""
    ds, mean, low, high = [], [], [], []
    for d in depths(runs):
        vals = [measure(r) for r in runs if case_of(r) == case and (labels_of(r), depth_of(r)) == (regime, d)]
        vals = [v for v in vals if math.isfinite(v) and v > 0]
        if vals:
            ds.append(d)
            mean.append(float(np.exp(np.mean(np.log(vals)))) if ax.get_yscale() == "log" else float(np.mean(vals)))
            low.append(min(vals))
            high.append(max(vals))
    if ds:
        ax.plot(ds, mean, style, color=colour, marker="o", ms=3, lw=1.3, label=label)
        ax.fill_between(ds, low, high, color=colour, alpha=0.15, lw=0)


def figure(runs: list[StudyRun]) -> Figure:
    """Test accuracy against depth per label regime; the first layer's gradient before fine-tuning against depth."""
    done = finished(runs)
    regs = regimes(done) or ["every label"]
    fig = Figure(figsize=(5 * (len(regs) + 1), 4.4), layout="constrained")
    axes = fig.subplots(1, len(regs) + 1)
    grad_ax = axes[-1]
    grad_ax.set_yscale("log")
    for i, case in enumerate(CASES):
        colour = f"C{i}"
        for j, regime in enumerate(regs):
            _band(axes[j], done, case, regime, accuracy, colour, "-", case)
            _band(grad_ax, done, case, regime, start_grad, colour, "-" if j == 0 else ":", f"{case}, {regime}")
    chance = [r.get("data/chance_acc") for r in done if math.isfinite(r.get("data/chance_acc"))]
    for ax in axes:
        ax.set_xticks(depths(done) or [0])
    for ax, regime in zip(axes, regs):
        if chance:
            ax.axhline(float(np.mean(chance)), color="k", ls=":", lw=1, label="chance")
        ax.set(xlabel="hidden layers", ylabel="test accuracy (mean, min..max over seeds)", ylim=(0, 1))
        ax.set_title(f"test accuracy, {regime}")
    grad_ax.set(xlabel="hidden layers", ylabel="||dL/dW_1|| before the first update (geo. mean, min..max)")
    grad_ax.set_title("first layer's gradient as fine-tuning starts")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def key(case: str, regime: str, depth: int) -> str:
    labels = "all" if regime == "every label" else regime.split()[0]
    return f"{case.replace(' ', '_')}_d{depth}_{labels}"


def flat_metrics(runs: list[StudyRun]) -> dict[str, float]:
    """test_acc/<case>_d<depth>_<labels> (mean over seeds), start_grad/... (geometric mean), learned_share/..."""
    out = {}
    done = finished(runs)
    for case in CASES:
        for regime in regimes(done):
            for d in depths(done):
                group = [r for r in done if case_of(r) == case and (labels_of(r), depth_of(r)) == (regime, d)]
                if not group:
                    continue
                k = key(case, regime, d)
                out[f"test_acc/{k}"] = float(np.mean([accuracy(r) for r in group]))
                out[f"learned_share/{k}"] = float(np.mean([r.learned for r in group]))
                grads = [start_grad(r) for r in group if start_grad(r) > 0]
                if grads:
                    out[f"start_grad/{k}"] = float(np.exp(np.mean(np.log(grads))))
    return out


NOTES = [
    "Each row folds the seeds: mean (min..max). Every job is a finetune job: cases named `pretrained` first "
    "pretrain each hidden layer as a tied-weight autoencoder on the codes of the frozen layers below (Adam, on "
    "every training input, also with few labels), then train the whole net from those weights; the other cases "
    "train from the init itself. All cases fine-tune for the same epochs with plain SGD at their own tuned rate "
    "(conf/study/pretraining.yaml). labels: every label (the whole training split) or the first n of a stratified "
    "ordering of it (data.n_labeled). test acc: on the test split (a diverged run counts as chance). "
    "first-layer grad before fine-tuning: ||dL/dW_1|| on the fixed probe batch of the labeled part, before the "
    "first update (start/grad_norm/layer_01). final loss: the training set's (the labeled part's) at the end. "
    "A run is `not_learning` (learned false) when its final training loss is >= 0.99 x a constant predictor's or "
    'its test accuracy stays within a quarter of the way from chance to 1 (README, "Verdicts"). The tanh cases '
    "are shown for contrast: the claim is about sigmoid, and no check reads them.",
]


def findings(runs: list[StudyRun], cfg) -> Findings:
    per_run = [row(r) for r in finished(runs)]
    order = {c: i for i, c in enumerate(CASES)}
    per_run.sort(
        key=lambda x: (x["labels"] != "every label", x["labels"], order.get(x["case"], 99), x["depth"], x["seed"])
    )
    columns, rows = seed_table(per_run, ["case", "labels", "depth"], COLUMNS)
    return Findings(
        checks(runs, cfg),
        columns,
        rows,
        flat_metrics(runs),
        {"pretraining.png": figure(runs)},
        list(NOTES),
        {"runs.csv": per_run},
    )
